"""The conversation room (issue #11's layout): what the shopper said and meant, over whatever catalog is served.

* `vocabulary`: the catalog's spoken vocabulary -- the Whisper prompt, and the repair of misheard product words;
* `names`: the products a turn names (line names, close spellings, distinctive title words), on screen first;
* `coverage`: what a request asks for that the catalog has no word for (honest "we don't carry that");
* `answers`: answers about a product built only from what the catalog says of it.

The dialogue (`assistant.dialogue`) and intents (`assistant.intent`) move here when #11 lands.
"""
