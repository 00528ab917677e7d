"""Order status: an SQLite orders table, demo orders over the demo catalog, spoken order ids, status sentences.

Order ids look like ``ST-10423`` (the ``ST-`` prefix and five digits). Shoppers say them in many ways, all of which
`normalize_order_id` maps to the canonical form::

    "S T one oh four two three"   "order 10423"   "10 4 23"   "ten four twenty three"   "st-10423"

The status sentence (`status_sentence`) is built only from the order row's fields, so it never states a carrier,
date or item the store does not hold. Layout under the data dir: ``orders/orders.sqlite``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ORDER_PREFIX = "ST-"
ORDER_DIGITS = 5
STORE_DIRNAME = "orders"
DB_NAME = "orders.sqlite"
DEMO_FIRST_ID = 10418  # the demo ids run ST-10418 .. ST-10429, so "ST-10423" (the README's example) exists
DEMO_COUNT = 12

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    placed_on TEXT NOT NULL,
    carrier TEXT,
    tracking_number TEXT,
    shipped_on TEXT,
    eta TEXT,
    delivered_on TEXT,
    returned_on TEXT,
    items TEXT NOT NULL
);
"""


class OrderStatus(StrEnum):
    PLACED = "placed"
    SHIPPED = "shipped"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    RETURNED = "returned"


@dataclass(frozen=True)
class OrderItem:
    """One line of an order: a catalog product id, its title at purchase time, quantity and unit price."""

    product_id: str
    title: str
    quantity: int
    unit_price: float


@dataclass(frozen=True)
class Order:
    """One order row.

    Attributes:
        id: Canonical id (``ST-10423``).
        status: Where the order is.
        placed_on: Day the order was placed.
        carrier: Shipping carrier, once shipped.
        tracking_number: The carrier's tracking number, once shipped.
        shipped_on: Day it left the warehouse.
        eta: Expected delivery day (set while in transit).
        delivered_on: Day it was delivered.
        returned_on: Day the return was received.
        items: The order lines.
    """

    id: str
    status: OrderStatus
    placed_on: date
    carrier: str | None = None
    tracking_number: str | None = None
    shipped_on: date | None = None
    eta: date | None = None
    delivered_on: date | None = None
    returned_on: date | None = None
    items: tuple[OrderItem, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (dates as ISO strings)."""

        def iso(d: date | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "id": self.id,
            "status": self.status.value,
            "placed_on": iso(self.placed_on),
            "carrier": self.carrier,
            "tracking_number": self.tracking_number,
            "shipped_on": iso(self.shipped_on),
            "eta": iso(self.eta),
            "delivered_on": iso(self.delivered_on),
            "returned_on": iso(self.returned_on),
            "items": [vars(i) for i in self.items],
        }


# --- spoken ids --------------------------------------------------------------------------------------------------

_UNITS = {
    "zero": 0, "oh": 0, "o": 0, "one": 1, "two": 2, "three": 3, "four": 4, "for": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "ate": 8, "nine": 9,
}  # fmt: skip
_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_REPEAT = {"double": 2, "triple": 3}
_TOKEN_RE = re.compile(r"[a-z]+|\d+")
_FILLERS = frozenset({"to", "too"})  # "two" misheard; only counted as 2 between other digits


def _spoken_digits(text: str) -> str:
    """The digits spoken or written in `text`, in order ("ten four twenty three" -> "10423")."""
    tokens = _TOKEN_RE.findall(text.lower())
    digits: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok.isdigit():
            digits.append(tok)
        elif tok in _REPEAT and nxt in _UNITS:
            digits.append(str(_UNITS[nxt]) * _REPEAT[tok])
            i += 1
        elif tok in _TENS:
            if nxt in _UNITS and _UNITS[nxt] > 0 and nxt not in ("oh", "o"):
                digits.append(str(_TENS[tok] + _UNITS[nxt]))
                i += 1
            else:
                digits.append(str(_TENS[tok]))
        elif tok in _TEENS:
            digits.append(str(_TEENS[tok]))
        elif tok in _UNITS and (tok not in ("o", "for", "ate") or digits):
            # "o", "for" and "ate" count only after a digit ("order for 10423" keeps "for" a word)
            digits.append(str(_UNITS[tok]))
        elif tok in _FILLERS and digits and nxt and (nxt.isdigit() or nxt in _UNITS):
            digits.append("2")
        i += 1
    return "".join(digits)


def normalize_order_id(text: str) -> str | None:
    """The canonical order id in a typed or spoken phrase, or None when it does not hold exactly one.

    Letters ("S T", "es tee", "ST-") and words around the number ("order", "number", "my") are ignored; digits may be
    written, spoken one by one ("one oh four two three") or in groups ("ten four twenty three", "10 4 23").

    Args:
        text: What the shopper typed or the recogniser heard.

    Returns:
        ``ST-`` and five digits, or None.
    """
    digits = _spoken_digits(text)
    if len(digits) != ORDER_DIGITS:
        return None
    return f"{ORDER_PREFIX}{digits}"


# --- status sentence ---------------------------------------------------------------------------------------------


def _day(d: date, today: date | None) -> str:
    """'today', 'tomorrow', 'yesterday' near `today`, else 'Friday, November 28'."""
    if today is not None:
        delta = (d - today).days
        if delta == 0:
            return "today"
        if delta == 1:
            return "tomorrow"
        if delta == -1:
            return "yesterday"
    return f"{d:%A}, {d:%B} {d.day}"


def _on(d: date, today: date | None) -> str:
    """'today'/'tomorrow'/'yesterday', else 'on Friday, November 28'."""
    day = _day(d, today)
    return day if day in ("today", "tomorrow", "yesterday") else f"on {day}"


def _items_phrase(items: Sequence[OrderItem]) -> str:
    if not items:
        return "your order"
    first = items[0]
    name = first.title if first.quantity == 1 else f"{first.quantity} × {first.title}"
    if len(items) == 1:
        return name
    rest = len(items) - 1
    return f"{name} and {rest} other item{'s' if rest > 1 else ''}"


def status_sentence(order: Order, today: date | None = None) -> str:
    """One or two sentences about where an order is, using only the order's own fields.

    Args:
        order: The order.
        today: Reference day for "today"/"tomorrow"; None always names the date.

    Returns:
        Text for the reply, e.g. "Order ST-10423 (Ridge Zip Hoodie — Navy) shipped with UPS on Monday, November 24
        and should arrive on Friday, November 28. The tracking number is 1Z...".
    """
    what = f"Order {order.id} ({_items_phrase(order.items)})"
    tracking = f" The tracking number is {order.tracking_number}." if order.tracking_number else ""
    via = f" with {order.carrier}" if order.carrier else ""
    if order.status is OrderStatus.PLACED:
        text = f"{what} was placed {_on(order.placed_on, today)} and hasn't shipped yet."
        if order.eta:
            text += f" It should arrive {_on(order.eta, today)}."
        return text
    if order.status is OrderStatus.SHIPPED:
        text = f"{what} shipped{via}"
        text += f" {_on(order.shipped_on, today)}" if order.shipped_on else ""
        text += f" and should arrive {_on(order.eta, today)}." if order.eta else "."
        return text + tracking
    if order.status is OrderStatus.OUT_FOR_DELIVERY:
        return f"{what} is out for delivery{via} and should arrive today.{tracking}"
    if order.status is OrderStatus.DELIVERED:
        when = f" {_on(order.delivered_on, today)}" if order.delivered_on else ""
        return f"{what} was delivered{when}."
    when = f" {_on(order.returned_on, today)}" if order.returned_on else ""
    return f"{what} was returned; we received it{when}."


# --- the store ---------------------------------------------------------------------------------------------------


def _parse_day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _row_to_order(row: sqlite3.Row) -> Order:
    items = tuple(OrderItem(**item) for item in json.loads(row["items"]))
    return Order(
        id=row["id"],
        status=OrderStatus(row["status"]),
        placed_on=date.fromisoformat(row["placed_on"]),
        carrier=row["carrier"],
        tracking_number=row["tracking_number"],
        shipped_on=_parse_day(row["shipped_on"]),
        eta=_parse_day(row["eta"]),
        delivered_on=_parse_day(row["delivered_on"]),
        returned_on=_parse_day(row["returned_on"]),
        items=items,
    )


class OrderStore:
    """Orders in SQLite; safe to share between threads (one connection behind a lock).

    Args:
        db_path: The SQLite file (created with its folder if missing).
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.db_path, check_same_thread=False, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        with self._lock, self._conn:
            self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> OrderStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0])

    def upsert(self, orders: Iterable[Order]) -> int:
        """Insert or replace orders in one transaction; returns how many were written."""
        rows = []
        for o in orders:
            d = o.to_dict()
            rows.append(
                (
                    d["id"], d["status"], d["placed_on"], d["carrier"], d["tracking_number"], d["shipped_on"],
                    d["eta"], d["delivered_on"], d["returned_on"], json.dumps(d["items"], ensure_ascii=False),
                )
            )  # fmt: skip
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
        return len(rows)

    def get(self, order_id: str) -> Order | None:
        """The order with this exact canonical id, or None."""
        with self._lock:
            row = self._conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        return _row_to_order(row) if row else None

    def lookup(self, order_id: str) -> Order | None:
        """The order a typed or spoken id refers to (see `normalize_order_id`), or None."""
        canonical = normalize_order_id(order_id)
        return self.get(canonical) if canonical else None

    def all(self) -> list[Order]:
        """Every order, by id."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM orders ORDER BY id").fetchall()
        return [_row_to_order(r) for r in rows]


# --- demo orders -------------------------------------------------------------------------------------------------

_CARRIERS = (("UPS", "1Z{:016d}"), ("FedEx", "{:012d}"), ("USPS", "9400{:018d}"))
_DEMO_STATUSES = (
    OrderStatus.PLACED, OrderStatus.SHIPPED, OrderStatus.SHIPPED, OrderStatus.OUT_FOR_DELIVERY,
    OrderStatus.DELIVERED, OrderStatus.SHIPPED, OrderStatus.DELIVERED, OrderStatus.RETURNED,
    OrderStatus.PLACED, OrderStatus.OUT_FOR_DELIVERY, OrderStatus.DELIVERED, OrderStatus.SHIPPED,
)  # fmt: skip


def demo_products(seed: int = 7) -> list[tuple[str, str, float]]:
    """``(id, title, price)`` of the demo catalog's products (`assistant.catalog.demo`), without drawing images."""
    from assistant.catalog.demo import demo_records

    return [(r["id"], r["title"], float(r["price"])) for r in demo_records(seed)]


def generate_demo_orders(
    products: Sequence[tuple[str, str, float]],
    *,
    today: date,
    seed: int = 7,
    count: int = DEMO_COUNT,
) -> list[Order]:
    """Deterministic demo orders over some products, dated around `today`.

    Args:
        products: ``(product id, title, price)`` to draw the items from.
        today: The day the dates are relative to.
        seed: Random seed.
        count: How many orders (ids from ``ST-{DEMO_FIRST_ID}`` on).

    Returns:
        Orders covering every status.

    Raises:
        ValueError: No products.
    """
    if not products:
        raise ValueError("demo orders need at least one product")
    rng = random.Random(seed)
    orders: list[Order] = []
    for n in range(count):
        status = _DEMO_STATUSES[n % len(_DEMO_STATUSES)]
        lines = rng.sample(list(products), k=min(len(products), rng.choice((1, 1, 2, 3))))
        items = tuple(OrderItem(pid, title, rng.choice((1, 1, 1, 2)), price) for pid, title, price in lines)
        carrier, pattern = _CARRIERS[rng.randrange(len(_CARRIERS))]
        tracking = pattern.format(rng.randrange(10**11, 10**12))
        fields: dict[str, Any] = {"carrier": None, "tracking_number": None}
        if status is OrderStatus.PLACED:
            placed = today - timedelta(days=rng.randint(0, 1))
            fields["eta"] = today + timedelta(days=rng.randint(4, 6))
        else:
            # days since shipping: in transit 0-3, delivered or returned 3-12
            in_transit = status in (OrderStatus.SHIPPED, OrderStatus.OUT_FOR_DELIVERY)
            shipped = today - timedelta(days=rng.randint(0, 3) if in_transit else rng.randint(3, 12))
            placed = shipped - timedelta(days=rng.randint(0, 2))
            fields.update(carrier=carrier, tracking_number=tracking, shipped_on=shipped)
            if status is OrderStatus.SHIPPED:
                fields["eta"] = today + timedelta(days=rng.randint(1, 4))
            elif status is OrderStatus.OUT_FOR_DELIVERY:
                fields["eta"] = today
            else:
                delivered = min(today, shipped + timedelta(days=rng.randint(2, 4)))
                fields["delivered_on"] = delivered
                if status is OrderStatus.RETURNED:
                    fields["returned_on"] = min(today, delivered + timedelta(days=rng.randint(1, 3)))
        orders.append(
            Order(
                id=f"{ORDER_PREFIX}{DEMO_FIRST_ID + n}",
                status=status,
                placed_on=placed,
                items=items,
                **fields,
            )
        )
    return orders


def open_demo_orders(data_dir: Path, *, today: date | None = None, seed: int = 7) -> OrderStore:
    """Open ``<data_dir>/orders/orders.sqlite``, filling it with demo orders when it is empty.

    Args:
        data_dir: The application's data folder.
        today: Day the demo dates are relative to (default: the current day).
        seed: Random seed for the demo orders.

    Returns:
        The open store.
    """
    store = OrderStore(Path(data_dir) / STORE_DIRNAME / DB_NAME)
    if len(store) == 0:
        orders = generate_demo_orders(demo_products(), today=today or date.today(), seed=seed)
        store.upsert(orders)
        log.info("wrote %d demo orders to %s", len(orders), store.db_path)
    return store
