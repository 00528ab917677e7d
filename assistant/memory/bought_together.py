"""What shoppers bought together: the co-purchases behind "often bought together with the …".

A basket is one session's purchases and cart additions; a shopper's own orders from the shop (events with a user id
and no session) make one basket per shopper.  Two products in one basket count once for that pair.  Only counts
leave this module: no basket, session or shopper is ever named.

The counts are worked out from the memory store's events and kept for `ttl_s` (a few minutes): a request for
complements reads a dict.  A store of millions of events would run this as a periodic job instead; the interface
(`bought_with`) stays.

Example:
    >>> together = BoughtTogether(store)
    >>> together.bought_with("MH01")
    {'MSH02': 3, 'MP04': 1}
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

from assistant.memory.store import Event, MemoryStore

BASKET_ACTIONS = frozenset({"purchase", "add_to_cart"})
MAX_BASKET = 50  # a basket bigger than this is a reseller or a test script, not a shopper's outfit: skipped


def baskets(events: Iterable[Event]) -> list[set[str]]:
    """The product ids bought together: per session, and per shopper for orders outside a session."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for ev in events:
        if ev.action not in BASKET_ACTIONS:
            continue
        if ev.session_id is not None:
            out[("session", ev.session_id)].add(ev.product_id)
        elif ev.user_id is not None:
            out[("user", ev.user_id)].add(ev.product_id)
    return [b for b in out.values() if 1 < len(b) <= MAX_BASKET]


def co_purchases(events: Iterable[Event]) -> dict[str, Counter[str]]:
    """Product id -> how many baskets held it together with each other product."""
    pairs: dict[str, Counter[str]] = defaultdict(Counter)
    for basket in baskets(events):
        for a in basket:
            pairs[a].update(b for b in basket if b != a)
    return dict(pairs)


class BoughtTogether:
    """Co-purchase counts over a memory store, refreshed at most every `ttl_s` (a `CoPurchases`).

    Args:
        store: The memory store whose events are read.
        ttl_s: How long one count stays in use.
        window_s: How far back events count (None: as far as the store keeps them).
        clock: Time source (tests).
    """

    def __init__(self, store: MemoryStore, *, ttl_s: float = 300.0, window_s: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.window_s = window_s
        self.clock = clock
        self._pairs: dict[str, Counter[str]] = {}
        self._at: float | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Count again now."""
        now = self.clock()
        since = now - self.window_s if self.window_s is not None else 0.0
        pairs = co_purchases(self.store.all_events(since))
        with self._lock:
            self._pairs, self._at = pairs, now

    def bought_with(self, product_id: str, limit: int = 50) -> dict[str, int]:
        """The products bought together with `product_id`, most baskets first, at most `limit`."""
        with self._lock:
            stale = self._at is None or self.clock() - self._at >= self.ttl_s
        if stale:
            self.refresh()
        with self._lock:
            return dict(self._pairs.get(product_id, Counter()).most_common(limit))
