"""Find and redact personal data in free text: emails, phone numbers, payment card numbers, street addresses.

Used before anything a shopper said is stored (session memory) and on generated replies (`assistant.safety.moderation
.screen_output`). Detection is rule-based and deliberately conservative about numbers:

* a **card** is 13-19 digits (spaces or dashes between groups allowed) that pass the Luhn check; a digit run that
  fails it is left alone (order ids, tracking numbers, SKUs);
* a **phone** is a North-American 10-digit number (optional ``+1``/``1``, brackets, dots, dashes, spaces) or an
  international ``+`` number of 8-15 digits; a longer digit run is never cut into a phone;
* an **address** is a house number, one to four capitalised words and a street suffix ("221 Baker Street",
  "1600 Pennsylvania Ave NW, Apt 4"), optionally with a unit;
* an **ssn** is the US ``ddd-dd-dddd`` form.

Replacements are typed placeholders (``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[ADDRESS]``, ``[SSN]``) so a reader can
still follow the sentence.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

KINDS = ("email", "card", "ssn", "phone", "address")

_EMAIL_RE = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# 13-19 digits in groups separated by single spaces or dashes; not part of a longer number.
_CARD_RE = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_SSN_RE = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
_PHONE_RE = re.compile(
    r"(?<![\w+-])"
    r"(?:"
    r"(?:\+?1[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]?\d{4}"  # NANP: (555) 123-4567, 555.123.4567, +1 555 ...
    r"|\+\d{1,3}(?:[ .-]?\d{2,4}){2,5}"  # international: +44 20 7946 0958
    r")"
    r"(?![\w-])"
)
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter"
    r"|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Square|Sq|Trail|Trl)"
)
_ADDRESS_RE = re.compile(
    r"\b\d{1,6}\s+(?:[NSEW]\.?\s+)?(?:[A-Z][A-Za-z'-]*\.?\s+){1,4}" + _STREET_SUFFIX + r"\b\.?"
    r"(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?"
    r"(?:,?\s+(?:Apt|Apartment|Unit|Suite|Ste|#)\.?\s*#?\s*[A-Za-z0-9-]+)?"
)
_PLACEHOLDER = {kind: f"[{kind.upper()}]" for kind in KINDS}


@dataclass(frozen=True)
class PiiSpan:
    """One piece of personal data found in a text.

    Attributes:
        kind: One of `KINDS`.
        start: Offset of the first character.
        end: Offset after the last character.
        text: The matched text.
    """

    kind: str
    start: int
    end: int
    text: str


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum (payment card numbers do)."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:  # every second digit from the right is doubled, 2-digit results summed (= minus 9)
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_pii(text: str, kinds: Collection[str] = KINDS) -> list[PiiSpan]:
    """Personal data in `text`, in reading order, never overlapping.

    Kinds are matched in the order of `KINDS` (emails and cards before phones), and a later match that overlaps an
    earlier one is dropped, so a card number is never also reported as a phone.

    Args:
        text: Any text.
        kinds: Which kinds to look for.

    Returns:
        Spans sorted by start offset.

    Raises:
        ValueError: An unknown kind.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; expected some of {list(KINDS)}")
    spans: list[PiiSpan] = []

    def free(start: int, end: int) -> bool:
        return all(end <= s.start or start >= s.end for s in spans)

    for kind in KINDS:
        if kind not in kinds:
            continue
        if kind == "email":
            matches = list(_EMAIL_RE.finditer(text))
        elif kind == "card":
            matches = [m for m in _CARD_RE.finditer(text) if luhn_valid(re.sub(r"\D", "", m.group()))]
        elif kind == "ssn":
            matches = list(_SSN_RE.finditer(text))
        elif kind == "phone":
            matches = list(_PHONE_RE.finditer(text))
        else:
            matches = list(_ADDRESS_RE.finditer(text))
        for m in matches:
            if free(m.start(), m.end()):
                spans.append(PiiSpan(kind, m.start(), m.end(), m.group()))
    return sorted(spans, key=lambda s: s.start)


def redact_pii(
    text: str, kinds: Collection[str] = KINDS, allow: Collection[str] = ()
) -> tuple[str, list[str]]:
    """Replace personal data with typed placeholders.

    Args:
        text: Any text.
        kinds: Which kinds to redact.
        allow: Exact strings to keep even though they look like PII (a merchant's published support email or
            phone number, which a reply may quote).

    Returns:
        ``(redacted text, sorted list of the kinds found)``; the kinds list is empty when nothing was redacted.

    Example:
        >>> redact_pii("Call me at (415) 555-0134 or mail jo@example.com")
        ('Call me at [PHONE] or mail [EMAIL]', ['email', 'phone'])
    """
    allowed = {a.strip().lower() for a in allow}
    spans = [s for s in find_pii(text, kinds) if s.text.strip().lower() not in allowed]
    if not spans:
        return text, []
    out: list[str] = []
    pos = 0
    for span in spans:
        out.append(text[pos : span.start])
        out.append(_PLACEHOLDER[span.kind])
        pos = span.end
    out.append(text[pos:])
    return "".join(out), sorted({s.kind for s in spans})
