"""Product catalog: the `Product` record, the in-memory `Catalog`, and JSONL loading.

The file format is one JSON object per line with the keys ``id, parent_id, type, title, description, category,
categories, brand, price, currency, attributes, images`` (extra keys are ignored). Variant catalogs (such as the
Luma sample data) hold ``configurable`` parents whose ``variant`` rows point at them through ``parent_id``; shoppers
see the parents, and each parent's variants are reached through `Catalog.variants_of`.

Errors::

    ValueError
     └── CatalogError   a product record or catalog file is invalid (the message names the field)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DESCRIPTION_CHARS_FOR_SEARCH = 300  # enough for the gist; MiniLM truncates at 256 word pieces anyway
COLOR_KEYS = ("color", "available_color", "colors")
SIZE_KEYS = ("size", "available_size", "sizes")
# Attributes that hold ids or bundle bookkeeping rather than words a shopper would say.
_NON_SEARCH_KEYS = frozenset({"associated_sku", "bundle_options"})


class CatalogError(ValueError):
    """A product record or catalog file is invalid."""


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v is not None and str(v).strip()]
    text = str(value).strip()
    return [text] if text else []


@dataclass(frozen=True)
class Product:
    """One catalog row: a shoppable product, a configurable parent, or one of its variants.

    Attributes:
        id: Unique product id (SKU).
        parent_id: Id of the configurable parent for a variant, else None.
        type: Row type, e.g. ``simple``, ``configurable``, ``variant``, ``bundle``.
        title: Display title.
        description: Free-text description.
        category: Primary category path, e.g. ``Men/Tops/Hoodies``.
        categories: All category paths the product is listed under.
        brand: Brand name, if known.
        price: Price in `currency`, finite and non-negative.
        currency: ISO 4217 code, e.g. ``USD``.
        attributes: Attribute name to a string or a list of strings (``color``, ``size``, ``material`` ...).
        images: Image file names, relative to the catalog's image folder.
    """

    id: str
    parent_id: str | None
    type: str
    title: str
    description: str
    category: str
    categories: tuple[str, ...]
    brand: str | None
    price: float
    currency: str
    attributes: dict[str, Any] = field(default_factory=dict, hash=False)
    images: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Product:
        """Build and validate a product from one JSON record.

        Args:
            d: The record; unknown keys are ignored.

        Returns:
            The product.

        Raises:
            CatalogError: A required field is missing or invalid; the message names the field.
        """
        pid = d.get("id")
        if not isinstance(pid, str) or not pid.strip():
            raise CatalogError(f"id: must be a non-empty string, got {pid!r}")
        title = d.get("title")
        if not isinstance(title, str) or not title.strip():
            raise CatalogError(f"title: must be a non-empty string (product {pid!r})")
        raw_price = d.get("price")
        if isinstance(raw_price, bool) or raw_price is None:
            raise CatalogError(f"price: missing (product {pid!r})")
        try:
            price = float(raw_price)
        except (TypeError, ValueError) as err:
            raise CatalogError(f"price: not a number: {raw_price!r} (product {pid!r})") from err
        if not math.isfinite(price) or price < 0:
            raise CatalogError(f"price: must be finite and >= 0, got {raw_price!r} (product {pid!r})")
        currency = d.get("currency") or "USD"
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
            raise CatalogError(f"currency: must be a 3-letter code, got {currency!r} (product {pid!r})")
        attributes = d.get("attributes") or {}
        if not isinstance(attributes, Mapping):
            raise CatalogError(f"attributes: must be an object (product {pid!r})")
        clean_attrs: dict[str, Any] = {}
        for key, value in attributes.items():
            if value is None:
                continue
            clean_attrs[str(key)] = _as_list(value) if isinstance(value, list | tuple) else str(value)
        category = str(d.get("category") or "")
        categories = tuple(_as_list(d.get("categories"))) or ((category,) if category else ())
        parent = d.get("parent_id")
        brand = d.get("brand")
        return cls(
            id=pid.strip(),
            parent_id=str(parent) if parent else None,
            type=str(d.get("type") or "simple"),
            title=title.strip(),
            description=str(d.get("description") or ""),
            category=category,
            categories=categories,
            brand=str(brand) if brand else None,
            price=price,
            currency=currency.upper(),
            attributes=clean_attrs,
            images=tuple(_as_list(d.get("images"))),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON record for this product (inverse of `from_dict`)."""
        return {
            "id": self.id,
            "parent_id": self.parent_id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "category": self.category,
            "categories": list(self.categories),
            "brand": self.brand,
            "price": self.price,
            "currency": self.currency,
            "attributes": {
                k: list(v) if isinstance(v, list | tuple) else v for k, v in self.attributes.items()
            },
            "images": list(self.images),
        }

    def attribute_values(self, *keys: str) -> list[str]:
        """The non-empty values of these attributes, as text, each once, in order ("style_general", "style")."""
        return self._attr_values(keys)

    def _attr_values(self, keys: Iterable[str]) -> list[str]:
        seen: dict[str, None] = {}
        for key in keys:
            for value in _as_list(self.attributes.get(key)):
                seen.setdefault(value, None)
        return list(seen)

    def colors(self) -> list[str]:
        """Colours this product (or, for a parent, its variants) comes in, as written in the catalog."""
        return self._attr_values(COLOR_KEYS)

    def sizes(self) -> list[str]:
        """Sizes this product (or, for a parent, its variants) comes in, as written in the catalog."""
        return self._attr_values(SIZE_KEYS)

    @property
    def leaf_category(self) -> str:
        """The last segment of the category path (``Men/Tops/Hoodies`` -> ``Hoodies``)."""
        return self.category.rsplit("/", 1)[-1].strip()

    def search_text(self) -> str:
        """Text to embed for retrieval: title, category, attributes and the start of the description."""
        parts = [self.title, self.category.replace("/", " > ")]
        for key, value in self.attributes.items():
            if key in _NON_SEARCH_KEYS:
                continue
            values = _as_list(value)
            if values:
                parts.append(f"{key.replace('_', ' ')}: {', '.join(values)}")
        description = " ".join(self.description.split())
        if description:
            if len(description) > DESCRIPTION_CHARS_FOR_SEARCH:
                description = description[:DESCRIPTION_CHARS_FOR_SEARCH].rsplit(" ", 1)[0]
            parts.append(description)
        return ". ".join(parts)


class Catalog:
    """An in-memory product catalog with parent/variant grouping.

    Args:
        products: The products; ids must be unique.
        image_root: Folder that product image names are relative to (None: images unavailable).

    Raises:
        CatalogError: Two products share an id.
    """

    def __init__(self, products: Iterable[Product], image_root: Path | None = None) -> None:
        self._products: dict[str, Product] = {}
        for product in products:
            if product.id in self._products:
                raise CatalogError(f"id: duplicate product id {product.id!r}")
            self._products[product.id] = product
        self.image_root = Path(image_root) if image_root is not None else None
        self._variants: dict[str, list[Product]] = {}
        for product in self._products.values():
            if product.parent_id is not None and product.parent_id in self._products:
                self._variants.setdefault(product.parent_id, []).append(product)
        self._hash: str | None = None

    def get(self, id: str) -> Product | None:
        """The product with this id, or None."""
        return self._products.get(id)

    def __len__(self) -> int:
        return len(self._products)

    def __iter__(self) -> Iterator[Product]:
        return iter(self._products.values())

    def __contains__(self, id: object) -> bool:
        return id in self._products

    def parents(self) -> list[Product]:
        """Products a shopper sees: simple products and variant parents (variants whose parent is absent too)."""
        return [
            p for p in self._products.values() if p.parent_id is None or p.parent_id not in self._products
        ]

    def variants_of(self, parent_id: str) -> list[Product]:
        """The variants grouped under a parent (empty for simple products)."""
        return list(self._variants.get(parent_id, ()))

    def image_path(self, product: Product) -> Path | None:
        """Path of the product's first existing image; a variant without images falls back to its parent.

        Image names may be bare (``x.jpg``, looked up in ``<root>/images/`` then ``<root>/``) or relative to the
        root (``images/x.jpg``).
        """
        if self.image_root is not None:
            for name in product.images:
                for candidate in (self.image_root / name, self.image_root / "images" / name):
                    if candidate.is_file():
                        return candidate
        if product.parent_id is not None:
            parent = self._products.get(product.parent_id)
            if parent is not None and parent is not product:
                return self.image_path(parent)
        return None

    def content_hash(self) -> str:
        """SHA-256 over the sorted product records; changes whenever any product changes (keys caches)."""
        if self._hash is None:
            digest = hashlib.sha256()
            for pid in sorted(self._products):
                record = json.dumps(self._products[pid].to_dict(), sort_keys=True, ensure_ascii=False)
                digest.update(record.encode("utf-8"))
                digest.update(b"\n")
            self._hash = digest.hexdigest()
        return self._hash

    @classmethod
    def load_jsonl(cls, path: Path) -> Catalog:
        """Load a catalog from a JSONL file; images are resolved relative to the file's folder.

        A parent or grouped/bundle product without a price gets one from its children (the cheapest variant or
        associated product; a bundle sums its options' cheapest prices). Products whose price still cannot be
        found are skipped with a warning.

        Args:
            path: The ``products.jsonl`` file.

        Returns:
            The catalog.

        Raises:
            CatalogError: A line is not valid JSON or a record is invalid (the message names line and field).
        """
        path = Path(path)
        records: list[tuple[int, dict[str, Any]]] = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CatalogError(f"{path}:{lineno}: invalid JSON: {err}") from err
                if not isinstance(record, dict):
                    raise CatalogError(f"{path}:{lineno}: expected a JSON object")
                records.append((lineno, record))
        _fill_missing_prices([r for _, r in records])
        products: list[Product] = []
        for lineno, record in records:
            if record.get("price") is None and record.get("id"):
                log.warning("skipping product %s: no price and none derivable", record.get("id"))
                continue
            try:
                products.append(Product.from_dict(record))
            except CatalogError as err:
                raise CatalogError(f"{path}:{lineno}: {err}") from err
        log.info("loaded %d products from %s", len(products), path)
        return cls(products, image_root=path.parent)


def fill_missing_prices(records: list[dict[str, Any]]) -> None:
    """Give price-less parents, grouped and bundle products a price derived from their children (in place).

    A parent gets its cheapest variant's price, a grouped product its cheapest ``associated_sku``, and a bundle
    the sum of its ``bundle_options``' cheapest prices. Records whose price cannot be derived keep ``None``.

    Args:
        records: Product records (JSON objects); invalid prices elsewhere are ignored here.
    """
    by_id = {r.get("id"): r for r in records}
    price_of = {id(r): _try_price(r.get("price")) for r in records}  # invalid prices are reported later
    priced = [(str(r.get("title") or ""), p) for r in records if (p := price_of[id(r)]) is not None]
    child_prices: dict[str, list[float]] = {}
    for r in records:
        if r.get("parent_id") and (p := price_of[id(r)]) is not None:
            child_prices.setdefault(str(r["parent_id"]), []).append(p)
    for r in records:
        if r.get("price") is not None:
            continue
        attrs = r.get("attributes") or {}
        prices = child_prices.get(str(r.get("id")), [])
        if not prices:
            prices = [
                p
                for s in _as_list(attrs.get("associated_sku"))
                if s in by_id and (p := price_of[id(by_id[s])]) is not None
            ]
        if prices:
            r["price"] = min(prices)
            continue
        option_prices = [_cheapest_titled(priced, t) for t in _as_list(attrs.get("bundle_options"))]
        if option_prices and all(p is not None for p in option_prices):
            r["price"] = round(sum(p for p in option_prices if p is not None), 2)


_fill_missing_prices = fill_missing_prices  # the original private name


def _cheapest_titled(priced: list[tuple[str, float]], option: str) -> float | None:
    """Cheapest price among products titled `option` or `option` plus a qualifier ("Stasis Ball" -> "... 55 cm")."""
    prices = [price for title, price in priced if title == option or title.startswith(option + " ")]
    return min(prices) if prices else None


def _try_price(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        price = float(value)
    except (TypeError, ValueError):
        return None
    return price if math.isfinite(price) and price >= 0 else None
