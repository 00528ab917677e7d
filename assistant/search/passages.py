"""Use-case matching at the grain descriptions are written: a query scored against each product's best passage.

A passage is one sentence of the description or one attribute phrase, embedded on its own.
"Something warm for winter runs" rarely shares a word with the title of the jacket that fits, and the whole-product
vector of the ``text`` source averages the one sentence that says "keeps you warm on cold mornings" with the title,
the fabric and the care notes. Here every sentence of the description is a passage of its own, prefixed with the
product's kind ("Jackets: keeps you warm on cold mornings"), so that "a warm jacket" prefers a warm jacket's warm
sentence over a warm hoodie's. Attribute values and the catalog's own collections become passages too, phrased
by their attribute's name ("Jackets, climate: cold, windy"; "Tees, collection: performance fabrics"): what a
merchant's catalog says of a product, at the grain of one claim, with no words of any one catalog built in.

A product's score is its best passage's cosine (max-sim, as late-interaction retrieval scores a document by its best
matching parts). Vectors are cached by text hash, so an update encodes only new sentences.

Example:
    >>> index = PassageIndex(encoder)
    >>> index.build({p.id: product_passages(p) for p in catalog.parents()}, cache.encode)
    >>> index.search(encoder.encode_query("something warm for winter runs"), n=20)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from assistant.catalog.model import Catalog, Product

MIN_WORDS = 3  # shorter fragments ("Machine wash.") say nothing of a use
MAX_PASSAGES = 24  # per product: long descriptions keep their first sentences
_SPLIT_RE = re.compile(r"(?<=[.!?;])\s+|\n+")
_BULLET_RE = re.compile(r"^\s*(?:[-•*·]|\d+[.)])\s*")
_TAG_RE = re.compile(r"<[^>]+>")
_SKIP_KEYS = frozenset({"associated_sku", "bundle_options", "size", "color", "colour", "available_size",
                        "available_color", "sku", "gender"})


def _sentences(text: str) -> list[str]:
    out = []
    for part in _SPLIT_RE.split(_TAG_RE.sub(" ", text or "")):
        part = _BULLET_RE.sub("", part).strip(" -–—\t")
        if len(part.split()) >= MIN_WORDS:
            out.append(part)
    return out


def _values(value: object) -> list[str]:
    items = value if isinstance(value, list | tuple) else [value]
    return [str(v).strip() for v in items if v is not None and str(v).strip()]


def product_passages(product: Product, collections: Iterable[str] = ()) -> list[str]:
    """The passages a product is matched by: its kind-prefixed description sentences and attribute phrases.

    Args:
        product: A shoppable product (a parent or a simple product).
        collections: Its category paths outside its own kind's branch (``Collections/Eco Friendly``), phrased as
            "collection: eco friendly".
    """
    kind = product.leaf_category or product.category or "Product"
    passages = [f"{kind}: {s}" for s in _sentences(product.description)]
    for key, value in product.attributes.items():
        if key.lower() in _SKIP_KEYS:
            continue
        values = _values(value)
        if values and not all(v.replace(".", "").isdigit() for v in values):
            passages.append(f"{kind}, {key.replace('_', ' ')}: {', '.join(values).lower()}")
    for path in collections:
        name = path.rsplit("/", 1)[-1].strip()
        if name:
            passages.append(f"{kind}, collection: {name.lower()}")
    return list(dict.fromkeys(passages))[:MAX_PASSAGES]


def catalog_passages(catalog: Catalog, products: Iterable[Product] | None = None) -> dict[str, list[str]]:
    """`product_passages` of each shoppable product (or of `products`), by id."""
    out = {}
    for p in catalog.parents() if products is None else products:
        branch = p.category.rsplit("/", 1)[0] if "/" in p.category else p.category
        collections = [c for c in p.categories if c != p.category and not c.startswith(branch)]
        out[p.id] = product_passages(p, collections)
    return out


class PassageIndex:
    """Passage vectors of every product, searched by a query's best passage per product (exact, in memory).

    ``n`` products of 20 passages of 384 floats take 30 kB each: 50k products in 1.5 GB would call for a FAISS
    index over the passages; catalogs of a few thousand products take milliseconds as they are.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._ids: list[str] = []
        self._owner = np.zeros(0, dtype=np.int64)  # passage -> product row
        self._starts = np.zeros(0, dtype=np.int64)  # product row -> its first passage (passages grouped by product)
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._passages: list[str] = []

    def __len__(self) -> int:
        return len(self._ids)

    def build(self, passages: Mapping[str, Sequence[str]],
              encode: Callable[[Sequence[str]], np.ndarray]) -> None:
        """Index `passages` (product id -> its passages); `encode` turns texts into L2-normalised vectors."""
        ids = [pid for pid, ps in passages.items() if ps]
        texts = [t for pid in ids for t in passages[pid]]
        counts = np.array([len(passages[pid]) for pid in ids], dtype=np.int64)
        vectors = np.asarray(encode(texts), dtype=np.float32) if texts else np.zeros((0, self.dim), np.float32)
        self._ids = ids
        self._passages = texts
        self._owner = np.repeat(np.arange(len(ids)), counts)
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if len(ids) else self._starts[:0]
        self._vectors = vectors.reshape(-1, self.dim)

    def search(self, query: np.ndarray, n: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """The `n` products whose best passage is most similar to `query`, best first, with that cosine."""
        if not self._ids or n <= 0:
            return []
        sims = self._vectors @ np.asarray(query, dtype=np.float32)
        best = np.maximum.reduceat(sims, self._starts)
        order = np.argsort(-best)
        out = []
        for row in order:
            pid = self._ids[row]
            if allowed is None or pid in allowed:
                out.append((pid, float(best[row])))
                if len(out) >= n:
                    break
        return out

    def best_passage(self, query: np.ndarray, pid: str) -> tuple[str, float] | None:
        """The passage of `pid` that matches `query` best, and its cosine (what a reply may quote)."""
        try:
            row = self._ids.index(pid)
        except ValueError:
            return None
        lo = int(self._starts[row])
        hi = int(self._starts[row + 1]) if row + 1 < len(self._starts) else len(self._passages)
        sims = self._vectors[lo:hi] @ np.asarray(query, dtype=np.float32)
        j = int(np.argmax(sims))
        return self._passages[lo + j], float(sims[j])
