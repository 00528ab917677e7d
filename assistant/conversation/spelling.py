"""Typing slips in typed messages: "can u shwo me sprots bras in bleu", "ad it in medum" (#9).

A word that is neither English (SymSpell's 82,765-word frequency dictionary, shipped inside the `symspellpy`
wheel) nor a word of the served catalog, and that is one edit (insert, delete, substitute, swap) from a word that
is, is taken for that word; the catalog's own words win over English ones at the same distance, so "sahra" is the
Sahara leggings of this catalog. Real words are never changed ("golf" stays golf, so the reply can say the catalog
has no golf gear), nor are short ones, numbers or words with digits.

The dictionary loads once per process (about 1.5 s) and only when a typed message needs it.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import re
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

MIN_LENGTH = 3  # shorter words are too often something else one edit away
SHORT = 4  # a word shorter than this is corrected only to a very common word ("mde" -> made, "hav" -> have)
CATALOG_COUNT = 10**12  # a catalog term outranks any English word at the same edit distance
COMMON_COUNT = 2 * 10**7  # an English correction must be at least this common ("waht" -> what, "bleu" -> blue):
# a rare word one edit away is more likely a name the catalog lacks ("athleta" is no "athlete", "asics" no "basics")
_TOKEN_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
# Chat shorthand (English, not any catalog's): written as said before anything else is read.
_SHORTHAND = {"u": "you", "ur": "your", "pls": "please", "plz": "please", "thx": "thanks", "r": "are",
              "cuz": "because", "wanna": "want to", "gonna": "going to", "gimme": "give me", "ya": "you"}
_SHORTHAND_RE = re.compile(r"\b(?:" + "|".join(_SHORTHAND) + r")\b|\bad(?= (?:it|them|that|this|one|two|to)\b)",
                           re.IGNORECASE)


SHORT_ABBREVIATION = 3  # words this short are corrected only by an inserted letter ("mde") or a swap ("teh")


@functools.cache
def _english() -> Any | None:
    """SymSpell over the packaged English frequency dictionary (None when symspellpy is not installed)."""
    try:
        from symspellpy import SymSpell
    except ImportError:  # an optional speed-up of understanding, never a reason to fail a turn
        log.warning("symspellpy is not installed: typing slips are not corrected")
        return None
    speller = SymSpell(max_dictionary_edit_distance=1, prefix_length=7)
    path = importlib.resources.files("symspellpy") / "frequency_dictionary_en_82_765.txt"
    speller.load_dictionary(str(path), term_index=0, count_index=1)
    return speller


class TypoFixer:
    """Corrects one-edit typing slips against English and a catalog's own words.

    Args:
        catalog_words: The served catalog's words (titles, categories, attributes, descriptions), lower case:
            never corrected.
        catalog_terms: Its kinds, product lines and brands: what a slip is corrected to first.
    """

    def __init__(self, catalog_words: Iterable[str], catalog_terms: Iterable[str] = ()) -> None:
        self.catalog_words = frozenset(w.lower() for w in catalog_words if w.isalpha())
        self.catalog_terms = frozenset(w.lower() for w in catalog_terms if w.isalpha())
        self._speller: Any | None = None
        self._ready = False

    def _load(self) -> Any | None:
        if not self._ready:
            english = _english()
            if english is not None:
                from symspellpy import SymSpell

                # The shared English dictionary is never modified: catalog words go into a small one of their own.
                own = SymSpell(max_dictionary_edit_distance=1, prefix_length=7)
                for word in self.catalog_terms:
                    own.create_dictionary_entry(word, CATALOG_COUNT)
                self._speller = (english, own)
            self._ready = True
        return self._speller

    def warm(self) -> TypoFixer:
        """Load the dictionaries now (about 1.5 s) rather than on the first typed message."""
        self._load()
        return self

    def known(self, word: str) -> bool:
        low = word.lower()
        spellers = self._load()
        if low in self.catalog_words or low.rstrip("s") in self.catalog_words:
            return True
        return spellers is None or low in spellers[0].words

    def fix(self, text: str) -> tuple[str, list[tuple[str, str]]]:
        """The text with its typing slips corrected, and the (typed, meant) pairs."""
        spellers = self._load()
        from symspellpy import Verbosity

        fixes: list[tuple[str, str]] = []

        def expand(m: re.Match[str]) -> str:
            meant = _SHORTHAND.get(m.group(0).lower(), "add")  # "ad it in medium" is "add it"
            fixes.append((m.group(0), meant))
            return meant

        text = _SHORTHAND_RE.sub(expand, text)
        out, last = [], 0
        for m in _TOKEN_RE.finditer(text):
            word = m.group(0)
            low = word.lower()
            if spellers is None or len(low) < MIN_LENGTH or "'" in low or self.known(low):
                continue
            if not re.search(r"[aeiouy]", low):  # "dvd", "gps": an abbreviation, no slip ("mde" has a vowel)
                continue
            if word[0].isupper() and re.search(r"[a-z0-9,]\s+$", text[: m.start()]):
                continue  # "carry Alo Yoga leggings": a name, capitalised inside a sentence, is no slip
            meant = None
            for speller in (spellers[1], spellers[0]):  # the catalog's terms first
                # A slip drops a letter more often than it adds one: "mde" is made, not me.
                found = sorted(speller.lookup(low, Verbosity.CLOSEST, max_edit_distance=1),
                               key=lambda x: (len(x.term) >= len(low), x.count), reverse=True)
                common = COMMON_COUNT * (10 if len(low) < SHORT else 1)
                if found and (speller is spellers[1] and len(low) >= SHORT or found[0].count >= common):
                    meant = found[0].term
                    break
            if meant is None or meant == low:
                continue
            if len(low) <= SHORT_ABBREVIATION and len(meant) <= len(low) and sorted(meant) != sorted(low):
                continue  # "usb" is no slip for "use": a short word is fixed by a letter dropped or swapped only
            out.append(text[last : m.start()])
            out.append(meant if word.islower() else meant.capitalize() if word[0].isupper() else meant)
            last = m.end()
            fixes.append((word, meant))
        out.append(text[last:])
        return "".join(out), fixes
