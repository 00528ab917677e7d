"""What goes with what: complementary kinds of product, from the catalog itself and the merchant's own table.

"What goes with a grey hoodie" must not return five grey hoodies. The kinds that go with a product come from:

1. the merchant's table, when there is one (``complements.json`` in the data dir: a category path or leaf name ->
   the category paths or leaf names that go with it, in order; it overrides what follows for the kinds it names);
2. the catalog's own tree: the other branches of the product's department (a top's department holds bottoms; a
   bag's holds fitness equipment and watches), then, as layers, the other kinds of its own branch (a jacket over a
   tee).

Within those kinds, products that shoppers bought together with the named one (`CoPurchases`, counted from the
memory's events by ``assistant.memory.bought_together``) come first, said as "often bought with".

No kind of any catalog is named here: every rule reads the served catalog's category paths.

Example:
    >>> kinds = Complements.from_catalog(catalog)
    >>> kinds.for_category("Women/Tops/Hoodies & Sweatshirts")
    [Complement(path='Women/Bottoms/Pants', reason='goes with'), ..., Complement(path='Women/Tops/Tees', ...)]
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from assistant.catalog.model import Catalog

log = logging.getLogger(__name__)

TABLE_FILE = "complements.json"
GOES_WITH = "goes with"
LAYERS_WITH = "layers with"
MERCHANT = "recommended with"
BOUGHT_WITH = "often bought with"
REASONS = (GOES_WITH, LAYERS_WITH, MERCHANT, BOUGHT_WITH)


class CoPurchases(Protocol):
    """How often shoppers bought other products together with one (``assistant.memory.bought_together``)."""

    def bought_with(self, product_id: str, limit: int = 50) -> dict[str, int]:
        """Product id -> baskets that held it together with `product_id`, most first."""
        ...


@dataclass(frozen=True)
class Complement:
    """A kind of product that goes with another, and why (said in replies)."""

    path: str
    reason: str


def _branch(path: str) -> str:
    """The path without its leaf (``Women/Tops/Tees`` -> ``Women/Tops``); a one-level path is its own branch."""
    return path.rsplit("/", 1)[0] if "/" in path else path


def _department(path: str) -> str:
    return path.split("/", 1)[0]


class Complements:
    """Complementary kinds per category path of one catalog.

    Args:
        kinds: The catalog's leaf category paths with their product counts.
        table: The merchant's table (category path or leaf name -> paths or leaf names), or None.
    """

    def __init__(self, kinds: Mapping[str, int], table: Mapping[str, Sequence[str]] | None = None) -> None:
        self.kinds = dict(kinds)
        self._by_leaf: dict[str, list[str]] = {}
        for path in self.kinds:
            self._by_leaf.setdefault(path.rsplit("/", 1)[-1].lower(), []).append(path)
        self.table = {self._key(k): [p for v in vs for p in self._paths(v)] for k, vs in (table or {}).items()}

    @classmethod
    def from_catalog(cls, catalog: Catalog, data_dir: Path | None = None) -> Complements:
        """The catalog's kinds, and the merchant's ``complements.json`` in `data_dir` when it exists and reads."""
        kinds = Counter(p.category for p in catalog.parents() if p.category)
        return cls(kinds, load_table(data_dir / TABLE_FILE) if data_dir is not None else None)

    def _key(self, name: str) -> str:
        return name.strip().lower()

    def _paths(self, name: str) -> list[str]:
        """The catalog's paths a table entry names (a path as it is, or every path of a leaf name)."""
        if name in self.kinds:
            return [name]
        return list(self._by_leaf.get(name.rsplit("/", 1)[-1].strip().lower(), []))

    def for_category(self, path: str) -> list[Complement]:
        """The kinds that go with products of `path`, best first (never `path` itself)."""
        leaf = path.rsplit("/", 1)[-1].lower()
        listed = self.table.get(self._key(path)) or self.table.get(leaf)
        out: list[Complement] = [Complement(p, MERCHANT) for p in listed or () if p != path]
        if listed:
            return _unique(out)
        branch, department = _branch(path), _department(path)
        siblings = sorted((p for p in self.kinds if _branch(p) == branch and p != path and "/" in path),
                          key=lambda p: -self.kinds[p])
        if branch == department:  # "Gear/Bags": its department's other kinds go with it
            return _unique([Complement(p, GOES_WITH) for p in siblings])
        others = sorted((p for p in self.kinds if _department(p) == department and _branch(p) != branch and p != path),
                        key=lambda p: -self.kinds[p])
        out += [Complement(p, GOES_WITH) for p in others] + [Complement(p, LAYERS_WITH) for p in siblings]
        return _unique(out)

    def layered_first(self, kinds: Sequence[Complement]) -> list[Complement]:
        """`kinds` with the layers first ("what can I wear under the jacket")."""
        return [c for c in kinds if c.reason == LAYERS_WITH] + [c for c in kinds if c.reason != LAYERS_WITH]


def _unique(items: Iterable[Complement]) -> list[Complement]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item.path not in seen:
            seen.add(item.path)
            out.append(item)
    return out


def load_table(path: Path) -> dict[str, list[str]] | None:
    """A merchant's complements table: ``{"Women/Tops/Tees": ["Women/Bottoms/Shorts", ...], "hoodies": [...]}``.

    A missing file is no table; an unreadable one is logged and ignored (the catalog's tree still answers).
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable complements table %s: %s", path, err)
        return None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        log.warning("ignoring complements table %s: expected {category: [categories]}", path)
        return None
    return {str(k): [str(v) for v in vs] for k, vs in data.items()}
