"""Intent recognition and slot filling for one shopper turn (issue #5).

``IntentRecognizer().recognize("the second one in medium", {"products_shown": 5})`` returns
``Intent(name="refine", slots={"size": "M"}, reference=2, ...)``. Three stages, in order:

1. **Normalise** the transcript for common ASR slips (`normalize_asr`): "for tea dollars" -> "forty dollars",
   "in read" -> "in red", "x l" -> "xl", "north vale" -> "northvale", "harbor and pine" -> "harbor & pine".
2. **Slots** (`extract_slots`): `assistant.search.query.parse_query` gives category, colour, size, price range, brand and
   gender against the catalog's `QueryVocab`; this module adds quantity ("two of those", "add 3"), order ids
   (`assistant.conversation.orders.normalize_order_id`: "order one oh four two three" -> ``ST-10423``), prices parse_query leaves
   alone ("my budget is 60", "40 dollars or less", "for $30"), and a reference to a product on screen
   ("the second one" -> 2, "the last one" -> -1).
3. **Intent**: MiniLM sentence embeddings (`ranking.text_encoder.TextEncoder`) and two context features feed a small
   MLP trained on `assistant.conversation.intent_data.training_examples` at first use (seconds; the weights are cached under
   ``cache_dir`` keyed by a hash of the training data). High-precision rules then correct the model where rules are
   clearly better: a bare greeting, a request for a person, a spoken order id, a photo on this turn, and the
   refine/search split that depends on whether products are on screen. Without an encoder (``mode="rules"``) a
   keyword classifier stands in for the model: the fast, deterministic fake for unit tests.

Slot values: ``category`` is the vocabulary term (``hoodie``, ``running shoe``, ``t shirt``, ``jean``), ``colour``
the canonical colour (``navy``), ``size`` the canonical size (``XL``, ``9.5``), ``price_min``/``price_max`` floats,
``brand`` as the catalog spells it, ``gender`` one of ``men``/``women``/``kids``, ``quantity`` an int, ``order_id``
``ST-`` and five digits.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from assistant.conversation.orders import normalize_order_id
from assistant.search.query import QueryVocab, SearchQuery, complement_request, parse_query, words_to_numbers

if TYPE_CHECKING:
    from assistant.conversation.intent_data import CatalogWords
    from ranking.text_encoder import SentenceEncoder

log = logging.getLogger(__name__)

INTENTS = (
    "search",
    "refine",
    "photo_lookup",
    "compare",
    "product_question",
    "add_to_cart",
    "order_status",
    "policy",
    "recommendation",
    "greeting",
    "out_of_scope",
    "human",
    "complaint",
)
SLOT_NAMES = ("category", "colour", "size", "price_min", "price_max", "brand", "gender", "quantity", "order_id")
CONTEXT_FEATURES = 2  # products on screen, photo attached
MAX_QUANTITY = 50  # a larger "count" is a price or a size, not how many to buy
TRAIN_THREADS = 1  # the MLP's small full-batch steps: 1 thread ~15 s, 2 threads on a busy 2-core machine ~140 s


# --- context and result --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DialogueContext:
    """What the recogniser knows about the conversation before this turn.

    Attributes:
        products_shown: How many products are on screen from the previous reply (0: none).
        has_photo: Whether the shopper attached a photo to this turn.
        last_intent: The previous turn's intent, if any.
    """

    products_shown: int = 0
    has_photo: bool = False
    last_intent: str | None = None

    @classmethod
    def of(cls, context: DialogueContext | Mapping[str, Any] | None) -> DialogueContext:
        """A context from a `DialogueContext`, a dict with the same keys (unknown keys ignored), or None."""
        if context is None:
            return cls()
        if isinstance(context, DialogueContext):
            return context
        shown = context.get("products_shown", 0)
        if isinstance(shown, Sequence) and not isinstance(shown, str):
            shown = len(shown)
        return cls(int(shown or 0), bool(context.get("has_photo", False)), context.get("last_intent"))

    def features(self) -> np.ndarray:
        """The context features the classifier sees: [products on screen, photo attached], each 0 or 1."""
        return np.array([float(self.products_shown > 0), float(self.has_photo)], dtype=np.float32)


@dataclass(frozen=True)
class Intent:
    """One recognised turn.

    Attributes:
        name: One of `INTENTS`.
        slots: Slot name (one of `SLOT_NAMES`) -> value; only the slots the shopper filled.
        confidence: Probability of `name` (1.0 for a rule that fired on its own).
        scores: Probability of every intent from the classifier (empty in rules mode).
        reference: 1-based position of the on-screen product the shopper points at ("the second one" -> 2),
            -1 for "the last one", None when no position is named.
        price_direction: ``lower`` for "cheaper", ``higher`` for "something nicer / more expensive", else None.
        goes_with: In a request for complements, what the products must go with as said ("grey hoodie", or "it"
            for the product on screen); None otherwise.
        source: What decided `name`: ``model``, ``rule`` or ``context``.
        query: The `SearchQuery` parsed from the normalised text (for search and refine turns).
        text: The normalised text the slots were read from.
    """

    name: str
    slots: dict[str, Any]
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)
    reference: int | None = None
    price_direction: str | None = None
    goes_with: str | None = None
    source: str = "model"
    query: SearchQuery | None = None
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without the parsed query)."""
        return {
            "intent": self.name,
            "slots": dict(self.slots),
            "confidence": round(self.confidence, 4),
            "reference": self.reference,
            "price_direction": self.price_direction,
            "goes_with": self.goes_with,
            "source": self.source,
        }


# --- ASR normalisation ---------------------------------------------------------------------------------------------

_CATEGORY_WORDS = (
    r"hoodies?|hoody|sweatshirts?|t ?shirts?|tees?|shirts?|jackets?|coats?|jeans|pants|shoes?|sneakers?|trainers?|"
    r"boots?|backpacks?|bags?|dress(?:es)?|hats?|caps?|beanies?|socks?|headphones?|bottles?|ones?"
)
_ASR_FIXES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        # "forty" heard as "for tea": only where a price is being said, so "a gift for tea lovers" stays
        (r"\b(?:for|four) tea\b(?=\s+(?:dollars?|bucks|or\b|tops\b|max\b|and\b|\w+ dollars))", "forty"),
        (r"\b(under|below|above|over|than|is|around|about|between) (?:for|four) tea\b", r"\1 forty"),
        (r"\bfourty\b", "forty"),
        (r"\bfitty\b", "fifty"),
        (r"\btwenny\b", "twenty"),
        (r"\bninty\b", "ninety"),
        (r"\b(in|the|a|bright|dark|light) read\b", r"\1 red"),
        (rf"\bread (?=(?:{_CATEGORY_WORDS})\b)", "red "),
        (r"\b(in|the|a|bright|dark|light|sky|baby|royal) blew\b", r"\1 blue"),
        (rf"\bblew (?=(?:{_CATEGORY_WORDS})\b)", "blue "),
        (r"\b(in|a) grey\b|\b(in|a) gray\b", r"\1\2 grey"),
        (r"\bbays\b|\bbayge\b|\bbeige\b", "beige"),
        (r"\bnavy blue\b", "navy"),
        (r"\b(?:double|two|2) ?x ?l\b|\bx ?x ?l\b", "xxl"),
        (r"\b(?:triple|three|3) ?x ?l\b|\bx ?x ?x ?l\b", "xxxl"),
        (r"\b(?:x|ex) ?l\b|\bex(?:tra)? ?large\b", "xl"),
        (r"\bx ?s\b|\bex ?small\b", "xs"),
        (r"\bextra-", "extra "),
        (r"\bmid(?:ium)?\b(?= size)", "medium"),
        (r"\bt[- ]?shirts?\b|\btee shirts?\b|\btees\b", "t-shirt"),
        (r"\bhoody\b", "hoodie"),
        (r"\bhoodys\b", "hoodies"),
        (r"\byou guys\b", "you"),  # a filler, not the men's department
        (r"\b(?:nothing|not|none|no)\s+(?:above|over|more than|higher than|pricier than)\s", "under "),
        (r"\bsize (?:ate)\b", "size eight"),
        (r"\bsize (?:for)\b", "size four"),
        (r"\bsize (?:to|too)\b", "size two"),
        (r"\bwaist (?:size )?", "size "),
        (r"\b(add|get|take|buy|order|grab|want|need) (?:to|too) (?=of\b|more\b|pairs?\b)", r"\1 two "),
        (r"\b(in|to|into) (?:my (?:shopping )?(?:bag|basket|card)|the (?:basket|card))\b", r"\1 my cart"),
        (r"\bhead phones?\b", "headphones"),
        (r"\bback packs?\b", "backpack"),
        (r"\bsneeker", "sneaker"),
        (r"\bwater bottles?\b", "water bottle"),
    )
)
_PUNCT_RE = re.compile(r"[^\w\s$&.#'/-]")


@functools.lru_cache(maxsize=8)
def _brand_patterns(keys: tuple[str, ...]) -> list[tuple[re.Pattern[str], str]]:
    """Spellings an ASR may produce for each brand ("oak crest", "harbour and pine") -> its lower-case key."""
    out: list[tuple[re.Pattern[str], str]] = []
    for key in keys:
        parts = []
        for word in key.split():
            if word == "&":
                parts.append(r"(?:&|and|n)")
            else:
                letters = [re.escape(c) for c in word]
                body = letters[0] + "".join(rf"\s?{c}" for c in letters[1:])
                parts.append(body.replace("o\\s?r", "o\\s?u?r"))  # harbor/harbour
        out.append((re.compile(r"(?<![a-z0-9])" + r"\s+".join(parts) + r"(?![a-z0-9])"), key))
    return out


def normalize_asr(text: str, vocab: QueryVocab | None = None) -> str:
    """Lower-case `text` and repair common ASR slips in shopping talk (see the module docstring).

    Args:
        text: A transcript or typed message.
        vocab: The catalog vocabulary, for brand spellings.

    Returns:
        The normalised text (numbers still in words: `words_to_numbers` runs later).
    """
    out = " ".join(_PUNCT_RE.sub(" ", text.lower().replace("’", "'")).split())
    for pattern, repl in _ASR_FIXES:
        out = pattern.sub(repl, out)
    for pattern, key in _brand_patterns(tuple(sorted(vocab.brands)) if vocab is not None else ()):
        out = pattern.sub(key, out)
    return " ".join(out.split())


# --- slots ---------------------------------------------------------------------------------------------------------

_AMOUNT = r"\$?\s*(\d+(?:\.\d{1,2})?)"
_CURRENCY = r"\s*(?:dollars?|bucks|usd)"
_EXTRA_MAX = (
    re.compile(rf"\bbudget\s+(?:is\s+|of\s+)?(?:about\s+|around\s+|like\s+|only\s+)?{_AMOUNT}"),
    re.compile(rf"{_AMOUNT}(?:{_CURRENCY})?\s+(?:or\s+(?:less|under|below|cheaper)|max(?:imum)?|tops|at most)\b"),
    re.compile(rf"\b(?:for|around|about|roughly|approximately)\s+(?:\$\s*(\d+(?:\.\d{{1,2}})?)|(\d+(?:\.\d{{1,2}})?){_CURRENCY})"),
    re.compile(r"(?<![\d.])(\d+(?:\.\d{1,2})?)\s*(?:dollar|buck)\s+(?!or\b)(?=[a-z])"),  # "a 30 dollar hoodie"
)
_EXTRA_MIN = (
    re.compile(rf"{_AMOUNT}(?:{_CURRENCY})?\s+(?:or\s+(?:more|above|over|higher)|and\s+(?:up|above|over)|plus)\b"),
)
_DIGIT_WORDS = (
    "zero oh o one two to too three four for five six seven eight ate nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety double triple"
).split()
_ID_TOKEN = r"(?:\d+|" + "|".join(sorted(_DIGIT_WORDS, key=len, reverse=True)) + r")\b"
_ORDER_CUE_RE = re.compile(
    r"\b(?:order|orders|purchase|package|parcel|shipment|delivery)\s*(?:number|num|no|id|#)?\s*(?:is\s+|was\s+)?#?\s*"
    rf"(?P<id>(?:s\s?t\b|es\s+tee\b|st-?)?[\s-]*(?:dash\s+)?(?:{_ID_TOKEN}[\s-]*){{3,12}})"
)
_ORDER_PREFIX_RE = re.compile(
    r"(?:\bst\s*-?\s*|\bs\s+t\s+|\bes\s+tee\s+)(?:dash\s+)?"
    rf"(?P<id>(?:{_ID_TOKEN}[\s-]*){{1,10}})"
)
_BARE_ID_RE = re.compile(r"(?<![\d.$])#?(\d{5})(?![\d.])")
_ORDER_WORDS_RE = re.compile(r"\b(?:order|package|parcel|shipment|deliver|tracking|shipped|arriv|warehouse|track)")
_QTY_PATTERNS = (
    re.compile(r"\b(\d{1,2})\s+(?:of\s+(?:those|these|them|it|that|this|each|the)|pairs?|units?|pieces?|items?|more|copies)\b"),
    re.compile(r"\b(?:quantity|qty)\s+(?:of\s+|to\s+)?(\d{1,2})\b"),
    re.compile(r"\bmake\s+(?:it|that|them)\s+(\d{1,2})\b"),
    re.compile(r"\b(?:add|buy|get|order|take|grab|put|want|need|give me|i'll take|ill take)\s+(\d{1,2})\b(?!\s*(?:dollars?|bucks|\$|%|percent))"),
    re.compile(rf"(?<![$.\d])\b(\d{{1,2}})\s+(?:[a-z]+\s+){{0,2}}?(?:{_CATEGORY_WORDS})\b"),
)
_QTY_WORDS_RE = re.compile(r"\ba\s+couple\s+(?:of\s+)?(?:those|these|them|more|pairs?|[a-z]+s)\b")
_NOT_QTY_BEFORE_RE = re.compile(
    r"(?:size|under|over|below|above|than|between|and|to|from|budget|is|\$|for|of|number|the|these|those|both|"
    r"all|my)\s*$"
)
_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4, "fifth": 5,
             "5th": 5, "sixth": 6, "last": -1, "final": -1, "top": 1}  # fmt: skip
_REFERENCE_RE = re.compile(
    r"\b(?:the\s+)?(first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|sixth|last|final)\s+(?:one|option|item|"
    r"product|pair|result|[a-z]+\s+one)\b|\bthe\s+(first|second|third|fourth|fifth|sixth|last|top)\b"
    r"(?!\s+(?:we|i|you|they|he|she|it|time|times|year|week|month|day|days|night|thing|few|couple)\b)"
    r"|\b(?:number|option|item|no)\s+(\d)\b"
)
_CHEAPER_RE = re.compile(
    r"\b(?:cheaper|less expensive|lower price|more affordable|budget friendly|too (?:expensive|pricey)|costs? less)\b"
)
_PRICIER_RE = re.compile(r"\b(?:more expensive|pricier|higher end|premium|fancier|nicer|better quality)\b")


def _amount(groups: Sequence[str | None]) -> float:
    return float(next(g for g in groups if g))


def _order_id(norm: str) -> tuple[str | None, tuple[int, int] | None]:
    """The canonical order id in `norm` and its span."""
    for pattern in (_ORDER_PREFIX_RE, _ORDER_CUE_RE):
        for m in pattern.finditer(norm):
            raw = re.sub(r"\b(?:s\s?t|es\s+tee|dash)\b", " ", m["id"])
            if found := normalize_order_id(raw):
                return found, m.span()
    if _ORDER_WORDS_RE.search(norm) and (bare := _BARE_ID_RE.search(norm)):
        return normalize_order_id(bare[1]), bare.span()
    return None, None


def extract_slots(
    text: str, vocab: QueryVocab | None = None, *, normalized: bool = False
) -> tuple[dict[str, Any], SearchQuery, int | None, str | None]:
    """Fill the slots of one turn.

    Args:
        text: The transcript.
        vocab: The catalog vocabulary (categories, brands); without it neither is recognised.
        normalized: Whether `text` already went through `normalize_asr`.

    Returns:
        (slots, the parsed query, reference to a product on screen, price direction).
    """
    norm = text if normalized else normalize_asr(text, vocab)
    order_id, span = _order_id(norm)
    rest = norm if span is None else norm[: span[0]] + " order " + norm[span[1] :]
    digits = words_to_numbers(rest)
    query = parse_query(rest, vocab)
    slots: dict[str, Any] = {}
    if query.category:
        slots["category"] = query.category
    if query.color:
        slots["colour"] = query.color
    if query.size:
        slots["size"] = query.size
    price_min, price_max = query.min_price, query.max_price
    if price_max is None:
        for pattern in _EXTRA_MAX:
            if m := pattern.search(digits):
                price_max = _amount(m.groups())
                break
    if price_min is None:
        for pattern in _EXTRA_MIN:
            if m := pattern.search(digits):
                price_min = _amount(m.groups())
                break
    if (price_min, price_max) != (query.min_price, query.max_price):
        query = replace(query, min_price=price_min, max_price=price_max)  # the search gets the filter too
    if price_min is not None:
        slots["price_min"] = price_min
    if price_max is not None:
        slots["price_max"] = price_max
    if query.brand:
        slots["brand"] = query.brand
    if query.gender:
        slots["gender"] = query.gender
    if (quantity := _quantity(digits, query)) is not None:
        slots["quantity"] = quantity
    if order_id:
        slots["order_id"] = order_id
    reference = None
    if m := _REFERENCE_RE.search(digits):
        word = m[1] or m[2]
        reference = _ORDINALS[word] if word else int(m[3])
    direction = "lower" if _CHEAPER_RE.search(norm) else "higher" if _PRICIER_RE.search(norm) else None
    return slots, query, reference, direction


def _quantity(digits: str, query: SearchQuery) -> int | None:
    """How many items the shopper asks for, from the digit form of the text; None when not said."""
    # Blank out the spans that are prices or sizes, so "size 10 boots" and "30 dollar hats" are not counts.
    masked = re.sub(r"\bsize\s+\d+(?:\.\d)?(?:\s+and a half)?", " ", digits)
    masked = re.sub(r"\$\s*\d+(?:\.\d+)?|\d+(?:\.\d+)?\s*(?:dollars?|bucks|usd)", " ", masked)
    for pattern in _QTY_PATTERNS:
        for m in pattern.finditer(masked):
            if _NOT_QTY_BEFORE_RE.search(masked[: m.start(1)]) and pattern is _QTY_PATTERNS[-1]:
                continue
            value = int(m[1])
            price = {query.max_price, query.min_price}
            if 1 < value <= MAX_QUANTITY and float(value) not in price:
                return value
    if _QTY_WORDS_RE.search(masked):
        return 2
    return None


# --- rules ---------------------------------------------------------------------------------------------------------

_GREETING_RE = re.compile(
    r"^(?:(?:hi|hello|hey|hiya|howdy|yo|good\s+(?:morning|afternoon|evening|night)|thanks?|thank\s+you|thx|"
    r"ty|cheers|bye|goodbye|bye\s+bye|see\s+(?:you|ya)(?:\s+later)?|later|that'?s\s+(?:all|it|everything)|"
    r"have\s+a\s+(?:nice|good|great)\s+(?:day|one|evening|night)|you'?re\s+(?:welcome|great|awesome|the\s+best)|"
    r"how\s+are\s+you(?:\s+doing)?|what'?s\s+up|nice\s+to\s+meet\s+you|great|awesome|perfect|cool|ok(?:ay)?|"
    r"so\s+much|a\s+lot|very\s+much|again|for\s+(?:your|the)\s+help|for\s+helping(?:\s+me)?|that'?s\s+(?:great|"
    r"helpful|perfect)|there|everyone|all|shoptalk|assistant|buddy|friend|mate|for\s+now|i'?m\s+done|"
    r"all\s+done|take\s+care|cya|morning|evening|really|you|and|so|well|oh|um|uh|then|bot)\s*)+$"
)
_HUMAN_RE = re.compile(
    r"\b(?:speak|talk|chat|connect|transfer|put)\b.{0,30}\b(?:human|person|agent|representative|rep|someone|"
    r"somebody|operator|staff|employee|manager|associate|people)\b|\b(?:real|live|actual)\s+(?:person|human|"
    r"agent|people)\b|\bhuman\s+(?:being|agent|help|please)\b|^(?:a\s+)?(?:human|agent|representative|operator)"
    r"(?:\s+please)?$|\bcustomer\s+(?:service|support)\s+(?:agent|rep|person|representative)"
)
# Words of a complaint (English, not any catalog's): the rules' complaint keywords, and what the dialogue asks of
# a turn the classifier calls a complaint before it hands the shopper to a person.
COMPLAINT_CUES = (
    r"\b(?:broken|broke|damaged|terrible|awful|worst|ripped|torn|defective|faulty|disappointed|"
    r"unhappy|not happy|complain|ridiculous|useless|scam|fell apart|never arrived|wrong (?:size|"
    r"item|colou?r|order)|rude|unacceptable|frustrat|angry|furious|still waiting|stopped working)"
)
_KEYWORDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(p))
    for name, p in (
        ("human", _HUMAN_RE.pattern),
        ("complaint", COMPLAINT_CUES),
        ("order_status", r"\b(?:where(?:'s| is) my|track(?:ing)?|order status|has my .{0,20}(?:shipped|arrived)|"
                         r"when will my|status of my|my (?:order|package|parcel|delivery))\b"),
        ("policy", r"\b(?:return|refund|exchange|shipping|ship to|deliver(?:y)? (?:cost|fee|time)|payment|pay with|"
                   r"pay by|paypal|credit card|apple pay|klarna|installments?|warranty|policy|gift card|"
                   r"how long does delivery|free delivery)"),
        ("photo_lookup", r"\b(?:photo|picture|pic|image|snap|screenshot|camera|look(?:s)? like this|like this one|"
                         r"what is this|find this|this thing)\b"),
        ("compare", r"\b(?:compare|comparison|difference|differ|versus|vs|better|which (?:one )?(?:is|should)|"
                    r"side by side)\b"),
        ("add_to_cart", r"\b(?:add|put|cart|basket|checkout|check out|wishlist|wish list|save (?:it|this|that)|"
                        r"i'?ll take|buy (?:it|this|that|them|the))\b"),
        ("product_question", r"\b(?:made of|material|fabric|machine wash|washable|wash|care|waterproof|run small|"
                             r"runs? (?:big|large|small)|true to size|what sizes|which sizes|sizes? (?:does|do|"
                             r"come)|warm|breathable|weigh|battery|lining|stretchy|dishwasher|in stock)\b"),
        ("recommendation", r"\b(?:recommend|suggest|gift|present|for my (?:friend|mom|dad|wife|husband|sister|"
                           r"brother|son|daughter|boyfriend|girlfriend)|what should i|ideas?|birthday|goes with|"
                           r"match(?:es)? with|surprise me|popular|best ?sellers?|trending)\b"),
        ("refine", r"^(?:(?:and|but|ok|okay|hmm|actually|what about|how about|maybe|any|anything|something|"
                   r"show me|do you have|got|in|it|that|those|them|one|ones)\s+)*(?:cheaper|less expensive|"
                   r"smaller|bigger|larger|in (?:a )?(?:different|another|other)|other colou?rs?)"),
        ("search", r"\b(?:looking for|show me|find me|search|do you (?:have|sell|carry)|i need|i want|"
                   r"got any|shopping for)\b"),
    )
)


def _rule_intent(norm: str, slots: Mapping[str, Any], ctx: DialogueContext) -> str:
    """A keyword guess at the intent (the rules-only mode)."""
    if _GREETING_RE.match(norm):
        return "greeting"
    if ctx.has_photo:
        return "photo_lookup"
    for name, pattern in _KEYWORDS:
        if pattern.search(norm):
            return name
    if "order_id" in slots:
        return "order_status"
    if slots and ctx.products_shown and "category" not in slots:
        return "refine"
    if slots:
        return "search"
    return "out_of_scope"


# --- the classifier ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierConfig:
    """Training settings of the intent MLP (stored in the cache key, so a change retrains).

    Attributes:
        hidden: Hidden units (0: softmax regression).
        epochs: Full-batch Adam steps.
        lr: Learning rate.
        weight_decay: AdamW weight decay.
        dropout: Dropout on the input features while training.
        seed: Seed for initialisation and dropout.
    """

    hidden: int = 256
    epochs: int = 400
    lr: float = 3e-3
    weight_decay: float = 1e-3
    dropout: float = 0.2
    seed: int = 0


class IntentClassifier:
    """A one-hidden-layer MLP over [sentence embedding, context features] -> intent probabilities (numpy forward).

    Args:
        weights: ``w1 [d, h]``, ``b1 [h]``, ``w2 [h, n]``, ``b2 [n]`` (or only ``w2 [d, n]``, ``b2`` for hidden 0).
        intents: Intent names in output order.
    """

    def __init__(self, weights: Mapping[str, np.ndarray], intents: Sequence[str]) -> None:
        self.weights = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        self.intents = tuple(intents)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities [n, intents] for features [n, d]."""
        h = features.astype(np.float32, copy=False)
        if "w1" in self.weights:
            h = np.maximum(h @ self.weights["w1"] + self.weights["b1"], 0.0)  # [n, hidden]
        logits = h @ self.weights["w2"] + self.weights["b2"]  # [n, intents]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return np.asarray(p / p.sum(axis=1, keepdims=True))

    @classmethod
    def train(
        cls, features: np.ndarray, labels: Sequence[str], intents: Sequence[str], config: ClassifierConfig
    ) -> IntentClassifier:
        """Fit on features [n, d] and their intent names (class-balanced cross-entropy, full-batch AdamW)."""
        import torch

        index = {name: i for i, name in enumerate(intents)}
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        y = torch.tensor([index[name] for name in labels])
        counts = torch.bincount(y, minlength=len(intents)).float().clamp(min=1)
        class_weight = counts.sum() / (len(intents) * counts)  # rare intents weigh as much as common ones
        dim, n = x.shape[1], len(intents)
        threads = torch.get_num_threads()
        torch.set_num_threads(TRAIN_THREADS)
        try:
            with torch.random.fork_rng():
                torch.manual_seed(config.seed)  # seeds the initialisation and the dropout masks
                layers: list[torch.nn.Module] = [torch.nn.Dropout(config.dropout)]
                if config.hidden:
                    layers += [torch.nn.Linear(dim, config.hidden), torch.nn.ReLU(), torch.nn.Linear(config.hidden, n)]
                else:
                    layers.append(torch.nn.Linear(dim, n))
                model = torch.nn.Sequential(*layers)
                opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
                loss_fn = torch.nn.CrossEntropyLoss(weight=class_weight, label_smoothing=0.05)
                model.train()
                for _ in range(config.epochs):
                    opt.zero_grad()
                    loss = loss_fn(model(x), y)
                    loss.backward()
                    opt.step()
        finally:
            torch.set_num_threads(threads)
        linears = [m for m in model if isinstance(m, torch.nn.Linear)]
        weights = {"w2": linears[-1].weight.detach().T.numpy(), "b2": linears[-1].bias.detach().numpy()}
        if len(linears) == 2:
            weights |= {"w1": linears[0].weight.detach().T.numpy(), "b1": linears[0].bias.detach().numpy()}
        log.info("trained intent classifier on %d examples (final loss %.3f)", len(labels), float(loss.detach()))
        return cls(weights, intents)

    def save(self, path: Path) -> None:
        """Write the weights and intent names to an ``.npz`` file (atomically)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        arrays: dict[str, Any] = {"intents": np.array(self.intents), **self.weights}
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> IntentClassifier:
        """Read weights written by `save`."""
        with np.load(path) as data:
            return cls({k: data[k] for k in data.files if k != "intents"}, [str(s) for s in data["intents"]])


def training_key(texts: Sequence[str], labels: Sequence[str], contexts: np.ndarray, model: str,
                 config: ClassifierConfig) -> str:
    """Cache key of a classifier: a hash of the training data, the encoder's name and the config."""
    digest = hashlib.sha256()
    payload = {"texts": list(texts), "labels": list(labels), "model": model, "config": vars(config),
               "intents": INTENTS, "contexts": contexts.astype(int).tolist()}
    digest.update(json.dumps(payload, sort_keys=True).encode())
    return digest.hexdigest()[:16]


# --- the recogniser ------------------------------------------------------------------------------------------------

Mode = Literal["model", "rules"]
_TRAINED: dict[str, IntentClassifier] = {}  # training key -> classifier, shared by the recognisers of a process
_REFERENCE_INTENTS = frozenset({"refine", "add_to_cart", "compare", "product_question"})
_SHOPPING = frozenset({"search", "refine", "recommendation"})


class IntentModel(Protocol):
    """What the dialogue asks of intent recognition: `IntentRecognizer`, or rules in tests."""

    def recognize(self, text: str, context: DialogueContext | Mapping[str, Any] | None = None) -> Intent: ...


class IntentRecognizer:
    """Intent and slots of a shopper's turn, given what is on screen.

    Args:
        vocab: The catalog vocabulary for category and brand slots (`QueryVocab.from_catalog`).
        encoder: A loaded `ranking.text_encoder.TextEncoder`; None loads the packaged MiniLM on first use.
        mode: ``model`` (MiniLM + MLP + rules) or ``rules`` (keyword rules only: no model, for fast tests).
        cache_dir: Where trained classifier weights are kept (``<cache_dir>/intent-<key>.npz``); None trains in
            memory (once per process: recognisers with the same training data share the classifier).
        config: Classifier training settings.
        words: The served catalog's kinds, lines, brands and colours (`CatalogWords`): the classifier then also
            learns from utterances in the catalog's own words (trained, and cached, per catalog).
    """

    def __init__(
        self,
        vocab: QueryVocab | None = None,
        encoder: SentenceEncoder | None = None,
        *,
        mode: Mode = "model",
        cache_dir: Path | None = None,
        config: ClassifierConfig | None = None,
        words: CatalogWords | None = None,
    ) -> None:
        if mode not in ("model", "rules"):
            raise ValueError(f"unknown intent mode {mode!r}; valid: model, rules")
        self.vocab = vocab
        self.mode: Mode = mode
        self.cache_dir = cache_dir
        self.config = config or ClassifierConfig()
        self.words = words  # the served catalog's words for half the training utterances (None: generic only)
        self._encoder = encoder
        self._classifier: IntentClassifier | None = None

    @property
    def encoder(self) -> SentenceEncoder:
        """The sentence encoder (loaded on first use)."""
        if self._encoder is None:
            from ranking.text_encoder import TextEncoder

            self._encoder = TextEncoder(device="cpu")
        return self._encoder

    @property
    def classifier(self) -> IntentClassifier:
        """The intent MLP: loaded from the cache, or trained (and cached) on first use."""
        if self._classifier is None:
            self._classifier = self._load_or_train(self.words)
        return self._classifier

    def warmup(self) -> IntentRecognizer:
        """Load the encoder and the classifier now rather than on the first turn."""
        if self.mode == "model":
            _ = self.classifier
            self.recognize("hello")
        return self

    def _load_or_train(self, words: CatalogWords | None) -> IntentClassifier:
        from assistant.conversation.intent_data import training_examples

        examples = training_examples(words=words)
        texts = [normalize_asr(e.text, self.vocab) for e in examples]
        labels = [e.intent for e in examples]
        contexts = np.stack([DialogueContext.of(e.context).features() for e in examples])
        key = training_key(texts, labels, contexts, self.encoder.name, self.config)
        if key in _TRAINED:  # another recogniser in this process already trained it (tests build many apps)
            return _TRAINED[key]
        path = self.cache_dir / f"intent-{key}.npz" if self.cache_dir is not None else None
        if path is not None and path.exists():
            try:
                return _TRAINED.setdefault(key, IntentClassifier.load(path))
            except (OSError, ValueError, KeyError) as err:
                log.warning("ignoring unreadable intent classifier %s: %s", path, err)
        start = time.perf_counter()
        unique = sorted(set(texts))
        vectors = dict(zip(unique, self.encoder.encode(unique), strict=True))
        features = np.concatenate([np.stack([vectors[t] for t in texts]), contexts], axis=1)
        classifier = IntentClassifier.train(features, labels, INTENTS, self.config)
        log.info("intent classifier ready in %.1f s (%d examples)", time.perf_counter() - start, len(texts))
        if path is not None:
            classifier.save(path)
        return _TRAINED.setdefault(key, classifier)

    def retrain(self, words: CatalogWords | None, vocab: QueryVocab | None = None) -> bool:
        """Learn another catalog's words (after a reload).

        This recogniser answers with the current classifier until the new one is trained (or loaded from the
        cache), then switches at once. False when `words` are the same.

        `vocab`: the new catalog's category and brand vocabulary, used for slots from now on.
        """
        if vocab is not None:
            self.vocab = vocab
        if words == self.words:
            return False
        classifier = self._load_or_train(words) if self.mode == "model" else None
        self.words, self._classifier = words, classifier
        return True

    def recognize(self, text: str, context: DialogueContext | Mapping[str, Any] | None = None) -> Intent:
        """Recognise the intent and slots of one turn.

        Args:
            text: The transcript or typed message.
            context: What is on screen (`DialogueContext`, or a dict with its keys); None: nothing.

        Returns:
            The `Intent`.
        """
        ctx = DialogueContext.of(context)
        norm = normalize_asr(text, self.vocab)
        slots, query, reference, direction = extract_slots(norm, self.vocab, normalized=True)
        scores: dict[str, float] = {}
        if self.mode == "rules":
            name, confidence, source = _rule_intent(norm, slots, ctx), 1.0, "rule"
        else:
            embedding = self.encoder.encode_query(norm or "(silence)")
            probs = self.classifier.predict_proba(np.concatenate([embedding, ctx.features()])[None, :])[0]
            scores = {n: float(p) for n, p in zip(self.classifier.intents, probs, strict=True)}
            name = max(scores, key=lambda k: scores[k])
            name, source = self._apply_rules(name, norm, slots, reference, ctx, scores)
            confidence = scores[name] if source == "model" else max(scores[name], 0.9 if source == "rule" else 0.0)
        if name in _REFERENCE_INTENTS and reference is None and ctx.products_shown == 1:
            reference = 1  # "add it to my cart" with one product on screen
        return Intent(
            name=name,
            slots=slots,
            confidence=float(confidence),
            scores=scores,
            reference=reference,
            price_direction=direction,
            goes_with=split[1] if (split := complement_request(norm)) is not None else None,
            source=source,
            query=query if name in _SHOPPING or name == "photo_lookup" else None,
            text=norm,
        )

    @staticmethod
    def _apply_rules(
        name: str,
        norm: str,
        slots: Mapping[str, Any],
        reference: int | None,
        ctx: DialogueContext,
        scores: Mapping[str, float],
    ) -> tuple[str, str]:
        """Correct the model's `name` where a rule is more reliable; returns (intent, source)."""
        if _GREETING_RE.match(norm):
            return "greeting", "rule"
        if _HUMAN_RE.search(norm):
            return "human", "rule"
        if "order_id" in slots and name not in ("complaint", "policy", "human"):
            return "order_status", "rule"
        if ctx.has_photo and name in ("search", "refine", "out_of_scope", "recommendation"):
            return "photo_lookup", "context"
        if name == "refine" and not ctx.products_shown and not ctx.has_photo:
            # Nothing on screen to refine: the attributes start a new search (or, with none, it is unclear).
            return ("search", "context") if slots or scores["search"] >= scores["out_of_scope"] else (name, "model")
        if name == "search" and ctx.products_shown and "category" not in slots and (
            reference is not None or slots.keys() & {"colour", "size", "price_min", "price_max", "brand", "gender"}
        ):
            return "refine", "context"
        return name, "model"
