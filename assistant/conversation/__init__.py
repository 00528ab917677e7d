"""The conversation room: what the shopper said and meant, over whatever catalog is served, and what to answer.

* `dialogue`: the planner of a turn (intent, references, names, cart, policy and order answers, honest absences);
* `intent` and `intent_data`: intents and slots (MiniLM classifier + rules) and the classifier's training utterances;
* `kb` and `orders`: the merchant's policies (with the demo ones in `demo_kb/`) and order lookups;
* `vocabulary`: the catalog's spoken vocabulary -- the Whisper prompt, and the repair of misheard product words;
* `names`: the products a turn names (line names, close spellings, distinctive title words), on screen first;
* `coverage`: what a request asks for that the catalog has no word for (honest "we don't carry that");
* `answers`: answers about a product built only from what the catalog says of it;
* `several`, `measures`, `spelling`: several things asked in one turn, comparisons on a measure, typo repair.
"""
