"""What the ranker reads of a product and of a query's slots, at serving and at training time alike."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

DESCRIPTION_CHARS = 200  # the product context is short (max_product_tokens); title and attributes come first


# --- products -------------------------------------------------------------------------------------------------


def product_colors(product: Mapping[str, Any]) -> list[str]:
    return [str(c) for c in (product.get("attributes") or {}).get("colors") or []]


def product_sizes(product: Mapping[str, Any]) -> list[str]:
    return [str(s) for s in (product.get("attributes") or {}).get("sizes") or []]


def product_text(product: Mapping[str, Any]) -> str:
    """The text the product tower embeds: title, category, colours, sizes, brand, price, then the description."""
    parts = [str(product.get("title") or "")]
    if product.get("category"):
        parts.append(str(product["category"]).replace("/", " > "))
    if colors := product_colors(product):
        parts.append("colour " + ", ".join(colors))
    if sizes := product_sizes(product):
        parts.append("size " + ", ".join(sizes))
    if product.get("brand"):
        parts.append(f"brand {product['brand']}")
    if product.get("price") is not None:
        parts.append(f"${float(product['price']):.0f}")
    description = " ".join(str(product.get("description") or "").split())[:DESCRIPTION_CHARS]
    return ". ".join(p for p in parts if p) + (f". {description}" if description else "")


def base_name(product: Mapping[str, Any]) -> str:
    """The title without trailing variant parts (``"Mona Pullover Hoodie-XS-Green"`` → ``"Mona Pullover Hoodie"``)."""
    variant = {v.lower() for v in product_colors(product) + product_sizes(product)}
    parts = str(product.get("title") or "").split("-")
    while len(parts) > 1 and parts[-1].strip().lower() in variant:
        parts.pop()
    return "-".join(parts).strip()


def leaf_name(category: str) -> str:
    return category.rsplit("/", 1)[-1].lower() if category else "items"


def word_set(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def slot_features(slots: Mapping[str, Any], product: Mapping[str, Any]) -> dict[str, float]:
    """0/1 slot-match features of one candidate, from the slots an extractor found (absent slot → 0, price → 1)."""
    colour, size = slots.get("colour"), slots.get("size")
    category, brand, max_price = slots.get("category"), slots.get("brand"), slots.get("max_price")
    price = product.get("price")
    return {
        "colour_match": float(bool(colour) and str(colour).lower() in {c.lower() for c in product_colors(product)}),
        "size_match": float(bool(size) and str(size).lower() in {s.lower() for s in product_sizes(product)}),
        "category_match": float(
            bool(category) and leaf_name(str(product.get("category") or "")) == str(category).lower()
        ),
        "brand_match": float(bool(brand) and str(brand).lower() == str(product.get("brand") or "").lower()),
        "price_ok": float(max_price is None or (price is not None and float(price) <= float(max_price))),
    }
