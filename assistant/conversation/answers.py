"""Answers about products, built only from what the catalog says of them (#9).

Used by the dialogue (`assistant.conversation.dialogue`): the speakable names that tell products apart, attribute values
screened for injected instructions, "does it come in medium?" answered from the variants, and open questions
("is it warm enough for winter?") answered by quoting the attribute or description sentence that speaks to them --
by shared word stems, else the attribute MiniLM puts clearly closest -- or by saying plainly that the detail is
missing. Nothing here knows a catalog's products or attribute names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from assistant.catalog.model import Catalog
from assistant.replies.grounding import format_price, spoken_name, without_injection
from assistant.safety.moderation import looks_like_injection
from assistant.search.query import ProductHit, canonical_color

ATTRIBUTE_COSINE = 0.3  # MiniLM cosine from which an attribute line answers an open product question ...
ATTRIBUTE_MARGIN = 0.08  # ... when it beats the next line by this much
KEY_COSINE = 0.25  # ... else an attribute *name* this close to the question ...
KEY_MARGIN = 0.05  # ... and this much closer than the next name
EVIDENCE_COSINE = 0.3  # MiniLM cosine (stem bonus included) from which a catalog line answers a property question
EVIDENCE_MARGIN = 0.08  # ... and by which one product's best line must beat the others' to be "the one that does"
STEM_BONUS = 0.1  # added to a line's cosine when it shares a content word stem with the question ("swim", "pool")
_QUESTION_FILLER = frozenset("""is it the a an this that one does do will would can could how what which good enough
for of to in on be are was really very too tell me about more its it's they them any much with my your you and or
but from into our get got have has need want like use then these those there their if keep keeps make makes go
goes work works let wear wearing put better best one ones""".split())
_CARE = re.compile(r"\b(?:wash|washing|dry|dryer|iron|bleach|tumble|dry.?clean|care)\b", re.IGNORECASE)  # a line
_CARE_QUESTION = re.compile(r"\b(?:wash|washing|washable|dryer|iron|ironing|bleach|tumble|dry.?clean|care|clean)\b",
                            re.IGNORECASE)


def stem(word: str) -> str:
    """A crude stem for matching a question to catalog text: "winter"/"wintry", "warm"/"warmth"."""
    return word[:4] if len(word) > 4 else word


def product_name(hit: ProductHit) -> str:
    """The product's name as it is said ("the Hera Pullover Hoodie")."""
    return spoken_name(hit.product.title)


def labels(hits: Sequence[ProductHit]) -> list[str]:
    """Speakable names that tell ``hits`` apart: "the Velocity Running Shoes in red" when two share a name."""
    names = [product_name(h) for h in hits]
    out = []
    for hit, name in zip(hits, names, strict=True):
        colours = (hit.variant.colors() if hit.variant is not None else []) or hit.product.colors()
        if names.count(name) > 1 and len(colours) == 1:
            name = f"{name} in {colours[0].lower()}"
        out.append(name)
    return out


def clean_values(value: Any) -> list[str]:
    """An attribute's values as text, without empty ones and without any that look like prompt injection."""
    values = [str(v) for v in value if v] if isinstance(value, list | tuple) else [str(value)] if value else []
    return [v for v in values if not looks_like_injection(v)]


def clean_attributes(attributes: dict[str, Any]) -> dict[str, list[str]]:
    """``attributes`` without injected values (catalog text that instructs the assistant is no fact to repeat)."""
    out: dict[str, list[str]] = {}
    for key, value in attributes.items():
        values = clean_values(value)
        if values and not looks_like_injection(str(key)):
            out[key] = values
    return out


def attribute_values(hit: ProductHit, *keys: str) -> list[str]:
    out: list[str] = []
    for product in (hit.variant, hit.product):
        if product is None:
            continue
        for key in keys:
            value = product.attributes.get(key)
            if isinstance(value, str | list | tuple):
                out.extend(clean_values(value))
    return list(dict.fromkeys(out))


def join(items: Sequence[str]) -> str:
    """The items as said: a, b and c."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]




def variant_of(hit: ProductHit, size: str | None, colour: str | None, catalog: Catalog | None) -> Any | None:
    """The variant of ``hit`` in ``size`` and ``colour`` (None: no variants, or none matches)."""
    if catalog is None:
        return hit.variant
    for v in catalog.variants_of(hit.product.id):
        colours = [canonical_color(c) for c in v.colors()]
        if (size is None or size in v.sizes()) and (colour is None or canonical_color(colour) in colours):
            return v
    return None


def comes_in(hit: ProductHit, size: str | None, colour: str | None, catalog: Catalog | None) -> str:
    """Whether the product comes in the asked size and colour, and what it does come in."""
    name = product_name(hit)
    asked = " ".join([*([str(colour)] if colour else []), *([f"size {size}"] if size else [])])
    has_variants = catalog is not None and bool(catalog.variants_of(hit.product.id))
    if has_variants:
        fits = variant_of(hit, size, colour, catalog) is not None
    else:
        fits = (size is None or size in hit.product.sizes()) and (colour is None or canonical_color(colour) in [
            canonical_color(c) for c in hit.product.colors()])
    if fits:
        return f"Yes, the {name} comes in {asked}."
    other = hit.product.sizes() if size and not colour else hit.product.colors()
    what = "sizes " if size and not colour else ""
    return f"No, the {name} doesn't come in {asked}." + (f" It comes in {what}{join(other)}." if other else "")


def what_it_says(hit: ProductHit, text: str, encoder: Any | None = None) -> str:
    """Answer an open question ("is it warm enough for winter?") from what the catalog says of the product.

    The product's attributes and description sentences that share a word stem with the question, quoted; else the
    line closest in meaning (`best_evidence`, with a description sentence beside an attribute found by meaning);
    when nothing speaks to it, say so plainly and give its price.
    """
    name = product_name(hit)
    asked = _asked_stems(hit, text)
    said = attributes_asked(hit, text, encoder)
    description = description_lines(hit)
    lines = [x for x in description if _CARE_QUESTION.search(text) or not _CARE.search(x)]  # rain, dry
    quoted = [x for x in lines if asked & {stem(w) for w in words_of(x)}][:2]
    if not quoted:  # no sentence shares a word: the line closest in meaning, computed once
        score, line = best_evidence(hit, text, encoder)
        if score >= EVIDENCE_COSINE and line in description:
            quoted = [line]  # "swim ok?": "... the water-resistant design lets you take your workout to the lap pool"
        elif score >= EVIDENCE_COSINE and not said:
            said = [line]  # "is it warm?" -> its climate
    if not said and not quoted:
        kind = _IS_IT_A.search(text.lower())
        if kind is not None and kind.group(1) not in words_of(" ".join([hit.product.title, hit.product.description])):
            # "is it a dvd?" of a download: what it is listed as, and that the listing never says what was asked
            leaf = hit.product.category.rsplit("/", 1)[-1]
            return f"The {name} is listed under {leaf}; nothing in its listing says {kind.group(1)}."
        return (f"I don't have that detail for the {name}. It is "
                f"{format_price(hit.price, hit.product.currency)}.")
    parts = [f"The {name}: " + "; ".join(said[:3]) + "."] if said else [f"About the {name}:"]
    parts += [f'"{q.rstrip(".")}."' for q in quoted]
    return " ".join(parts)


_IS_IT_A = re.compile(r"^(?:\w+[,.]?\s+)?(?:is|isn't) (?:it|this|that|this one|that one) (?:a|an|like a|some kind of a?)\s*"
                      r"([a-z][a-z-]+)\b")


def _asked_stems(hit: ProductHit, text: str) -> set[str]:
    title = set(words_of(hit.product.title))
    return {stem(w) for w in words_of(text) if len(w) > 2 and w not in _QUESTION_FILLER and w not in title}


def attribute_lines(hit: ProductHit) -> list[str]:
    """The product's descriptive attribute lines ("climate: Cool, Windy"), without ids, sizes and colours."""
    lines: list[str] = []
    for key, values in clean_attributes(hit.product.attributes).items():
        if any(part in key for part in ("sku", "available_", "associated", "_id")) or key in ("size", "color"):
            continue
        lines.append(f"{key.replace('_', ' ')}: {join(values)}")
    return lines


def description_lines(hit: ProductHit) -> list[str]:
    """The description's sentences and bullet points, as written (injected instructions removed)."""
    description = without_injection(hit.product.description)
    parts = re.split(r"(?<=[.!?])\s+|\n+|(?<=\.)-\s*", description)  # "Full zip.- Mock-neck collar." too
    return [x.strip(" -•\n") for x in parts if len(x.strip(" -•\n")) > 2]


def attributes_asked(hit: ProductHit, text: str, encoder: Any | None = None, *, closest: bool = True) -> list[str]:
    """The product's attribute lines ("climate: Cool, Windy") a question speaks to.

    Those sharing a word stem with the question; when none does (and `closest`), the line MiniLM puts clearly
    closest, if any.
    """
    asked = _asked_stems(hit, text)
    lines = attribute_lines(hit)
    said = [line for line in lines if asked & {stem(w) for w in words_of(line)}]
    if not said and lines and closest:  # no shared word: the attribute closest in meaning, if clearly closest
        said = closest_attribute(text, lines, encoder)
    return said


def best_evidence(hit: ProductHit, question: str, encoder: Any | None) -> tuple[float, str]:
    """The catalog line (attribute or description sentence) that speaks most to a property question, and how much.

    "Which one can I wear in the pool?" -> "... the water-resistant design lets you take your workout to the lap
    pool." The score is MiniLM's cosine, plus `STEM_BONUS` for a shared content word; care lines ("Machine
    wash/line dry") only count when the question is about care (they say "dry" but not about rain).
    """
    lines = attribute_lines(hit) + description_lines(hit)
    if not _CARE_QUESTION.search(question):
        lines = [x for x in lines if not _CARE.search(x)]
    if encoder is None or not lines:
        return 0.0, ""
    asked = _asked_stems(hit, question)
    query = np.asarray(encoder.encode_query(question), dtype=np.float32)
    scores = np.asarray(encoder.encode(lines), dtype=np.float32) @ query
    scores = scores + np.asarray([STEM_BONUS if asked & {stem(w) for w in words_of(x)} else 0.0 for x in lines])
    best = int(np.argmax(scores))
    return float(scores[best]), lines[best]


def the_one_that(hits: Sequence[ProductHit], question: str, encoder: Any | None) -> tuple[int, str] | None:
    """Of several products, the one whose catalog text clearly answers a property question, and the line.

    Clearly: its best line reaches `EVIDENCE_COSINE` and beats every other product's best by `EVIDENCE_MARGIN`.
    None when no product's text does, or two speak to it about as much ("can any of these track my sleep?").
    """
    return clear_winner([best_evidence(h, question, encoder) for h in hits])


def clear_winner(found: Sequence[tuple[float, str]]) -> tuple[int, str] | None:
    """`the_one_that` over evidence already found (each product's `best_evidence`, in order)."""
    if len(found) < 2:
        return None
    order = sorted(range(len(found)), key=lambda i: -found[i][0])
    first, second = found[order[0]][0], found[order[1]][0]
    if first >= EVIDENCE_COSINE and first - second >= EVIDENCE_MARGIN:
        return order[0], found[order[0]][1]
    return None


_MEASURE_RE = re.compile(
    r"\d+(?:\.\d+)?\s*(?:\"|''|”|-?inch(?:es)?\b|in\.|cm\b|mm\b|m\b|l\b|liters?\b|litres?\b|oz\b|ounces?\b|lbs?\b|"
    r"pounds?\b|kg\b|g\b|ft\b|foot\b|feet\b|min\b|mins\b|minutes?\b|hours?\b|hrs?\b|meters?\b|metres?\b)"
    r"|\d+\s*[x×]\s*\d+", re.IGNORECASE)


def measurements(hit: ProductHit, question: str = "") -> list[str]:
    """The description's lines that give the product's measurements ("H 20" x W 14" x D 8"", "29 L").

    With a question, those sharing a word stem with it first ("how much does it weigh" -> "Weight: 2 lbs").
    """
    lines = [x for x in description_lines(hit) if _MEASURE_RE.search(x)]
    asked = _asked_stems(hit, question) if question else set()
    fitting = [x for x in lines if asked & {stem(w) for w in words_of(x)}]
    return (fitting or lines)[:3]


def closest_attribute(question: str, lines: Sequence[str], encoder: Any | None) -> list[str]:
    """The one attribute line MiniLM puts clearly closest to the question, or none.

    "Is it warm enough for winter?" shares no word with "climate: Cool, Mild, Spring", but means it.
    """
    if encoder is None or not lines:
        return []
    query = np.asarray(encoder.encode_query(question), dtype=np.float32)
    # The whole lines first; then the attribute names alone ("is it good for rain?" asks about the climate).
    for texts, cosine, margin in ((list(lines), ATTRIBUTE_COSINE, ATTRIBUTE_MARGIN),
                                  ([x.split(":")[0] for x in lines], KEY_COSINE, KEY_MARGIN)):
        scores = np.asarray(encoder.encode(texts), dtype=np.float32) @ query
        order = np.argsort(-scores)
        best = float(scores[order[0]])
        second = float(scores[order[1]]) if len(order) > 1 else -1.0
        if best >= cosine and best - second >= margin:
            return [lines[int(order[0])]]
    return []


def words_of(text: str) -> list[str]:
    """Lower-case words (apostrophes kept)."""
    return re.findall(r"[a-z0-9']+", text.lower())
