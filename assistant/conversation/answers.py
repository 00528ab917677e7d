"""Answers about products, built only from what the catalog says of them (#9).

Used by the dialogue (`assistant.dialogue`): the speakable names that tell products apart, attribute values
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

from assistant.catalog import Catalog
from assistant.grounding import format_price, spoken_name, without_injection
from assistant.moderation import looks_like_injection
from assistant.search import ProductHit, canonical_color

ATTRIBUTE_COSINE = 0.3  # MiniLM cosine from which an attribute line answers an open product question ...
ATTRIBUTE_MARGIN = 0.08  # ... when it beats the next line by this much
KEY_COSINE = 0.25  # ... else an attribute *name* this close to the question ...
KEY_MARGIN = 0.05  # ... and this much closer than the next name
_QUESTION_FILLER = frozenset("""is it the a an this that one does do will would can could how what which good enough
for of to in on be are was really very too tell me about more its it's they them any much""".split())


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

    The product's attributes and description sentences that share a word stem with the question, quoted;
    when nothing does, say so plainly and give its price.
    """
    name = product_name(hit)
    asked = _asked_stems(hit, text)
    said = attributes_asked(hit, text, encoder)
    description = without_injection(hit.product.description)
    sentences = [x.strip(" -•\n") for x in re.split(r"(?<=[.!?])\s+|\n+", description) if x.strip(" -•\n")]
    quoted = [x for x in sentences if asked & {stem(w) for w in words_of(x)}][:2]
    if not said and not quoted:
        return (f"I don't have that detail for the {name}. It is "
                f"{format_price(hit.price, hit.product.currency)}.")
    parts = [f"The {name}: " + "; ".join(said[:3]) + "."] if said else [f"About the {name}:"]
    parts += [f'"{q.rstrip(".")}."' for q in quoted]
    return " ".join(parts)


def _asked_stems(hit: ProductHit, text: str) -> set[str]:
    title = set(words_of(hit.product.title))
    return {stem(w) for w in words_of(text) if len(w) > 2 and w not in _QUESTION_FILLER and w not in title}


def attributes_asked(hit: ProductHit, text: str, encoder: Any | None = None) -> list[str]:
    """The product's attribute lines ("climate: Cool, Windy") a question speaks to.

    Those sharing a word stem with the question; when none does, the line MiniLM puts clearly closest, if any.
    """
    asked = _asked_stems(hit, text)
    said: list[str] = []
    lines: list[str] = []
    for key, values in clean_attributes(hit.product.attributes).items():
        if any(part in key for part in ("sku", "available_", "associated", "_id")) or key in ("size", "color"):
            continue
        line = f"{key.replace('_', ' ')}: {join(values)}"
        lines.append(line)
        if asked & ({stem(w) for v in values for w in words_of(v)} | {stem(w) for w in words_of(key)}):
            said.append(line)
    if not said and lines:  # no shared word: the attribute closest in meaning, if clearly closest
        said = closest_attribute(text, lines, encoder)
    return said


_MEASURE_RE = re.compile(
    r"\d+(?:\.\d+)?\s*(?:\"|''|”|-?inch(?:es)?\b|in\.|cm\b|mm\b|m\b|l\b|liters?\b|litres?\b|oz\b|ounces?\b|lbs?\b|"
    r"pounds?\b|kg\b|g\b|ft\b|foot\b|feet\b)|\d+\s*[x×]\s*\d+", re.IGNORECASE)


def measurements(hit: ProductHit) -> list[str]:
    """The description's lines that give the product's measurements ("H 20" x W 14" x D 8"", "29 L")."""
    description = without_injection(hit.product.description)
    lines = [x.strip(" -•\n") for x in re.split(r"(?<=[.!?])\s+|\n+", description) if x.strip(" -•\n")]
    return [x for x in lines if _MEASURE_RE.search(x)][:3]


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
