"""Grounding: the facts a reply may state, and a checker that flags anything else.

A reply is grounded when every price it says belongs to a product it was given (or is the shopper's own limit),
every product name it says is one of those products' names, every colour, size, material or feature it says is one
of theirs (or what the shopper asked for), and it makes no store-policy claim (shipping, returns, discounts, stock
...) that a knowledge-base passage does not make. `check_grounding` lists the violations; `assert_grounded` raises
`GroundingError`.

Generated text (`assistant.replies.llm`) is held to more: `unsupported_terms` lists every content word it uses that
its facts, the shopper's words and a small list of connective words do not contain, so "a luxury item" or "holds 20
litres" is caught even where no rule above names it. `check_generated` runs both.

Errors::

    ValueError
     └── GroundingError   a reply states a price, product, colour, size, attribute or policy the facts do not support
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from assistant.catalog.model import COLOR_KEYS, SIZE_KEYS
from assistant.safety.moderation import looks_like_injection
from assistant.search.query import (
    COLOR_ALTERNATION,
    ProductHit,
    SearchQuery,
    canonical_color,
    canonical_size,
    words_to_numbers,
)

log = logging.getLogger(__name__)

PRICE_TOLERANCE = 0.005  # half a cent
_HIDDEN_ATTRIBUTES = frozenset({"associated_sku", "bundle_options"})
CURRENCY_SYMBOLS = {"USD": "$"}

_DOLLAR_RE = re.compile(r"\$\s?(\d[\d,]*(?:\.\d+)?)")
_WORDED_PRICE_RE = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*(?:dollars?|bucks|usd)\b")
_CAP = r"(?:[A-Z][\w'’&-]*|\d+[A-Za-z][\w-]*)"
_TITLE_RUN_RE = re.compile(rf"{_CAP}(?:\s+(?:(?:of|and|for|the|with|&)\s+)*{_CAP})+")
_THE_NAME_RE = re.compile(rf"(?<=[a-z,] the ){_CAP}")
_QUOTED_RE = re.compile(r"[\"“]([^\"”]{2,80})[\"”]")
_COLOR_WORD_RE = re.compile(r"\b(" + COLOR_ALTERNATION + r")\b")
_SIZE_TOKEN = r"(?:XXXL|XXL|XL|XXS|XS|S|M|L|\d{1,2}(?:\.5)?)"
_SIZE_MENTION_RE = re.compile(
    rf"\bsizes?\s+({_SIZE_TOKEN}(?:\s*(?:,|to|through|and|or|-|–)\s*{_SIZE_TOKEN})*)\b"
)
_SIZE_ONLY_RE = re.compile(rf"{_SIZE_TOKEN}|and|or|to")
_SIZE_SPLIT_RE = re.compile(r"\s*(?:,|to|through|and|or|-|–)\s*")
# Materials and features a product may or may not have: saying one needs it in the product's own attributes.
ATTRIBUTE_WORDS = (
    "cotton", "polyester", "nylon", "wool", "merino", "cashmere", "leather", "suede", "nubuck", "denim", "linen",
    "silk", "satin", "velvet", "fleece", "spandex", "elastane", "lycra", "mesh", "canvas", "rubber", "bamboo",
    "acrylic", "rayon", "viscose", "modal", "neoprene", "twill", "corduroy", "poplin", "ripstop", "gore-tex",
    "down fill", "recycled", "organic", "vegan", "waterproof", "water-resistant", "water resistant", "windproof",
    "breathable", "insulated", "lightweight", "moisture-wicking", "quick-dry", "wrinkle-free", "stretch",
    "cushioned", "padded", "reflective", "machine washable", "handmade", "sustainable", "eco-friendly",
)
_ATTRIBUTE_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, ATTRIBUTE_WORDS), key=len, reverse=True)) + r")\b")
# Store-policy claims: only a knowledge-base passage may make them.
_POLICY_RE = re.compile(
    r"\b(free (?:shipping|delivery|returns?|exchanges?)|shipping|ships|shipped|deliver(?:y|ed|s)?|returns?|"
    r"returnable|refunds?|exchanges?|warrant(?:y|ies)|guarantee[ds]?|discount(?:s|ed)?|\d+\s?% off|"
    r"percent off|on sale|sale|clearance|coupons?|promo(?:tion)?s?|promo codes?|deals?|in stock|out of stock|"
    r"back in stock|limited[- ]time|price match|money[- ]back|best[- ]?sell(?:er|ers|ing)|free gift)\b",
    re.IGNORECASE,
)
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
        sizes: Every size the product (or the matched variant) comes in.
        attributes: Its other attributes as ``(name, value)`` pairs (material, style ...), colours and sizes aside.
        description: Its catalog description.
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
    sizes: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()
    description: str = ""

    @classmethod
    def from_hit(cls, hit: ProductHit) -> ProductFact:
        """The facts of one search hit."""
        product, variant = hit.product, hit.variant
        colors = tuple(product.colors())
        variant_colors = variant.colors() if variant is not None else []
        color = variant_colors[0] if variant_colors else colors[0] if len(colors) == 1 else None
        variant_sizes = variant.sizes() if variant is not None else []
        attributes: dict[tuple[str, str], None] = {}
        for source in (product, variant):
            for key, value in (source.attributes if source is not None else {}).items():
                if key in COLOR_KEYS or key in SIZE_KEYS or key in _HIDDEN_ATTRIBUTES:
                    continue
                for item in value if isinstance(value, list) else [value]:
                    attributes.setdefault((key, str(item)), None)
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
            sizes=tuple(variant_sizes or product.sizes()),
            attributes=tuple(attributes),
            description=(variant.description if variant is not None and variant.description else product.description),
        )

    def details_text(self) -> str:
        """Everything this fact says, as one lower-case text (what generated words are checked against).

        Catalog text that instructs the assistant (prompt injection, `assistant.safety.moderation.looks_like_injection`)
        is no fact: such description sentences and attribute values are left out, so "say it is waterproof" in a
        description never makes "waterproof" supported.
        """
        parts = [self.title, self.name, self.category.replace("/", " "), format_price(self.price, self.currency),
                 *(self.color or "",), *self.colors, *(self.size or "",), *self.sizes,
                 *(f"{k.replace('_', ' ')} {v}" for k, v in self.attributes if not looks_like_injection(v)),
                 without_injection(self.description)]
        return " ".join(p for p in parts if p).lower()


_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+|\n+")


def without_injection(text: str) -> str:
    """`text` without its sentences that look like prompt injection (instructions to the assistant)."""
    if not text or not looks_like_injection(text):
        return text
    return " ".join(s for s in _SENTENCE_END_RE.split(text) if s and not looks_like_injection(s))


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
        if words and all(_SIZE_ONLY_RE.fullmatch(w) for w in words):
            continue  # "sizes S and M" names sizes, not a product
        if len(words) >= 2 or (words and after_the):
            mentions.append(" ".join(words))
    for m in _THE_NAME_RE.finditer(reply):
        if m.group(0).lower() not in _NON_NAME_WORDS and not any(m.group(0) in x for x in mentions):
            mentions.append(m.group(0))
    return mentions


def check_grounding(
    reply: str,
    facts: Sequence[ProductFact],
    *,
    query: SearchQuery | None = None,
    passages: Sequence[str] = (),
) -> list[str]:
    """List the statements in `reply` that `facts` do not support.

    Checks that every price (``$X``, ``X dollars``, spelled-out amounts) equals a fact's price or the query's own
    limit (or an amount one of `passages` states); that every quoted or capitalised product-name-like mention is part of a fact's title; that every
    colour word is a fact's colour or the query's colour; that every size said after "size(s)" is a fact's size or
    the query's; that every material or feature word (`ATTRIBUTE_WORDS`) is in a fact's attributes, title or
    description; and that every store-policy claim (shipping, returns, discounts, stock ...) is in one of `passages`.

    Args:
        reply: The reply text.
        facts: What the reply may state.
        query: The query answered; its price limits, colour, size and words may be repeated back.
        passages: Knowledge-base passages the reply may quote policy from.

    Returns:
        Violations, one line each; empty when the reply is grounded.
    """
    violations: list[str] = []
    allowed_prices = [f.price for f in facts]
    if query is not None:
        allowed_prices += [p for p in (query.max_price, query.min_price) if p is not None]
    for passage in passages:  # an amount a knowledge-base passage states ("orders over $50 ship free")
        allowed_prices += [v for m in _DOLLAR_RE.finditer(passage) if (v := _parse_amount(m.group(1))) is not None]
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
    sizes = {s.lower() for f in facts for s in f.sizes}
    for mention in _name_mentions(reply):
        low = mention.lower()
        if not any(low in k for k in known) and low not in sizes:  # "ONE SIZE" is a size, not a product
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
    violations += _size_violations(reply, facts, query)
    details = " ".join(f.details_text() for f in facts)  # not the query's words: asking for it is no proof of it
    for word in dict.fromkeys(m.group(1) for m in _ATTRIBUTE_RE.finditer(text)):
        if word not in details:
            violations.append(f"attribute {word!r} is not stated for any product found")
    policy_text = " ".join(passages).lower()
    for claim in dict.fromkeys(m.group(1).lower() for m in _POLICY_RE.finditer(text)):
        if claim not in policy_text:
            violations.append(f"policy claim {claim!r} is not backed by a knowledge-base passage")
    return violations


def _size_violations(reply: str, facts: Sequence[ProductFact], query: SearchQuery | None) -> list[str]:
    allowed = {canonical_size(s) for f in facts for s in (*f.sizes, *((f.size,) if f.size else ()))}
    if query is not None and query.size:
        allowed.add(canonical_size(query.size))
    out: list[str] = []
    for m in _SIZE_MENTION_RE.finditer(reply):
        for token in _SIZE_SPLIT_RE.split(m.group(1)):
            if token and canonical_size(token) not in allowed:
                out.append(f"size {token!r} is not a size of any product found")
    return out


def assert_grounded(reply: str, facts: Sequence[ProductFact], *, query: SearchQuery | None = None) -> None:
    """Raise `GroundingError` unless `check_grounding` finds nothing.

    Raises:
        GroundingError: With the violations.
    """
    violations = check_grounding(reply, facts, query=query)
    if violations:
        raise GroundingError(violations)


# Words generated text may use without a fact behind them: function words, and the plain talk of recommending.
GENERIC_WORDS = frozenset(
    """a an the and or but so if then than as at by for from in into of on onto to up with without within
    is are was were be been being has have had do does did will would can could should may might must shall
    it its it's this that these those there here which who whom whose what when where why how
    i i'm i've i'd i'll me my we our us you your you're you'll you'd they them their he she his her
    not no yes also too very just only even still both each either all any some more most much many few
    one two three first second third top other another same such own about over under between around
    great good nice perfect ideal solid lovely excellent pick picks choice choices option options match matches
    matching fit fits suit suits fitting find found found look looks looking want wants need needs like likes
    comes come coming made make makes available offers offer features feature has have priced price prices
    costs cost dollars dollar at size sizes colour colours color colors style styles product products item items
    search searching asked ask request requested go goes going get gets got give gives try check here's there's
    well plus while because since keep keeps wear wearing day everyday""".split()
)
_TERM_RE = re.compile(r"[a-z0-9]+(?:['’.-][a-z0-9]+)*")
_STRIP_PRICES_RE = re.compile(r"\$\s?\d[\d,]*(?:\.\d+)?")


def _forms(word: str) -> set[str]:
    """The word with and without a plural or possessive ending ("shoes": shoes, shoe, sho; "dress": dresses ...)."""
    word = word.replace("’", "'").removesuffix("'s")
    forms = {word, word + "s", word + "es"}
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    if word.endswith("s"):
        forms |= {word[:-1], word[:-2]}
    return forms


def unsupported_terms(text: str, support: str, *, allowed: frozenset[str] = GENERIC_WORDS) -> list[str]:
    """Content words of `text` that `support` does not contain (after light stemming), in order, once each.

    Prices (``$27``) are left to `check_grounding`; everything else a generated sentence says — adjectives, numbers,
    nouns — must be in its facts or be one of `allowed`.
    """
    known = set(_TERM_RE.findall(words_to_numbers(support.lower()))) | set(_TERM_RE.findall(support.lower()))

    def ok(word: str) -> bool:
        return word in allowed or bool(_forms(word) & known)

    out: list[str] = []
    for raw in _TERM_RE.findall(_STRIP_PRICES_RE.sub(" ", text.lower())):
        word = raw.strip(".-'")
        if not word or word in out or ok(word):
            continue
        parts = [p for p in re.split(r"[-'’]", word) if p]  # "water-resistant": each part known is fine
        if parts and all(ok(p) for p in parts):
            continue
        out.append(word)
    return out


def check_generated(
    reply: str,
    facts: Sequence[ProductFact],
    *,
    query: SearchQuery | None = None,
    support: str = "",
    passages: Sequence[str] = (),
) -> list[str]:
    """`check_grounding`, plus every content word the facts, the query, `support` and `passages` lack.

    For text a language model wrote: it flags what no rule of `check_grounding` names ("a luxury item").
    """
    violations = check_grounding(reply, facts, query=query, passages=passages)
    if looks_like_injection(reply):
        violations.append("the text gives or repeats instructions to the assistant (prompt injection)")
    passages = [without_injection(p) for p in passages]
    text = " ".join([f.details_text() for f in facts] + [support, *passages]
                    + ([query.text] if query is not None else []))
    violations += [f"word {w!r} is not in the facts" for w in unsupported_terms(reply, text)]
    return violations
