"""Short, speakable, grounded replies built from search hits by template.

The first sentence is short ("I found three black hoodies under $50.") so text-to-speech can start while the rest
is still being spoken; the second names at most three products with their prices, taken only from the hits.
Wording varies a little, deterministically per query. Every reply is checked with `check_grounding`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from assistant.replies.grounding import ProductFact, check_grounding, facts_from_hits, format_price
from assistant.search.query import ProductHit, SearchQuery, canonical_color, canonical_size

__all__ = ["MAX_NAMED", "ProductFact", "compose_reply", "reply_facts"]

log = logging.getLogger(__name__)

MAX_NAMED = 3  # products named in one reply: more is hard to follow by ear
_SMALL_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _count_word(n: int) -> str:
    return _SMALL_NUMBERS[n] if 0 <= n < len(_SMALL_NUMBERS) else str(n)


def _variant(query: SearchQuery, n: int) -> int:
    """A stable choice among `n` phrasings for this query (Python's `hash` is salted per process)."""
    key = f"{query.text}|{query.max_price}|{query.min_price}|{query.color}|{query.size}"
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:4], "big") % n


def _price_phrase(query: SearchQuery) -> str:
    if query.min_price is not None and query.max_price is not None:
        return f" between {format_price(query.min_price)} and {format_price(query.max_price)}"
    if query.max_price is not None:
        return f" under {format_price(query.max_price)}"
    if query.min_price is not None:
        return f" over {format_price(query.min_price)}"
    return ""


def _size_phrase(query: SearchQuery) -> str:
    return f" in size {canonical_size(query.size)}" if query.size else ""


def _noun(hits: Sequence[ProductHit]) -> str | None:
    """A plural noun for the hits when they share a category ("hoodies", "running shoes"), else None."""
    leaves = {h.product.leaf_category for h in hits}
    if len(leaves) != 1:
        return None
    leaf = next(iter(leaves)).strip()
    last = leaf.split()[-1].lower() if leaf else ""
    if not (last.endswith("s") and not last.endswith("ss")):
        return None  # "Fitness Equipment", "Video Download": no plural to count ("five fitness equipment")
    return leaf.replace("&", "and").lower()


def reply_facts(hits: Sequence[ProductHit]) -> list[ProductFact]:
    """Facts of the products a reply to `hits` names.

    The first `MAX_NAMED` that meet the query, or when none do, of its near misses.
    """
    exact = [h for h in hits if not h.near_miss]
    return facts_from_hits((exact or list(hits))[:MAX_NAMED])


def _no_results(query: SearchQuery) -> str:
    color = canonical_color(query.color) if query.color else None
    price = _price_phrase(query)
    if price:
        return (
            f"Sorry, I couldn't find anything matching that{price}. Want me to look without the price limit?"
        )
    if color or query.size:
        what = " and ".join(
            x for x in (color, f"size {canonical_size(query.size)}" if query.size else None) if x
        )
        return f"Sorry, I couldn't find that in {what}. Want me to show other options?"
    return "Sorry, I couldn't find anything matching that. Could you say it another way?"


def _opening(query: SearchQuery, hits: Sequence[ProductHit]) -> str:
    n = len(hits)
    color = canonical_color(query.color) if query.color else None
    noun = _noun(hits)
    if n == 1 or noun is None:
        what = "one match" if n == 1 else f"{_count_word(n)} options"
        color_part = f" in {color}" if color else ""
    else:
        what = f"{_count_word(n)} {color + ' ' if color else ''}{noun}"
        color_part = ""
    lead = ("I found", "Here are", "I've got")[_variant(query, 3)] if n > 1 else "I found"
    goes = f" to go with the {query.goes_with}" if query.goes_with else ""  # the shopper's own words for it
    return f"{lead} {what}{color_part}{_size_phrase(query)}{_price_phrase(query)}{goes}."


def _item(fact: ProductFact, query: SearchQuery, joiner: str) -> str:
    # Say the colour when the shopper did not ask for one and the product has exactly one.
    color = f" in {canonical_color(fact.color)}" if fact.color and not query.color else ""
    return f"the {fact.name}{color}{joiner}{format_price(fact.price, fact.currency)}"


def _listing(query: SearchQuery, facts: Sequence[ProductFact], total: int) -> str:
    style = _variant(query, 2)
    joiner = " at " if total > len(facts) else " is " if len(facts) == 1 else (" is ", " at ")[style]
    items = [_item(f, query, joiner) for f in facts]
    if len(items) == 1:
        text = items[0]
    elif len(items) == 2:
        text = f"{items[0]} and {items[1]}"
    else:
        text = ", ".join(items[:-1]) + f", and {items[-1]}"
    if total > len(facts):
        return f"The top {_count_word(len(facts))} are {text}."
    if style == 1 and len(items) > 1:
        return f"There's {text}."
    return text[0].upper() + text[1:] + "."


def _unmet(query: SearchQuery, near: Sequence[ProductHit]) -> str:
    """What the near misses in `near` miss, in the query's words (" in blue in size M under $50")."""
    missed = {name for h in near for name in h.near_miss}
    color = canonical_color(query.color) if query.color and "colour" in missed else None
    parts = [
        f" in {color}" if color else "",
        _size_phrase(query) if "size" in missed else "",
        _price_phrase(query) if "price" in missed else "",
    ]
    return "".join(parts)


def _unmet_text(query: SearchQuery, near: Sequence[ProductHit]) -> str:
    """What close matches are not: the constraints they miss, or "what you asked for" when it is the kind."""
    what = _unmet(query, near).strip()
    if any("kind" in h.near_miss or "feature" in h.near_miss for h in near):
        return f"exactly what you asked for{' ' + what if what else ''}"
    return what


def _near_item(fact: ProductFact, joiner: str) -> str:
    # A near miss's own colour is worth saying: it is the one thing that differs ("in grey" when asked for blue).
    color = f" in {canonical_color(fact.color)}" if fact.color else ""
    return f"the {fact.name}{color}{joiner}{format_price(fact.price, fact.currency)}"


def _closest(query: SearchQuery, near: Sequence[ProductHit], facts: Sequence[ProductFact]) -> str:
    """No product meets the whole query: say which part, then name the closest alternatives (`facts`)."""
    items = [_near_item(f, " at ") for f in facts]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + f"{',' if len(items) > 2 else ''} and {items[-1]}"
    verb = "is" if len(items) == 1 else "are"
    unmet = _unmet(query, near).strip()  # the size, colour or price none of them has, said first
    kind = any("kind" in h.near_miss or "feature" in h.near_miss for h in near)
    what = f" {unmet}" if unmet else " exactly" if kind else ""
    return f"I couldn't find that{what}. The closest {verb} {listed}."


def _also_near(query: SearchQuery, near: Sequence[ProductHit]) -> str:
    n = len(near)
    what = _unmet_text(query, near)
    return (f"I also have {_count_word(n)} close {'match' if n == 1 else 'matches'} that "
            f"{'is not' if n == 1 else 'are not'} {what}.")


def compose_reply(query: SearchQuery, hits: list[ProductHit]) -> str:
    """A short spoken reply for a search, naming at most `MAX_NAMED` products with their prices.

    Names, prices and colours come only from `hits` and `query`. The first sentence is short so speech can
    start early. Near misses (``hit.near_miss``) are never counted or named as meeting the query: with exact
    matches the reply adds how many close matches miss which constraint; with none it says what could not be
    found and names the closest, each with its own colour and price.

    Args:
        query: The query that was answered.
        hits: Its results, best first.

    Returns:
        The reply, e.g. "I found three black hoodies under $50. The Harbor Fleece Hoodie is $37, ..."
    """
    exact = [h for h in hits if not h.near_miss]
    near = [h for h in hits if h.near_miss]  # close alternatives (`ProductHit.near_miss`): never said to fit
    if not hits:
        reply = _no_results(query)
        facts: list[ProductFact] = []
    elif not exact:
        facts = reply_facts(near)
        reply = _closest(query, near, facts)
    else:
        facts = reply_facts(exact)
        reply = f"{_opening(query, exact)} {_listing(query, facts, len(exact))}"
        if near:
            reply += " " + _also_near(query, near)
    violations = check_grounding(reply, facts, query=query)
    if violations:  # templates should never do this; say so loudly rather than speak it unnoticed
        log.error("composed reply is not grounded (%s): %r", "; ".join(violations), reply)
    return reply
