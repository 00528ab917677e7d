"""Product search: a slot parser for spoken queries and an embedding searcher with hard filters.

`parse_query` turns "black hoodie under fifty dollars" into ``SearchQuery(text="black hoodie", max_price=50.0,
color="black")``. `EmbeddingSearcher` keeps only the products that pass every filter (price, colour, size, and the
category the query names, such as "hoodie" or "running shoes"), then ranks them by cosine similarity between the
query and each product's `Product.search_text` (MiniLM). Filters are hard: a result over ``max_price`` is never
returned.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from assistant.catalog import Catalog, Product
from ranking.index import VectorIndex
from ranking.text_encoder import TextEncoder

log = logging.getLogger(__name__)

DIVERSITY_POOL = 4  # candidates fetched per wanted hit, so colourways of one model do not crowd out others
DEFAULT_MIN_SCORE = (
    0.2  # "red running shoes": a red running shoe 0.63, hiking boots 0.36, a coffee maker -0.01
)

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


def _money_re(name: str) -> str:
    # "49.99", "$49", "49 dollars", and the spoken "forty nine ninety nine" (-> "49 99") as 49.99.
    return rf"\$?\s*(?P<{name}>\d+(?:\.\d{{1,2}})?)(?:\s+(?P<{name}_c>\d\d)(?![\d.]))?(?:\s*(?:dollars?|bucks|usd))?"


_BETWEEN_RE = re.compile(rf"\b(?:between|from)\s+{_money_re('a')}\s+(?:and|to)\s+{_money_re('b')}")
_MAX_RE = re.compile(
    r"\b(?:for\s+|that'?s\s+|costing\s+)?(?:under|below|less than|cheaper than|no more than|not more than|at most|up to|max(?:imum)?(?: of)?|"
    rf"within|lower than|beneath|no higher than|not over|no pricier than)\s+{_money_re('a')}"
)
_MIN_RE = re.compile(
    rf"\b(?:over|above|more than|at least|greater than|higher than|starting at|no less than|minimum(?: of)?)\s+{_money_re('a')}"
)
_SIZE_NUMBER_RE = re.compile(r"\bsize\s+(\d{1,2}(?:\.5)?)(\s+and a half)?\b")
_SIZE_WORD_ALT = (
    "extra extra large|extra large|extra small|small|medium|large|xxs|xs|xxl|xxxl|2xl|3xl|xl|s|m|l"
)
_SIZE_WORD_RE = re.compile(
    rf"\b(?:in\s+(?:a\s+)?(?:size\s+)?|size\s+)({_SIZE_WORD_ALT})\b|\b({_SIZE_WORD_ALT})\s+size\b"
    r"|\b(extra extra large|extra large|extra small|xxs|xs|xxl|xxxl|2xl|3xl|xl)\b"
)
_COLOR_RE = re.compile(r"\b(" + "|".join(sorted(COLOR_SYNONYMS, key=len, reverse=True)) + r")\b")
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
    """

    text: str
    k: int = 5
    max_price: float | None = None
    min_price: float | None = None
    color: str | None = None
    size: str | None = None


def _amount(m: re.Match[str], name: str) -> float:
    cents = m[f"{name}_c"]
    whole = m[name]
    return float(f"{whole}.{cents}") if cents and "." not in whole else float(whole)


def parse_query(text: str) -> SearchQuery:
    """Parse a spoken or typed request into a `SearchQuery`.

    Understands prices ("under fifty dollars", "under $50", "less than 40", "below 30 bucks", "between 20 and 40
    dollars", "over 100", numbers in words up to the thousands), colours from `COLOR_SYNONYMS`, and sizes
    (XS..XXL, "small/medium/large", "size 9", "size nine and a half"). The remaining words, without leading
    fillers such as "show me", become `SearchQuery.text`.

    Args:
        text: The request, e.g. an ASR transcript.

    Returns:
        The parsed query.
    """
    norm = words_to_numbers(text)
    norm = re.sub(
        r"(\d+)\s+dollars?\s+and\s+(\d{1,2})\s+cents?", lambda m: f"{m[1]}.{int(m[2]):02d} dollars", norm
    )
    norm = re.sub(r"[!?;:,]", " ", norm)
    norm = re.sub(r"\.(?!\d)", " ", norm)
    max_price = min_price = None
    if m := _BETWEEN_RE.search(norm):
        low, high = sorted((_amount(m, "a"), _amount(m, "b")))
        min_price, max_price = low, high
        norm = norm[: m.start()] + " " + norm[m.end() :]
    if max_price is None and (m := _MAX_RE.search(norm)):
        max_price = _amount(m, "a")
        norm = norm[: m.start()] + " " + norm[m.end() :]
    if min_price is None and (m := _MIN_RE.search(norm)):
        min_price = _amount(m, "a")
        norm = norm[: m.start()] + " " + norm[m.end() :]
    size = None
    if m := _SIZE_NUMBER_RE.search(norm):
        size = canonical_size(m[1] + (".5" if m[2] and "." not in m[1] else ""))
        norm = norm[: m.start()] + " " + norm[m.end() :]
    elif m := _SIZE_WORD_RE.search(norm):
        size = canonical_size(next(g for g in m.groups() if g))
        norm = norm[: m.start()] + " " + norm[m.end() :]
    color = canonical_color(m[1]) if (m := _COLOR_RE.search(norm)) else None
    cleaned = _FILLER_RE.sub("", " ".join(norm.split()))
    cleaned = re.sub(r"\s+(?:please|thanks|thank you)$", "", cleaned).strip()
    return SearchQuery(
        text=cleaned or " ".join(text.split()),
        max_price=max_price,
        min_price=min_price,
        color=color,
        size=size,
    )


# --- searching ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProductHit:
    """One search result.

    Attributes:
        product: The shoppable product (a parent for variant catalogs).
        score: Cosine similarity between query and product text.
        reason: Why it was returned, in words.
        variant: The variant matching the requested colour/size/price, for variant catalogs.
    """

    product: Product
    score: float
    reason: str
    variant: Product | None = None

    @property
    def price(self) -> float:
        """The price that satisfied the filters (the variant's, if any)."""
        return self.variant.price if self.variant is not None else self.product.price


class ProductSearcher(Protocol):
    """Anything that answers a `SearchQuery` with ranked hits."""

    def search(self, query: SearchQuery) -> list[ProductHit]: ...


def _singular(word: str) -> str:
    if len(word) > 3 and re.search(r"(ss|sh|ch|x)es$", word):
        return word[:-2]
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _term_text(text: str) -> str:
    """Lower-case, punctuation-free, singularised words, space-padded for substring matching."""
    words = re.findall(r"[a-z0-9]+", text.lower().replace("'s", ""))
    return " " + " ".join(_singular(w) for w in words) + " "


@dataclass
class _Entry:
    product: Product
    colors: frozenset[str]
    sizes: frozenset[str]
    variants: list[tuple[Product, frozenset[str], frozenset[str]]] = field(default_factory=list)


def _colors_of(p: Product) -> frozenset[str]:
    return frozenset(canonical_color(c) for c in p.colors())


def _sizes_of(p: Product) -> frozenset[str]:
    return frozenset(canonical_size(s) for s in p.sizes())


def _model_key(product: Product) -> str:
    """Products that differ only by a " — colour" title suffix are colourways of one model."""
    return re.split(r"\s+[—–]\s+", product.title, maxsplit=1)[0].strip().lower()


def _diversify(ranked: list[tuple[str, float]], k: int, key: Callable[[str], str]) -> list[tuple[str, float]]:
    """The best `k` of `ranked`, taking one per model first, then filling with the rest in score order."""
    seen: set[str] = set()
    first: list[tuple[str, float]] = []
    rest: list[tuple[str, float]] = []
    for pid, score in ranked:
        (rest if key(pid) in seen else first).append((pid, score))
        seen.add(key(pid))
    picked = first[:k]
    picked += rest[: k - len(picked)]
    return sorted(picked, key=lambda item: -item[1])


def _money(value: float) -> str:
    return f"${value:,.0f}" if float(value).is_integer() else f"${value:,.2f}"


class EmbeddingSearcher:
    """Semantic product search over MiniLM embeddings of `Product.search_text`, with hard filters.

    The index covers the shoppable products (`Catalog.parents`); for variant catalogs a hit carries the cheapest
    variant that matches the requested colour/size/price.

    Args:
        catalog: The catalog.
        encoder: Text encoder for products and queries.
        cache_dir: If given, the index is saved to / loaded from
            ``cache_dir/text-index-<catalog content hash>.npz``.
        min_score: Hits less similar than this are dropped (MiniLM cosine: unrelated products score below ~0.2).
    """

    def __init__(
        self,
        catalog: Catalog,
        encoder: TextEncoder,
        cache_dir: Path | None = None,
        *,
        min_score: float = DEFAULT_MIN_SCORE,
    ) -> None:
        self.catalog = catalog
        self.min_score = min_score
        self.encoder = encoder
        self._entries: dict[str, _Entry] = {}
        for product in catalog.parents():
            entry = _Entry(product, _colors_of(product), _sizes_of(product))
            entry.variants = [(v, _colors_of(v), _sizes_of(v)) for v in catalog.variants_of(product.id)]
            self._entries[product.id] = entry
        self._category_terms = self._build_category_terms(e.product.category for e in self._entries.values())
        self.index = self._load_or_build(cache_dir)

    def _load_or_build(self, cache_dir: Path | None) -> VectorIndex:
        meta = {"encoder": self.encoder.model_path, "catalog": self.catalog.content_hash()}
        path = Path(cache_dir) / f"text-index-{meta['catalog']}.npz" if cache_dir is not None else None
        if path is not None and path.is_file():
            try:
                index = VectorIndex.load(path)
                if index.metadata.get("encoder") == meta["encoder"] and set(index.ids) == set(self._entries):
                    log.info("loaded text index of %d products from %s", len(index), path)
                    return index
                log.info("text index %s is stale; rebuilding", path)
            except ValueError as err:
                log.warning("ignoring unreadable text index %s: %s", path, err)
        start = time.perf_counter()
        ids = list(self._entries)
        vectors = self.encoder.encode([self._entries[i].product.search_text() for i in ids])
        index = VectorIndex(dim=self.encoder.dim, metadata=meta)
        index.add(ids, vectors)
        log.info("built text index of %d products in %.2f s", len(ids), time.perf_counter() - start)
        if path is not None:
            index.save(path)
        return index

    @staticmethod
    def _build_category_terms(categories: Iterable[str]) -> dict[str, set[str]]:
        """Map words a shopper may say ("hoodie", "running shoe", "shoe", "men") to the category paths they name."""
        terms: dict[str, set[str]] = {}
        for path in set(categories):
            segments = [s for s in path.split("/") if s.strip()]
            for segment in segments:
                for part in re.split(r"\s*(?:&|,|\band\b)\s*", segment):
                    term = _term_text(part).strip()
                    if not term:
                        continue
                    terms.setdefault(term, set()).add(path)
                    head = term.rsplit(" ", 1)[-1]
                    if head != term and len(head) > 2:
                        terms.setdefault(head, set()).add(path)
        return terms

    def categories_for(self, text: str) -> set[str] | None:
        """Category paths the query names (intersected over the words that name them), or None for no restriction."""
        padded = _term_text(text)
        matched = [paths for term, paths in self._category_terms.items() if f" {term} " in padded]
        if not matched:
            return None
        common = set.intersection(*matched)
        return common or set.union(*matched)

    def _match(self, entry: _Entry, query: SearchQuery) -> tuple[bool, Product | None]:
        """Whether an entry passes the filters, and the variant that does (for variant parents)."""
        color = canonical_color(query.color) if query.color else None
        size = canonical_size(query.size) if query.size else None

        def price_ok(price: float) -> bool:
            return (query.max_price is None or price <= query.max_price + 1e-9) and (
                query.min_price is None or price >= query.min_price - 1e-9
            )

        if not entry.variants:
            ok = (
                (color is None or color in entry.colors)
                and (size is None or size in entry.sizes)
                and price_ok(entry.product.price)
            )
            return ok, None
        filtered = color is not None or size is not None
        if not filtered and price_ok(entry.product.price):
            return True, None
        eligible = [
            v
            for v, vc, vs in entry.variants
            if (color is None or color in vc) and (size is None or size in vs) and price_ok(v.price)
        ]
        if not eligible:
            return False, None
        return True, min(eligible, key=lambda v: (v.price, v.id))

    def search(self, query: SearchQuery) -> list[ProductHit]:
        """Rank the products that pass every filter of `query` by similarity to its text.

        Args:
            query: The query; `SearchQuery.k` bounds the number of hits.

        Returns:
            Hits, best first; every hit satisfies the price, colour and size filters.
        """
        if query.k <= 0:
            return []
        categories = self.categories_for(query.text)
        allowed: set[str] = set()
        variants: dict[str, Product | None] = {}
        for pid, entry in self._entries.items():
            if categories is not None and entry.product.category not in categories:
                continue
            ok, variant = self._match(entry, query)
            if ok:
                allowed.add(pid)
                variants[pid] = variant
        if not allowed:
            return []
        qvec = self.encoder.encode_query(query.text)
        ranked = [
            (pid, score)
            for pid, score in self.index.search(qvec, query.k * DIVERSITY_POOL, allowed=allowed)
            if score >= self.min_score
        ]
        hits = []
        for pid, score in _diversify(ranked, query.k, key=lambda pid: _model_key(self._entries[pid].product)):
            product = self._entries[pid].product
            hit = ProductHit(product, score, "", variants[pid])
            hits.append(ProductHit(product, score, self._reason(query, hit), hit.variant))
        return hits

    @staticmethod
    def _reason(query: SearchQuery, hit: ProductHit) -> str:
        parts = [f"matches '{query.text}'"]
        if query.color:
            parts.append(canonical_color(query.color))
        if query.size:
            parts.append(f"size {canonical_size(query.size)} available")
        price = _money(hit.price)
        if query.max_price is not None and query.min_price is not None:
            parts.append(f"{price} within your {_money(query.min_price)}–{_money(query.max_price)} range")
        elif query.max_price is not None:
            parts.append(f"{price} under your {_money(query.max_price)} limit")
        elif query.min_price is not None:
            parts.append(f"{price} over your {_money(query.min_price)} minimum")
        else:
            parts.append(price)
        return "; ".join(parts)
