"""The conversation room (issue #11's layout): what the shopper said and meant, over the served catalog.

For now it holds the catalog's spoken vocabulary (`vocabulary`: Whisper biasing and the repair of misheard product
words); the dialogue, intents and slots move here when #11 lands.
"""
