"""JSON shapes shared by the websocket and HTTP APIs."""

from __future__ import annotations

from typing import Any

from assistant.search.query import ProductHit


def product_json(hit: ProductHit) -> dict[str, Any]:
    product = hit.variant or hit.product
    return {
        "id": product.id,
        "parent_id": hit.product.id if hit.variant is not None else product.parent_id,
        "title": product.title,
        "price": product.price,
        "currency": product.currency,
        "category": hit.product.category,
        "attributes": product.attributes,
        "score": round(float(hit.score), 4),
        "reason": hit.reason,
        # [] when it meets the whole query; else what this close alternative misses ("colour", "size", "price")
        "near_miss": list(hit.near_miss),
        "image_url": f"/v1/products/{product.id}/image",
    }
