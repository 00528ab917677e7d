"""Products the shopper names: "the Hera one", "the Mona and the Karmen", "the softshell" (#9, names over positions).

`ProductNames` is built from the served catalog: every shoppable product's title words, its product-line name (the
first distinctive title word, as `CatalogVocabulary` finds it) and its kind words. `ProductNames.named` finds the
products a turn names, in the order it names them:

1. the products on screen first -- a name that fits one of them means that one, even if the catalog has others
   of the same line;
2. then the whole catalog, when the name is distinctive enough to pick out few products.

Names are matched by whole words and, for what ASR makes of unusual names ("Carmen" for "Karmen"), by a close
spelling (rapidfuzz) of a word against the catalog's line names -- never for a word some title has ("ball" is no
misheard "Bella"). A line name the catalog's own descriptions also write as a plain word ("easy to track your
laps") names its line only in a naming context ("the Track tote"). One product listed once per size or colour
("Sprite Stasis Ball 55 cm", "... 65 cm") is a family: its name picks the family (`family`). Nothing here knows
any catalog's names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import jellyfish
from rapidfuzz import fuzz, process

from assistant.catalog.model import Catalog, Product
from assistant.conversation.vocabulary import COMMON_WORDS, CatalogVocabulary, singular_forms
from assistant.search.query import MEASURE_UNITS, ProductHit, words_to_numbers

FUZZY_LINE = 84  # spelling similarity (0-100) for a word to count as a product-line name heard slightly wrong
FUZZY_SOUND = 66  # ... or this much when it also sounds the same (metaphone): "carmen" for "Karmen"
MAX_CATALOG_MATCHES = 3  # a name that fits more catalog products than this is not specific enough alone
_WORD_RE = re.compile(r"[a-z0-9]+")
_GENERIC = frozenset("""
the a an one ones it this that these those and or of for with in on to is are was be do does it's which what
how much show me tell about compare versus vs between better than difference first second third last other
""".split())


def _is_measure(word: str) -> bool:
    """A number or a unit: what separates the listings of one product in several sizes."""
    return word in MEASURE_UNITS or bool(re.fullmatch(r"\d+(?:\.\d+)?", word))


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower().replace("'s", ""))


@dataclass(frozen=True)
class Named:
    """A product the turn names, where it was found and the words that named it."""

    hit: ProductHit
    on_screen: bool
    words: tuple[str, ...]
    position: int  # index of the first naming word in the turn


class ProductNames:
    """Finds the products a turn names, on screen first, then in the catalog (see the module docstring)."""

    def __init__(self, catalog: Catalog, vocabulary: CatalogVocabulary | None = None) -> None:
        self.catalog = catalog
        self.vocabulary = vocabulary or CatalogVocabulary.from_catalog(catalog)
        self._products = {p.id: p for p in catalog.parents()}
        self._title_words = {pid: set(_words(p.title)) for pid, p in self._products.items()}
        self._lines = dict(self.vocabulary.lines)
        self._line_keys = list(self._lines)
        # Distinctive title words ("softshell", "canvas"): a word few titles have names those products.
        by_word: dict[str, list[str]] = {}
        for pid, words in self._title_words.items():
            for word in words:
                if (len(word) > 3 and word.isalpha() and word not in _GENERIC and word not in COMMON_WORDS
                        and word not in self.vocabulary.kinds and word not in self._lines):
                    by_word.setdefault(word, []).append(pid)
        self._distinctive = {w: tuple(ids) for w, ids in by_word.items() if len(ids) <= MAX_CATALOG_MATCHES}
        self._all_title_words = set().union(*self._title_words.values()) if self._title_words else set()
        # Line names the catalog's own descriptions also write in lower case, as ordinary words ("easy to *track*
        # your training" beside the "Track" line): said without a naming context they are the word, not the line.
        lower_case = {w.removesuffix("'s") for p in catalog.parents()
                      for w in re.findall(r"\b[a-z][a-z']+\b", p.description or "")}
        self._ordinary_lines = {line for line in self._lines if {line, line + "s", line + "es"} & lower_case}
        # Families: separate listings of one product in several sizes or colours ("Sprite Stasis Ball 55 cm",
        # "... 65 cm", each in three colours): the same category, the same title but for measures.
        by_family: dict[tuple[str, str], list[str]] = {}
        for pid, product in self._products.items():
            stem = " ".join(w for w in _words(product.title) if not _is_measure(w))
            by_family.setdefault((product.category, stem), []).append(pid)
        self._family = {pid: tuple(ids) for ids in by_family.values() if len(ids) > 1 for pid in ids}

    def _line_words(self, words: Sequence[str]) -> dict[int, str]:
        """Positions of words that are (or sound written like) a product-line name -> the line."""
        found: dict[int, str] = {}
        for i, word in enumerate(words):
            if word in _GENERIC or len(word) < 3:
                continue
            if word in self._lines:
                if word not in self._ordinary_lines or self._naming(words, i) or self._in_a_title(words, i, word):
                    found[i] = word  # "can it track my sleep" is no "Track" product; "the track tote" is
                continue
            # Heard slightly wrong: only a longer word that is no kind, no everyday word ("any" is no "Ana") and
            # no word of a title ("ball" is heard right, not a "Bella" misheard).
            if len(word) < 4 or word in self.vocabulary.kinds or word in COMMON_WORDS or not self._line_keys \
                    or word in self._all_title_words:
                continue
            match = process.extractOne(word, self._line_keys, scorer=fuzz.ratio, score_cutoff=FUZZY_SOUND)
            if match is not None and (match[1] >= FUZZY_LINE or jellyfish.metaphone(word) == jellyfish.metaphone(
                    match[0])):
                found[i] = match[0]
        return found

    def named(self, text: str, shown: Sequence[ProductHit] = ()) -> list[Named]:
        """The products `text` names, in the order named (each once)."""
        words = _words(words_to_numbers(text))  # "the ten foot one" names the "... 10 foot" strap
        naming = {i: self._lines.get(line, ()) for i, line in self._line_words(words).items()}
        out: list[Named] = []
        seen: set[str] = set()
        kind_words = {w for w in words if w in self.vocabulary.kinds}
        for i, word in enumerate(words):  # title words few products have: "the softshell", "the canvas jacket"
            if _is_measure(word) and "the" not in words[max(0, i - 3) : i]:
                continue  # "I'm six foot one" is a height; "the 10 foot one" names the strap
            if i not in naming and word in self._distinctive and self._naming(words, i, self._distinctive[word]):
                naming[i] = self._distinctive[word]
        for position, ids in sorted(naming.items()):
            candidates = [pid for pid in ids if pid not in seen]
            on_screen = [h for h in shown if h.product.id in candidates]
            if on_screen:
                hit = self._best(on_screen, kind_words, words)
                out.append(Named(hit, True, (words[position],), position))
                seen.add(hit.product.id)
                continue
            hits = [ProductHit(self._products[pid], 1.0, "named") for pid in candidates if pid in self._products]
            if not hits:
                continue
            best = self._best(hits, kind_words, words)
            if len(hits) > MAX_CATALOG_MATCHES:  # a big line ("Sprite"): only a title the turn picks out alone
                overlap = {h.product.id: self._overlap(h, kind_words, words)[0] for h in hits}
                scores = sorted(overlap.values(), reverse=True)
                top = {pid for pid, score in overlap.items() if score == scores[0]}
                one_family = top <= set(self._family.get(best.product.id, ()))  # "the sprite stasis ball"
                if scores[0] < 2 or scores[0] == scores[1] and not one_family:
                    continue
            out.append(Named(best, False, (words[position],), position))
            seen.add(best.product.id)
        if not out:  # "the softshell", "the 65 cm one": a title word that only one title on screen has
            titles = {hit.product.title: set(_words(hit.product.title)) for hit in shown}
            taken: set[str] = set()
            for hit in shown:
                title = titles[hit.product.title]
                distinctive = [w for i, w in enumerate(words) if w in title and w not in _GENERIC
                               and (len(w) > 3 or w.isdigit()) and sum(w in t for t in titles.values()) == 1
                               and (self._naming(words, i) or w.isdigit() or self._names_with_next(words, i, title,
                                                                                                      titles))]
                if distinctive and hit.product.title not in taken:
                    out.append(Named(hit, True, tuple(distinctive), words.index(distinctive[0])))
                    taken.add(hit.product.title)
            out.sort(key=lambda n: n.position)
        return out

    @staticmethod
    def _names_with_next(words: Sequence[str], i: int, title: set[str], titles: dict[str, set[str]]) -> bool:
        """"Foam rollers" with one roller on screen names it; "sports bras" with three bras asks for a kind."""
        if i + 1 >= len(words):
            return False
        after = words[i + 1]
        if after.isdigit():
            return True
        forms = {after, after.rstrip("s"), after.removesuffix("es")}
        return bool(forms & title) and sum(bool(forms & t) for t in titles.values()) == 1

    def _in_a_title(self, words: Sequence[str], i: int, line: str) -> bool:
        """Whether a neighbouring word is another word of a title of that line ("track tote")."""
        near = {words[j] for j in (i - 1, i + 1) if 0 <= j < len(words)} - _GENERIC
        return any(near & (self._title_words.get(pid, set()) - {line}) for pid in self._lines.get(line, ()))

    def _naming(self, words: Sequence[str], i: int, ids: Sequence[str] | None = None) -> bool:
        """Whether a descriptive word is used as a name: "the softshell", "the canvas jacket", "the light one".

        Said before a kind without "the" ("bike short"), it names one of the products `ids` (when given) only if that
        product is of the kind: "workout gear" is no Iris Workout *Top*.
        """
        before = words[i - 1] if i > 0 else ""
        after = words[i + 1] if i + 1 < len(words) else ""
        if before in ("the", "that", "this", "those") or after in ("one", "ones"):
            return True
        # "... bike short" names the product; "a sports bra" and "bike shorts" ask for a kind of thing
        if after not in self.vocabulary.kinds or before in ("a", "an", "any", "some") or \
                (after.endswith("s") and not after.endswith("ss")):  # "black sports bras" ask for a kind
            return False
        return ids is None or any(self._is_of_kind(pid, after) for pid in ids)

    def _is_of_kind(self, pid: str, kind: str) -> bool:
        """Whether the product's title or category path says the kind ("bag", "top")."""
        product = self._products.get(pid)
        forms = set(singular_forms(kind)) | {kind}
        return product is not None and bool(forms & set(_words(" ".join([product.title,
                                                                           *product.category.split("/")]))))

    def _best(self, hits: Sequence[ProductHit], kind_words: set[str], words: Sequence[str]) -> ProductHit:
        """Of several products of one line, the one whose title shares most of the turn's words."""
        return max(hits, key=lambda h: self._overlap(h, kind_words, words))

    def _overlap(self, hit: ProductHit, kind_words: set[str], words: Sequence[str]) -> tuple[int, int]:
        """How well a product's title fits the turn: shared words (kinds by stem), then the shorter title."""
        title = self._title_words.get(hit.product.id) or set(_words(hit.product.title))
        kinds = sum(any(k.rstrip("s") in t or t.rstrip("s") in k for t in title) for k in kind_words - title)
        return (kinds + len(title & set(words)), -len(title))

    def family(self, pid: str) -> list[Product]:
        """The listings of one product in other sizes or colours (itself included); just itself when none."""
        return [self._products[i] for i in self._family.get(pid, (pid,)) if i in self._products]

    def product(self, pid: str) -> Product | None:
        return self._products.get(pid)
