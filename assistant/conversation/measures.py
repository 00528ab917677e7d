"""Comparing products on a measure their listings give: "which is roomier?", "which is longer in the leg?".

A price or a material says nothing about which backpack holds more. The descriptions often do, in their own
words and units ("Volume: 29 L.", "Dimensions: 18" x 10" x 6".", "5" inseam.", "Weight: 2 lbs, 8 oz."). Each is
read into one number per dimension, in one unit, so that two products can be put side by side; the reply quotes the
lines it read, never a number of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from assistant.conversation.answers import description_lines

_NUMBER = r"(\d+(?:\.\d+)?)"
_INCH = r"\s*(?:\"|”|''|-?inch(?:es)?\b|in\b)"
_LITRES = re.compile(rf"{_NUMBER}\s*(?:l|liters?|litres?)\b", re.IGNORECASE)
_BOX = re.compile(rf"(?:[a-z]\s*)?{_NUMBER}{_INCH}?\s*[x×]\s*(?:[a-z]\s*)?{_NUMBER}{_INCH}?\s*[x×]\s*(?:[a-z]\s*)?"
                  rf"{_NUMBER}", re.IGNORECASE)
_INSEAM = re.compile(rf"{_NUMBER}{_INCH}\s*inseam|inseam\s*:?\s*{_NUMBER}", re.IGNORECASE)
_LENGTH = re.compile(rf"{_NUMBER}{_INCH}\s*(?:body )?length|length\s*:?\s*{_NUMBER}", re.IGNORECASE)
_POUNDS = re.compile(rf"{_NUMBER}[\s-]*(?:lbs?|pounds?)\b(?:,?\s*{_NUMBER}\s*oz\b)?", re.IGNORECASE)
_KILOS = re.compile(rf"{_NUMBER}\s*kg\b", re.IGNORECASE)
CUBIC_INCH_LITRES = 0.016387

# The comparative a question uses -> the dimension it compares, and whether more of it wins.
_ASKED = (
    (re.compile(r"\b(?:bigger|biggest|larger|largest|roomier|roomiest|more (?:room|space|capacity)|most (?:room|space|"
                r"capacity)|holds? (?:the )?more|holds? the most|fits? (?:the )?more|fits? the most|capacity)\b"),
     "volume", True),
    (re.compile(r"\b(?:smaller|smallest|more compact|most compact|less room|less space)\b"), "volume", False),
    (re.compile(r"\b(?:longer|longest)\b"), "length", True),
    (re.compile(r"\b(?:shorter|shortest)\b"), "length", False),
    (re.compile(r"\b(?:heavier|heaviest)\b"), "weight", True),
    (re.compile(r"\b(?:lighter|lightest)\b(?! colou?r)"), "weight", False),
)


@dataclass(frozen=True)
class Measure:
    """One dimension of a product, read from a line of its description."""

    dimension: str  # volume (litres), length (inches: an inseam, a body length) or weight (kilograms)
    value: float
    line: str  # the description line it was read from, quoted in the reply


def asked_measure(question: str) -> tuple[str, bool] | None:
    """The dimension a comparative question asks about and whether more wins; None when it asks none."""
    low = question.lower()
    for pattern, dimension, more in _ASKED:
        if pattern.search(low):
            return dimension, more
    return None


def measures(hit: Any) -> dict[str, Measure]:
    """The volume, length and weight a product's description gives (each read once, the first line saying it)."""
    found: dict[str, Measure] = {}
    for line in description_lines(hit):
        for dimension, value in _read(line):
            if dimension not in found or dimension == "volume" and _LITRES.search(line):
                found[dimension] = Measure(dimension, value, line)  # a volume said beats one worked out
    return found


def _read(line: str) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if m := _LITRES.search(line):
        out.append(("volume", float(m[1])))
    elif m := _BOX.search(line):
        a, b, c = (float(x) for x in m.groups())
        out.append(("volume", round(a * b * c * CUBIC_INCH_LITRES, 1)))
    if m := _INSEAM.search(line) or _LENGTH.search(line):
        out.append(("length", float(next(g for g in m.groups() if g))))
    if m := _POUNDS.search(line):
        out.append(("weight", round((float(m[1]) + (float(m[2]) / 16 if m[2] else 0.0)) * 0.4536, 2)))
    elif m := _KILOS.search(line):
        out.append(("weight", float(m[1])))
    return out


def compare_on_measure(question: str, hits: list[Any], *, partial: bool = False
                       ) -> tuple[Any, list[tuple[Any, Measure]]] | None:
    """The product that wins a comparative question on a measure, with each product whose listing gives it.

    None when the question asks no measure, or a listing does not give it (with `partial`: fewer than two do), or
    the best two tie.
    """
    asked = asked_measure(question)
    if asked is None or len(hits) < 2:
        return None
    dimension, more = asked
    read = [(h, m) for h in hits if (m := measures(h).get(dimension)) is not None]
    if len(read) < 2 or (len(read) < len(hits) and not partial):
        return None
    ranked = sorted(read, key=lambda x: x[1].value, reverse=more)
    if ranked[0][1].value == ranked[1][1].value:
        return None
    return ranked[0][0], read
