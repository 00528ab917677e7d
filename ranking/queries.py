"""Realistic spoken shopping queries generated from a catalog, with graded judgments over every product.

`spoken_queries` draws queries of seven kinds from the products themselves, the way shoppers talk to a voice
assistant::

    category      "um do you guys have any hoodies"
    attribute     "i need a purple tank top in medium"
    price         "running shoes for less than sixty bucks"
    product_line  "the mona pullover", "harbor hoodie in black"
    usecase       "something for hiking", "a bag i can fit my laptop in"
    gender        "women's jackets"
    + noise       fillers, misspellings and ASR-style splits ("hoody", "sweat shirt", "back pack")

Each query carries a `QuerySpec` (what the shopper asked for) and `grade` turns a spec into graded relevance for
any product: 3 = exactly what was asked, 2 = the right kind of item partly matching, 1 = related (wrong colour,
size, price or line, or a neighbouring category), 0 = unrelated. Nothing here reads a hand-judged test set.

A product is the plain dict of `ranking.train` (``id``, ``title``, ``description``, ``category``, ``price``,
``attributes: {colors, sizes, ...}``), optionally with ``attributes["terms"]`` (other attribute values: style,
material, activity) and ``attributes["gender"]``.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_KEEP_PLURAL = {"pants", "shorts", "jeans", "leggings", "capris", "sneakers", "glasses", "tights", "sweatpants"}
_STOP = set(
    "a an the and or of for to in on with your you this that it is are be as at by from its it's our we will "
    "into out up all any more most very so just can not no than then them they their there these those what "
    "when where which who while also only other over such both each few own same too was were been has have "
    "had do does did but if about after before because between during through under above below again further "
    "once here why how off down made make makes keep keeps get gets whether extra look looks wear one two day".split()
)
_FILLERS = ("", "", "", "um ", "uh ", "so ", "hey ", "okay so ")
_OPENERS = {
    "find": ("", "show me ", "do you guys have ", "i'm looking for ", "do you have ", "find me ", "i need ", "i want ", "can i see ",
             "are there any ", "got any ", "looking for ", "i'd like "),  # fmt: skip
    "some": ("", "some ", "any ", "a ", "a few "),
}
# Words shoppers use for what an item is for or made of; a use-case query names one that the product's text has.
USE_WORDS = set(
    "yoga running run hiking hike gym workout training travel laptop water waterproof resistant winter summer "
    "cold warm hot rain beach cycling bike outdoor outdoors pilates cardio lightweight breathable stretchy soft "
    "cotton wool fleece organic recycled eco reflective pockets pocket compression zip hood hooded heart rate "
    "strength balance stretching weights office school commute camping climbing tennis dance swimming sleep "
    "casual everyday insulated padded adjustable durable".split()
)
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split()
)
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_SIZE_WORDS = {"XS": "extra small", "S": "small", "M": "medium", "L": "large", "XL": "extra large", "XXL": "xxl"}
_SPLITS = {  # ASR-style splits and spellings of compound words
    "sweatshirt": "sweat shirt", "backpack": "back pack", "hoodie": "hoody", "leggings": "leggins",
    "tee": "tea", "drawstring": "draw string", "t-shirt": "tee shirt", "yoga": "yoga", "mat": "matt",
    "sneakers": "sneaker", "waterproof": "water proof", "zip": "zipper",
}  # fmt: skip


def number_words(n: int) -> str:
    """``68`` → ``"sixty eight"`` (0–999)."""
    if n < 20:
        return _NUMBER_WORDS[n]
    if n < 100:
        tens, unit = divmod(n, 10)
        return _TENS[tens - 2] + (f" {_NUMBER_WORDS[unit]}" if unit else "")
    hundreds, rest = divmod(n, 100)
    return f"{_NUMBER_WORDS[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _singular(word: str) -> str:
    if word in _KEEP_PLURAL:
        return word
    if re.search(r"(ss|sh|ch|x)es$", word):
        return word[:-2]
    if word.endswith("ies") and len(word) > 4:  # hoodies, bodies, accessories: "hoodie" is what shoppers say
        return word[:-1] if word in ("hoodies", "cookies", "beanies", "onesies") else word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _attrs(product: Mapping[str, Any]) -> Mapping[str, Any]:
    return product.get("attributes") or {}


def colors_of(product: Mapping[str, Any]) -> list[str]:
    return [str(c).lower() for c in _attrs(product).get("colors") or []]


def sizes_of(product: Mapping[str, Any]) -> list[str]:
    return [str(s).upper() for s in _attrs(product).get("sizes") or []]


def gender_of(product: Mapping[str, Any]) -> str | None:
    """``men``/``women`` from the attributes or the category path's first segment; None for unisex/unknown."""
    for value in [*(_attrs(product).get("gender") or []), str(product.get("category") or "").split("/", 1)[0]]:
        key = str(value).strip().lower()
        if key in ("men", "mens", "men's", "male"):
            return "men"
        if key in ("women", "womens", "women's", "female", "ladies"):
            return "women"
    return None


def base_name(product: Mapping[str, Any]) -> str:
    """The product's model name: the title without variant suffixes (``-XS-Green``, `` — Black``)."""
    title = re.split(r"\s+[—–]\s+", str(product.get("title") or ""), maxsplit=1)[0]
    variant = {v.lower() for v in colors_of(product) + [s.lower() for s in sizes_of(product)]}
    parts = title.split("-")
    while len(parts) > 1 and parts[-1].strip().lower() in variant:
        parts.pop()
    return "-".join(parts).strip()


def category_terms(category: str) -> list[str]:
    """Spoken names of a category from its leaf: ``.../Hoodies & Sweatshirts`` → hoodies, hoodie, sweatshirt ..."""
    leaf = category.rsplit("/", 1)[-1].lower()
    parts = [p.strip() for p in re.split(r"\s*(?:&|,|/|\band\b)\s*", leaf) if p.strip()]
    out = []
    for part in parts or [leaf]:
        words = part.split()
        if not words:
            continue
        out.append(part)
        singular = " ".join([*words[:-1], _singular(words[-1])])
        if singular != part:
            out.append(singular)
    return list(dict.fromkeys(out)) or ["items"]


def product_text_lower(product: Mapping[str, Any]) -> str:
    """Title, category, attribute values and description, lower-cased: where soft terms are looked for."""
    terms = " ".join(str(t) for t in _attrs(product).get("terms") or [])
    return " ".join(
        [str(product.get("title") or ""), str(product.get("category") or ""), terms, str(product.get("description") or "")]
    ).lower()


@dataclass
class QuerySpec:
    """What a generated query asks for (see `grade`).

    Attributes:
        intent: category, attribute, price, product_line, usecase or gender.
        categories: Category paths that are the right kind of item (empty: any).
        related: Category paths counted as related (grade 1).
        colour, size, max_price, gender: Hard attributes.
        line: A model name the title must contain.
        soft: Terms that should appear in the product's text (all → 3, some → 2).
    """

    intent: str
    categories: set[str] = field(default_factory=set)
    related: set[str] = field(default_factory=set)
    colour: str | None = None
    size: str | None = None
    max_price: float | None = None
    gender: str | None = None
    line: str | None = None
    soft: list[str] = field(default_factory=list)


@dataclass
class GeneratedQuery:
    """A spoken query, its spec and its graded judgments (product id → grade ≥ 1)."""

    text: str
    spec: QuerySpec
    judgments: dict[str, int]
    target: str


def grade(spec: QuerySpec, product: Mapping[str, Any]) -> int:
    """Graded relevance 0–3 of `product` for `spec`."""
    category = str(product.get("category") or "")
    if spec.categories and category not in spec.categories:
        return 1 if category in spec.related else 0
    if spec.colour and spec.colour not in colors_of(product):
        return 1
    if spec.size and spec.size.upper() not in sizes_of(product):
        return 1
    price = product.get("price")
    if spec.max_price is not None and (price is None or float(price) > spec.max_price + 1e-9):
        return 1
    if spec.gender and gender_of(product) not in (None, spec.gender):
        return 1
    if spec.line and spec.line.lower() not in base_name(product).lower():
        return 1
    if not spec.soft:
        return 3
    text = product_text_lower(product)
    found = sum(1 for term in spec.soft if re.search(rf"\b{re.escape(term)}", text))
    if found == len(spec.soft):
        return 3
    return 2 if spec.categories or found else 0


class _Catalog:
    """Indexes over the products that the generator draws from."""

    def __init__(self, products: Sequence[Mapping[str, Any]]) -> None:
        self.products = list(products)
        self.by_category: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(self.products):
            self.by_category[str(p.get("category") or "")].append(i)
        self.by_leaf: dict[str, set[str]] = defaultdict(set)
        for c in self.by_category:
            self.by_leaf[c.rsplit("/", 1)[-1].lower()].add(c)
        self.texts = [product_text_lower(p) for p in self.products]
        df: Counter[str] = Counter()
        for text in self.texts:
            df.update(set(_words(text)))
        n = max(1, len(self.products))
        # Use-case words: said in some products, not in most (a word in every description says nothing).
        attr_words = {w for p in self.products for t in _attrs(p).get("terms") or [] for w in _words(str(t))}
        self.usecase_words = {
            w for w, c in df.items() if 2 <= c <= max(2, n // 3) and (w in USE_WORDS or w in attr_words)
        } - _STOP
        # words a few products say (not one: a request must be able to match others too), for description requests
        self.rare_words = {w for w, c in df.items() if 2 <= c <= max(2, n // 10) and len(w) > 3} - _STOP

    def same_kind(self, category: str) -> set[str]:
        """Categories with the same leaf (``Men/Shoes/Boots`` and ``Women/Shoes/Boots``)."""
        return set(self.by_leaf[category.rsplit("/", 1)[-1].lower()])

    def related(self, category: str) -> set[str]:
        """Sibling categories (same parent path) of any category of the same kind."""
        kinds = self.same_kind(category)
        parents = {c.rsplit("/", 1)[0] for c in kinds}
        return {c for c in self.by_category if c not in kinds and c.rsplit("/", 1)[0] in parents}


def _price_phrase(limit: int, rng: random.Random) -> str:
    amount = number_words(limit) if rng.random() < 0.4 else str(limit)
    unit = rng.choice(["dollars", "dollars", "bucks", ""]) if not amount.startswith("$") else ""
    if rng.random() < 0.2:
        amount, unit = f"${limit}", ""
    word = rng.choice(["under", "under", "less than", "below", "for under", "cheaper than", "no more than"])
    return f"{word} {amount} {unit}".strip()


def _size_phrase(size: str, rng: random.Random) -> str:
    said = _SIZE_WORDS.get(size, size.lower())
    if size.isdigit() and rng.random() < 0.5:
        said = number_words(int(size))
    return rng.choice([f"in {said}", f"in size {said}", f"size {said}", f"in a {said}"])


def _noisy(text: str, rng: random.Random) -> str:
    """ASR-style slips: a compound split or respelled, a letter dropped or doubled."""
    words = text.split()
    if not words:
        return text
    for i, w in enumerate(words):
        if w in _SPLITS and rng.random() < 0.6:
            words[i] = _SPLITS[w]
            return " ".join(words)
    i = rng.randrange(len(words))
    w = words[i]
    if len(w) > 4 and w.isalpha():
        j = rng.randrange(1, len(w) - 1)
        words[i] = w[:j] + w[j + 1 :] if rng.random() < 0.5 else w[:j] + w[j] + w[j:]
    return " ".join(words)


def _soft_term(cat: _Catalog, t: int, rng: random.Random) -> str | None:
    words = [w for w in _words(cat.texts[t]) if w in cat.usecase_words]
    return rng.choice(words) if words else None


def _one(cat: _Catalog, t: int, rng: random.Random) -> tuple[str, QuerySpec] | None:
    target = cat.products[t]
    category = str(target.get("category") or "")
    term = rng.choice(category_terms(category))
    spec = QuerySpec(intent="category", categories=cat.same_kind(category), related=cat.related(category))
    colours, price = colors_of(target), target.get("price")
    sizes = [s for s in sizes_of(target) if s in _SIZE_WORDS or s.replace(".", "").isdigit()]
    head = term
    tail: list[str] = []
    roll = rng.random()
    if roll < 0.22:
        pass
    elif roll < 0.42:  # colour / size
        spec.intent = "attribute"
        if colours and rng.random() < 0.8:
            spec.colour = rng.choice(colours)
            head = f"{spec.colour} {term}"
        if sizes and (spec.colour is None or rng.random() < 0.4):
            spec.size = rng.choice(sizes)
            tail.append(_size_phrase(spec.size, rng))
    elif roll < 0.56 and price is not None:  # price
        spec.intent = "price"
        limit = int(math.ceil((float(price) + rng.choice([1, 5, 10, 20])) / 10) * 10)
        spec.max_price = float(limit)
        tail.append(_price_phrase(limit, rng))
        if colours and rng.random() < 0.25:
            spec.colour = rng.choice(colours)
            head = f"{spec.colour} {term}"
    elif roll < 0.78:  # product line
        spec.intent = "product_line"
        name = base_name(target).lower()
        words = name.split()
        said = " ".join(words[: rng.choice([1, 2])]) if len(words) > 2 and rng.random() < 0.5 else name
        if len(words) > 1 and said == words[0] and rng.random() < 0.5:
            said = f"{words[0]} {words[-1]}"
        spec.line = said.split()[0]
        head = rng.choice(["the ", "", ""]) + said
        if colours and rng.random() < 0.3:
            spec.colour = rng.choice(colours)
            tail.append(f"in {spec.colour}")
    elif roll < 0.93:  # use case
        spec.intent = "usecase"
        soft = _soft_term(cat, t, rng)
        if soft is None:
            return None
        spec.soft = [soft]
        if rng.random() < 0.35:  # no category named: anything mentioning it, the target's kind first
            spec.categories = set()
            head = rng.choice(["something for ", "stuff for ", "anything good for ", "what do you have for "]) + soft
        else:
            head = rng.choice([f"{term} for {soft}", f"{soft} {term}", f"a {_singular(term)} that is {soft}",
                               f"{term} with {soft}"])  # fmt: skip
    else:  # gender
        gender = gender_of(target)
        if gender is None:
            return None
        spec.intent = "gender"
        spec.gender = gender
        head = rng.choice([f"{gender}'s {term}", f"{term} for {gender}"])
    opener = rng.choice(_OPENERS["find"])
    some = rng.choice(_OPENERS["some"]) if spec.intent in ("category", "attribute", "price") and opener else ""
    text = f"{rng.choice(_FILLERS)}{opener}{some}{head} {' '.join(tail)}".strip().lower()
    text = " ".join(text.split())
    if rng.random() < 0.2:
        text = _noisy(text, rng)
    return text, spec


def spoken_queries(products: Sequence[Mapping[str, Any]], n: int, seed: int = 0) -> list[GeneratedQuery]:
    """`n` generated spoken queries over `products`, each graded over every product.

    Queries whose spec makes nothing grade ≥ 2 are skipped (and redrawn).
    """
    rng = random.Random(seed)
    cat = _Catalog(products)
    out: list[GeneratedQuery] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < n * 20 and cat.products:
        tries += 1
        t = rng.randrange(len(cat.products))
        made = _one(cat, t, rng)
        if made is None or made[0] in seen:
            continue
        if (query := _graded(cat, t, *made)) is not None:
            seen.add(query.text)
            out.append(query)
    return out


def _graded(cat: _Catalog, target: int, text: str, spec: QuerySpec) -> GeneratedQuery | None:
    """`text` graded over every product of `cat`; None when nothing grades ≥ 2 (a query with no right answer)."""
    judgments = {str(p.get("id")): g for p in cat.products if (g := grade(spec, p)) > 0}
    if not any(g >= 2 for g in judgments.values()):
        return None
    return GeneratedQuery(text, spec, judgments, str(cat.products[target].get("id")))


HELDOUT_FRACTION = 0.2


def is_heldout(text: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Whether a query text hashes into the held-out share: training skips these, the bench's set (a) keeps them."""
    import hashlib

    bucket = int(hashlib.sha1(text.strip().lower().encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


# --- requests from what descriptions say (doc2query by templates) ----------------------------------------------------

_SENTENCE_SPLIT = re.compile(r"(?:[.!?;,\n]+|\s-\s|^-\s)")
_FOR_WORDS = ("perfect", "great", "ideal", "made", "designed", "built", "good", "meant")
_FOR_RE = re.compile(rf"\b(?:{'|'.join(_FOR_WORDS)})\s+for\s+(.+)$")
# What a description says a product does, in English verbs (no catalog's words): "keeps you warm", "wicks sweat".
_DOES = frozenset("keeps wicks holds protects fits offers provides lets helps stays dries blocks repels traps supports "
                  "tracks absorbs carries stores breathes stretches moves cushions locks shields warms cools".split())
_ASK_ANY = ("something that {s}", "anything that {s}", "i need something that {s}", "what do you have that {s}",
            "got anything that {s}")
_ASK_KIND = ("a {one} that {s}", "{kind} that {s}", "do you have {kind} that {s}", "i want a {one} that {s}")
_ASK_FOR = ("something for {s}", "{kind} for {s}", "what do you have for {s}")


def description_requests(product: Mapping[str, Any], use_words: set[str],
                         rare: set[str] | None = None) -> list[tuple[str, list[str]]]:
    """What a shopper might say for what a product's description says: ``(clause, soft terms)`` pairs.

    A sentence that starts with what the product does ("Keeps you warm on cold mornings", "Wicks sweat") becomes
    "... that keeps you warm on cold mornings"; one that says what it is for ("Perfect for hot yoga") becomes
    "... for hot yoga". The soft terms, which `grade` looks for in every product's text, are the use words it
    names (`usecase_words` of the catalog), else its words that few products say (`rare`); with neither it is
    skipped.
    """
    out: list[tuple[str, list[str]]] = []
    for raw in _SENTENCE_SPLIT.split(str(product.get("description") or "")):
        words = _words(raw)
        if not 3 <= len(words) <= 14:
            continue
        clause = " ".join(words)
        content = [w for w in words if w not in _FOR_WORDS and w not in _DOES]
        soft = list(dict.fromkeys(w for w in content if w in use_words))[:2] or \
            list(dict.fromkeys(w for w in content if rare is not None and w in rare))[:2]
        if not soft:
            continue
        if m := _FOR_RE.search(clause):
            out.append(("for " + m[1], soft))
        elif words[0] in _DOES:
            out.append(("that " + clause, soft))
    return out


def description_queries(products: Sequence[Mapping[str, Any]], n: int, seed: int = 0) -> list[GeneratedQuery]:
    """`n` requests worded from the products' own descriptions (`description_requests`), graded over every product.

    A shopper asking for "something that keeps you warm on cold mornings" wants what says so: the ranker learns
    to match requests against what descriptions say, not only titles and attributes. The bench's generated set
    (`spoken_queries`) does not include these.
    """
    rng = random.Random(seed + 7919)
    cat = _Catalog(products)
    said = [(t, clause, soft) for t in range(len(cat.products))
            for clause, soft in description_requests(cat.products[t], cat.usecase_words, cat.rare_words)]
    out: list[GeneratedQuery] = []
    seen: set[str] = set()
    for _ in range(n * 20):
        if len(out) >= n or not said:
            break
        t, clause, soft = rng.choice(said)
        category = str(cat.products[t].get("category") or "")
        term = rng.choice(category_terms(category))
        spec = QuerySpec(intent="usecase", soft=soft)
        body = clause[4:] if clause.startswith("for ") else clause[5:]
        if rng.random() < 0.5:  # the kind named: that kind first
            spec.categories, spec.related = cat.same_kind(category), cat.related(category)
            pattern = rng.choice(_ASK_FOR[1:] if clause.startswith("for ") else _ASK_KIND)
        else:
            pattern = rng.choice(_ASK_FOR[::2] if clause.startswith("for ") else _ASK_ANY)
        text = pattern.format(s=body, kind=term, one=_singular(term))
        text = " ".join(f"{rng.choice(_FILLERS)}{text}".split())
        if text not in seen and (query := _graded(cat, t, text, spec)) is not None:
            seen.add(text)
            out.append(query)
    return out
