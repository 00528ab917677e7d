"""What a request asks for that the catalog does not have at all (#9, honest answers).

"Do you sell laptops?", "leather jackets", "Nike hoodies", "something waterproof": a word that defines what the
shopper wants and that appears nowhere in the served catalog -- not in a title, category, attribute, brand or
description -- is something the catalog does not carry. The reply says so first, and the closest products are
shown as alternatives, never as matches.

Everything comes from the catalog: its words are the index. Three guards keep ordinary talk out:

* only the words that define the product count, not its purpose ("a jacket *for hiking in the rain*": the words
  after "for", "to", "when" ... are a use case, which retrieval weighs, not a hard constraint);
* a spoken alias of a catalog kind ("hoody") is no absence, nor, in a transcript, a word that sounds like a
  catalog word ("layla tea"); typed text is read as meant ("a Casio" is no Cassia). A word whose meaning a
  catalog kind nearly covers ("trousers", "jeans" and pants: MiniLM cosine at least `SYNONYM_COSINE`) is one, but
  said as "nothing called jeans", not as "we don't carry that";
* what the shopper does or says around the request is no part of it: only the clauses that ask count ("off to
  Cancun next month!! need some shorts"; when they name nothing, "got any?", the kind another clause names), the
  people in the shopper's life ("my dad", "my nan is 78") and their verbs ("she wants"), the verb a subject opens
  ("I cycle to work"), a clause about themselves ("... I can keep my phone in": counted only for a word the catalog
  never says, "a watch I can get engraved"), an aside before it ("Shame. What other ..."), occasions and adverbs.
  A purpose word that opens the request ("Which of your watches can track my sleep?") or a "that" followed by a
  verb of having or doing ("a backpack that comes with a rain cover", "a watch that says the time") does not hide
  what it asks for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import jellyfish
import numpy as np
from rapidfuzz import fuzz

from assistant.catalog.model import Catalog, Product
from assistant.conversation.vocabulary import COMMON_WORDS, CatalogVocabulary, plural, singular_forms
from assistant.search.query import (
    COLOR_SYNONYMS,
    HER_PEOPLE,
    HIS_PEOPLE,
    NUMBER_WORDS,
    QueryVocab,
    SearchQuery,
)

SOUND_ALIKE_SPELLING = 60  # rapidfuzz ratio: "tea" for "tee" (67) is the same word misheard; "nike"/"neck" (50) not
SYNONYM_COSINE = 0.8  # MiniLM cosine from which a missing word counts as another name of a catalog kind ("trousers")
_WORD_RE = re.compile(r"[a-z][a-z'-]*[a-z]|[a-z]")
# "that"/"which" open a purpose ("a bag that I can take to the gym"), unless a verb of having follows: "a backpack
# that comes with a rain cover" and "a watch that can track sleep" say what the product must have.
_PURPOSE_RE = re.compile(r"\b(?:for|to|when|while|so|because|who|during|on|at|like)\b|\b(?:that|which)\b(?!\s+(?:comes?|"
                         r"has|have|includes?|features?|packs?|tracks?|shows?|can|will|does|do|is|are|says?|tells?|"
                         r"talks?|speaks?|reads?|lights?|glows?|vibrates?|beeps?|counts?|measures?|monitors?|"
                         r"connects?|charges?|plays?)\b)")  # "a watch that says the time": what it must do
_REQUEST_VERB = re.compile(r"(?<!\bto )\b(?:want|need|have|got|sell|carry|stock|find|show me|looking for|get)\b")
_PHRASE_BREAKS = frozenset("not but you do does is are can could would".split())
_SUBJECT_CLAUSE = re.compile(r"\b(?:i|we|you|she|he|they)\s+(?:can|could|will|would|might|'ll|need to|want to|"
                             r"have to|plan to|use)\b")
_ADVERBS = frozenset("also just really already never always still even only actually".split())
_SUBJECTS = frozenset("i we you they he she i'm we're you're they're i've we've i'd she'd he'd she's he's".split())
_IDIOMS = re.compile(r"\b(?:ideally|preferably|possibly)\b|\b(?:a )?(?:little )?bit(?: too)?(?: pricey| much| expensive| steep)?\b|"
                     r"\b(?:pricey|steep|birthday|christmas|xmas|anniversary|valentine'?s?|surprise)\b|"
                     r"\balong (?:those|these|the same) lines\b|\bsomething like (?:that|this|it)\b|"
                     r"\b(?:that|this|it|\d+) (?:works|would work|is fine|will do)\b")
# English words that never define a product on their own (function words, shopping talk, vague praise).
_NOT_DEFINING = COMMON_WORDS
# Verbs a shopper says of someone ("she wants", "he likes", "my physio says"), in their third-person form.
_SHOPPER_VERBS = frozenset("want need like love say get take use look see make keep try think hope wish prefer seem "
                           "wear run ride".split())
# Where one clause ends and another begins: sentence ends, a dash, or a comma before a question or request ("hiking in
# the highlands in October, what have you got ...").
_CLAUSE_BREAK = re.compile(r"(?<=[.!?;])\s+|\s+[-–—]+\s+|,\s*(?=(?:so |but |and |then |um |uh )?(?:what|which|do|does|"
                           r"did|have|has|got|any|anything|is|are|can|could|would|will|i need|i want|i'?m after|"
                           r"i'?m looking|looking for|need|show me|find me)\b)")
_REQUEST_CUE = re.compile(r"\b(?:wants?|needs?|have|got|sell|carry|stock|find|show|looking|get|after|buy|any|anything|"
                          r"something|what|which|recommend|suggest)\b|\?")
# "my dad a watch", "my nan is 78", "my sister's just ...": the people in the shopper's life are never what is asked
# for (a thing of theirs may be: "my Fitbit broke, do you sell them?").
_PEOPLE = "|".join(sorted(HIS_PEOPLE | HER_PEOPLE)) + (
    "|son|daughter|kids?|children|friends?|buddy|mate|partner|fiancé|fiancée|physio|physiotherapist|doctor|coach|"
    "trainer|boss|colleague|coworker|teacher|niece|nephew|cousin|baby|toddler|family|parents?|in-laws?")
_POSSESSION = re.compile(rf"\b(?:my|his|her|our|their)\s+(?:(?:little|older|younger|big|best|new|old)\s+)?(?:{_PEOPLE})"
                         r"(?:'s)?\b")


_PHRASE_ENDS = frozenset("for in with that under please and to not but or you which do does is".split())


def _counted(word: str, said: Sequence[str], window: int = 5) -> bool:
    """Whether the word ends a phrase that "a"/"an" opens ("a yoga mat", "a water resistant phone case")."""
    if word not in said:
        return False
    i = len(said) - 1 - list(reversed(said)).index(word)
    ends_phrase = i + 1 == len(said) or said[i + 1] in _PHRASE_ENDS
    return ends_phrase and any(w in ("a", "an") for w in said[max(0, i - window) : i])


def _looks_like_a_noun(word: str, said: Sequence[str]) -> bool:
    """Whether a word is a thing asked for, not a quality.

    A plural ("laptops"), a word after "a"/"an" ("a laptop") or one ending a phrase that "a" opens ("a yoga mat").
    """
    if word.endswith("s") and not word.endswith("ss"):
        return True
    # "a laptop", not "a warm layer": the word after "a" is the thing when nothing but a phrase end follows it
    if any(a in ("a", "an") and b == word and (i + 2 == len(said) or said[i + 2] in _PHRASE_ENDS)
           for i, (a, b) in enumerate(zip(said, said[1:], strict=False))):
        return True
    return _counted(word, said)


def _singular(word: str) -> str:
    """The last singular form of a plural ("hoodies" -> hoody, "watches" -> watch); other words as they are."""
    return singular_forms(word)[-1]


def _attribute_texts(product: Product) -> list[str]:
    out: list[str] = []
    for key, value in product.attributes.items():
        out.append(str(key))
        out.extend(str(v) for v in (value if isinstance(value, list | tuple) else [value]))
    return out


def _words_and_singulars(texts: Iterable[str]) -> frozenset[str]:
    """Every word of the texts (lower case, hyphens split) and its singular form."""
    return frozenset(form for text in texts for w in _WORD_RE.findall(str(text).lower().replace("-", " "))
                     for form in (w, _singular(w)))


def _product_texts(product: Product) -> list[str]:
    """Everything a product says of itself: title, categories, brand, description, attributes."""
    return [product.title, product.category, *product.categories, product.brand or "", product.description,
            *_attribute_texts(product)]


@dataclass(frozen=True)
class Absence:
    """What a request asks for that the catalog lacks."""

    words: tuple[str, ...]  # the request's words the catalog has nothing for ("leather")
    phrase: str  # how to say what is missing ("leather jackets")
    kind: bool  # the missing word is the product kind itself (no kind of the catalog was named)
    close: bool = False  # a catalog kind means nearly the same ("trousers", "jeans" and pants): worded as such


class CatalogCoverage:
    """The words of the served catalog, to tell what a request asks for that it does not carry.

    Args:
        catalog: The served catalog (all products, variants included: their attributes count).
        vocabulary: Its spoken vocabulary (kinds, lines, brands).
        encoder: A sentence encoder with ``encode(list[str]) -> (n, d)`` normalised rows (MiniLM), to let synonyms
            of catalog kinds through; None: exact words only.
    """

    def __init__(self, catalog: Catalog, vocabulary: CatalogVocabulary, encoder: Any | None = None) -> None:
        self._by_parent: dict[str, set[str]] = {}  # shoppable product -> its words and its variants'
        parents = {p.id for p in catalog.parents()}
        for product in catalog:
            owner = product.id if product.id in parents else (product.parent_id or product.id)
            self._by_parent.setdefault(owner, set()).update(_words_and_singulars(_product_texts(product)))
        self.words = frozenset().union(*self._by_parent.values())
        # Words of titles and category paths: the kinds of thing the catalog *sells*. A word only its descriptions
        # or attributes use ("Laptop Sleeve", a bag's style "Laptop") names no kind it carries.
        self.kind_words = _words_and_singulars(t for p in catalog for t in (p.title, p.category, *p.categories))
        # Words of titles, categories, attributes and brands (not descriptions).
        self.structured = _words_and_singulars(
            t for p in catalog for t in (p.title, p.category, *p.categories, p.brand or "", *_attribute_texts(p)))
        self.catalog = catalog
        self.query_vocab = QueryVocab.from_catalog(catalog)
        self._kinds_of: dict[str, frozenset[str]] = {}  # shoppable product -> the kinds it is (see `is_kind`)
        self.vocabulary = vocabulary
        self.encoder = encoder
        self._kinds = sorted(set(vocabulary.kinds.values()))
        self._sounds: dict[str, list[str]] | None = None
        self._kind_vectors: np.ndarray | None = None

    def has(self, word: str, among: frozenset[str] | None = None) -> bool:
        """Whether the catalog says this word anywhere (any product text), in this or its singular form.

        ``among``: only the texts of these shoppable products (those of the kind asked for).
        """
        word = word.lower()
        forms = (word, _singular(word), word.replace("-", ""))
        if among is None:
            return any(f in self.words for f in forms)
        return any(f in self._by_parent.get(pid, ()) for pid in among for f in forms)

    def _of_kind(self, query: SearchQuery) -> frozenset[str] | None:
        """The shoppable products of the kind the query names (None: no kind named, or none of it)."""
        if query.category is None:
            return None
        paths = self.query_vocab.categories_for(query.category)
        if not paths:
            return None
        ids = frozenset(p.id for p in self.catalog.parents() if set(p.categories or (p.category,)) & paths)
        return ids or None

    def absence(self, query: SearchQuery, text: str, *, heard: bool = True) -> Absence | None:
        """What of the request the catalog does not have, or None when it has something of every defining word.

        Args:
            query: The parsed query (its ``text`` is the request without fillers, prices, sizes and department).
            text: The request as said (for the kind check).
            heard: The words were transcribed: a word that sounds like a catalog word may be that word misheard
                ("layla tea" for the Layla Tee). False for typed text, which is read as meant ("casio" is no Cassia).
        """
        # "Shame. What other zip-up hoodies ...": a word or two said on their own before the request are no part of it
        aside = re.match(r"^\s*((?:[A-Za-z']+\s*){1,2})[.!]\s+(?:what|which|any|anything|got|do|does|have|show|can|"
                         r"could|is|are|how|where|i|we)\b", text, re.IGNORECASE)
        said_aside = set(_WORD_RE.findall(aside.group(1).lower())) if aside else set()
        # Only the request's own clause can ask for what we lack: "off to Cancun next month!! need some shorts",
        # "my nan is 78 - have you got any exercise videos", "my dad ... a watch".
        request = self.request_clause(text)
        asked = set(_WORD_RE.findall(_POSSESSION.sub(" ", request).replace("-", " ")))
        # each asking clause on its own: a purpose word in one ("... for my runs.") does not cut the next one off
        parsed = set(_WORD_RE.findall(query.text.lower().replace("-", " ")))
        clauses = request.split(". ") if request != text.lower().replace("’", "'") else [query.text.lower()]
        defining = list(dict.fromkeys(w for c in clauses for w in self.defining_words(c)
                                      if w not in said_aside and w in asked and w in parsed))
        named_kind = any(self.vocabulary.kinds.get(t) for t in self.vocabulary.terms_in(text)) or \
            query.category is not None
        among = self._of_kind(query)  # "leather jackets": is any *jacket* described as leather?
        missing = [w for w in defining if not self.has(w, among) and not self._joined(w, defining, among)]
        if not named_kind:  # "do you sell laptops": a noun the catalog only mentions is no kind it sells
            said, whole = _WORD_RE.findall(query.text.lower()), _WORD_RE.findall(text.lower())
            missing += [w for w in defining if w not in missing and self.has(w) and w not in self.kind_words
                        and _singular(w) not in self.kind_words and (
                            _looks_like_a_noun(w, said)
                            # "a yoga mat": a noun only descriptions use (attribute values such as a bag's
                            # "Backpack" style still say what a product is)
                            or w not in self.structured and _looks_like_a_noun(w, whole))]
        # "a watch I can get engraved": what the shopper will do with it counts only when the catalog never says it
        missing += [w for w in self.clause_words(query.text) if w not in missing and not self.has(w) and w in asked]
        # a word that sounds like a catalog word may be one misheard -- in a transcript; typed text is as meant,
        # but for a word of the named product's own title written as it sounds ("the layla tea")
        named = self._named_title_words(text)
        missing = [w for w in missing if not (self._sounds_like_a_catalog_word(w) if heard else
                                              self._sounds_like_one_of(w, named))
                   and w not in self.vocabulary.kinds]
        gender = self._missing_department(query)
        if not missing and gender is None:
            return None
        # said back from the clause that asks for it: "do you have any scarves? ideally something warm" -> scarves
        asking = next((c for c in request.split(". ") if set(missing) & set(_WORD_RE.findall(c))), request)
        # ... and from the part of it between commas that says it: "I'm after a Casio, the classic digital one"
        pieces = [c for c in asking.split(",") if set(missing) & set(_WORD_RE.findall(c))] if missing else []
        if len(pieces) == 1 and len(asking.split(",")) > 1:
            asking = pieces[0]
        # a name capitalised inside a sentence ("a Casio") is said back as it is, not as a plural
        names = {m.group(0).lower() for m in re.finditer(r"(?<=[a-z,] )[A-Z][a-z]+", text)}
        phrase = self._phrase(asking if asking != request else query.text, defining, _WORD_RE.findall(asking), names)
        if gender is not None:
            possessive = gender + ("'" if gender.endswith("s") else "'s")  # men's, kids'
            phrase = f"{possessive} {phrase}".strip()
        close = bool(missing) and all(self._synonym_of_a_kind(w) for w in missing)
        return Absence(tuple(missing) or (gender or "",), phrase, kind=not named_kind, close=close)

    def request_clause(self, text: str) -> str:
        """The clauses that ask (lower case): those with a request word or a question in them.

        "off to Cancun next month!! need some shorts" -> "need some shorts". When the asking clauses name nothing
        ("anything under $60?", "got any?"), what another clause refers to: the kind it names with the words right
        before it ("I do hot yoga 3x a week and my old leggings are see-through now lol" -> "old leggings"), or, when
        it names no kind of ours, all of it ("waterproof trail shoes, do you have any?"). The whole text when it is
        one clause.
        """
        low = text.lower().replace("’", "'")
        clauses = [c.strip() for c in _CLAUSE_BREAK.split(low) if c and c.strip()]
        if len(clauses) < 2:
            return low
        asking = [c for c in clauses if _REQUEST_CUE.search(c)]
        if any(CatalogCoverage.defining_words(c) for c in asking):
            return ". ".join(asking)
        return ". ".join(c if c in asking else self._kind_phrase(c) for c in clauses)

    def _kind_phrase(self, clause: str) -> str:
        """The kind of ours a clause names with the content words right before it ("old leggings"), else the clause."""
        words = _WORD_RE.findall(clause.replace("-", " "))
        at = next((i for i in range(len(words) - 1, -1, -1) if words[i] in self.vocabulary.kinds), None)
        if at is None:
            return clause
        start = at
        while start > 0 and words[start - 1] not in _NOT_DEFINING and words[start - 1] not in _SUBJECTS:
            start -= 1
        return " ".join(words[start : at + 1])

    def head_kind(self, query: SearchQuery) -> str | None:
        """The kind the request asks for, when it names one the catalog's titles or categories use.

        The last defining word before any purpose clause: "sports bras" -> bras, "water bottles for the gym" ->
        bottles, "an exercise ball" -> ball. None for "something warm" (no kind named).
        """
        kinds = self.asked_kinds(query)
        return kinds[-1] if kinds else None

    def asked_kinds(self, query: SearchQuery) -> list[str]:
        """The head kind (`head_kind`) and the kinds said right before it; [] when no kind is named.

        "duffle bag" -> [duffle, bag], "insulated jacket" -> [insulated, jacket].

        A word before the head counts only when it is a kind of the catalog in its own right (`vocabulary.kinds`:
        a category segment, a style value or a head noun titles share), so "sports bra" asks for bras and
        "running jacket" for jackets.
        """
        # the clauses that ask: "my nan is 78 and wants to keep active - have you got any exercise videos" -> videos
        defining = [w for c in self.request_clause(query.text).split(". ") for w in self.defining_words(c)]
        if not defining or (defining[-1] not in self.kind_words and _singular(defining[-1]) not in self.kind_words):
            return []
        kinds = [defining[-1]]
        for word in reversed(defining[:-1]):
            if word not in self.vocabulary.kinds:
                break
            kinds.insert(0, word)
        return kinds

    def is_kind(self, product: Product, kind: str) -> bool:
        """Whether the product is of this kind, by its title, style values or a single-kind category segment.

        "Women/Tops/Tees" makes a product a top and a tee; "Bras & Tanks" alone makes it neither a bra nor a tank.
        """
        words = self._kinds_of.get(product.id)
        if words is None:
            texts = [product.title, *product.attribute_values("style_general", "style")]
            for path in product.categories or (product.category,):
                texts.extend(seg for seg in path.split("/") if not re.search(r"&|,|\band\b", seg))
            words = _words_and_singulars(texts)
            self._kinds_of[product.id] = words
        return kind in words or _singular(kind) in words

    def _joined(self, word: str, defining: Sequence[str], among: frozenset[str] | None) -> bool:
        """Whether the word is half of a compound the catalog writes as one ("draw string" -> drawstring)."""
        i = defining.index(word)
        pairs = [defining[j] + defining[j + 1] for j in (i - 1, i) if 0 <= j < len(defining) - 1]
        return any(self.has(p, among) for p in pairs)

    def _missing_department(self, query: SearchQuery) -> str | None:
        """The asked department ("men") when no product of the asked kind is for it (nor for everyone)."""
        if query.gender is None:
            return None
        from assistant.search.retrieval import product_genders

        among = self._of_kind(query)
        products = [p for p in self.catalog.parents() if among is None or p.id in among]
        if any(not (g := product_genders(p)) or query.gender in g for p in products):
            return None
        return query.gender

    @staticmethod
    def defining_words(text: str) -> list[str]:
        """The words that define the product: before any purpose clause, without function words and colours."""
        low = _IDIOMS.sub(" ", text.lower().replace("’", "'"))
        low = re.sub(r"\b(?:\w+'d|would) like\b", " want ", low).replace("'s ", " ")  # "she'd like" is no purpose
        found = CatalogCoverage._defining(low)
        # Nothing before the first purpose clause ("I'm shopping for my mom, she'd like an alpaca sweater",
        # "I'm breastfeeding at the moment, do you have a nursing bra"): what follows the last request verb.
        for m in reversed(list(_REQUEST_VERB.finditer(low)) if not found else []):
            found = CatalogCoverage._defining(low[m.end():])
            if found:
                break
        return found

    @staticmethod
    def clause_words(text: str) -> list[str]:
        """The content words of a clause the shopper opens about themselves ("... I can get engraved")."""
        low = text.lower().replace("’", "'")
        m = next((m for m in _SUBJECT_CLAUSE.finditer(low) if m.start() > 0), None)
        if m is None:
            return []
        rest = low[m.end():]
        if cut := _PURPOSE_RE.search(rest):
            rest = rest[: cut.start()]
        words = _WORD_RE.findall(rest.replace("-", " "))
        return [w for w in words if len(w) > 2 and w not in _NOT_DEFINING and w not in COLOR_SYNONYMS
                and not (w.endswith("s") and w[:-1] in _SHOPPER_VERBS)  # "wants", "likes" ("warmers" stays)
                and w not in NUMBER_WORDS]

    @staticmethod
    def _defining(low: str) -> list[str]:
        low = low.strip()
        # A purpose word that opens the request opens no purpose clause: "which of your watches can track my
        # sleep", "to order a doorway pull up bar".
        cuts = [m.start() for m in (*_PURPOSE_RE.finditer(low), *_SUBJECT_CLAUSE.finditer(low)) if m.start() > 0]
        if cuts:  # "leggings with a pocket I can keep my phone in": what follows the subject is what it is for
            low = low[: min(cuts)]
        words = [w.removesuffix("'s") for w in _WORD_RE.findall(low.replace("-", " "))]
        # The word a subject opens is what the shopper does ("I cycle to work", "I'm setting up a corner", "she
        # also mentioned"); so is a participle opening the request ("getting running shorts for ...").
        plain = [w for w in words if w not in _ADVERBS]
        verbs = {b for a, b in zip(plain, plain[1:], strict=False) if a in _SUBJECTS}
        if words and re.fullmatch(r"[a-z]+(?:ing|ed)", words[0]) and len(words) > 2:
            verbs.add(words[0])
        return [w for w in words if len(w) > 2 and w not in _NOT_DEFINING and w not in COLOR_SYNONYMS
                and not (w.endswith("s") and w[:-1] in _SHOPPER_VERBS)  # "wants", "likes" ("warmers" stays)
                and not w.isdigit() and w not in NUMBER_WORDS and w not in verbs
                and not re.fullmatch(r"[a-z]{4,}ly", w)]  # "properly warm": an adverb defines nothing

    def _phrase(self, text: str, defining: Sequence[str], said: Sequence[str] = (), names: AbstractSet[str] = frozenset()
                ) -> str:
        """The defining part of the request, as said, for "We don't carry ...".

        From its first defining word (or colour) to its last: "leather jackets", "watches with a touch screen",
        "sapphire leggings in blue". A noun counted with "a" becomes plural: the one before "with", else the last
        ("a hat" -> hats, "a watch with a touch screen" -> watches with a touch screen; "nike" stays nike).
        """
        low = text.lower()
        if m := next((m for m in _PURPOSE_RE.finditer(low) if m.start() > 0), None):  # not "for my gran, ..."
            low = low[: m.start()]
        words = _WORD_RE.findall(low)
        first = next((i for i, w in enumerate(words) if w in defining or w in COLOR_SYNONYMS), 0)
        stop = next((i for i, w in enumerate(words) if i > first and w in _PHRASE_BREAKS), len(words))
        words = words[:stop]  # "a yoga mat, not very thick": the mat
        marks = [i for i, w in enumerate(words) if w in defining or w in COLOR_SYNONYMS]
        if not marks:
            return " ".join(defining)
        span = words[marks[0] : marks[-1] + 1]
        joint = next((j for j, w in enumerate(span) if j > 0 and w in ("with", "without", "that", "which")), None)
        target = joint - 1 if joint is not None else max(
            (j for j, w in enumerate(span) if w not in COLOR_SYNONYMS), default=len(span) - 1)
        noun = span[target]
        if not noun.endswith("s") and noun not in COLOR_SYNONYMS and noun not in names and _counted(noun, said):
            span[target] = plural(noun)
        return " ".join(span)

    def _sounds_like_a_catalog_word(self, word: str) -> bool:
        """A word ASR may have written for a catalog word that sounds the same ("layla tea" for the Layla Tee)."""
        if len(word) <= 2 or not word.isalpha():
            return False
        if self._sounds is None:  # metaphone -> the title, category and brand words with it, computed once
            sounds: dict[str, list[str]] = {}  # (not attribute values: "hat" is no misheard climate "Hot")
            brands = _words_and_singulars(p.brand or "" for p in self.catalog)
            for w in self.kind_words | brands:
                sounds.setdefault(jellyfish.metaphone(w), []).append(w)
            self._sounds = sounds
        alike = self._sounds.get(jellyfish.metaphone(word), [])
        return any(len(w) > 2 and w.isalpha() for w in alike) and any(
            w[:1] == word[:1] and fuzz.ratio(w, word) >= SOUND_ALIKE_SPELLING for w in alike)

    def _named_title_words(self, text: str) -> set[str]:
        """The title words of the products whose line names the text says ("layla" -> layla, tee)."""
        said = set(_WORD_RE.findall(text.lower()))
        ids = {pid for line in said & set(self.vocabulary.lines) for pid in self.vocabulary.lines[line]}
        return {w for pid in ids if (p := self.catalog.get(pid)) is not None for w in _WORD_RE.findall(p.title.lower())}

    @staticmethod
    def _sounds_like_one_of(word: str, words: set[str]) -> bool:
        """Whether the word is one of `words` written as it sounds ("tea" for tee)."""
        return any(jellyfish.metaphone(word) == jellyfish.metaphone(w) and w[:1] == word[:1]
                   and fuzz.ratio(w, word) >= SOUND_ALIKE_SPELLING for w in words if len(w) > 2)

    def _synonym_of_a_kind(self, word: str) -> bool:
        if self.encoder is None or not self._kinds:
            return False
        if self._kind_vectors is None:
            self._kind_vectors = np.asarray(self.encoder.encode(self._kinds), dtype=np.float32)
        vector = np.asarray(self.encoder.encode_query(word), dtype=np.float32)
        return bool(float(np.max(self._kind_vectors @ vector)) >= SYNONYM_COSINE)
