"""Typing slips in typed messages (#9): the real English dictionary of symspellpy plus a catalog's own terms."""

from __future__ import annotations

import pytest

from assistant.conversation.spelling import TypoFixer
from assistant.conversation.vocabulary import CatalogVocabulary
from tests.test_conversation_room import CATALOG

pytest.importorskip("symspellpy")
FIXER = TypoFixer(["hoodie", "hoodies", "quillon", "fleece", "bra", "bras"], ["hoodie", "hoodies", "quillon"])


@pytest.mark.parametrize(("typed", "meant"), [
    ("can u shwo me sprots bras in bleu", "can you show me sports bras in blue"),
    ("waht is it mde of", "what is it made of"),
    ("ok ad it in medum pls", "ok add it in medium please"),
    ("the quilon hoodie", "the quillon hoodie"),  # the catalog's own name wins
])
def test_slips_are_read_as_meant(typed: str, meant: str) -> None:
    assert FIXER.fix(typed)[0] == meant


@pytest.mark.parametrize("text", ["golf clubs", "anything from athleta", "asics?", "a leotard", "haha ok",
                                  "is it a dvd", "does it have gps",  # abbreviations: no vowel to slip on
                                  "a backpack w/ a usb port",  # a short word is not changed for another one
                                  "do you carry Alo Yoga"])  # a name, capitalised inside a sentence
def test_real_words_and_names_the_catalog_lacks_are_kept(text: str) -> None:
    assert FIXER.fix(text) == (text, [])  # the reply can still say the catalog has no golf gear or Athleta


def test_typed_repair_says_a_catalog_kind_back_and_other_slips_silently() -> None:
    vocab = CatalogVocabulary.from_catalog(CATALOG)
    understood = vocab.repair("shwo me hoodeis")
    assert understood.text == "show me hoodies" and understood.shown_as() == "Showing hoodies."
    quiet = vocab.repair("waht hoodies do you have")
    assert quiet.text == "what hoodies do you have" and quiet.shown_as() is None
    # a transcript is never spell-checked: its words were heard, and Whisper spells English
    assert vocab.repair("shwo me hoodies", score=-0.3).text == "shwo me hoodies"


def test_the_dictionaries_load_before_the_first_message() -> None:
    fixer = TypoFixer(["hoodie"], ["hoodie"]).warm()
    assert fixer._speller is not None and fixer.fix("bleu hoodie")[0] == "blue hoodie"
