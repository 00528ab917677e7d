"""The conversation layer: what a turn means given the conversation so far, and what the reply may say.

``Dialogue.plan`` turns one user turn into a ``Plan``: the products to show (if any), and either a reply that is
built here from known facts (a policy passage, an order row, a product's attributes, the cart) or ``None`` for the
search reply the ``ReplyWriter`` composes from the hits.  The brain streams either the same way (text deltas,
sentence-by-sentence speech, the grounding check).

What it handles, by intent (``assistant.conversation.intent``):

* ``search``/``photo_lookup``: a new query (a photo turn searches by the photo, refined by the words); a request too
  broad to search ("show me some stuff") gets a clarifying question naming the catalog's categories;
* ``refine``: the last query with the new slots on top ("in blue", "size M", "no, under forty" replaces the limit,
  "cheaper" caps the price below the cheapest shown);
* references to what is on screen: "the second one", "the last one", "the cheaper one", "the blue one",
  "that jacket";
* ``compare``, ``product_question`` (material, sizes, colours, care), ``add_to_cart`` (variant by size/colour; asks
  for the size when one is needed), ``order_status``, ``policy`` (quoted from the knowledge base, or "I don't know,
  let me connect you"), ``recommendation`` (for me: the shopper's history; for a friend / "what goes with the one my
  friend bought": friends' purchases, named), ``greeting``, ``human``, ``complaint``, ``out_of_scope``;
* the products talked about since the last search (``DialogueState.discussed``): "the other one", "which of the
  two is cheaper", "what do they each cost";
* property questions answered from the listing line that speaks to them ("which would keep me drier?", "which of
  these counts my steps?", "can any of these track my sleep?" -- none, said plainly);
* a choice is a purchase ("the Diva then, XS", "green, extra small, thanks" after asking about it), and the line just
  added can be changed ("actually make it a medium", "swap it for the Portia, same colour and size");
* sentiment and moderation: an abusive or unsafe turn gets a polite refusal (no search); a frustrated shopper gets an
  apology, fewer options and the offer of a person.

Every reply built here states only what its sources say; ``check_quoted`` verifies its numbers against them.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from assistant.catalog.model import Catalog
from assistant.catalog.view import CatalogView
from assistant.conversation.answers import (
    EVIDENCE_COSINE,
    attribute_lines,
    attribute_values,
    attributes_asked,
    best_evidence,
    clean_attributes,
    clear_winner,
    comes_in,
    join,
    labels,
    measurements,
    product_name,
    the_one_that,
    variant_of,
    what_it_says,
    words_of,
)
from assistant.conversation.coverage import Absence, CatalogCoverage
from assistant.conversation.intent import (
    COMPLAINT_CUES,
    DialogueContext,
    Intent,
    IntentModel,
    IntentRecognizer,
)
from assistant.conversation.measures import asked_measure, compare_on_measure
from assistant.conversation.names import Named, ProductNames
from assistant.conversation.several import Item, ListedItems
from assistant.conversation.vocabulary import CatalogVocabulary, plural
from assistant.core.signals import SessionSignals
from assistant.memory.store import SessionMemory
from assistant.replies.grounding import (
    ProductFact,
    facts_from_hits,
    format_price,
    spoken_name,
    without_injection,
)
from assistant.search.query import (
    COLOR_SYNONYMS,
    ProductHit,
    SearchQuery,
    canonical_color,
    canonical_size,
    complement_request,
    parse_query,
    refers_back,
    words_to_numbers,
)

if TYPE_CHECKING:
    from assistant.conversation.kb import KnowledgeBase
    from assistant.conversation.orders import OrderStore
    from assistant.memory.store import MemoryStore
    from assistant.safety.moderation import Moderator
    from ranking.text_encoder import SentenceEncoder

log = logging.getLogger(__name__)

T = TypeVar("T")

class SearchFn(Protocol):
    """The turn's search (`assistant.runtime.turn.Brain.search`), handed to each plan.

    It is handed over, not built in: a search needs the turn's photo (an upload the runtime holds) and the runtime
    owns it, and this room may not import the runtime. Synchronous: the whole plan runs in a worker thread.
    """

    def __call__(self, text: str, k: int | None = None, image_id: str | None = None, *, use_ranker: bool = True,
                 signals: SessionSignals | None = None, query: SearchQuery | None = None
                 ) -> tuple[SearchQuery, list[ProductHit]]: ...

FRUSTRATED = 0.5  # smoothed frustration from which the strategy changes
HANDOFF = "I'll connect you with someone from our team who can help."
BROAD_WORDS = frozenset({"something", "stuff", "things", "anything", "clothes", "products", "items", "gear",
                         "show", "me", "some", "want", "need", "looking", "for", "i", "a", "to", "buy", "i'm",
                         "what", "do", "you", "have", "got", "can", "see", "please", "like", "would", "the"})
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "1st": 1, "2nd": 2, "3rd": 3,
             "4th": 4, "5th": 5, "one": 1, "two": 2, "three": 3}
_STOCK_QUESTION = re.compile(r"\b(?:do|does|did|can|could)\s+(?:you|y'?all|they|the store|your store)\s+(?:guys\s+)?"
                             r"(?:sell|carry|stock|have|got)\b")
_SERVICE_WORDS = re.compile(r"\b(?:warrant|guarantee|return|refund|exchange|ship|deliver|pay|financ|install|"
                            r"gift ?card|coupon|discount|promo|membership|subscription|repair|service|price match)")
_PRONOUN = re.compile(r"\b(?:it|it's|its|that one|this one|that|this)\b")
_PHOTO_WORDS = re.compile(r"\b(?:photo|picture|pic|image|snap|screenshot|camera|like this|this thing|this one|"
                          r"what is this|find this)\b")
_WHAT_DO_YOU_SELL = re.compile(r"\bwhat (?:kinds? of |sorts? of |types? of )?(?:stuff|things|products|items)?\s*"
                               r"(?:do|does) (?:you|y'?all|the store|this store) (?:guys )?(?:sell|carry|have|stock)\b")
_POINTING = re.compile(r"^(?:(?:ok|okay|so|and|um|uh|hmm|yeah|yes|what about|how about|i like|i'll take|show me)\s+)*"
                       r"(?:the|that|this)\b")
_ONE_ANAPHORA = re.compile(r"\b(?:a|an|the|any)\s+(?:[a-z]+\s+){1,2}ones?\b(?!\s+(?:of|more))|"
                           r"\b(?:is there|are there|got|do you have|have you got|anything|any)\s+(?:one|ones|any)\s+"
                           r"(?:without|with|in|that|under|below|over|not|but|less|cheaper|made)\b")  # "is there one without wool"
# A turn that puts something in the cart: "add a small", "I'll take two", "one Sybil in a 31 please", "two of those"
_CART_START = re.compile(
    r"^(?:(?:ok|okay|great|nice|cool|perfect|alright|all right|yes|yeah|so|and|then|please|good)[,!.]?\s+)*"
    r"(?:add|put|i'?ll take|i'?ll get|i'?ll have|i will take|take|(?:one|two|three|four|five|\d+)\s+(?:of\s+(?:those|"
    r"these|them|it)\b|more\b(?!\s+(?:thing|question|quick|q\b|idea|point))))"  # not "one more thing, ..."
)
_QUANTITY_START = re.compile(r"^(?:(?:ok|okay|great|so|and|then)[,!.]?\s+)*(?:one|two|three|four|five|\d+)\s+\w+")
_CART_CORRECTION = re.compile(r"\b(?:make (?:it|that|them)|change (?:it|that) to|instead)\b")
_COMPLAINT = re.compile(COMPLAINT_CUES + r"|\b(?:bad|wrong|problem|issue|late|missing|hate|doesn't work|not working|"
                        r"never came|didn't (?:arrive|come)|poor|waste|sucks?|upset|annoy|sorry|why)\b")
_COMPARE_CUES = re.compile(r"\b(?:compare|comparison|vs|versus|or|difference|differ|better|best|than|which|both|"
                           r"between|either)\b")
_PRICE_AND_MATERIAL_WORDS = frozenset({"cheaper", "cheapest", "price", "cost", "costs", "expensive", "pricier",
                                       "made", "material", "fabric", "better", "which", "one", "is", "the"})
_COMPARE_WORDS = re.compile(r"\b(?:compare|comparison|vs|versus|difference|differ)\b")
_ATTRIBUTE_QUESTION = re.compile(r"\b(?:colou?rs?|price|prices|cost|costs|much|made|material|fabric|sizes?|fit|fits|"
                                 r"big|long|heavy|weigh|weight|warm|waterproof|wash|care|dimensions?|capacity|"
                                 r"pockets?|stretchy)\b")
_CONTINUATION = re.compile(r"^(?:(?:and|ok|okay|hmm|so)\s+)?(?:what|how) about\b|^(?:and|also)\b")
_CART_WORDS = re.compile(r"\b(?:add|adding|cart|basket|bag it|checkout|check out|buy|order|take|get|put|want|"
                         r"wishlist|wish list|save|grab|purchase)\b")
_LAST_ONE = re.compile(r"\blast (?:one|ones|option|item|product)\b|\bthe last(?: [a-z]+)?\s*$|\blast on the list\b")
_THE_OTHER = re.compile(r"\bthe other(?: one| ones)?\b")
_CHEAPER = re.compile(r"\b(?:cheaper|cheapest|less expensive|least expensive|more affordable|lower price|"
                      r"costs? (?:the )?least|least money|lowest price)\b")
_DEARER = re.compile(r"\b(?:pricier|priciest|more expensive|most expensive|dearer)\b")
_AMONG_SHOWN = re.compile(r"\b(?:any|which|none|either|neither)(?: one)? of (?:these|those|them|the (?:\w+ )?ones)\b|"
                          r"\bwhich (?:one|ones)\b")
_ORDER_CUES = re.compile(r"\b(?:orders?|ordered|package|parcel|shipment|deliver\w*|tracking|shipped|ship|arriv\w*|"
                         r"refund|return|st-?\d+|\d{4,})\b")
_ONE_MORE = re.compile(r"\b(?:one more|another one|two more|a second one)\b")
_OF_THE_TWO = re.compile(r"\b(?:of the two|of them both|of both)\b")
_CHOSEN = re.compile(r"^(?:(?:ok|okay|great|good|fine|alright|right|so|yes|yeah|then|just|please|perfect|lovely|cool|"
                     r"nice|fair enough|sounds good|in that case)[,!.]?\s+)*"
                     r"(?:the|that|this|one)\b")  # "ok the Electra then, black in a large", "one in orange please"
_CORRECTED = re.compile(r"\b(?:sorry|no wait|i mean|actually|make that|rather|scratch that|no,|hang on|"
                        r"on second thought)")
_AS_WELL = re.compile(r"\b(?:as well|too|also)\b")
# Choosing a product to buy: "I'll go with the Sylvia, green, 28", "the Diva then, XS", "just the watch then"
_DECISION = re.compile(r"\b(?:i'?ll go with|(?<!to )go with|i'?ll take|i take|i'?ll have|i'?ll get|swap (?:it|that|them) for|"
                       r"after all)\b")
# ... or said with "then": "the Diva then, XS", "perfect, the Fiona for her then" (not "ok a fleece one then")
_DECISION_THEN = re.compile(r"\b(?:the|this|that|just the) [\w' -]{1,40}? (?:then|for (?:her|him|me|them) then)\b|"
                            r"(?:then|please)\s*[,.]?\s*$")
# "put all three in my basket", "add them both", "I'll take all of them": every product on screen (or talked about)
_ALL_OF_THEM = re.compile(r"\b(?:all (?:(?:the |of the |of those |of these )?(?P<n>two|three|four|2|3|4)|of them|of those|of "
                          r"these)|them all|(?:them |these |those )?both|each of them|the lot)\b")
_CART_VIEW = re.compile(r"\b(?:what'?s|what is|what do i have|what have i (?:got|added)|show(?: me)?|check|view|see|"
                        r"read (?:me )?(?:back )?)\s+(?:in\s+)?(?:my|the) (?:cart|basket)\b|\bhow much is my (?:cart|basket|"
                        r"total)\b")
_PUT_IN = re.compile(r"\b(?:add|adding|cart|basket|buy|take|put|order|purchase|grab|checkout|check out)\b")
# (a verb: "something to carry my gym clothes in" is a bag)
_WEAR = re.compile(r"\b(?:wear|wearing|outfit|outfits|dress(?:ed)? (?:in|for)|put on)\b")
_BODY_SIZE = re.compile(r"(?:x{0,3}[sml]|x{1,3}l|xs|xxs|\d{1,2}(?:\.5)?|one size)", re.IGNORECASE)
_MEASURE_WORDS = {("volume", True): "bigger", ("volume", False): "smaller", ("length", True): "longer",
                  ("length", False): "shorter", ("weight", True): "heavier", ("weight", False): "lighter"}
_LIKE_IT = re.compile(r"\b(?:along (?:those|these|the same) lines|like (?:it|that|this)(?: one)?|similar|something like)\b")
_IN_THE_CART = re.compile(r"\b(?:in|into|to) (?:the|my|your) (?:cart|basket|trolley)\b")
_SAME_SPEC = re.compile(r"\bsame (?:size|colou?r)s?\b")
_WITHOUT = re.compile(r"\b(?:without|w/o|minus|non|not|no)[- ](?:any |a |an |the )?([a-z]+)")
_ADDED = re.compile(r"Added (.+?) to your cart\.")
_SWAP = re.compile(r"\b(?:swap (?:it|that|them) for|instead|after all|same (?:colou?r|size))\b")
_SPEC_WORDS = frozenset("""size small medium large extra x xs s m l xl xxl two three one of them those please thanks thank
you ok okay and in a the both each pair pairs""".split())
_LESS_MONEY = re.compile(r"\b(?:for less|cheaper|more cheap|less expensive|too (?:much|expensive|pricey)|pricey|steep|"
                         r"out of my budget|over my budget|can'?t afford)\b")
_OTHER_COLOUR = re.compile(r"\b(?:other than|besides|apart from|except|another colou?r|other colou?rs?|different colou?rs?|"
                           r"any other colou?r)\b")
_NOT_ABOUT_SHOWN = frozenset({"anything", "something", "any", "other", "more", "else", "another", "some"})
_SELF_CORRECTION = re.compile(r"^(?:(?:no|nope|oh|wait|sorry|actually|hmm|um|uh|i mean|scratch that)\b[\s,.!]*)+")
_TELL_ME_ABOUT = re.compile(r"\b(?:tell me (?:more )?about|more (?:info|details) (?:on|about)|details (?:on|of|about))\b")
REMEMBERED_SLOTS = ("order_id", "size", "colour")  # carried over to later turns until the shopper gives a new value
_QUESTION_START = re.compile(r"^(?:[^,?]*,\s*)?(?:is|are|does|do|will|would|can|could|how|what|what's|where|where's|"
                             r"which|has|have)\b|.*\?")  # also after a comma: "the aeon capri, where's the pocket"
_PRICE = re.compile(r"\$\s?\d[\d,]*(?:\.\d+)?|\b\d+(?:\.\d+)?\s?%|\b\d[\d,]*(?:\.\d+)?\b")


@dataclass
class DialogueState:
    """One conversation's working state (the durable part lives in ``SessionMemory``)."""

    last_query: SearchQuery | None = None
    shown: list[ProductHit] = field(default_factory=list)
    focus: ProductHit | None = None  # the product the shopper last pointed at
    last_intent: str | None = None
    frustration: float = 0.0  # smoothed over turns
    memory: SessionMemory | None = None
    # Slots the shopper gave in earlier turns that later turns may leave out ("where is my order?" after giving
    # its number); a new value replaces the old one.
    remembered: dict[str, Any] = field(default_factory=dict)
    # The last line put in the cart (product id, variant id, size, colour, quantity): "actually make it a medium"
    # changes it instead of adding another.
    last_added: tuple[str, str, str | None, str | None, int] | None = None
    # The lines put in the cart in this conversation, most recent last: "make it two ropes" changes the rope's line.
    added_lines: list[tuple[str, str, str | None, str | None, int]] = field(default_factory=list)
    last_question: str | None = None  # the last product question, for "and the Juno?"
    last_question_slots: dict[str, Any] = field(default_factory=dict)  # its size and colour ("in yellow XL?")
    # The products talked about since the last search, most recent last: "the other one", "which of the two".
    discussed: list[ProductHit] = field(default_factory=list)
    heard: bool = True  # this turn's words were transcribed (may be misheard), not typed (`Brain.respond` sets it)
    # One plan at a time: a reply cancelled while its plan runs in a worker thread finishes that plan before the
    # next turn's plan reads the state.
    planning: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def talked_about(self, *hits: ProductHit) -> None:
        """Note products the conversation is now about (most recent last, each once, the last four)."""
        for hit in hits:
            self.discussed = [h for h in self.discussed if h.product.id != hit.product.id] + [hit]
        self.discussed = self.discussed[-4:]

    def the_other(self) -> ProductHit | None:
        """"The other one": of the two products last talked about (else the two on screen), not the one in focus."""
        focus = self.focus.product.id if self.focus is not None else None
        matches = [h for h in self.shown if not h.near_miss]  # the alternatives shown are not "the other"
        for pair in (self.discussed[-2:], self.shown if len(self.shown) == 2 else [], matches):
            if len(pair) == 2 and focus in {h.product.id for h in pair}:
                return next(h for h in pair if h.product.id != focus)
        return None

    @classmethod
    def restore(cls, memory: SessionMemory, catalog: Any | None) -> DialogueState:
        """A resumed session's state: the products it was shown last (in order) and its last query."""
        state = cls(memory=memory)
        if catalog is not None:
            products = [catalog.get(pid) for pid in memory.shown()]
            state.shown = [ProductHit(p, 0.0, "shown before") for p in products if p is not None]
        preferences = memory.preferences()
        saved = preferences.get("last_query")
        if isinstance(saved, dict):
            with contextlib.suppress(TypeError):
                state.last_query = SearchQuery(**saved)
        remembered = preferences.get("remembered_slots")
        if isinstance(remembered, dict):
            state.remembered = {k: v for k, v in remembered.items() if k in REMEMBERED_SLOTS and isinstance(v, str)}
        return state

    def save(self) -> None:
        """Remember the last query and the slots that carry over, for a resumed session.

        Shown products are saved as they are shown.
        """
        if self.memory is not None and self.last_query is not None:
            self.memory.set_preference("last_query", asdict(self.last_query))
        if self.memory is not None and self.remembered:
            self.memory.set_preference("remembered_slots", dict(self.remembered))


@dataclass
class Plan:
    """What to answer.

    Attributes:
        intent: The recognised turn (None when recognition is off).
        query: The query to echo in the reply and to check prices and colours against.
        hits: Products to show (a ``response.products`` event), or None for none.
        reply: The reply text, built here from ``sources``; None: the reply writer composes it from ``hits``.
        sources: The texts ``reply`` was built from (passages, order sentences, attribute lists).
        facts: Product facts the reply may state (for the grounding check).
        handoff: The shopper should be offered a person.
        preface: Said before the reply (an apology to a frustrated shopper).
        postscript: Said after it (the offer of a person).
    """

    intent: Intent | None
    query: SearchQuery
    hits: list[ProductHit] | None = None
    reply: str | None = None
    sources: list[str] = field(default_factory=list)
    facts: list[ProductFact] = field(default_factory=list)
    handoff: bool = False
    preface: str = ""
    postscript: str = ""


def check_quoted(reply: str, sources: Sequence[str], facts: Sequence[ProductFact] = ()) -> list[str]:
    """Numbers and prices in ``reply`` that none of ``sources`` (or the facts' prices) contain."""
    allowed = " ".join(sources)
    known = {round(f.price, 2) for f in facts}
    bad = []
    for m in _PRICE.finditer(reply):
        token = m.group(0)
        digits = re.sub(r"[^\d.]", "", token).rstrip(".")
        if not digits:
            continue
        try:
            if round(float(digits), 2) in known:
                continue
        except ValueError:
            pass
        if digits not in re.sub(r"[,$]", "", allowed):
            bad.append(f"unsupported number {token!r}")
    return bad


_QUESTION_WORDS = frozenset({"what", "what's", "where", "where's", "which", "how", "does", "is", "are", "made",
                             "material", "fabric", "wash",
                             "care", "fit", "sizes", "colours", "colors", "come", "much", "cost", "price", "?"})


def _body_sized(product: Any) -> bool:
    """Whether a product comes in body sizes (S, XL, a waist 30): something to wear, not a "55 cm" ball."""
    return any(_BODY_SIZE.fullmatch(str(size).strip()) for size in product.sizes())


def _asks_about(text: str) -> bool:
    """Whether the turn asks something ("what is it made of?") rather than picks ("the second one in medium")."""
    return "?" in text or bool(_QUESTION_WORDS & set(_words(text)))


_words = words_of  # lower-case words, apostrophes kept


def resolve_reference(intent: Intent | None, text: str, shown: Sequence[ProductHit],
                      focus: ProductHit | None = None) -> ProductHit | None:
    """The on-screen product the shopper points at, or None."""
    if not shown:
        return focus
    words = _words(text)
    last = bool(_LAST_ONE.search(" ".join(words)))  # "the last one", not "the last we saw of it"
    pointed = last or any(w in _ORDINALS and w not in ("one", "two", "three") for w in words) or \
        bool(set(words) & {"cheaper", "cheapest", "less", "pricier", "expensive", "priciest"})
    if focus is not None:  # "that jacket" with a hoodie in focus points at the jacket on screen
        focus_words = set(_words(focus.product.title)) | set(_words(focus.product.leaf_category))
        other_nouns = {w.rstrip("s") for w in words if len(w) > 3 and w not in BROAD_WORDS} - \
            {t.rstrip("s") for t in focus_words}
        pointed = pointed or any(other_nouns & {t.rstrip("s") for t in _words(h.product.title)} for h in shown)
    # "the green one" points at a product; "in green", "add one in grey, sorry, green" ask for a colour of it
    pointing_colours = {w for i, w in enumerate(words) if w in COLOR_SYNONYMS and (
        i + 1 < len(words) and words[i + 1] in ("one", "ones") or i > 0 and words[i - 1] in ("the", "that", "this"))}
    if focus is not None and not pointed and (_PRONOUN.search(text.lower()) or not pointing_colours):
        return focus  # "add it in black", "add a 29 in blue", "and the price?": the product talked about
    if intent is not None and intent.reference is not None:
        ref = intent.reference
        if ref == -1:
            return shown[-1]
        if 1 <= ref <= len(shown):
            return shown[ref - 1]
    for w in words:
        if w in _ORDINALS and _ORDINALS[w] <= len(shown) and w not in ("one", "two", "three"):
            return shown[_ORDINALS[w] - 1]
    if last:
        return shown[-1]
    if any(w in words for w in ("cheaper", "cheapest", "less")):
        return min(shown, key=lambda h: h.price)
    if any(w in words for w in ("pricier", "expensive", "priciest")):
        return max(shown, key=lambda h: h.price)
    colours = [COLOR_SYNONYMS[w] for w in words if w in COLOR_SYNONYMS]
    if colours:
        for hit in shown:
            if colours[0] in [canonical_color(c) for c in hit.product.colors()]:
                return hit
    for hit in shown:  # "that jacket": a word of the title or the leaf category
        title_words = set(_words(hit.product.title)) | set(_words(hit.product.leaf_category))
        nouns = [w for w in words if len(w) > 3 and w not in BROAD_WORDS]
        if any(w in title_words or w.rstrip("s") in {t.rstrip("s") for t in title_words} for w in nouns):
            return hit
    return focus


def merge_refinement(last: SearchQuery, new: SearchQuery, intent: Intent | None, shown: Sequence[ProductHit],
                     text: str) -> SearchQuery:
    """The previous query with this turn's slots on top; a correction ("no, under forty") replaces a slot."""
    merged = last
    for name in ("max_price", "min_price", "color", "size", "category", "brand", "gender"):
        value = getattr(new, name)
        if value is not None:
            merged = replace(merged, **{name: value})
    direction = intent.price_direction if intent is not None else None
    words = set(_words(text))
    if direction is None and words & {"cheaper", "cheapest", "less", "budget", "affordable"}:
        direction = "lower"
    if direction == "lower" and new.max_price is None and shown:
        merged = replace(merged, max_price=round(min(h.price for h in shown) - 0.01, 2), min_price=None)
    elif direction == "higher" and new.min_price is None and shown:
        merged = replace(merged, min_price=round(max(h.price for h in shown) + 0.01, 2), max_price=None)
    if new.category is not None and new.category != last.category:
        merged = replace(merged, text=new.text)
    return replace(merged, k=last.k)


def _one_of(value: str | None, options: Sequence[str], canon: Callable[[str], str]) -> str | None:
    """`value` as the product spells it, when it is one of `options` (compared in canonical form)."""
    if not value:
        return None
    return next((o for o in options if canon(o) == canon(value)), None)


def _new_kind(intent: Intent, last: SearchQuery) -> bool:
    """Whether the turn asks for another kind than the last search: then it is a new search.

    "Gray sweatshirts in large" after "hoodies under $50" must not keep the old price limit.
    """
    category = intent.query.category if intent.query is not None else None
    return category is not None and last.category is not None and category != last.category


def main_kinds(catalog: Catalog, n: int = 6) -> list[str]:
    """The catalog's `n` leaf categories with the most products, lower-case (for "hoodies, jackets or tees?")."""
    leaves = Counter(p.leaf_category.lower() for p in catalog.parents() if p.leaf_category)
    return [c for c, _ in leaves.most_common(n)]


class Dialogue:
    """Plans each turn of a conversation.

    Args:
        recognizer: An `IntentModel`: ``assistant.conversation.intent.IntentRecognizer``, or rules in tests.
        kb: ``assistant.conversation.kb.KnowledgeBase`` for policy questions (None: always hands off).
        orders: ``assistant.conversation.orders.OrderStore`` for order status (None: hands off).
        moderator: ``assistant.safety.moderation.Moderator`` (None: no sentiment or moderation).
        memory_store: ``assistant.memory.store.MemoryStore``, for friends' purchases and their names.
        categories: The catalog's leaf categories, for clarifying questions.
        catalog: The catalog (variants for add to cart; friends' products).
    """

    def __init__(self, recognizer: IntentModel, *, kb: KnowledgeBase | None = None, orders: OrderStore | None = None,
                 moderator: Moderator | None = None, memory_store: MemoryStore | None = None,
                 categories: Sequence[str] = (), catalog: Catalog | None = None,
                 vocabulary: CatalogVocabulary | None = None, view: CatalogView | None = None) -> None:
        self.recognizer = recognizer
        self.kb = kb
        self.orders = orders
        self.moderator = moderator
        self.memory_store = memory_store
        self._categories = list(categories)
        if view is None and catalog is not None:
            view = CatalogView(catalog, **({"vocabulary": vocabulary} if vocabulary is not None else {}))
        self.view = view

    @property
    def catalog(self) -> Catalog | None:
        """The catalog served now (the shared view's: a reload swaps it for every reader at once)."""
        return self.view.catalog if self.view is not None else None

    @property
    def vocabulary(self) -> CatalogVocabulary | None:
        """The served catalog's spoken vocabulary (built once per catalog)."""
        return self.view.derived("vocabulary", CatalogVocabulary.from_catalog) if self.view is not None else None

    @property
    def categories(self) -> list[str]:
        """The kinds named in clarifying questions: the given ones, else the served catalog's six largest."""
        if self._categories or self.view is None:
            return self._categories
        return self.view.derived("main_kinds", main_kinds)

    @property
    def names(self) -> ProductNames | None:
        """The served catalog's product names (rebuilt when a reload swaps the catalog)."""
        if self.view is None:
            return None
        return self.view.derived("names", lambda catalog: ProductNames(catalog, self.vocabulary))

    def named(self, text: str, state: DialogueState) -> list[ProductHit]:
        """The products this turn names, on screen first, then anywhere in the catalog (names over positions)."""
        return [n.hit for n in self._lookup(text, state)]

    def _lookup(self, text: str, state: DialogueState) -> list[Named]:
        """`named`, with where in the turn each name was said (for "X, no hang on, Y" and "the X and the Y")."""
        names = self.names
        if names is None or not text:
            return []
        return names.named(text, state.shown)

    def plan(self, text: str, *, image_id: str | None, state: DialogueState, search: SearchFn,
             signals: SessionSignals | None, k: int) -> Plan:
        """What to answer to one turn, and the products to show.

        It blocks (model calls, SQLite, searches): the runtime runs it in a worker thread, never on the event loop.
        """
        text = text.strip()
        if self.moderator is not None and text:
            from assistant.safety.moderation import safety_reply

            assessment = self.moderator.assess(text)
            safe = safety_reply(assessment)
            if safe is not None:
                return self._said(None, text, safe, sources=[safe], handoff=True)
            if assessment.abusive:
                return self._said(None, text, "I'd like to help, but let's keep it friendly. What are you "
                                  "shopping for?")
            state.frustration = 0.5 * state.frustration + 0.5 * assessment.frustration
        context = DialogueContext(products_shown=len(state.shown), has_photo=image_id is not None,
                                  last_intent=state.last_intent)
        intent: Intent = self.recognizer.recognize(text, context) if text else \
            Intent("photo_lookup", {}, 1.0, source="rule")
        for slot in REMEMBERED_SLOTS:
            if intent.slots.get(slot):
                state.remembered[slot] = intent.slots[slot]
        intent = self._reroute(intent, text, state, image_id)
        state.last_intent = intent.name
        frustrated = state.frustration >= FRUSTRATED
        plan = self._dispatch(intent, text, image_id, state, search, signals, k)
        if frustrated and intent.name not in ("greeting", "complaint", "human"):
            if plan.reply is None and plan.hits:
                plan.hits = plan.hits[:2]  # simplify: fewer options
                state.shown = list(plan.hits)
                plan.facts = facts_from_hits(plan.hits)
            plan.preface = "I'm sorry this has been frustrating."
            if not plan.handoff:
                plan.postscript = "If you'd rather, I can connect you with a person."
                plan.handoff = True
        return plan

    def _reroute(self, intent: Intent, text: str, state: DialogueState, image_id: str | None) -> Intent:
        """Fix intents the words themselves contradict (the classifier learned them on another catalog)."""
        low = text.lower()
        if complement_request(low) is not None and intent.name not in ("add_to_cart", "greeting", "complaint",
                                                                       "human"):
            return replace(intent, name="recommendation", source="rule")  # "what goes with it?": other products
        if intent.name == "photo_lookup" and image_id is None and not _PHOTO_WORDS.search(low):
            intent = replace(intent, name="search", source=f"{intent.source}+no-photo")  # "yoga videos for beginners"
        if _WHAT_DO_YOU_SELL.search(low):
            return replace(intent, name="catalog_overview", source="rule")
        named = self.named(text, state)  # looked up once: every rule below asks
        puts_in_cart = self._puts_in_cart(text, state, named)
        if intent.name == "add_to_cart" and not _CART_WORDS.search(low) and not puts_in_cart:
            # "ok what about capris" adds nothing; "actually make it two" after adding changes the cart
            intent = replace(intent, name="search", source=f"{intent.source}+no-cart-word")
        elif intent.name == "add_to_cart" and not puts_in_cart and not named and not _PUT_IN.search(low) and \
                self.coverage is not None:
            budget = intent.query or parse_query(text, self.coverage.query_vocab)
            if budget.max_price or budget.min_price:  # "only want to spend like 30 max": a budget, not the cart
                intent = replace(intent, name="refine" if state.last_query is not None else "search", query=budget,
                                 source=f"{intent.source}+budget")
        if intent.name == "complaint" and not _COMPLAINT.search(low) and self.coverage is not None \
                and self.coverage.defining_words(intent.query.text if intent.query is not None else text):
            # "a denim skirt in blue" is a request, whatever the classifier made of it: no complaint word in it
            intent = replace(intent, name="search", source=f"{intent.source}+no-complaint-word")
        if intent.name != "add_to_cart" and (puts_in_cart or _CART_VIEW.search(low)):
            intent = replace(intent, name="add_to_cart", source=f"{intent.source}+cart-verb")  # or "what's in my cart?"
        if intent.name == "order_status" and not _ORDER_CUES.search(low) and (
                state.focus or state.shown or named or self._names_a_kind(text)):
            # "has it got anywhere to stash my keys": about the product, whatever the classifier made of "it got"
            about_one = (state.focus is not None or named) and (_asks_about(text) or _PRONOUN.search(low)
                                                                 or _QUESTION_START.match(low))
            intent = replace(intent, name="product_question" if about_one and not self._names_a_kind(text)
                             else "search", source=f"{intent.source}+no-order-word")
        if intent.name == "out_of_scope" and (self._names_a_kind(text) or _STOCK_QUESTION.search(low) and
                                              self.coverage is not None and self.coverage.defining_words(text)):
            # "a watch with bluetooth" asks for products; "does the summit watch light up?" about the one it names
            return self._about_named(replace(intent, name="search", source=f"{intent.source}+kind"), text, bool(named))
        if intent.name in ("out_of_scope", "search", "refine", "recommendation") and _TELL_ME_ABOUT.search(low) \
                and named:
            return replace(intent, name="product_question", source=f"{intent.source}+named")
        if intent.name == "compare" and len(named) <= 1 and not _COMPARE_CUES.search(low):
            return replace(intent, name="product_question", source=f"{intent.source}+one")  # "is the Jade one warm"
        if intent.name == "product_question" and _COMPARE_WORDS.search(low) and len(named) == 1 \
                and state.focus is not None and state.focus.product.id != named[0].product.id:
            return replace(intent, name="compare", source=f"{intent.source}+focus")  # "compare it with the X"
        words = _words(low)
        terse = len(words) <= 3 and low.rstrip().endswith("?") and not named and not self._names_a_kind(text) \
            and not set(words) & _NOT_ABOUT_SHOWN and not (intent.query is not None and intent.query.has_filters)
        if terse and intent.name in ("out_of_scope", "search", "refine", "recommendation", "product_question",
                                     "compare") and (state.focus is not None or len(state.shown) >= 2):
            # "cheapest?", "pockets?", "digital?", "swim ok?": about what is on screen or in focus
            cheap = _CHEAPER.search(low) or _DEARER.search(low)
            return replace(intent, name="compare" if cheap else "product_question", source=f"{intent.source}+terse")
        if state.last_query is None and state.focus is not None and _LESS_MONEY.search(low):
            kind = _words(state.focus.product.title)[-1:]  # "how much is the Chloe tank?" then "anything for less?"
            state.last_query = SearchQuery(text=" ".join(kind), k=5)
        if (intent.name in ("search", "refine", "complaint", "recommendation", "out_of_scope") or intent.name in (
                "product_question", "compare") and set(words) & _NOT_ABOUT_SHOWN and "than" not in words) \
                and _LESS_MONEY.search(low) \
                and (state.focus is not None or state.shown) and state.last_query is not None \
                and not _new_kind(intent, state.last_query):
            # "bit steep for a tank. got anything like it for less?": the same search, below what was shown
            return replace(intent, name="refine", price_direction="lower", source=f"{intent.source}+less-money")
        if intent.name in ("out_of_scope", "product_question", "search", "refine") and len(state.shown) >= 2 \
                and not named and _AMONG_SHOWN.search(low) and not self._names_a_kind(text) \
                and not (intent.query is not None and intent.query.has_filters):
            return replace(intent, name="compare", source=f"{intent.source}+among-shown")  # "can any of these ..."
        if state.focus is not None and not named and _SELF_CORRECTION.match(low) and not puts_in_cart \
                and (intent.slots.get("colour") or intent.slots.get("size")) and not self._names_a_kind(text) \
                and (self.coverage is None or not self.coverage.defining_words(_SELF_CORRECTION.sub("", low))):
            return replace(intent, name="product_question", source=f"{intent.source}+correction")  # "no wait, green"
        if intent.name in ("search", "refine", "recommendation", "out_of_scope") and not named \
                and _THE_OTHER.search(low) and state.last_question and state.the_other() is not None \
                and not (intent.query is not None and intent.query.category is not None):
            return replace(intent, name="product_question", source=f"{intent.source}+the-other")  # "and the other?"
        if self._about_focus(intent, text, state):
            return replace(intent, name="product_question", source=f"{intent.source}+focus")
        nothing_to_ask_about = state.focus is None and not state.shown and not named
        if intent.name == "product_question" and not named and (
                not _PRONOUN.search(low) and not _QUESTION_START.match(low) and self._names_a_kind(text)
                or nothing_to_ask_about and (self.coverage is not None and self.coverage.defining_words(text)
                                             or intent.query is not None and intent.query.category is not None
                                             or bool(intent.slots.get("category")))):
            return replace(intent, name="search", source=f"{intent.source}+asks-for-a-kind")  # "a bag with ..."
        return self._about_named(intent, text, bool(named))

    def _puts_in_cart(self, text: str, state: DialogueState, named: Sequence[ProductHit]) -> bool:
        """"Add a small", "I'll take two", "one Sybil in a 31", "actually make it a medium" after adding: the cart.

        Only with something to add (a product in focus or on screen, or one the turn names) and no kind named
        anew ("add a hoodie under 50" stays a search).
        """
        low = text.lower().strip()
        if not (state.focus is not None or state.shown or named):
            return False
        if state.last_intent == "add_to_cart" and state.last_added is not None and _CART_CORRECTION.search(low):
            return True
        if _CART_START.match(low):
            return bool(named) or not self._names_a_kind(text)
        if state.last_intent == "add_to_cart" and named and _AS_WELL.search(low) and not _asks_about(text) \
                and not re.search(r"\b(?:a|an|some|any)\b", low):  # "and a tank top to go with it, red too" asks
            return True  # "oh and the jump rope as well", right after adding something
        decided = _DECISION.search(low) or _DECISION_THEN.search(low) and not re.search(
            r"\b(?:a|an|any|some|another)\b", low)
        matches = [h for h in state.shown if not h.near_miss]
        pointed = state.focus is not None or len(matches) == 1  # "ok that one please" when one match was shown
        if not _asks_about(text) and (named or pointed) and decided and (
                named or _CHOSEN.match(low) or re.search(r"\b(?:it|this|that|one)\b", low)) and (
                named or state.last_intent in ("product_question", "compare", "add_to_cart", "search", "refine")):
            return True  # "I'll go with the Sylvia, green, 28"; "perfect, the Fiona for her then"
        if state.focus is not None and state.last_intent in ("product_question", "compare", "add_to_cart") \
                and not _asks_about(text) and self._only_spec(text):
            return True  # "purple. small. two of them" right after asking about the Antonia tank
        asks = "?" in text or bool(_QUESTION_START.match(low))  # a question, not "the inez is fine"
        if _IN_THE_CART.search(low) and not asks:
            return True  # "whichever's cheapest, in the cart"
        if named and _SAME_SPEC.search(low) and not asks:
            return True  # "bit over budget. the inez is fine, same size and colour"
        # the last sentence, without an interjection before it ("hmm bit over budget. grand, the juno ...")
        last = re.sub(r"^[a-z']+,\s+(?=(?:the|that|this|one)\b)", "", re.split(r"(?<=[.!?])\s+", low)[-1])
        if _CHOSEN.match(last) and not _asks_about(text) and not self._names_a_kind(text):
            # the product chosen with its colour and size: "ok just the Aeon then, black, size 28"
            colour = any(w in COLOR_SYNONYMS for w in _words(last))
            if colour and re.search(r"\b(?:size|small|medium|large|x-?small|x-?large|xs|xl|\d{2})\b", last):
                return True
        return bool(_QUANTITY_START.match(low) and named) and not _asks_about(text)  # "one Sybil in a 31 please"

    @staticmethod
    def _only_spec(text: str) -> bool:
        """Whether the turn says only a colour, a size and a quantity ("green, extra small, thanks")."""
        words = _words(words_to_numbers(text.lower()))
        has_slot = any(w in COLOR_SYNONYMS for w in words) or bool(re.search(
            r"\b(?:small|medium|large|xs|xl|xxl|\d{2})\b", " ".join(words)))
        return has_slot and all(w in COLOR_SYNONYMS or w in _SPEC_WORDS or w.isdigit() for w in words)

    def _names_a_line(self, text: str) -> bool:
        """Whether the turn says a product-line name ("Bolo", "Sprite")."""
        names = self.names
        return names is not None and any(t in names.vocabulary.lines for t in names.vocabulary.terms_in(text))

    def _names_a_kind(self, text: str) -> bool:
        """Whether the turn names one of the catalog's kinds ("a backpack with a rain cover")."""
        names = self.names
        return names is not None and any(t in names.vocabulary.kinds for t in names.vocabulary.terms_in(text))

    def _about_focus(self, intent: Intent, text: str, state: DialogueState) -> bool:
        """"What colours can I get it in?", "and the price?" with one product in focus: a question about it."""
        low = text.lower()
        if intent.name not in ("search", "refine", "recommendation", "out_of_scope") or not _asks_about(text):
            return False
        if state.focus is None and len(state.shown) != 1:
            return False
        about_one = state.last_intent in ("product_question", "add_to_cart") and state.focus is not None
        if about_one and _CONTINUATION.search(low) and intent.query is not None and (
                intent.query.color or intent.query.size) and not self._names_a_kind(text) and (
                self.coverage is None or not self.coverage.defining_words(intent.query.text or text)):
            return True  # "and in blue?" right after a question about the Antonia tank asks it about the Antonia
        if intent.query is not None and (intent.query.category is not None or intent.query.has_filters
                                         and not _PRONOUN.search(low) and not about_one):
            return False  # "any in red under 50?" refines the search; "and in black?" about the Antonia asks it
        if self._names_a_kind(text):
            return False  # "what colours do the hoodies come in" is about hoodies
        return bool(_PRONOUN.search(low) or _ATTRIBUTE_QUESTION.search(low))

    @staticmethod
    def _about_named(intent: Intent, text: str, names_a_product: bool) -> Intent:
        """A question about a product the turn names is a product question, whatever the classifier said.

        "Is the Hera one warm enough for winter?" asks about the Hera hoodie; it is no new search.
        """
        if intent.name not in ("search", "refine", "recommendation", "out_of_scope") or not _asks_about(text):
            return intent
        if not _QUESTION_START.match(text.lower()) or not names_a_product:
            return intent
        return replace(intent, name="product_question", source=f"{intent.source}+named")

    def screen(self, reply: str) -> list[str]:
        """What makes a reply unfit to say (profanity, personal data other than the shop's published contacts)."""
        from assistant.safety.moderation import screen_output

        allow = self.kb.published_contacts() if self.kb is not None else ()
        result = screen_output(reply, allow=allow)
        return [] if result.ok else [f"output screen: {issue}" for issue in result.issues]

    # --- dispatch -------------------------------------------------------------------------------------------
    def _dispatch(self, intent: Intent, text: str, image_id: str | None, state: DialogueState,
                        search: SearchFn, signals: SessionSignals | None, k: int) -> Plan:
        name = intent.name
        if image_id is not None:
            return self._search(intent, text, image_id, state, search, signals, k, fresh=True)
        if name == "photo_lookup":  # "find this one" with no photo attached
            return self._said(intent, text, "Send me a photo of it and I'll find it, or tell me what it looks like.")
        if name == "greeting":
            return self._said(intent, text, self._greeting(text))
        if name == "catalog_overview":  # "what kind of stuff do you sell?": the catalog's own kinds
            kinds = self.categories or ["all kinds of products"]
            return self._said(replace(intent, name="out_of_scope"), text,
                              f"We sell {join([c.lower() for c in kinds])}. What are you looking for?",
                              sources=list(kinds))
        if name == "human":
            return self._said(intent, text, HANDOFF, handoff=True)
        if name == "complaint":
            return self._said(intent, text, "I'm sorry about that. " + HANDOFF, handoff=True)
        if name == "out_of_scope":
            return self._said(intent, text, "I can help you find products, answer questions about them and our "
                              "policies, and check an order. What would you like?")
        if name == "policy":
            plan = self._policy(intent, text)
            low = text.lower()
            if plan.handoff and (_STOCK_QUESTION.search(low) or self._names_a_kind(text)) \
                    and not _SERVICE_WORDS.search(low):
                # "do you sell laptops?" asks about products, not a policy the knowledge base lacks
                return self._search(replace(intent, name="search"), text, None, state, search, signals, k,
                                          fresh=True)
            if plan.handoff and not _SERVICE_WORDS.search(low) and (
                    state.focus is not None or state.discussed or self.named(text, state)):
                # "can the sleeves be rolled up?": no policy the knowledge base knows, so a question about the
                # product the conversation is about
                return self._product_question(replace(intent, name="product_question", source=f"{intent.source}"
                                                      "+no-policy"), text, state)
            return plan
        if name == "order_status":
            return self._order(intent, text, state)
        if name in ("product_question", "compare", "add_to_cart"):
            return getattr(self, f"_{name}")(intent, text, state)
        if name == "recommendation":
            return self._recommend(intent, text, state, search, signals, k)
        if name in ("refine", "search") and state.shown and (state.last_query is None
                                                             or not _new_kind(intent, state.last_query)):
            named = self.names.named(text, state.shown) if self.names is not None else []
            if named and named[0].on_screen and not _asks_about(text) and _POINTING.search(text.lower()):
                return self._select(intent, text, state)  # "the Zoe one": that product, not a new search
        if intent.reference is not None and state.shown and (
                name in ("refine", "search") or name == "product_question" and not _asks_about(text)):
            return self._select(intent, text, state)
        if state.last_query is not None and name in ("search", "refine") and _ONE_ANAPHORA.search(text.lower()) \
                and (intent.query is None or intent.query.category in (None, state.last_query.category)):
            name = "refine"  # "a wool one then": the same kind as before, with the new words
            intent = replace(intent, name="refine")
        if name == "refine" and state.last_query is not None and not _new_kind(intent, state.last_query) \
                and not self._asks_for_a_missing_kind(intent, text, state):
            return self._search(intent, text, None, state, search, signals, k, fresh=False)
        return self._search(intent, text, None, state, search, signals, k, fresh=True)

    def _said(self, intent: Intent | None, text: str, reply: str, *, sources: Sequence[str] = (),
              facts: Sequence[ProductFact] = (), hits: list[ProductHit] | None = None,
              handoff: bool = False) -> Plan:
        return Plan(intent, SearchQuery(text=text), hits=hits, reply=reply, sources=list(sources),
                    facts=list(facts), handoff=handoff)

    @staticmethod
    def _greeting(text: str) -> str:
        words = set(_words(text))
        if words & {"bye", "goodbye", "later", "night"}:
            return "Thanks for shopping with us. Goodbye!"
        if words & {"thanks", "thank", "thx", "cheers", "appreciate"}:
            return "You're welcome! Anything else I can find for you?"
        return "Hi! What are you shopping for today?"

    @staticmethod
    def _goes_with_shown(query: SearchQuery | None, text: str, state: DialogueState) -> SearchQuery | None:
        """"What goes with it?" / "... with the second one": the product on screen it refers to.

        A pronoun is the product in focus, else the first on screen; an ordinal ("the second one", "the last") is
        that one on screen.
        """
        if query is None or not state.shown and state.focus is None:
            return query
        said = query.goes_with
        if said is None:
            split = complement_request(text)
            if split is None or not refers_back(split[1]):
                return query
            shown = state.focus or state.shown[0]
            return replace(query, goes_with=shown.product.title)
        words = said.lower().split()
        if 1 <= len(words) <= 2 and (words[0] in _ORDINALS or words[0] == "last") and words[-1] in (words[0], "one"):
            index = len(state.shown) if words[0] == "last" else _ORDINALS[words[0]]
            if 1 <= index <= len(state.shown):
                return replace(query, goes_with=state.shown[index - 1].product.title)
        return query

    def _search(self, intent: Intent, text: str, image_id: str | None, state: DialogueState,
                      search: SearchFn, signals: SessionSignals | None, k: int, *, fresh: bool) -> Plan:
        if fresh and image_id is None and self._too_broad(intent, text):
            cats = join(self.categories[:4]) if self.categories else "a kind of product"
            return self._said(intent, text, f"Sure! What are you looking for: {cats}, or something else?")
        if fresh and state.last_query is not None and _CONTINUATION.match(text.lower()) and intent.query is not None \
                and intent.query.max_price is None and intent.query.min_price is None:
            # "what about a watch?" after "a gift under $40": another kind, the same budget
            last = state.last_query
            intent = replace(intent, query=replace(intent.query, max_price=last.max_price, min_price=last.min_price))
        if fresh and image_id is None and intent.query is not None and (intent.query.color or intent.query.size):
            plan = self._named_lacks(intent, text, state)
            if plan is not None:  # "the Daphne hoodie in green" when it only comes in purple: say so, show it
                return plan
        if fresh and image_id is None:
            plan = self._several(intent, text, state, search, signals, k)
            if plan is not None:  # "a water bottle, a jump rope and a foam roller": each of them
                return plan
        before = [*state.shown, *([state.focus] if state.focus is not None else [])]  # what "it" may name
        if not fresh and state.last_query is not None:
            said = intent.query or SearchQuery(text=text, color=intent.slots.get("colour"), size=intent.slots.get("size"))
            anchor = [state.focus] if state.focus is not None else state.shown[:1]
            merged = merge_refinement(state.last_query, said, intent, anchor, text)
            merged = self._with_new_words(state.last_query, merged, text)
            cleaned, unwanted = self._unwanted(merged, text)
            merged = cleaned if cleaned is not None else merged
            query, hits = search(merged.text, k=k, signals=signals, query=merged)
        else:
            # Parse once: the query intent recognition built (with its ASR repairs, "for tea dollars" -> $40) is
            # the query that searches.
            asked, unwanted = self._unwanted(self._goes_with_shown(intent.query, text, state), text)
            wanted = asked.text if unwanted and asked is not None else text
            query, hits = search(wanted, k=k, image_id=image_id, signals=signals, query=asked)
            if image_id is None and query.category is None and _WEAR.search(text.lower()):
                # "what should I wear for hot yoga": clothes, those that come in body sizes, not a yoga strap
                _, more = search(wanted, k=4 * k, signals=signals, query=asked)
                hits = [h for h in more if _body_sized(h.product)][:k] or hits
        if unwanted and self.coverage is not None:  # "is there one without wool": none that says wool
            coverage = self.coverage
            # a kind by what the product is ("videos with no equipment"), a quality by anything its listing says
            hits = [h for h in hits if not any(
                coverage.is_kind(h.product, w) if w in coverage.kind_words else
                coverage.has(w, frozenset({h.product.parent_id or h.product.id})) for w in unwanted)]
        state.last_query = query
        # in a request for complements only what is asked can be missing ("what goes with it" lacks nothing)
        split = complement_request(text)
        asked_for = split[0] if split is not None else text
        absence = self._absence(query, asked_for, state) if image_id is None else None
        if absence is not None:
            hits = [replace(h, near_miss=("kind",) if absence.kind else ("feature",)) for h in hits]
        elif image_id is None:
            kind_of = query
            if not fresh and state.focus is not None and _LIKE_IT.search(text.lower()):
                # "anything along those lines under sixty?" after the Ingrid jacket: jackets
                kind_of = SearchQuery(text=_words(spoken_name(state.focus.product.title))[-1])
            hits = self._other_kinds_last(kind_of, hits)
        if hits:  # nothing found: "the second one" still means the list the shopper saw before
            state.shown, state.focus, state.discussed = list(hits), None, []
            names = self.names
            named = names.named(text, hits) if names is not None and image_id is None else []
            if named and named[0].on_screen:  # "do you have the Sahara leggings?" -> "what sizes does it come in?"
                state.focus = named[0].hit
                state.talked_about(named[0].hit)
        if absence is not None:
            return self._not_carried(intent, query, absence, hits)
        facts = facts_from_hits(hits)
        goes_with = next((h for h in before if query.goes_with and h.product.title == query.goes_with), None)
        if goes_with is not None:  # "... to go with the Fiona Fitness Short": the reply may name what it goes with
            facts += facts_from_hits([goes_with])
        return Plan(intent, query, hits=hits, facts=facts)

    def _unwanted(self, query: SearchQuery | None, text: str) -> tuple[SearchQuery | None, list[str]]:
        """What the shopper does not want ("without wool", "no hood", "with no equipment").

        Words of the catalog's titles, categories and attributes only, taken out of the query so that retrieval does
        not look for them.
        """
        coverage = self.coverage
        if coverage is None:
            return query, []
        # (a word of titles, categories or attributes: "no idea" excludes nothing, though a description says "idea")
        unwanted = [w for w in _WITHOUT.findall(text.lower()) if len(w) > 2 and w in coverage.structured]
        if not unwanted or query is None:
            return query, unwanted
        kept = _WITHOUT.sub(lambda m: " " if m.group(1) in unwanted else m.group(0), query.text.lower())
        kept = " ".join(w for w in kept.split() if w.strip(".,!?") not in unwanted)
        return replace(query, text=kept), unwanted

    @property
    def listed(self) -> ListedItems | None:
        """What the served catalog calls a kind, to split a list request (rebuilt when a reload swaps the catalog)."""
        return self._of_catalog("listed", lambda catalog, names: ListedItems(catalog, names.vocabulary))

    def _several(self, intent: Intent, text: str, state: DialogueState, search: SearchFn,
                       signals: SessionSignals | None, k: int) -> Plan | None:
        """A list of kinds in one request, each searched on its own: the best of each, and what we lack said first.

        A budget said for the list holds for every item; a colour or size said after the last item holds for all
        of them unless an item has its own ("a black hoodie and some leggings": black is the hoodie's).
        """
        finder, coverage = self.listed, self.coverage
        items = finder.items(text) if finder is not None else []
        if not items or coverage is None:
            return None
        whole = intent.query or parse_query(text, coverage.query_vocab)
        own = [parse_query(item.phrase, coverage.query_vocab) for item in items]
        said_of_items = {w for item in items for w in _words(item.phrase)}
        absence = coverage.absence(whole, text)
        if any(item.known and coverage.absence(q, item.phrase) is not None for item, q in zip(items, own, strict=True)) \
                or absence is not None and any(w not in said_of_items for w in absence.words):
            # "a heated jacket and gloves", "tanks and shorts with built-in UV protection": a kind we have in a way we
            # lack, said first by the ordinary search
            return None
        shared_look = not any(q.color or q.size for q in own)
        per_kind = max(1, k // len(items))
        found: list[tuple[Item, list[ProductHit]]] = []
        lacking: list[Item] = []
        for item, query in zip(items, own, strict=True):
            query = replace(query, max_price=query.max_price or whole.max_price,
                            min_price=query.min_price or whole.min_price, gender=query.gender or whole.gender,
                            color=query.color or (whole.color if shared_look else None),
                            size=query.size or (whole.size if shared_look else None))
            hits: list[ProductHit] = []
            if item.known:
                _, hits = search(item.phrase, k=k, signals=signals, query=query)
                hits = [h for h in hits if not h.near_miss and self._of_item(h, item)][: 1 if item.one else per_kind]
            if hits:
                found.append((item, hits))
            else:
                lacking.append(item)
        if not found:
            return None  # nothing of any of them: the ordinary search says what it can
        shown = [h for _, hits in found for h in hits]
        parts: list[str] = []

        def kinds(of: list[Item]) -> str:  # "yoga mats"
            return join([" ".join([*it.phrase.split()[:-1], plural(it.head)]) for it in of])

        if absent := [it for it in lacking if not it.known]:
            parts.append(f"We don't carry {kinds(absent)}.")
        if unfound := [it for it in lacking if it.known]:
            parts.append(f"I couldn't find {kinds(unfound)} that fit what you asked.")
        said = [f"the {label} at {format_price(h.price, h.product.currency)}" for h, label in
                zip(shown, labels(shown), strict=True)]
        if all(it.one and len(hits) == 1 for it, hits in found):
            lead = "Here's one of each: " if len(found) > 1 else "Here's what I have: "
            parts.append(lead + join(said) + ".")
        else:
            at = 0
            for item, hits in found:
                group = said[at : at + len(hits)]
                at += len(hits)
                article = ("an " if item.phrase[:1] in "aeiou" else "a ") if item.one else ""
                parts.append(f"For {article}{item.phrase}, {join(group)}.")  # as said: "a rain jacket", "cardio balls"
        state.last_query = whole
        state.shown, state.focus, state.discussed = list(shown), None, list(shown)
        sources = [*(it.phrase for it in items), *(h.product.title for h in shown)]
        return Plan(intent, whole, hits=shown, reply=" ".join(p for p in parts if p), sources=sources,
                    facts=facts_from_hits(shown))

    def _of_item(self, hit: ProductHit, item: Item) -> bool:
        """Whether a product is the kind of thing the item names (its title, style or category says so)."""
        coverage = self.coverage
        return coverage is not None and coverage.is_kind(hit.product, item.head)

    def _with_new_words(self, last: SearchQuery, merged: SearchQuery, text: str) -> SearchQuery:
        """The refinement's own defining words join the search ("a wool one then").

        What the last search asked for that the catalog lacks leaves it: "cashmere sweater" -> "wool sweater".
        """
        coverage = self.coverage
        if coverage is None or merged.text != last.text:
            return merged
        new = [w for w in coverage.defining_words(text) if w not in _words(last.text)]
        if not new:
            return merged
        absence = coverage.absence(last, last.text)
        head = coverage.defining_words(last.text)[-1:]  # "one" still means the thing asked for
        dropped = set(absence.words) - set(head) if absence is not None else set()
        kept = [w for w in last.text.split() if w.lower().strip(".,!?") not in dropped]
        bare = [w.lower().strip(".,!?") for w in kept]
        at = len(bare) - 1 - bare[::-1].index(head[0]) if head and head[0] in bare else len(kept)
        return replace(merged, text=" ".join([*kept[:at], *new, *kept[at:]]))  # "wool" before "sweater"

    def _named_lacks(self, intent: Intent, text: str, state: DialogueState) -> Plan | None:
        """A named product asked for in a colour or size it does not come in: that answer, with the product."""
        query = intent.query
        named = self.named(text, state)
        if query is None or not named:
            return None
        hit = named[0]
        has_variants = self.catalog is not None and bool(self.catalog.variants_of(hit.product.id))
        if has_variants and variant_of(hit, query.size, query.color, self.catalog) is not None:
            return None
        if not has_variants:
            return None
        missed = tuple(n for n, v in (("colour", query.color), ("size", query.size)) if v)
        shown = ProductHit(hit.product, hit.score, hit.reason, None, near_miss=missed)
        state.shown, state.focus, state.last_query = [shown], shown, query
        reply = comes_in(hit, query.size, query.color, self.catalog)
        sources = [hit.product.title, join(hit.product.sizes()), join(hit.product.colors()), text,
                   *(str(v) for v in (query.size, query.color) if v)]  # what was asked may be said back
        return self._said(intent, text, reply, sources=sources, facts=facts_from_hits([shown]), hits=[shown])

    def _other_kinds_last(self, query: SearchQuery, hits: list[ProductHit]) -> list[ProductHit]:
        """Products of another kind than the one asked for follow those of that kind, marked as close matches.

        For "sports bras" the tanks of "Bras & Tanks" are never announced as what was asked for.
        """
        coverage = self.coverage
        kinds = coverage.asked_kinds(query) if coverage is not None else []
        if not kinds:
            return hits
        fits: list[ProductHit] = []
        for asked in (kinds, kinds[-1:]):  # a "duffle bag" is a duffle and a bag; else any bag
            fits = [h for h in hits if all(coverage.is_kind(h.product, k) for k in asked)]  # type: ignore[union-attr]
            if fits:
                break
        if not fits or len(fits) == len(hits):
            return hits
        kept = {id(h) for h in fits}
        return fits + [replace(h, near_miss=(*h.near_miss, "kind")) for h in hits if id(h) not in kept]

    def _asks_for_a_missing_kind(self, intent: Intent, text: str, state: DialogueState) -> bool:
        """"Do you have running shorts in medium?" with jackets on screen: a new search for a kind we lack."""
        if intent.query is None:
            return False
        absence = self._absence(intent.query, text, state)
        return absence is not None and absence.kind

    def _absence(self, query: SearchQuery, text: str, state: DialogueState) -> Absence | None:
        coverage = self.coverage
        return coverage.absence(query, text, heard=state.heard) if coverage is not None else None

    def _not_carried(self, intent: Intent, query: SearchQuery, absence: Absence, hits: list[ProductHit]) -> Plan:
        """"We don't carry laptops. The closest I have are ...": the absence first, the alternatives as such."""
        reply = f"We don't have anything called {absence.phrase}." if absence.close else \
            f"We don't carry {absence.phrase}."
        shown = hits[:3]
        if shown:
            names = [f"the {label}, {format_price(h.price, h.product.currency)}"
                     for h, label in zip(shown, labels(shown), strict=True)]
            reply += f" The closest I have {'is' if len(names) == 1 else 'are'} {join(names)}."
        sources = [absence.phrase, *(h.product.title for h in shown)]
        return Plan(intent, query, hits=hits, reply=reply, sources=sources, facts=facts_from_hits(hits))

    @property
    def encoder(self) -> SentenceEncoder | None:
        """The recogniser's sentence encoder, for answers from descriptions and catalog coverage (None: words)."""
        return self.recognizer.encoder if isinstance(self.recognizer, IntentRecognizer) else None

    @property
    def coverage(self) -> CatalogCoverage | None:
        """What the served catalog has words for (rebuilt when a reload swaps the catalog)."""
        encoder = self.encoder
        return self._of_catalog("coverage", lambda catalog, names: CatalogCoverage(catalog, names.vocabulary, encoder))

    def _of_catalog(self, key: str, build: Callable[[Catalog, ProductNames], T]) -> T | None:
        """What is built once per served catalog from its names (rebuilt when a reload swaps the catalog)."""
        names = self.names
        if names is None or self.view is None:
            return None
        return self.view.derived(key, lambda catalog: build(catalog, names))

    def _select(self, intent: Intent, text: str, state: DialogueState) -> Plan:
        """"The second one, in medium": show that product (the variant in the asked size/colour, if any)."""
        hit = self._pick(intent, text, state)
        if hit is None:
            return self._which_one(intent, text)
        size, colour = intent.slots.get("size"), intent.slots.get("colour")
        variant = variant_of(hit, size, colour, self.catalog) if (size or colour) else None
        name = product_name(hit)
        price = variant.price if variant is not None else hit.price
        chosen = ProductHit(hit.product, hit.score, hit.reason, variant or hit.variant)
        asked = " ".join([*([str(colour)] if colour else []), *([f"size {size}"] if size else [])])
        if (size or colour) and variant is None and self.catalog is not None and self.catalog.variants_of(
                hit.product.id):
            reply = f"Sorry, the {name} doesn't come in {asked}."
        else:
            detail = f" in {asked}" if asked else ""
            reply = f"The {name}{detail} is {format_price(price, hit.product.currency)}."
        state.focus = chosen
        if state.last_query is not None and (size or colour):  # "add it to my cart" later means this size
            state.last_query = replace(state.last_query, size=size or state.last_query.size,
                                       color=colour or state.last_query.color)
        facts = facts_from_hits([chosen])
        sources = [hit.product.title, join(hit.product.sizes()), join(hit.product.colors()), asked]
        return self._said(intent, text, reply, sources=sources, facts=facts, hits=[chosen])

    def _too_broad(self, intent: Intent, text: str) -> bool:
        if intent.slots or intent.query is not None and intent.query.has_filters:
            return False
        content = [w for w in _words(text) if w not in BROAD_WORDS]
        return not content

    # --- answers built from facts ---------------------------------------------------------------------------
    def _pick(self, intent: Intent, text: str, state: DialogueState,
              found: Sequence[Named] | None = None) -> ProductHit | None:
        """The product the turn is about; `found`: this turn's names when the caller has looked them up."""
        found = self._lookup(text, state) if found is None else found
        named = [n.hit for n in found]
        on_screen = {h.product.id for h in state.shown}
        if named and state.focus is not None and re.search(r"\b(?:it|its|it's)\b", text.lower()) and \
                all(n.product.id not in on_screen for n in named) and not self._names_a_line(text):
            named = []  # "what's its strap made of": the watch in focus, not the yoga straps the word names
        cue = _CORRECTED.search(text.lower()) or _CART_CORRECTION.search(text.lower()) or re.search(
            r"\bno,? (?:make|the)\b", text.lower())
        if len(named) > 1 and cue is not None:
            # "add the Quest band. Oh wait, no, make that the Harmony kit": the first named after taking it back
            at = len(_words(words_to_numbers(text[: cue.start()])))
            after = [n.hit for n in found if n.position >= at]
            named = after[:1] or named[-1:]
        if named:  # a product the shopper names wins over positions and the one in focus
            state.focus = named[0]
            state.talked_about(named[0])
            return named[0]
        low = text.lower()
        other = state.the_other() if _THE_OTHER.search(low) else None
        if other is None and _OF_THE_TWO.search(low) and len(state.discussed) >= 2 and (
                _CHEAPER.search(low) or _DEARER.search(low)):  # "put the cheaper of the two in my cart"
            pair = state.discussed[-2:]
            other = (min if _CHEAPER.search(low) else max)(pair, key=lambda h: h.price)
        if other is None and _ONE_MORE.search(low) and state.last_added is not None and self.catalog is not None:
            product = self.catalog.get(state.last_added[0])  # "and one more in purple": the product just added
            other = ProductHit(product, 1.0, "in the cart") if product is not None else None
        hit = other or resolve_reference(intent, text, state.shown, state.focus)
        if hit is None and len(state.shown) >= 1 and intent.reference is None:
            hit = state.shown[0] if len(state.shown) == 1 else state.focus
            if hit is None and _PRONOUN.search(text.lower()):  # "how much is it?": the top result, named in the reply
                hit = state.shown[0]
        if hit is not None:
            state.focus = hit
            state.talked_about(hit)
        return hit

    def _family(self, hit: ProductHit) -> list[Any]:
        """The other listings of this product in other sizes or colours (itself first); [] when it has none."""
        names = self.names
        if names is None or (self.catalog is not None and self.catalog.variants_of(hit.product.id)):
            return []
        family = names.family(hit.product.id)
        return family if len(family) > 1 else []

    @staticmethod
    def _family_name(hit: ProductHit) -> str:
        """A family's name: the title without its measures ("Sprite Stasis Ball" of "Sprite Stasis Ball 55 cm")."""
        sizes = {w for s in hit.product.sizes() for w in s.lower().split()}
        words = [w for w in hit.product.title.split() if w.lower() not in sizes and not re.fullmatch(r"\d+(?:\.\d+)?", w)]
        return spoken_name(" ".join(words)) if words else product_name(hit)

    def _family_member(self, hit: ProductHit, intent: Intent, text: str, state: DialogueState) -> ProductHit:
        """"The biggest one", "in blue", "the 75 cm ones" of a product listed once per size and colour: that listing.

        Separate listings of one product (see `ProductNames.family`) stand in for the variants it lacks.
        """
        family = self._family(hit)
        if not family:
            return hit
        low = words_to_numbers(text.lower())
        colour = intent.slots.get("colour") or next((COLOR_SYNONYMS[w] for w in _words(low) if w in COLOR_SYNONYMS),
                                                    None)
        numbers = set(re.findall(r"\b\d+(?:\.\d+)?\b", low))

        def measure(p: Any) -> float:
            found = re.findall(r"\d+(?:\.\d+)?", " ".join(p.sizes()) or p.title)
            return float(found[0]) if found else 0.0

        candidates = family
        said = [p for p in candidates if numbers & set(re.findall(r"\d+(?:\.\d+)?", " ".join(p.sizes()) or p.title))]
        if said:
            candidates = said
        elif re.search(r"\b(?:biggest|largest|longest|largest|bigger|larger|longer)\b", low):
            top = max(measure(p) for p in candidates)
            candidates = [p for p in candidates if measure(p) == top]
        elif re.search(r"\b(?:smallest|shortest|smaller|shorter)\b", low):
            bottom = min(measure(p) for p in candidates)
            candidates = [p for p in candidates if measure(p) == bottom]
        elif not colour:
            return hit
        else:  # "and in blue?": the same size in blue
            candidates = [p for p in candidates if measure(p) == measure(hit.product)] or candidates
        if colour:
            coloured = [p for p in candidates if canonical_color(colour) in [canonical_color(c) for c in p.colors()]]
            candidates = coloured or candidates
        if hit.product in candidates:
            return hit
        member = ProductHit(candidates[0], hit.score, hit.reason)
        state.focus = member
        state.talked_about(member)
        return member

    def _which_one(self, intent: Intent, text: str) -> Plan:
        return self._said(intent, text, "Which one do you mean? You can say the first one, the second one, and so on."
                          if text else "Which product do you mean?")

    def _product_question(self, intent: Intent, text: str, state: DialogueState) -> Plan:
        if intent.source.endswith("+terse") and state.focus is None and len(state.shown) >= 2:
            plan = self._among_shown(intent, text, state)  # "digital?" with two watches on screen
            if plan is not None:
                return plan
        words = set(_words(text))
        found = self._lookup(text, state)  # once, for the plural, the pick and "and the Juno?"
        if intent.reference is None and words & {"they", "them", "these", "those", "both"} and (
                len(state.shown) > 1 or len(state.discussed) > 1) and not found \
                and not re.search(r"\b(?:does|is|can|will|has|did|would) it\b", text.lower()):
            # (not "does it come with a bag to keep them in": it is the product, them what it holds)
            # "what do they each cost?" after two questions (but "the Aeon capri, where's the pocket on those")
            pair = state.discussed[-2:] if len(state.discussed) > 1 else state.shown[:2]
            return self._about_several(intent, text, pair)
        hit = self._pick(intent, text, state, found)
        if hit is None:
            return self._which_one(intent, text) if state.shown else \
                self._said(intent, text, "Which product are you asking about? Tell me what you're looking for "
                           "and I'll find it.")
        hit = self._family_member(hit, intent, text, state)
        family = self._family(hit)
        slots = {k: intent.slots[k] for k in ("size", "colour") if intent.slots.get(k)}
        if len(_words(text)) <= 5 and state.last_question and not _ATTRIBUTE_QUESTION.search(text.lower()) \
                and not slots and (found or _THE_OTHER.search(text.lower())):
            text, slots = state.last_question, state.last_question_slots  # "and the Juno?": the last question
        state.last_question, state.last_question_slots = text, slots
        words = set(_words(text))
        name, facts = product_name(hit), facts_from_hits([hit])
        asked: list[str] = []
        if words & {"material", "fabric", "cotton", "wool", "polyester"} or re.search(r"\bmade (?:of|from|with|out)\b|"
                                                                                   r"\bmade\s*\??$", text.lower()):
            material = attribute_values(hit, "material", "fabric")
            asked.append(f"The {name} is made of {join(material)}." if material
                         else f"I don't have the material of the {name}.")
        size, colour = slots.get("size"), slots.get("colour")
        other_colours = bool(_OTHER_COLOUR.search(text.lower())) and not size
        if other_colours:  # "anything other than yellow?", "another colour?"
            colours = list(dict.fromkeys(c for p in family for c in p.colors())) if family else hit.product.colors()
            others = [c for c in colours if not colour or canonical_color(c) != canonical_color(colour)]
            asked.append(f"The {name} only comes in {join(colours).lower()}." if len(colours) == 1 else
                         f"Besides {colour.lower()}, the {name} comes in {join(others).lower()}." if colour and others
                         else f"The {name} comes in {join(colours).lower()}." if colours
                         else f"I don't have colours for the {name}.")
            colour = None
        elif size or colour:  # "does the Stellar one come in medium?": yes or no, then what it does come in
            asked.append(comes_in(hit, size, colour, self.catalog))
            if state.last_query is not None:  # "add it to my cart" later means this size and colour
                state.last_query = replace(state.last_query, size=size or state.last_query.size,
                                           color=colour or state.last_query.color)
        elif (words & {"big", "dimensions", "dimension", "measurements", "capacity", "tall", "wide", "volume",
                       "weigh", "weight", "heavy", "long", "length", "deep", "width", "height", "duration"}
              or "how large" in text.lower()) and not hit.product.sizes():
            measured = measurements(hit, text)  # "how big is the backpack?": its measurements, as the listing gives them
            asked.append(f"The {name}: " + " ".join(f'"{m.rstrip(".")}."' for m in measured) if measured
                         else what_it_says(hit, text, self.encoder))
        elif words & {"size", "sizes", "fit", "small", "medium", "large", "big"}:
            sizes = list(dict.fromkeys(s for p in family for s in p.sizes())) if family else hit.product.sizes()
            measured = [] if sizes else measurements(hit, text)  # "what wrist size does it fit?": "Strap fits 5""
            asked.append(f"The {self._family_name(hit) if family else name} comes in sizes {join(sizes)}." if sizes
                         else f"The {name}: " + " ".join(f'"{m.rstrip(".")}."' for m in measured) if measured
                         else what_it_says(hit, text, self.encoder))
        if not (size or colour or other_colours) and (words & {"colour", "color", "colours", "colors"} or re.search(
                r"\bcomes? in\b", text.lower())):  # "does it come with a pump" asks no colour
            colors = list(dict.fromkeys(c for p in family for c in p.colors())) if family else hit.product.colors()
            asked.append(f"The {name} comes in {join(colors)}." if colors else f"I don't have colours for the {name}.")
        if words & {"wash", "washing", "care", "clean", "iron"} or re.search(r"\b(?:tumble|line|drip) dry", text.lower()):
            care = attribute_values(hit, "care", "care_instructions")
            asked.append(f"Care: {join(care)}." if care else f"I don't have care instructions for the {name}.")
        if words & {"price", "cost", "much", "expensive"} and not words & {"weigh", "weight", "hold", "fit", "fits"}:
            asked.append(f"The {name} is {format_price(hit.price, hit.product.currency)}.")
        if not asked:
            asked.append(what_it_says(hit, text, self.encoder))
        sources = [*(f"{p.title} {join(p.sizes())} {join(p.colors())}" for p in family),
                   hit.product.title, without_injection(hit.product.description),
                   str(clean_attributes(hit.product.attributes)), join(hit.product.sizes()),
                   join(hit.product.colors()), *(str(v) for v in (size, colour) if v)]  # the asked size said back
        return self._said(intent, text, " ".join(asked), sources=sources, facts=facts, hits=[hit])

    @staticmethod
    def _property_asked(text: str, hits: Sequence[ProductHit]) -> str | None:
        """The question without the products' names, when it asks about a property besides price and material."""
        names = {w for h in hits for w in _words(h.product.title)}
        question = " ".join(w for w in _words(text) if w not in names)
        rest = set(_words(question)) - _PRICE_AND_MATERIAL_WORDS - set(_QUESTION_WORDS) - {
            "compare", "or", "and", "of", "these", "those", "them", "two", "any", "ones", "then", "ok", "okay"}
        return question if rest else None

    def _compared_on(self, text: str, a: ProductHit, b: ProductHit,
                     label: dict[int, str]) -> tuple[list[str], ProductHit | None]:
        """"Which is warmer?", "which is better for swimming?": what the catalog says of each to the question.

        When one product's listing clearly speaks to it and the other's does not, that one (the answer) and the
        line quoted; else each product's attribute lines that share a word with the question.
        """
        question = self._property_asked(text, (a, b))
        if question is None:
            return [], None
        encoder = self.encoder
        one = the_one_that((a, b), question, encoder)
        if one is not None:
            winner, other = (a, b) if one[0] == 0 else (b, a)
            return [f"For that, the {label[id(winner)]}: {self._quote(winner, one[1])}",
                    f"The {label[id(other)]}'s listing says nothing as direct about it."], winner
        lines = {id(h): [x for x in attributes_asked(h, question, encoder) if not x.startswith("material")]
                 for h in (a, b)}
        if not lines[id(a)] and not lines[id(b)]:
            return [], None
        return [f"The {label[id(h)]}: " + "; ".join(lines[id(h)][:2]) + "." for h in (a, b) if lines[id(h)]], None

    @staticmethod
    def _quote(hit: ProductHit, line: str) -> str:
        """A catalog line as said: a description sentence in quotes, an attribute line as it is."""
        line = line.rstrip(".")
        return f"{line}." if line in {x.rstrip('.') for x in attribute_lines(hit)} else f'"{line}."'

    def _among_shown(self, intent: Intent, text: str, state: DialogueState) -> Plan | None:
        """"Which one counts my steps?", "can any of these track my sleep?" about the list on screen.

        The product whose listing clearly answers (now in focus); else those whose listings speak to it; else,
        plainly, that none of them says so.
        """
        matches = [h for h in state.shown if not h.near_miss]  # not the alternatives shown beside them
        shown = (matches if len(matches) >= 2 else state.shown)[:5]
        low = text.lower()
        if _CHEAPER.search(low) or _DEARER.search(low):
            pick = (min if _CHEAPER.search(low) else max)(shown, key=lambda h: h.price)
            which = "cheapest" if _CHEAPER.search(low) else "priciest"
            state.focus = pick
            state.talked_about(pick)
            return self._said(intent, text, f"The {which} of these is the {product_name(pick)} at "
                              f"{format_price(pick.price, pick.product.currency)}.", facts=facts_from_hits([pick]),
                              sources=[pick.product.title], hits=[pick])
        measured = self._on_measure(intent, text, state, shown, partial=True)  # "which of these holds the most?"
        if measured is not None:
            return measured
        question = self._property_asked(text, shown)
        if question is None:
            return None
        encoder = self.encoder
        evidence = [best_evidence(h, question, encoder) for h in shown]  # each listing encoded once
        one = clear_winner(evidence)
        if one is not None:
            pick = shown[one[0]]
            state.focus = pick
            state.talked_about(pick)
            return self._said(intent, text, f"The {product_name(pick)}: {self._quote(pick, one[1])}",
                              sources=[pick.product.title, one[1]], facts=facts_from_hits([pick]), hits=[pick])
        coverage = self.coverage
        missing = [w for w in CatalogCoverage.defining_words(question) if coverage is not None and not coverage.has(w)]
        speaking = [(h, line) for h, (score, line) in zip(shown, evidence, strict=True)
                    if score >= EVIDENCE_COSINE] if not missing else []
        if not speaking:
            what = f"mentions {missing[0]}" if missing else "says so"
            return self._said(intent, text, f"I couldn't find that in their listings: none of these {what}.",
                              sources=[h.product.title for h in shown])
        reply = " ".join(f"The {product_name(h)}: {self._quote(h, line)}" for h, line in speaking[:3])
        return self._said(intent, text, reply, sources=[line for _, line in speaking],
                          facts=facts_from_hits([h for h, _ in speaking]), hits=[h for h, _ in speaking[:3]])

    def _on_measure(self, intent: Intent, text: str, state: DialogueState, hits: Sequence[ProductHit], *,
                    partial: bool = False) -> Plan | None:
        """Which product wins a comparative on a measure the listings give ("roomier", "longer in the leg").

        Each listing's line is quoted. None when the question asks no measure or a listing does not give it (with
        `partial`, for the list on screen: fewer than two do, and the reply says it compared those that do).
        """
        measured = compare_on_measure(text, list(hits), partial=partial)
        if measured is None:
            return None
        winner, read = measured
        dimension, more = asked_measure(text) or ("", True)
        word = _MEASURE_WORDS.get((dimension, more), "one")
        compared = [h for h, _ in read]
        names = dict(zip((id(h) for h in compared), labels(compared), strict=True))
        quoted = [f"the {names[id(h)]}'s listing says \"{m.line.rstrip('.')}\"" for h, m in read]
        of = "" if len(read) == len(hits) else " of those whose listings give it"
        reply = f"The {names[id(winner)]} is the {word} one{of}: " + "; ".join(quoted) + "."
        state.focus = winner
        state.talked_about(*[h for h in compared if h is not winner], winner)
        return self._said(intent, text, reply, sources=[m.line for _, m in read] + [h.product.title for h in compared],
                          facts=facts_from_hits(compared), hits=compared)

    def _about_several(self, intent: Intent, text: str, hits: Sequence[ProductHit]) -> Plan:
        """"What are they made of?" about the products just compared or listed: one sentence each."""
        words = set(_words(text))
        names = labels(hits)
        parts = []
        for hit, label in zip(hits, names, strict=True):
            if words & {"size", "sizes", "fit"}:
                sizes = hit.product.sizes()
                parts.append(f"The {label} comes in sizes {join(sizes)}." if sizes else f"I don't have sizes for "
                             f"the {label}.")
            elif words & {"colour", "color", "colours", "colors"}:
                parts.append(f"The {label} comes in {join([c.lower() for c in hit.product.colors()])}.")
            elif words & {"price", "prices", "cost", "costs", "much", "expensive"}:
                parts.append(f"The {label} is {format_price(hit.price, hit.product.currency)}.")
            elif words & {"made", "material", "materials", "fabric", "fabrics"}:
                material = attribute_values(hit, "material", "fabric")
                parts.append(f"The {label} is made of {join(material)}." if material
                             else f"I don't have the material of the {label}.")
            else:  # "do they have pockets?": what each listing says to it
                parts.append(what_it_says(hit, text, self.encoder))
        sources = [str(h.product.attributes) + " " + join(h.product.sizes()) + " " + without_injection(
            h.product.description) for h in hits]
        return self._said(intent, text, " ".join(parts), sources=sources, facts=facts_from_hits(hits),
                          hits=list(hits))

    def _compare(self, intent: Intent, text: str, state: DialogueState) -> Plan:
        shown = state.shown
        picks: list[ProductHit] = self.named(text, state)[:2]
        for w in _words(text):
            if w in _ORDINALS and _ORDINALS[w] <= len(shown) and w not in ("one", "two", "three"):
                picks.append(shown[_ORDINALS[w] - 1])
        if len(picks) == 1:  # "compare it with the Hera one": the other is the one in focus (or last talked about),
            # else the first shown
            talked = [h for h in reversed(state.discussed) if h.product.id != picks[0].product.id]
            other = state.focus if state.focus is not None and state.focus.product.id != picks[0].product.id \
                else talked[0] if talked else next((h for h in shown if h.product.id != picks[0].product.id), None)
            picks = [*picks, other] if other is not None else picks
        low = text.lower()
        explicit = bool(_AMONG_SHOWN.search(low)) and not re.search(r"\b(?:two|both)\b", low)
        if not picks and (len(shown) >= 2 and explicit or len(shown) > 2 and len(state.discussed) < 2):
            plan = self._among_shown(intent, text, state)  # "which one counts my steps?"
            if plan is not None:
                return plan
        if not picks and len(state.discussed) >= 2:
            picks = state.discussed[-2:]  # "which of the two is cheaper?" after asking about two products
        if len(picks) < 2:
            picks = list(shown[:2])
        if len(picks) < 2:
            return self._said(intent, text, "Show me two products first, then I can compare them.")
        a, b = picks[0], picks[1]
        measured = self._on_measure(intent, text, state, [a, b])  # "is the fusion backpack roomier than it?"
        if measured is not None:
            return measured
        label = dict(zip((id(a), id(b)), labels([a, b]), strict=True))
        cheaper, dearer = sorted((a, b), key=lambda h: h.price)
        parts = [f"The {label[id(a)]} is {format_price(a.price, a.product.currency)} and the {label[id(b)]} is "
                 f"{format_price(b.price, b.product.currency)}."]
        if cheaper.price < dearer.price:
            parts.append(f"The {label[id(cheaper)]} is the cheaper one.")
        materials = [attribute_values(h, "material") for h in (a, b)]
        if materials[0] and materials[0] == materials[1]:
            parts.append(f"Both are made of {join(materials[0])}.")
        else:
            parts += [f"The {label[id(h)]} is made of {join(m)}." for h, m in zip((a, b), materials, strict=True)
                      if m]
        on, answer = self._compared_on(text, a, b, label)
        parts += on
        if answer is None and cheaper.price < dearer.price and (_CHEAPER.search(low) or _DEARER.search(low)):
            answer = cheaper if _CHEAPER.search(low) else dearer  # "which is cheaper?" -> "add it" means that one
        state.focus = answer
        state.talked_about(*[h for h in (a, b) if h is not answer], *([answer] if answer is not None else []))
        if any(all(h.product.id != p.product.id for h in shown) for p in (a, b)):
            state.shown = [a, b]  # named from the catalog: "which one is cheaper?" is about these two
        facts = facts_from_hits([a, b])
        sources = [h.product.title + " " + str(h.product.attributes) for h in (a, b)]
        return self._said(intent, text, " ".join(parts), sources=sources, facts=facts, hits=[a, b])

    def _add_to_cart(self, intent: Intent, text: str, state: DialogueState) -> Plan:
        low = text.lower()
        if _CART_VIEW.search(low):  # "what's in my cart?"
            return self._cart_view(intent, text, state)
        found = self._lookup(text, state)  # looked up once for the swap, the pick and a list of products
        named = [n.hit for n in found]
        # "swap it for the Portia, same colour and size": the line just added, changed to another product
        swap = state.last_added is not None and bool(named) and bool(_SWAP.search(low))
        added = state.last_added if _CART_CORRECTION.search(low) or swap else None
        if added is not None and not swap:  # "actually make it two ropes": the line of the kind said, if not the last
            added = self._line_of_kind(low, state) or added
        product = self.catalog.get(added[0]) if added is not None and self.catalog is not None else None
        if added is not None and product is not None and not named:
            hit: ProductHit | None = ProductHit(product, 1.0, "in the cart")  # "actually make it a medium"
        else:
            hit = self._pick(intent, text, state, found)
            added = added if swap else None
        group = self._all_of_them(low, state) if not named and added is None else []
        if not group and added is None and self.listed is not None:
            group = self._items_meant(self.listed.items(text), state)  # "the harmony kit, the jump rope and ..."
        if group:  # "great, put all three in my basket": each of them, one of each
            one = replace(intent, slots={k: v for k, v in intent.slots.items() if k != "quantity"})
            return self._add_several(one, text, state, group)
        if hit is None:
            return self._which_one(intent, text) if state.shown else \
                self._said(intent, text, "What would you like to add? Tell me what you're looking for first.")
        if len(named) > 1 and added is None and not _CORRECTED.search(low) and not _CART_CORRECTION.search(low) \
                and self._listed_apart(text, found):
            # "I'll have the Quest band and the pushup grips": each of them
            return self._add_several(intent, text, state, named[:4])
        return self._add_one(intent, text, state, hit, added, swap=swap)

    def _cart_view(self, intent: Intent, text: str, state: DialogueState) -> Plan:
        """What the cart holds, each line with its colour, size and price, and the total, from the catalog."""
        lines = state.memory.cart() if state.memory is not None else []
        said: list[str] = []
        hits: list[ProductHit] = []
        total = 0.0
        for line in lines:
            product = self.catalog.get(line.product_id) if self.catalog is not None else None
            if product is None:
                continue
            variant = self.catalog.get(line.variant_id) if line.variant_id and self.catalog is not None else None
            price = variant.price if variant is not None else product.price
            detail = ", ".join([*(c.lower() for c in (variant.colors() if variant else [])[:1]),
                                *(f"size {z}" for z in (variant.sizes() if variant else [])[:1])])
            count = f"{line.quantity} of " if line.quantity > 1 else ""
            said.append(f"{count}the {spoken_name(product.title)}{' in ' + detail if detail else ''} at "
                        f"{format_price(price, product.currency)}")
            hits.append(ProductHit(product, 0.0, "in the cart", variant=variant))
            total += price * line.quantity
        if not said:
            return self._said(intent, text, "Your cart is empty.")
        currency = hits[0].product.currency
        reply = f"Your cart has {join(said)}. That's {format_price(total, currency)} in all."
        sources = [*(h.product.title for h in hits), *(str(x.quantity) for x in lines), format_price(total, currency)]
        return self._said(intent, text, reply, sources=sources,
                          facts=facts_from_hits(hits), hits=hits)

    def _add_several(self, intent: Intent, text: str, state: DialogueState, hits: Sequence[ProductHit]) -> Plan:
        """Each product into the cart: "Added the A, the B and the C to your cart." when all went in plainly."""
        plans = [self._add_one(intent, text, state, h, None, swap=False) for h in hits]
        replies = [p.reply or "" for p in plans]
        plain = [m.group(1) for r in replies if (m := _ADDED.fullmatch(r))]
        reply = f"Added {join(plain)} to your cart." if len(plain) == len(replies) else " ".join(replies)
        return self._said(intent, text, reply, sources=[x for p in plans for x in p.sources],
                          facts=[f for p in plans for f in p.facts], hits=[h for p in plans for h in p.hits or []])

    def _line_of_kind(self, low: str, state: DialogueState) -> tuple[str, str, str | None, str | None, int] | None:
        """The cart line (of this conversation) whose product is of a kind the turn says, the latest if several."""
        coverage = self.coverage
        if coverage is None or self.catalog is None:
            return None
        for line in reversed(state.added_lines):
            product = self.catalog.get(line[0])
            if product is not None and any(coverage.is_kind(product, w) for w in _words(low) if len(w) > 2
                                           and w not in _SPEC_WORDS and w not in COLOR_SYNONYMS):
                return line
        return None

    def _items_meant(self, items: Sequence[Item], state: DialogueState) -> list[ProductHit]:
        """The product each listed item means ("the harmony kit, the jump rope and the foam roller").

        One talked about or on screen whose title has the item's words, else the one the item names in the catalog;
        [] unless every item is found (each once).
        """
        if len(items) < 2:
            return []
        seen = [*reversed(state.discussed), *state.shown]
        everything = [ProductHit(p, 0.0, "named") for p in self.catalog.parents()] if self.catalog is not None else []
        out: list[ProductHit] = []
        for item in items:
            words = _words(item.phrase)

            def fits(hit: ProductHit, words: list[str] = words) -> bool:
                return all(any(t.startswith(w[:4]) for t in _words(hit.product.title)) for w in words)

            hit = next((h for h in seen if fits(h)), None)
            if hit is None:
                named = self.names.named(item.phrase, state.shown) if self.names is not None else []
                titled = [h for h in everything if fits(h)]
                hit = named[0].hit if len(named) == 1 else titled[0] if len(titled) == 1 else None
            if hit is None or any(h.product.id == hit.product.id for h in out):
                return []
            out.append(hit)
        return out

    @staticmethod
    def _all_of_them(low: str, state: DialogueState) -> list[ProductHit]:
        """The products "all three", "both" or "all of them" mean: those talked about, else those on screen.

        [] when the count said is not what is there ("all three" with two on screen) or more than four are meant.
        """
        m = _ALL_OF_THEM.search(low)
        if m is None:
            return []
        said = m.group("n")
        n = 2 if "both" in m.group(0) else (int(said) if said and said.isdigit() else _ORDINALS.get(said or "", 0))
        for group in (state.discussed, [h for h in state.shown if not h.near_miss], state.shown):
            if len(group) >= 2 and (len(group) == n or (not n and len(group) <= 4)):
                return list(group)
        return []

    @staticmethod
    def _listed_apart(text: str, found: Sequence[Named]) -> bool:
        """Whether the products a turn names are listed one after another ("the X and the Y"), not one name."""
        words = _words(words_to_numbers(text))
        return len(found) > 1 and all(bool({"and", "plus", "also", "with"} & set(words[a.position + 1 : b.position]))
                                      for a, b in zip(found, found[1:], strict=False))

    def _add_one(self, intent: Intent, text: str, state: DialogueState, hit: ProductHit,
                 added: tuple[str, str, str | None, str | None, int] | None, *, swap: bool) -> Plan:
        """Put one product in the cart (or change the line just added: `added`), in the size and colour meant."""
        low = text.lower()
        hit = self._family_member(hit, intent, text, state)
        name, facts = product_name(hit), facts_from_hits([hit])
        sizes, colours = hit.product.sizes(), hit.product.colors()
        said_size = intent.slots.get("size")
        if not said_size:  # "purple. small. two of them": a size word the classifier left out
            said_size = next((canonical_size(w) for w in _words(low) if w in ("small", "medium", "large", "xs", "xl")
                              and canonical_size(w) in sizes), None)
        if not said_size:  # "add a twenty nine": a number that is one of its sizes is the size
            said_numbers = re.findall(r"\b\d+(?:\.\d)?\b", words_to_numbers(text))
            said_size = next((n for n in said_numbers if n in sizes), None)
        last = state.last_query
        # What this turn says, else what earlier turns said (the last search, then slots remembered from any turn)
        # when the product comes in it, else the variant the search found.
        size = said_size or (added[2] if added is not None else None) or (sizes[0] if len(sizes) == 1 else None) \
            or _one_of(last.size if last is not None else None, sizes, canonical_size) \
            or _one_of(state.remembered.get("size"), sizes, canonical_size) \
            or (hit.variant.sizes()[0] if hit.variant and hit.variant.sizes() else None)
        said_colours = [COLOR_SYNONYMS[w] for w in _words(text) if w in COLOR_SYNONYMS]
        if len(said_colours) > 1 and _CORRECTED.search(text.lower()):  # "in grey, sorry no, green"
            intent = replace(intent, slots={**intent.slots, "colour": said_colours[-1]})
        kept = added[3] if added is not None and (not swap or _one_of(added[3], colours, canonical_color)) else None
        colour = intent.slots.get("colour") or kept \
            or _one_of(last.color if last is not None else None, colours, canonical_color) \
            or _one_of(state.remembered.get("colour"), colours, canonical_color) \
            or (hit.variant.colors()[0] if hit.variant and hit.variant.colors() else None)
        sources = [hit.product.title, join(sizes), join(hit.product.colors())]
        if sizes and size is None:
            return self._said(intent, text, f"Which size would you like the {name} in? It comes in {join(sizes)}.",
                              sources=sources, facts=facts, hits=[hit])
        variant = variant_of(hit, size, colour, self.catalog)
        has_variants = self.catalog is not None and bool(self.catalog.variants_of(hit.product.id))
        lacks_colour = bool(intent.slots.get("colour") and colours and _one_of(colour, colours, canonical_color) is None)
        if (has_variants and variant is None) or (not has_variants and size is not None and size not in sizes):
            asked = " ".join(str(v) for v in (colour, size) if v)
            return self._said(intent, text, f"Sorry, the {name} doesn't come in {asked}. It comes in sizes "
                              f"{join(sizes)}.", sources=sources, facts=facts, hits=[hit])
        if lacks_colour:  # "add it in grey" when it only comes in blue: say so, add nothing
            return self._said(intent, text, f"Sorry, the {name} doesn't come in {colour}. It comes in "
                              f"{join(colours)}.", sources=sources, facts=facts, hits=[hit])
        quantity = int(intent.slots.get("quantity") or (added[4] if added is not None else 1))
        wishlist = "wish" in text.lower()
        if state.memory is not None:
            if wishlist:
                saved = state.memory.preferences().get("wishlist", [])
                state.memory.set_preference("wishlist", [*saved, hit.product.id][-100:])
            else:
                if added is not None:  # a correction replaces the line just added
                    state.memory.remove_from_cart(added[0], added[1])
                state.memory.add_to_cart(hit.product.id, variant.id if variant is not None else "", quantity)
        if colour is None and variant is not None and len(colours) > 1 and variant.colors():
            colour = variant.colors()[0]  # say which colour went in: the shopper can change it
        shade = next((c for c in colours if colour and canonical_color(c) == canonical_color(colour)), colour)
        detail = " in " + ", size ".join(filter(None, [shade.lower() if shade else None, str(size) if size else None])) \
            if shade and size else f" in size {size}" if size else f" in {shade.lower()}" if shade else ""
        where = "your wishlist" if wishlist else "your cart"
        count = f"{quantity} of " if quantity > 1 else ""
        state.focus = hit
        if not wishlist:
            line = (hit.product.id, variant.id if variant is not None else "", size, shade, quantity)
            state.added_lines = [x for x in state.added_lines if added is None or x[:2] != added[:2]][-7:] + [line]
            state.last_added = line
        said = f"Changed it: {count}the {name}{detail} in {where}." if added is not None else \
            f"Added {count}the {name}{detail} to {where}."
        return self._said(intent, text, said, sources=[*sources, str(quantity), str(size), str(shade)], facts=facts,
                          hits=[hit])

    def _policy(self, intent: Intent, text: str) -> Plan:
        if self.kb is None:
            return self._said(intent, text, "I don't know that one. " + HANDOFF, handoff=True)
        answer = self.kb.answer_policy(text)
        if not answer.supported:
            return self._said(intent, text, answer.text, handoff=True)
        cite = answer.citations[0] if answer.citations else None
        passage = next((p.text for p in self.kb.passages() if cite is not None and p.id == cite.passage_id), "")
        reply = answer.text + (f" (From our {cite.doc_title}.)" if cite is not None else "")
        return self._said(intent, text, reply, sources=[passage, cite.doc_title if cite else ""])

    def _order(self, intent: Intent, text: str, state: DialogueState) -> Plan:
        order_id = intent.slots.get("order_id") or state.remembered.get("order_id")
        if not order_id:
            return self._said(intent, text, "Sure, what's your order number? It starts with S T.")
        if self.orders is None:
            return self._said(intent, text, "I can't look up orders right now. " + HANDOFF, handoff=True)
        from assistant.conversation.orders import status_sentence

        order = self.orders.lookup(str(order_id))
        if order is None:
            return self._said(intent, text, "I couldn't find that order number. Could you read it to me again?")
        return self._said(intent, text, status_sentence(order), sources=[str(order.to_dict()), str(order_id)])

    def _recommend(self, intent: Intent, text: str, state: DialogueState, search: SearchFn,
                         signals: SessionSignals | None, k: int) -> Plan:
        words = set(_words(text))
        memory = state.memory
        if words & {"friend", "friends", "buddy", "sister", "brother"} and memory is not None and memory.user_id \
                and self.memory_store is not None and self.catalog is not None:
            social = self.memory_store.social(memory.user_id)
            bought = [(product, names) for pid, names in social.bought.items()
                      if (product := self.catalog.get(pid)) is not None]
            if bought:
                colours = [COLOR_SYNONYMS[w] for w in _words(text) if w in COLOR_SYNONYMS]
                product, names = next(((p, n) for p, n in bought if colours and colours[0] in
                                       [canonical_color(c) for c in p.colors()]), bought[-1])
                pid = product.id
                # what goes with it, by the catalog's own kinds (assistant.search.complements)
                query, hits = search(f"what goes with the {product.title}", k=k, signals=signals)
                hits = [h for h in hits if h.product.id != pid]
                state.last_query, state.shown, state.focus, state.discussed = query, list(hits), None, []
                friend = names[0]
                opening = f"Your friend {friend} bought the {spoken_name(product.title)}."
                if not hits:
                    return self._said(intent, text, opening, sources=[product.title, friend])
                picks = "; ".join(f"the {product_name(h)}, {format_price(h.price, h.product.currency)}" for h in hits[:2])
                reply = f"{opening} To go with it, you could try {picks}."
                facts = facts_from_hits(hits) + [ProductFact(product.id, product.title, product.price,
                                                            product.currency, name=spoken_name(product.title))]
                return self._said(intent, text, reply, sources=[product.title, friend], facts=facts, hits=hits)
        return self._search(intent, text, None, state, search, signals, k, fresh=True)
