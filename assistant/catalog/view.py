"""The catalog being served: one view that the turn, the dialogue and the HTTP routes read, swapped whole on a reload.

What is derived from a catalog (its spoken vocabulary, product names, what it covers, its main kinds) is built once
per catalog through `CatalogView.derived` and kept beside it, so a reader never pairs one catalog's products with
another's words: `CatalogView.swap` replaces the catalog and its derived objects in one assignment.

The search indexes are not part of the view: they are built for a catalog (``ProductSearcher.update``), and a reload
updates them before it swaps the view.

Example:
    >>> view = CatalogView(catalog)
    >>> names = view.derived("names", build_names)   # built on first use, once per catalog
    >>> view.swap(store.load_catalog())             # every reader sees the new catalog from now on
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from assistant.catalog.model import Catalog

T = TypeVar("T")


class CatalogView:
    """The served catalog and what is derived from it.

    Args:
        catalog: The catalog served now.
        **derived: Objects already built for `catalog`, by name (e.g. ``vocabulary=``), used as they are.
    """

    def __init__(self, catalog: Catalog, **derived: Any) -> None:
        self._state: tuple[Catalog, dict[str, Any]] = (catalog, dict(derived))
        self._lock = threading.RLock()  # re-entrant: building one derived object may read another
        self.swaps = 0

    @property
    def catalog(self) -> Catalog:
        return self._state[0]

    def swap(self, catalog: Catalog, **derived: Any) -> None:
        """Serve `catalog` from now on; what was derived from the previous one is dropped with it."""
        with self._lock:
            self._state = (catalog, dict(derived))
            self.swaps += 1

    def derived(self, name: str, build: Callable[[Catalog], T]) -> T:
        """`name` of the served catalog: ``build(catalog)`` on first use, the same object after that."""
        catalog, cache = self._state  # one read: the catalog and its own derived objects
        if name not in cache:
            with self._lock:
                if name not in cache:
                    value = build(catalog)
                    if self._state[1] is cache:  # not swapped meanwhile (else the value is of the old catalog)
                        cache[name] = value
                    return value
        return cache[name]  # type: ignore[no-any-return]
