"""Training pairs for the image–text alignment (``shoptalk vision align``), built from a catalog."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from assistant.catalog.model import Catalog, Product

_SPACES = re.compile(r"\s+")


def product_texts(product: Product, parent: Product | None = None) -> list[str]:
    """The ways a shopper might describe a product: title, title + category, attributes, description."""
    base = parent or product
    colour = ", ".join(product.colors()[:1])
    title = base.title if parent is None else f"{base.title}, {colour}" if colour else base.title
    values = [
        v if isinstance(v, str) else ", ".join(map(str, v))
        for k, v in product.attributes.items()
        if k not in ("size", "available_size") and v
    ]
    texts = [title, f"{title}. {base.category}", ", ".join(values) or title]
    description = _SPACES.sub(" ", base.description).strip()[:300]
    if description:
        texts.append(description)
    return texts


def _photographed(catalog: Catalog) -> Iterator[tuple[Product, Path, str]]:
    """``(product, photo, label)`` for every distinct product photo on disk; one label per photographed colourway."""
    seen: set[Path] = set()
    for product in catalog:
        path = catalog.image_path(product)
        if path is None or path in seen or not path.exists():
            continue
        seen.add(path)
        yield product, path, f"{product.parent_id or product.id}:{','.join(product.colors()[:1])}"


def catalog_pairs(catalog: Catalog) -> list[tuple[Path, str, str]]:
    """``(image_path, text, label)`` for every product photo; one label per photographed colourway."""
    pairs: list[tuple[Path, str, str]] = []
    for product, path, label in _photographed(catalog):
        parent = catalog.get(product.parent_id) if product.parent_id else None
        pairs.extend((path, text, label) for text in product_texts(product, parent))
    return pairs


def catalog_labels(catalog: Catalog) -> set[str]:
    """The labels `catalog_pairs` gives the catalog, without building the texts (which heads cover a catalog)."""
    return {label for _, _, label in _photographed(catalog)}
