"""Product queries: the `SearchQuery` model, a slot parser for spoken requests, and the `ProductHit` result.

`parse_query` turns "men's black hoodie under fifty dollars" into ``SearchQuery(text="black hoodie",
max_price=50.0, color="black", gender="men")``; given the catalog's `QueryVocab` it also recognises brands and
categories. Searchers (`assistant.search.retrieval.HybridRetriever`, and `EmbeddingSearcher`, its text-only form)
apply every filter hard: a result over ``max_price`` is never returned.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from assistant.catalog.model import Catalog, Product
from assistant.core.signals import SessionSignals

log = logging.getLogger(__name__)

# --- vocabularies ----------------------------------------------------------------------------------------------

COLOR_SYNONYMS: dict[str, str] = {
    "black": "black",
    "white": "white",
    "navy": "navy",
    "navy blue": "navy",
    "blue": "blue",
    "red": "red",
    "green": "green",
    "grey": "grey",
    "gray": "grey",
    "beige": "beige",
    "tan": "beige",
    "khaki": "beige",
    "cream": "beige",
    "pink": "pink",
    "yellow": "yellow",
    "orange": "orange",
    "purple": "purple",
    "violet": "purple",
    "brown": "brown",
    "burgundy": "red",
    "maroon": "red",
    "olive": "green",
}
"""Spoken colour words to canonical colour names (lower case)."""
# Every colour word as one regex alternation, longest first ("navy blue" before "navy")
COLOR_ALTERNATION = "|".join(sorted(COLOR_SYNONYMS, key=len, reverse=True))

_SIZE_WORDS: dict[str, str] = {
    "extra small": "XS",
    "xs": "XS",
    "xxs": "XXS",
    "small": "S",
    "medium": "M",
    "large": "L",
    "extra large": "XL",
    "xl": "XL",
    "xxl": "XXL",
    "2xl": "XXL",
    "extra extra large": "XXL",
    "3xl": "XXXL",
    "xxxl": "XXXL",
    "2x": "XXL",  # plus sizes as shoppers write them
    "3x": "XXXL",
    "4xl": "4XL",
    "4x": "4XL",
    "5xl": "5XL",
    "5x": "5XL",
    "s": "S",
    "m": "M",
    "l": "L",
}

_UNITS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen".split()
    )
}
_TENS = {
    w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
}
_SCALES = {"hundred": 100, "thousand": 1000}
_NUMBER_WORDS = set(_UNITS) | set(_TENS) | set(_SCALES)
NUMBER_WORDS = frozenset(_NUMBER_WORDS)  # spelled-out numbers the parser reads ("zero" .. "ninety", "hundred", ...)


def _money_re(name: str) -> str:
    # "49.99", "$49", "49 dollars", and the spoken "forty nine ninety nine" (-> "49 99") as 49.99.
    return rf"\$?\s*(?P<{name}>\d+(?:\.\d{{1,2}})?)(?:\s+(?P<{name}_c>\d\d)(?![\d.]))?(?:\s*(?:dollars?|bucks|usd))?"


_BETWEEN_RE = re.compile(rf"\b(?:between|from)\s+{_money_re('a')}\s+(?:and|to)\s+{_money_re('b')}")
_MAX_RE = re.compile(
    r"\b(?:for\s+|that'?s\s+|costing\s+)?(?:under|below|less than|cheaper than|no more than|not more than|at most|up to|max(?:imum)?(?: of)?|"
    rf"within|lower than|beneath|no higher than|not over|no pricier than)\s+{_money_re('a')}"
)
# The amount first: "fifty bucks or less", "$40 max", "30 dollars and under". Only a marked amount ($, dollars,
# bucks) counts: "two or less" is not a price.
_MARKED = r"(?:^|(?<=\s))(?=\$|\d[\d.]*(?:\s+\d\d)?\s*(?:dollars?|bucks|usd)\b)"
_MAX_AFTER_RE = re.compile(
    rf"(?:\b(?:for|at|costing|priced at)\s+)?{_MARKED}{_money_re('a')}\s+"
    r"(?:or less|or under|or below|or cheaper|and under|and below|max(?:imum)?|tops|at the most)\b"
)
# A budget: "only want to spend like 30 max", "my budget is 40", "can afford about 25" (the verb says it is money)
_BUDGET_RE = re.compile(
    r"\b(?:spend|spending|budget(?:\s+is|\s+of|'s)?|afford|pay|paying)\s+(?:(?:like|about|around|only|up to|at most|"
    rf"maybe|roughly|max(?:imum)?)\s+)*{_money_re('a')}(?:\s+(?:max(?:imum)?|tops|at (?:the )?most|or (?:less|so)))?"
    r"(?![\d.%])(?!\s*(?:minutes?|hours?|days?|weeks?|months?|years?|%|percent))"
)
_MIN_AFTER_RE = re.compile(
    rf"(?:\b(?:for|at|costing|priced at)\s+)?{_MARKED}{_money_re('a')}\s+"
    r"(?:or more|or over|or above|and up|and over|and above|minimum)\b"
)
_MIN_RE = re.compile(
    rf"\b(?:over|above|more than|at least|greater than|higher than|starting at|no less than|minimum(?: of)?)\s+{_money_re('a')}"
)
_SIZE_NUMBER_RE = re.compile(r"\bsize\s+(\d{1,2}(?:\.5)?)(\s+and a half)?\b|"
                             # "im a 29", "she's a 31", "he wears a 32" (not "a 29 year old")
                             r"\b(?:(?:i'?m|i am|im|she'?s|he'?s|she is|he is|wears?|wearing)\s+(?:a|an)\s+(?:size\s+)?"
                             r"(\d{2})\b(?!\s*(?:-|\s)?(?:years?|yrs?|yo|dollars?|bucks|%|percent|minutes?|hours?))|"
                             r"\ba\s+(\d{2})\s+(?:works|is fine|would work|will do|fits))|\b(?:a\s+)?(\d{2})()(?:\s*(?:inch|in|\"))?"
                             r"\s+(?:waist|size)\b|\bwaist\s+(?:size\s+)?(?:is\s+)?(\d{2})()\b")  # "she's a 31 waist"
_SIZE_WORD_ALT = (
    "extra extra large|extra large|extra small|small|medium|large|xxs|xs|xxl|xxxl|[2-5]xl|[2-5]x|xl|s|m|l"
)
_SIZE_WORD_RE = re.compile(
    rf"\b(?:in\s+(?:a\s+)?(?:size\s+)?|size\s+|(?:i\s+)?(?:wear|wears|am|i'm|im|she's|he's|she is|he is)\s+"
    r"(?:a\s+|an\s+)?(?:size\s+)?)"
    rf"({_SIZE_WORD_ALT})\b|\b({_SIZE_WORD_ALT})\s+size\b"
    r"|\b(extra extra large|extra large|extra small|xxs|xs|xxl|xxxl|[2-5]xl|[2-5]x|xl)\b"
    r"(?!\s+(?:a|an|per|every|each)\s+(?:day|week|month|year|time))"  # "hot yoga 3x a week" says how often
)
# "in a 31", "in a 29 please": a bare number after "in a" is a size (never a price: those say dollars or $)
_SIZE_IN_NUMBER_RE = re.compile(
    r"\bin\s+(?:an?\s+)?(\d{1,2}(?:\.5)?)\b(?![.,]\d)(?!\s*(?:dollars?|bucks|usd|cents?|%|percent|colou?rs?|"
    r"pieces?|pcs|packs?|items?|inch|inches|in\b|foot|feet|ft|lbs?|kg|pounds?|liters?|litres?|l\b|oz|ounces?|"
    r"minutes?|hours?|days?|weeks?|months?|years?))"
)
# "add a large in yellow", "I'll take a medium": a size word as the thing taken (no noun after it)
_SIZE_TAKEN_RE = re.compile(
    r"\b(?:an?|one)\s+(extra extra large|extra large|extra small|small|medium|large|xxs|xs|xxl|xl)\b"
    r"(?=\s*(?:in|please|to|for|and|then|$))"
)
# "in gray, medium": a size word right after a colour (or a comma) at the end of the request
_TERSE_SIZE_RE = re.compile(r"(?:^|[.,;]\s*)(xxs|xs|s|m|l|xl|xxl|extra small|extra large|small|medium|large)\s*(?:[.,;!?]|$)", re.IGNORECASE)
_SIZE_ALONE_RE = re.compile(
    r"(?:,|\b(?:" + COLOR_ALTERNATION + r")(?:\s+then)?)\s*"  # "in yellow then, small" (the comma gone in ASR text)
    r"(extra extra large|extra large|extra small|small|medium|large)\s*(?:please)?\s*[.!?]?\s*$"
)
_COLOR_RE = re.compile(r"\b(" + COLOR_ALTERNATION + r")\b")
_FILLER_RE = re.compile(
    r"^(?:(?:hey|hi|ok|okay|um|uh|so|please|can you|could you|would you|will you|i'?m looking for|i am looking for|"
    r"looking for|i want|i'?d like|i would like|i need|show me|find me|find|get me|search for|look for|"
    r"do you have|have you got|are there|is there|any|some|a pair of|pair of|a|an|the)\s+)+"
)


def words_to_numbers(text: str) -> str:
    """Replace spelled-out numbers with digits: "forty nine" -> "49", "a hundred and fifty" -> "150".

    The input is lower-cased; hyphens between words become spaces and commas inside numbers are dropped.
    """
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text.lower())
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)
    tokens = text.split()
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i].strip(".,!?;:")
        nxt = tokens[i + 1].strip(".,!?;:") if i + 1 < len(tokens) else ""
        if tok in _NUMBER_WORDS - set(_SCALES) or (tok == "a" and nxt in _SCALES):
            value, consumed = _parse_number(tokens, i)
            after = tokens[i + consumed].strip(".,!?;:") if i + consumed < len(tokens) else ""
            if consumed == 1 and tok == "one" and after not in ("dollar", "dollars", "buck", "bucks"):
                out.append(tokens[i])  # "the red one" is a pronoun, not a number
                i += 1
                continue
            trail = tokens[i + consumed - 1][len(tokens[i + consumed - 1].rstrip(".,!?;:")) :]
            out.append(f"{value}{trail}")
            i += consumed
        else:
            out.append(tokens[i])
            i += 1
    return " ".join(out)


def _parse_number(tokens: list[str], start: int) -> tuple[int, int]:
    """Parse the number-word run starting at `start`; return (value, tokens consumed)."""
    total = current = 0
    prev: str | None = None
    i = start
    while i < len(tokens):
        raw = tokens[i]
        tok = raw.strip(".,!?;:")
        if tok == "a" and prev is None:
            kind = "a"
        elif tok in _UNITS:
            kind = "unit" if 0 < _UNITS[tok] < 10 else "teen" if _UNITS[tok] >= 10 else "zero"
        elif tok in _TENS:
            kind = "tens"
        elif tok in _SCALES:
            kind = tok
        elif (
            tok == "and"
            and prev in _SCALES
            and i + 1 < len(tokens)
            and tokens[i + 1].strip(".,") in _UNITS | _TENS
        ):
            i += 1
            continue
        else:
            break
        allowed = {
            "a": prev is None,
            "zero": prev is None,
            "unit": prev in (None, "tens", "hundred", "thousand"),
            "teen": prev in (None, "hundred", "thousand"),
            "tens": prev in (None, "hundred", "thousand"),
            "hundred": prev in ("a", "unit", "teen", "tens"),
            "thousand": prev is not None and prev != "thousand",
        }[kind]
        if not allowed:
            break
        if kind in ("unit", "teen", "zero"):
            current += _UNITS[tok]
        elif kind == "tens":
            current += _TENS[tok]
        elif kind == "hundred":
            current = max(current, 1) * 100
        elif kind == "thousand":
            total += max(current, 1) * 1000
            current = 0
        prev = kind
        i += 1
        if raw != tok:  # punctuation ends the number ("fifty, please")
            break
    return total + current, max(i - start, 1)


def canonical_color(name: str) -> str:
    """Canonical lower-case colour name ("Gray" -> "grey"); unknown names are lower-cased."""
    key = " ".join(name.lower().split())
    return COLOR_SYNONYMS.get(key, key)


def canonical_size(size: str) -> str:
    """Canonical size label: "medium" -> "M", "9.0" -> "9", "xl" -> "XL"."""
    key = " ".join(str(size).lower().split())
    if key in _SIZE_WORDS:
        return _SIZE_WORDS[key]
    try:
        number = float(key)
    except ValueError:
        return str(size).strip().upper()
    return f"{number:g}"


@dataclass(frozen=True)
class SearchQuery:
    """A product query with hard filters.

    Attributes:
        text: What to look for, in words (the semantic part).
        k: How many results at most.
        max_price: Upper price limit, inclusive.
        min_price: Lower price limit, inclusive.
        color: Required colour (canonical lower-case name, e.g. ``black``).
        size: Required size (canonical, e.g. ``M`` or ``9.5``).
        category: Required category: a word the shopper used for it ("hoodie", "running shoe") or a category path.
        brand: Required brand, as the catalog spells it.
        gender: Required department: ``men``, ``women`` or ``kids`` (unisex products match all three).
        goes_with: What the products must go with, in the shopper's words ("a grey hoodie", "the nona tank"): the
            results are then of the kinds that complement it (`assistant.search.complements`), never of its kind
            unless the request names that kind.
    """

    text: str
    k: int = 5
    max_price: float | None = None
    min_price: float | None = None
    color: str | None = None
    size: str | None = None
    category: str | None = None
    brand: str | None = None
    gender: str | None = None
    goes_with: str | None = None

    @property
    def asked_text(self) -> str:
        """The words that say what is asked for: the text, or a complement request's part before what it goes with.

        "what shorts go with the bella tank" -> "what shorts"; "" when the text no longer says it.

        The products' likeness to what they go with is ranked on its own (``goes_with``); matching the whole request
        by its words as well would favour products like the named one, the opposite of the request.
        """
        if self.goes_with is None:
            return self.text
        split = complement_request(self.text)
        return split[0] if split is not None else ""

    @property
    def has_filters(self) -> bool:
        """Whether any hard filter is set."""
        return any(
            v is not None
            for v in (
                self.max_price,
                self.min_price,
                self.color,
                self.size,
                self.category,
                self.brand,
                self.gender,
            )
        )


def _amount(m: re.Match[str], name: str) -> float:
    cents = m[f"{name}_c"]
    whole = m[name]
    return float(f"{whole}.{cents}") if cents and "." not in whole else float(whole)


# --- catalog vocabulary: categories, brands, departments -----------------------------------------------------

GENDERS = ("men", "women", "kids")
_GENDER_RE = re.compile(
    r"\b(?:for\s+(?:a\s+|the\s+)?)?(?P<g>men'?s|man'?s|men|man|male|gents|guys|women'?s|woman'?s|women|woman|"
    r"ladies|lady'?s|female|girls'?|girl'?s|girl|boys'?|boy'?s|boy|kids'?|kid'?s|kid|children'?s|children|youth)"
    r"(?=\s|$)"
)
_TRAILING_ADDRESS = frozenset({"men", "man", "guys", "gents", "ladies", "girls", "boys", "kids", "lady", "girl"})
_GENDER_WORDS: dict[str, str] = {
    "men": "men", "man": "men", "male": "men", "gent": "men", "guy": "men",
    "women": "women", "woman": "women", "ladie": "women", "lady": "women", "female": "women",
    "girl": "kids", "boy": "kids", "kid": "kids", "children": "kids", "youth": "kids",
}  # fmt: skip


# The person a product is for, which says the department: "get my dad a watch", "for my wife", "for him". The word is
# kept in the query text (it may still say more: "a gift for my girlfriend").
# (the people also tell what the shopper says of their life from what they ask for: assistant.conversation.coverage)
HIS_PEOPLE = frozenset("dad daddy father husband hubby boyfriend brother grandpa grandad granddad grandfather uncle "
                       "fiance".split())
HER_PEOPLE = frozenset("mom mum mommy mummy mother wife girlfriend sister grandma gran granny nan nana grandmother "
                       "aunt fiancee".split())
_RECIPIENT_RE = re.compile(r"\b(?:(?:my|our|his|her)\s+(?P<who>" + "|".join(sorted(HIS_PEOPLE | HER_PEOPLE)) +
                           r")(?:'?s)?\b|\bfor\s+(?P<pro>him|her)\b(?!\s+(?:own|size|colou?r)))")


_NEGATED_RE = re.compile(r"\b(?:no|without|w/o|not)\s+(?:any\s+|a\s+|an\s+)?[a-z]+(?:\s+[a-z]+)?")


def canonical_gender(word: str) -> str | None:
    """``men``, ``women`` or ``kids`` for a department word ("Men's", "ladies", "Boys"); None for others (unisex)."""
    key = word.strip().lower().replace("'", "")
    return _GENDER_WORDS.get(key) or (_GENDER_WORDS.get(key[:-1]) if key.endswith("s") else None)


def _singular(word: str) -> str:
    if len(word) > 3 and re.search(r"(ss|sh|ch|x)es$", word):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def term_text(text: str) -> str:
    """Lower-case, punctuation-free, singularised words, space-padded for substring matching."""
    words = re.findall(r"[a-z0-9]+", text.lower().replace("'s", ""))
    return " " + " ".join(_singular(w) for w in words) + " "


# Units and size letters that follow a measure in a title ("Sprite Stasis Ball 55 cm", "... Strap 6 foot").
MEASURE_UNITS = frozenset("cm mm m in inch inches ft foot feet lb lbs kg g oz l ml xs s m xl xxl".split())
# How shoppers say (or ASR writes) a catalog's category word: each alias names the same categories as its term.
SPOKEN_CATEGORY_ALIASES: dict[str, tuple[str, ...]] = {
    "tee": ("t shirt", "tee shirt", "tshirt"),
    "t shirt": ("tee", "tee shirt", "tshirt"),
    "sweatshirt": ("sweat shirt",),
    "sweatpant": ("sweat pant",),
    "hoodie": ("hoody",),
    "legging": ("leggin",),
}


@dataclass(frozen=True)
class QueryVocab:
    """Words a catalog gives meaning to: its category terms and brand names.

    Attributes:
        category_terms: A word or phrase a shopper may say ("hoodie", "running shoe", "shoe") to the category paths
            it names. Department segments ("Men", "Women") are left out: they are the gender filter.
        brands: Lower-case brand name to the brand as the catalog spells it.
    """

    category_terms: dict[str, frozenset[str]]
    brands: dict[str, str]

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> QueryVocab:
        """The vocabulary of the catalog's shoppable products."""
        products = catalog.parents()
        return cls.from_products(products)

    @classmethod
    def from_products(cls, products: Iterable[Product]) -> QueryVocab:
        """The vocabulary of these products (categories and brands)."""
        terms: dict[str, set[str]] = {}
        brands: dict[str, str] = {}
        paths: set[str] = set()
        products = list(products)

        def leaf(path: str) -> str:
            return path.rstrip("/").rsplit("/", 1)[-1].strip().lower()

        primary_leaves = {leaf(p.category) for p in products if p.category}
        secondary: set[str] = set()
        for product in products:
            # A secondary path names a kind only by its leaf, and only where that leaf is some product's own
            # category ("Promotions/Pants" is pants); a merchandising collection ("Collections/Erin Recommends")
            # names no kind of product.
            for c in product.categories or (product.category,):
                if c == product.category or not product.category:
                    paths.add(c)
                elif leaf(c) in primary_leaves:
                    secondary.add(c)
            if product.brand:
                brands.setdefault(" ".join(product.brand.lower().split()), product.brand)
        for path in paths | secondary:
            segments = [s for s in path.split("/") if s.strip()]
            for segment in segments if path in paths else segments[-1:]:
                if canonical_gender(segment) is not None:
                    continue
                for part in re.split(r"\s*(?:&|,|\band\b)\s*", segment):
                    term = term_text(part).strip()
                    if not term:
                        continue
                    terms.setdefault(term, set()).add(path)
                    head = term.rsplit(" ", 1)[-1]
                    if head != term and len(head) > 2:
                        terms.setdefault(head, set()).add(path)
        # Kinds the titles name but no category does ("Emma Leggings", "Sahara Leggings" filed under Pants): the
        # last title word that ends at least two titles, all of one category, names that category.
        heads: dict[str, set[str]] = {}
        counts: dict[str, int] = {}
        for product in products:
            words = [w for w in re.findall(r"[a-z]+", product.title.lower()) if w not in MEASURE_UNITS]
            if len(words) > 1 and product.category and len(words[-1]) > 2:
                head = _singular(words[-1])
                heads.setdefault(head, set()).add(product.category)
                counts[head] = counts.get(head, 0) + 1
        materials = {_singular(w) for p in products for k, v in p.attributes.items()
                     if "material" in k or "fabric" in k
                     for w in re.findall(r"[a-z]+", " ".join(map(str, v if isinstance(v, list | tuple) else [v])).lower())}
        for head, cats in heads.items():  # (not a material: "... Hooded Fleece" is fleece, no kind of its own)
            if head not in terms and head not in materials and counts[head] >= 2 and len(cats) == 1:
                terms[head] = set(cats)
        for term, aliases in SPOKEN_CATEGORY_ALIASES.items():
            for alias in aliases if term in terms else ():
                terms.setdefault(alias, set()).update(terms[term])
        return cls({t: frozenset(p) for t, p in terms.items()}, brands)

    def category_term(self, text: str) -> str | None:
        """The longest category term in `text`, or None."""
        padded = term_text(text)
        found = [t for t in self.category_terms if f" {t} " in padded]
        return max(found, key=lambda t: (len(t), t)) if found else None

    def categories_for(self, text: str) -> set[str] | None:
        """Category paths that `text` names (intersected over the terms it uses), or None for no restriction.

        `text` may also be a category path itself (``Men/Tops/Hoodies``), which names that path and those under it.
        """
        if "/" in text:
            prefix = text.strip().strip("/").lower()
            paths = {
                p
                for ps in self.category_terms.values()
                for p in ps
                if p.lower() == prefix or p.lower().startswith(prefix + "/")
            }
            if paths:
                return paths
        padded = term_text(text)
        matched = [set(paths) for term, paths in self.category_terms.items() if f" {term} " in padded]
        if not matched:
            return None
        common = set.intersection(*matched)
        return common or set.union(*matched)

    def brand_in(self, text: str) -> tuple[str, re.Match[str]] | None:
        """The longest catalog brand named in `text` (lower case), with its match."""
        for key in sorted(self.brands, key=len, reverse=True):
            if m := re.search(rf"(?<![a-z0-9]){re.escape(key)}(?:'s)?(?![a-z0-9])", text):
                return self.brands[key], m
        return None


# "What goes with a grey hoodie", "shorts to go with this tank", "a bra to wear under the nona tank", "I got the
# yoga bag, what should I put in it": the words after
# the phrase name what the products must go with; the kind, colour and size asked for come from the words before it.
_GOES_WITH_RE = re.compile(
    r"\b(?:(?:goes|go|going|look|looks|pairs?|match|matches|work|works)\s+(?:well\s+|nicely\s+|good\s+|great\s+)?with"
    r"|(?:match|matches|complement|complements)(?=\s+(?:the|my|this|that|a|an|her|his|our)\b)"
    r"|(?:wear|throw|put|layer)\s+(?:it\s+|them\s+|on\s+)?(?:with|under|over|beneath|underneath)"
    r"|(?:put|pack|keep|store)\s+(?:in(?:side)?|into)(?=\s+(?:it|them|the|my|this|that|a|an|her|his|our)\b)"
    r"|carry\s+in(?:side)?(?=\s+(?:it|them)\b)"
    r"|use\s+(?:it\s+|them\s+)?(?:with|alongside)"
    r"|(?:to\s+)?complete\s+(?:the|my|this)\s+(?:outfit|look)\s+(?:with|of|for)?)\s+(?P<anchor>.+)$"
)
# "I've got a grey hoodie, what bottoms would go with it": the pronoun is the thing the shopper said they have.
_HAVE_RE = re.compile(
    r"\b(?:i(?:'ve|\s+have)?\s+(?:just\s+|already\s+)?(?:got|bought|have|own|ordered|picked\s+up)|i\s+love"
    r"|i'?m\s+wearing|i\s+am\s+wearing)\s+(?P<thing>[^,.;?!]+?)\s*"
    r"(?:[,.;?!]|\b(?:and|so|but|what|which|how|anything|any|do|does|can|could|should|would|is|are)\b|$)"
)
_ANCHOR_FILLER_RE = re.compile(r"^(?:(?:a|an|the|my|this|that|these|those|our|her|his|new|pair\s+of)\s+)+")
_PRONOUN_FIRST_RE = re.compile(r"\s*(it|them|this one|that one|mine)\s+(\S.*)$")  # a pronoun names it whole
_PRONOUN_ANCHOR = frozenset({"it", "them", "this", "that", "these", "those", "this one", "that one", "mine"})
_NOTHING_NAMED = frozenset({"everything", "anything", "all", "whatever", "most things", "every outfit", "any outfit",
                            "my style", "my size"})  # "goes with everything": versatile, not a complement


# "Can I wear it over a sports bra?", "does it go with jeans": a yes/no question about the product on screen.
_ASKS_ABOUT_IT_RE = re.compile(r"^(?:(?:so|and|but|ok|okay|hmm|um|well)\s+)*(?:can|could|should|would|will|do|does|is|"
                               r"would|might)\s+(?:i|we|you|it|this|that|they|these|those)\b")
_OBJECT_PRONOUN_RE = re.compile(r"^[a-z]+\s+(?:it|them|this|that|these|those)\s")
# "Should I go with the cheaper one", "I'll go with the blue": the shopper choosing, not asking what goes with it.
_CHOOSING_RE = re.compile(r"\b(?:i|we|let'?s|i'?ll|we'?ll|i'?d|we'?d)\s+(?:(?:will|would|shall|should|might|may|just|"
                          r"probably|really|think|guess|want|wanna|gonna|going|to)\s+){0,3}$")


def complement_request(text: str) -> tuple[str, str] | None:
    """(what is asked for, what it must go with) of a request for complements, as said, or None.

    "shorts to go with this tank" -> ("shorts to", "tank"); "what goes with it" -> ("what", "it").
    """
    low = text.lower()
    m = _GOES_WITH_RE.search(low)
    if m is None:
        return None
    if low[m.start() :].startswith("go with") and _CHOOSING_RE.search(low[: m.start()]):
        return None
    if _ASKS_ABOUT_IT_RE.match(low) and _OBJECT_PRONOUN_RE.match(low[m.start() :]):
        return None  # "can I wear it over a sports bra?": a question about the product on screen
    # "a tank to go with it, red too, she's a medium": what it goes with ends at the clause; the rest is asked
    said, _, more = m["anchor"].partition(",") if "," in m["anchor"] else (m["anchor"], "", "")
    if (p := _PRONOUN_FIRST_RE.match(said)) is not None:  # "to go with it red too" (a transcript has no commas)
        said, more = p[1], p[2] + ("," + more if more else "")
    anchor = _ANCHOR_FILLER_RE.sub("", re.sub(r"[!?.,;:]+", " ", said).strip()).strip()
    if anchor in _NOTHING_NAMED or said.strip().rstrip("?.!") in _NOTHING_NAMED:
        return None
    asked = text[: m.start()].strip()
    if more.strip():  # the words after the clause are asked for too
        asked = f"{asked} {text[len(text) - len(more) :].strip()}".strip()
    if refers_back(anchor) and (have := _HAVE_RE.search(low[: m.start()])) is not None:
        thing = _ANCHOR_FILLER_RE.sub("", have["thing"]).strip()
        if thing and not refers_back(thing):
            return text[have.end() : m.start()].strip(" ,"), thing
    return (asked, anchor or m["anchor"].strip())


def refers_back(anchor: str) -> bool:
    """Whether what a complement request names is a pronoun ("it", "this one"): the product on screen."""
    return anchor.strip().lower() in _PRONOUN_ANCHOR


def goes_with_split(text: str) -> tuple[str, str] | None:
    """`complement_request`, unless it names no product ("what goes with it": the dialogue resolves the pronoun)."""
    split = complement_request(text)
    return None if split is None or refers_back(split[1]) else split


def parse_query(text: str, vocab: QueryVocab | None = None) -> SearchQuery:
    """Parse a spoken or typed request into a `SearchQuery`.

    Understands prices ("under fifty dollars", "under $50", "less than 40", "below 30 bucks", "fifty bucks or less",
    "between 20 and 40 dollars", "over 100", "$80 and up", numbers in words up to the thousands), colours from `COLOR_SYNONYMS`, and sizes
    (XS..XXL, "small/medium/large", "size 9", "size nine and a half"), departments ("men's", "for women", "kids")
    and, given the catalog's `vocab`, brands and categories. Prices, sizes, departments and brands leave the text;
    colours and categories stay in it (they describe the item). The remaining words, without leading fillers such
    as "show me", become `SearchQuery.text`.

    Args:
        text: The request, e.g. an ASR transcript.
        vocab: The catalog's vocabulary; without it no brand or category is recognised.

    Returns:
        The parsed query.
    """
    if (split := goes_with_split(text)) is not None:
        # The kind, colour and size asked for come from the words before the anchor; prices from either part.
        asked, anchor = split
        query, rest = parse_query(asked, vocab), parse_query(anchor, vocab)
        return replace(query, text=" ".join(text.split()), goes_with=rest.text or anchor,
                       max_price=query.max_price if query.max_price is not None else rest.max_price,
                       min_price=query.min_price if query.min_price is not None else rest.min_price,
                       gender=query.gender or rest.gender)
    norm = words_to_numbers(text)
    norm = re.sub(
        r"(\d+)\s+dollars?\s+and\s+(\d{1,2})\s+cents?", lambda m: f"{m[1]}.{int(m[2]):02d} dollars", norm
    )
    terse_size = _TERSE_SIZE_RE.search(norm)  # "hoodie. grey. M.": a size letter said on its own
    norm = re.sub(r"[!?;:,]", " ", norm)
    norm = re.sub(r"\.(?!\d)", " ", norm)
    max_price = min_price = None
    if m := _BETWEEN_RE.search(norm):
        low, high = sorted((_amount(m, "a"), _amount(m, "b")))
        min_price, max_price = low, high
        norm = norm[: m.start()] + " " + norm[m.end() :]
    if max_price is None and (m := _MAX_RE.search(norm) or _MAX_AFTER_RE.search(norm) or _BUDGET_RE.search(norm)):
        max_price = _amount(m, "a")
        norm = norm[: m.start()] + " " + norm[m.end() :]
    if min_price is None and (m := _MIN_RE.search(norm) or _MIN_AFTER_RE.search(norm)):
        min_price = _amount(m, "a")
        norm = norm[: m.start()] + " " + norm[m.end() :]
    size = None
    if m := _SIZE_NUMBER_RE.search(norm):
        number, half = (m[1], m[2]) if m[1] else (next(g for g in (m[3], m[4], m[5], m[7]) if g), None)
        size = canonical_size(number + (".5" if half and "." not in number else ""))
        norm = norm[: m.start()] + " " + norm[m.end() :]
    elif m := _SIZE_WORD_RE.search(norm) or _SIZE_IN_NUMBER_RE.search(norm) or _SIZE_TAKEN_RE.search(norm):
        size = canonical_size(next(g for g in m.groups() if g))
        norm = norm[: m.start()] + " " + norm[m.end() :]
    elif m := _SIZE_ALONE_RE.search(norm):  # only the size word leaves: the colour before it stays
        size = canonical_size(m[1])
        norm = norm[: m.start(1)] + " " + norm[m.end(1) :]
    elif terse_size is not None:
        size = canonical_size(terse_size[1])
        norm = re.sub(rf"(?<![a-z']){terse_size[1]}(?![a-z'])", " ", norm, count=1)
    gender = None
    m = _GENDER_RE.search(norm)
    if m and not m[0].startswith("for") and "'" not in m["g"] and not m["g"].endswith("s'") and \
            not norm[m.end():].strip() and m.start() > 0 and m["g"] in _TRAILING_ADDRESS:
        m = None  # "what about running shorts, men?", "any hoodies guys": the shopper addresses someone
    if m and "'" in m["g"] and re.search(r"\b(?:my|our|your|his|her|their)\s+$", norm[: m.start()]):
        m = None  # "at my kid's soccer game": someone in the shopper's life, not a department
    if m:
        gender = canonical_gender(m["g"])
        norm = norm[: m.start()] + " " + norm[m.end() :]
    elif r := _RECIPIENT_RE.search(norm):  # "a watch for my dad": for whom says which department
        gender = "men" if r["who"] in HIS_PEOPLE or r["pro"] == "him" else "women"
    brand = category = None
    if vocab is not None:
        if found := vocab.brand_in(norm):
            brand, m = found
            norm = norm[: m.start()] + " " + norm[m.end() :]
        # The kind asked for comes before any purpose: "a sports watch for marathon training" is a watch
        asked = re.split(r"\b(?:for|to|when|while)\b", norm, maxsplit=1)[0]
        wanted = _NEGATED_RE.sub(" ", norm)  # "videos I can do with no equipment" asks for no equipment
        category = vocab.category_term(_NEGATED_RE.sub(" ", asked)) or vocab.category_term(wanted)
    color = canonical_color(m[1]) if (m := _COLOR_RE.search(norm)) else None
    cleaned = _FILLER_RE.sub("", " ".join(norm.split()))
    cleaned = re.sub(r"\s+(?:please|thanks|thank you)$", "", cleaned).strip()
    return SearchQuery(
        text=cleaned or " ".join(text.split()),
        max_price=max_price,
        min_price=min_price,
        color=color,
        size=size,
        category=category,
        brand=brand,
        gender=gender,
    )


# --- results -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductHit:
    """One search result.

    Attributes:
        product: The shoppable product (a parent for variant catalogs).
        score: Cosine similarity between query and product text.
        reason: Why it was returned, in words.
        variant: The variant matching the requested colour/size/price, for variant catalogs.
        near_miss: Empty for a product that meets every constraint of the query; for a close alternative offered
            because few or none did (`relaxed_query`), the constraints it misses (`RELAXABLE`: ``colour``,
            ``size``, ``price``). Replies must not present such a product as meeting them.
    """

    product: Product
    score: float
    reason: str
    variant: Product | None = None
    near_miss: tuple[str, ...] = ()

    @property
    def price(self) -> float:
        """The price that satisfied the filters (the variant's, if any)."""
        return self.variant.price if self.variant is not None else self.product.price


RELAXABLE: tuple[str, ...] = ("colour", "size", "price")  # constraints a near miss may break; never category/brand
_RELAXABLE_FIELDS: dict[str, tuple[str, ...]] = {  # each relaxable constraint's SearchQuery fields
    "colour": ("color",),
    "size": ("size",),
    "price": ("max_price", "min_price"),
}


def set_constraints(query: SearchQuery) -> tuple[str, ...]:
    """The relaxable constraints (`RELAXABLE`) `query` sets, in that order."""
    return tuple(n for n in RELAXABLE if any(getattr(query, f) is not None for f in _RELAXABLE_FIELDS[n]))


def without_constraints(query: SearchQuery, names: Iterable[str]) -> SearchQuery:
    """`query` with the relaxable constraints `names` dropped (the rest, and category, brand and words, kept)."""
    dropped: dict[str, Any] = {f: None for n in names for f in _RELAXABLE_FIELDS[n]}
    return replace(query, **dropped)


def relaxed_query(query: SearchQuery) -> SearchQuery | None:
    """`query` without its colour, size and price limits, or None when it has none of them.

    What a close alternative ("no blue one, but the Hera hoodie comes in grey") must still match: the category,
    brand, department and words.
    """
    names = set_constraints(query)
    return without_constraints(query, names) if names else None


def constraint_tests(query: SearchQuery) -> dict[str, SearchQuery]:
    """For each relaxable constraint `query` sets, the relaxed query with that constraint alone put back.

    A product that fails one of these misses that constraint (`ProductHit.near_miss`).
    """
    names = set_constraints(query)
    return {name: without_constraints(query, [n for n in names if n != name]) for name in names}


class ProductSearcher(Protocol):
    """What the turn, the dialogue and ``POST /v1/search`` search with.

    `assistant.search.retrieval.HybridRetriever` (retrieval alone), ``NearMissSearcher`` (with close alternatives)
    and `assistant.search.rerank.RankedSearcher` (the learned ranker's order) implement it.
    """

    @property
    def catalog(self) -> Catalog | None:
        """The catalog the searcher indexes (None: a test double without one)."""
        ...

    @property
    def vocab(self) -> QueryVocab | None:
        """The catalog's brands and categories, for `parse_query`."""
        ...

    @property
    def ranked(self) -> bool:
        """Whether a learned ranker orders the hits, so that ``use_ranker`` and ``signals`` change them."""
        ...

    def search(self, query: SearchQuery, *, use_ranker: bool = True,
               signals: SessionSignals | None = None) -> list[ProductHit]:
        """Up to ``query.k`` hits, best first; ``use_ranker=False`` keeps the first stage's order."""
        ...

    def update(self, catalog: Catalog) -> Mapping[str, int]:
        """Index another version of the catalog (a reload); counts of what changed."""
        ...
