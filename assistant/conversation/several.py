"""Several kinds of product asked for in one turn: "I need a water bottle, a jump rope and a foam roller".

One search for the whole sentence ranks whichever kind its words favour and drops the others, so the list is split
into its items and each is searched on its own, sharing what the sentence says of all of them (a price limit, a
colour, a size). What counts as an item comes from the served catalog: a noun phrase whose last word is a kind of
the catalog (`CatalogVocabulary.kinds`) or the last word of one of its titles ("... Water Bottle"), or one the
catalog lacks, which the reply then says it does not carry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from assistant.catalog.model import Catalog
from assistant.conversation.vocabulary import COMMON_WORDS, CatalogVocabulary, singular_forms
from assistant.search.query import COLOR_SYNONYMS, MEASURE_UNITS, NUMBER_WORDS

_SEPARATORS = re.compile(r"\s*(?:,|;|\band also\b|\bas well as\b|\band\b|\bplus\b|&)\s*")
_CLAUSE_END = re.compile(r"\s+[-–—]\s+|[?.!:]")  # "... a foam roller - what do the three cost?"
_WORD = re.compile(r"[a-z][a-z'-]*")
# Words that open or close an item without being part of it: "a", "some", "one of those", "for my son".
_OPENERS = frozenset("a an some any one two three four a pair of couple the also maybe then both".split())
_PURPOSE = re.compile(r"\b(?:for|to|with|in|under|below|over|that|which|so|because|at)\b")
MAX_ITEM_WORDS = 4  # "a big exercise ball" is an item; a longer run is a clause, not a list item
MAX_ITEMS = 4


@dataclass(frozen=True)
class Item:
    """One thing of a list the shopper asked for."""

    phrase: str  # as said, without its article: "water bottle"
    head: str  # its last word, the kind: "bottle"
    known: bool  # the catalog has this kind (a kind word or a title's last word)
    one: bool = False  # counted as one ("a water bottle"), not as a kind in general ("tanks")


def _singular(word: str) -> str:
    return singular_forms(word)[0] if word.endswith("s") else word


class ListedItems:
    """Finds the items of a list request, with what the served catalog calls a kind.

    Args:
        catalog: The served catalog (its titles' last words are kinds too: "Affirm Water Bottle").
        vocabulary: Its spoken vocabulary (`kinds`, product lines).
    """

    def __init__(self, catalog: Catalog, vocabulary: CatalogVocabulary) -> None:
        heads: set[str] = set()
        for product in catalog.parents():
            words = re.findall(r"[a-z0-9][a-z0-9'-]*", product.title.lower())
            while words and (words[-1][0].isdigit() or words[-1] in MEASURE_UNITS):  # "Orla Ball 55 cm": a ball
                words.pop()
            if words:
                heads.add(_singular(words[-1]))
        self.vocabulary = vocabulary
        self.heads = frozenset(heads)
        self.lines = frozenset(vocabulary.lines)

    def is_kind(self, word: str) -> bool:
        """Whether the served catalog sells this kind of thing ("bottle", "ropes", "hoodies")."""
        return word in self.vocabulary.kinds or _singular(word) in self.heads or word in self.heads

    def items(self, text: str) -> list[Item]:
        """The items a list request names, or [] when it names fewer than two different kinds.

        "a water bottle, a jump rope and a foam roller" -> water bottle, jump rope, foam roller; "a hoodie and
        some leggings in black" -> hoodie, leggings; "the hera and the mona" (product lines) or "black and white
        hoodies" (one kind) -> [].
        """
        sentences = _CLAUSE_END.split(text.lower().replace("’", "'"))
        # the sentence that holds the list: the one with most separators
        sentence = max(sentences, key=lambda s: len(_SEPARATORS.findall(s)), default="")
        parts = [p for p in _SEPARATORS.split(sentence) if p.strip()]
        if len(parts) < 2:
            return []
        found: list[Item] = []
        for i, part in enumerate(parts):
            item = self._item(part, first=not found, last=i == len(parts) - 1)
            if item is None and found:
                return []  # "hoodies, black or white": not a list of things
            if item is not None:  # (what comes before the first item is what the shopper is doing)
                found.append(item)
        heads = {_singular(it.head) for it in found}
        if len(heads) < 2 or sum(it.known for it in found) < 1 or len(found) > MAX_ITEMS:
            return []
        return found

    def _item(self, part: str, *, first: bool, last: bool) -> Item | None:
        words = _WORD.findall(part)
        if not first:  # "some leggings in black": up to the first purpose or constraint word
            cut = _PURPOSE.search(" ".join(words))
            if cut is not None and cut.start() > 0:
                words = _WORD.findall(" ".join(words)[: cut.start()])
        run: list[str] = []
        # The first part ends with its item ("I need a water bottle"); the others start with it.
        for word in reversed(words) if first else words:
            if word in _OPENERS or (word in COMMON_WORDS and not self.is_kind(word)) or word in NUMBER_WORDS:
                if run:
                    break
                continue
            run.append(word)
        if first:
            run.reverse()
        if not run or len(run) > MAX_ITEM_WORDS and not last:
            return None
        run = run[:MAX_ITEM_WORDS] if not first else run[-MAX_ITEM_WORDS:]
        # colours describe the item, they are not one
        nouns = [w for w in run if w not in COLOR_SYNONYMS]
        if not nouns:
            return None
        head = nouns[-1]
        if head in self.lines and not self.is_kind(head):  # "the hera and the mona": products, not kinds
            return None
        known = self.is_kind(head)
        # A kind the catalog lacks counts only when its part says nothing else ("..., a yoga mat and ..."): in "I'm
        # setting up a home gym, I need ..." the first part is what the shopper does, not a thing asked for.
        at = words.index(run[0])
        # The first part ends with its item ("I need a water bottle"), the others start with it ("some leggings in
        # black"): "I'm six foot one and everything is too short" lists nothing.
        around = words[at + len(run):] if first else words[:at]
        if any(w not in _OPENERS and (not first or w not in COMMON_WORDS) for w in around):
            return None
        one = at > 0 and words[at - 1] in ("a", "an", "one") or (at > 1 and words[at - 2] in ("a", "an", "one"))
        rest = [w for w in words if w not in run and w not in _OPENERS and w not in COMMON_WORDS]
        opens = at == 0 and part.strip().startswith(run[0])  # "dumbbells and ...", not "29 waist"
        if not known and (rest or not (opens or at > 0 and words[at - 1] in _OPENERS)):  # "..., my son wants to race"
            return None
        return Item(" ".join(run), head, known, one)

