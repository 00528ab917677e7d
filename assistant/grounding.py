"""Grounding: the facts a reply may state, and a checker that flags anything else.

A reply is grounded when every price it says belongs to a product it was given (or is the shopper's own limit),
every product name it says is one of those products' names, and every colour it says is one of theirs (or the one
the shopper asked for). `check_grounding` lists the violations; `assert_grounded` raises `GroundingError`.

Errors::

    ValueError
     └── GroundingError   a reply states a price, product or colour that the facts do not support
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from assistant.search import COLOR_SYNONYMS, ProductHit, SearchQuery, canonical_color, words_to_numbers

log = logging.getLogger(__name__)

PRICE_TOLERANCE = 0.005  # half a cent
CURRENCY_SYMBOLS = {"USD": "$"}

_DOLLAR_RE = re.compile(r"\$\s?(\d[\d,]*(?:\.\d+)?)")
_WORDED_PRICE_RE = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*(?:dollars?|bucks|usd)\b")
_CAP = r"(?:[A-Z][\w'’&-]*|\d+[A-Za-z][\w-]*)"
_TITLE_RUN_RE = re.compile(rf"{_CAP}(?:\s+(?:(?:of|and|for|the|with|&)\s+)*{_CAP})+")
_THE_NAME_RE = re.compile(rf"(?<=[a-z,] the ){_CAP}")
_QUOTED_RE = re.compile(r"[\"“]([^\"”]{2,80})[\"”]")
_COLOR_WORD_RE = re.compile(r"\b(" + "|".join(sorted(COLOR_SYNONYMS, key=len, reverse=True)) + r")\b")
# Capitalised words that start sentences in replies and are not product names.
_NON_NAME_WORDS = frozenset(
    "the i i've i'm i'd sorry here there's there here's want top it that this and or yes no also okay ok "
    "great sure how what which would should you your we our my a an".split()
)


class GroundingError(ValueError):
    """A reply states something its facts do not support.

    Attributes:
        violations: One line per unsupported statement.
    """

    def __init__(self, violations: Sequence[str]) -> None:
        self.violations = list(violations)
        super().__init__("ungrounded reply: " + "; ".join(self.violations))


def spoken_name(title: str) -> str:
    """The name to say for a title: the part before a " — colour" style suffix."""
    return re.split(r"\s+[—–]\s+", title, maxsplit=1)[0].strip()


def format_price(value: float, currency: str = "USD") -> str:
    """Speakable price: ``$39.99``, ``$44`` for whole amounts; other currencies as ``39.99 EUR``."""
    amount = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
    symbol = CURRENCY_SYMBOLS.get(currency.upper())
    return f"{symbol}{amount}" if symbol else f"{amount} {currency.upper()}"


@dataclass(frozen=True)
class ProductFact:
    """What a reply may say about one product.

    Attributes:
        id: Product id (the variant's, when a variant matched).
        title: Catalog title of the shoppable product.
        price: The price that matched the query.
        currency: ISO currency code.
        color: The product's colour when it is unambiguous (the matched variant's, or its only colour).
        name: Speakable name (the title without a colour suffix).
        category: Category path.
        colors: Every colour the product comes in.
        size: The matched variant's size, if any.
    """

    id: str
    title: str
    price: float
    currency: str
    color: str | None = None
    name: str = ""
    category: str = ""
    colors: tuple[str, ...] = ()
    size: str | None = None

    @classmethod
    def from_hit(cls, hit: ProductHit) -> ProductFact:
        """The facts of one search hit."""
        product, variant = hit.product, hit.variant
        colors = tuple(product.colors())
        variant_colors = variant.colors() if variant is not None else []
        color = variant_colors[0] if variant_colors else colors[0] if len(colors) == 1 else None
        variant_sizes = variant.sizes() if variant is not None else []
        return cls(
            id=variant.id if variant is not None else product.id,
            title=product.title,
            price=hit.price,
            currency=product.currency,
            color=color,
            name=spoken_name(product.title),
            category=product.category,
            colors=tuple(dict.fromkeys(colors + tuple(variant_colors))),
            size=variant_sizes[0] if len(variant_sizes) == 1 else None,
        )


def facts_from_hits(hits: Sequence[ProductHit]) -> list[ProductFact]:
    """`ProductFact.from_hit` for each hit."""
    return [ProductFact.from_hit(h) for h in hits]


def _parse_amount(raw: str) -> float | None:
    try:
        return float(raw.replace(",", "").rstrip("."))
    except ValueError:
        return None


def _name_mentions(reply: str) -> list[str]:
    """Product-name-like mentions: quoted strings, runs of capitalised words, and "the Xyz" mid-sentence."""
    mentions = [m.group(1).strip() for m in _QUOTED_RE.finditer(reply)]
    for m in _TITLE_RUN_RE.finditer(reply):
        words = m.group(0).split()
        after_the = False
        while words and words[0].lower() in _NON_NAME_WORDS:
            after_the = after_the or words[0].lower() == "the"
            words.pop(0)  # sentence openers ("The", "There's") and connectors are not part of a name
        if len(words) >= 2 or (words and after_the):
            mentions.append(" ".join(words))
    for m in _THE_NAME_RE.finditer(reply):
        if m.group(0).lower() not in _NON_NAME_WORDS and not any(m.group(0) in x for x in mentions):
            mentions.append(m.group(0))
    return mentions


def check_grounding(
    reply: str, facts: Sequence[ProductFact], *, query: SearchQuery | None = None
) -> list[str]:
    """List the statements in `reply` that `facts` do not support.

    Checks that every price (``$X``, ``X dollars``, spelled-out amounts) equals a fact's price or the query's own
    limit; that every quoted or capitalised product-name-like mention is part of a fact's title; and that every
    colour word is a fact's colour or the query's colour.

    Args:
        reply: The reply text.
        facts: What the reply may state.
        query: The query answered; its price limits and colour may be repeated back.

    Returns:
        Violations, one line each; empty when the reply is grounded.
    """
    violations: list[str] = []
    allowed_prices = [f.price for f in facts]
    if query is not None:
        allowed_prices += [p for p in (query.max_price, query.min_price) if p is not None]
    amounts = [(m.group(0), _parse_amount(m.group(1))) for m in _DOLLAR_RE.finditer(reply)]
    worded = words_to_numbers(reply)
    amounts += [(m.group(0), _parse_amount(m.group(1))) for m in _WORDED_PRICE_RE.finditer(worded)]
    seen: set[float] = set()
    for text, value in amounts:
        if value is None or value in seen:
            continue
        seen.add(value)
        if not any(abs(value - p) <= PRICE_TOLERANCE for p in allowed_prices):
            violations.append(f"price {text.strip()!r} is not the price of any product found")

    known = [n.lower() for f in facts for n in (f.title, f.name) if n]
    for mention in _name_mentions(reply):
        low = mention.lower()
        if not any(low in k for k in known):
            violations.append(f"product {mention!r} is not among the products found")

    allowed_colors = {canonical_color(c) for f in facts for c in (f.color, *f.colors) if c}
    if query is not None and query.color:
        allowed_colors.add(canonical_color(query.color))
    text = reply.lower()
    for name in sorted(known, key=len, reverse=True):
        text = text.replace(name, " ")  # colour words inside a product's own name are fine
    for m in _COLOR_WORD_RE.finditer(text):
        if canonical_color(m.group(1)) not in allowed_colors:
            violations.append(f"colour {m.group(1)!r} does not belong to any product found")
    return violations


def assert_grounded(reply: str, facts: Sequence[ProductFact], *, query: SearchQuery | None = None) -> None:
    """Raise `GroundingError` unless `check_grounding` finds nothing.

    Raises:
        GroundingError: With the violations.
    """
    violations = check_grounding(reply, facts, query=query)
    if violations:
        raise GroundingError(violations)
