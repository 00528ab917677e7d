from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from assistant.conversation.orders import (
    Order,
    OrderItem,
    OrderStatus,
    OrderStore,
    demo_products,
    generate_demo_orders,
    normalize_order_id,
    open_demo_orders,
    status_sentence,
)

TODAY = date(2026, 11, 26)  # a Thursday


@pytest.mark.parametrize(
    "spoken",
    [
        "ST-10423",
        "st10423",
        "S T one oh four two three",
        "order 10423",
        "10 4 23",
        "ten four twenty three",
        "es tee one zero four two three",
        "my order number is one oh four two three please",
        "order for 10423",
    ],
)
def test_spoken_ids(spoken: str) -> None:
    assert normalize_order_id(spoken) == "ST-10423"


@pytest.mark.parametrize(
    "text", ["order 1042", "where is my order", "order 104233", "one hundred", "two orders"]
)
def test_no_id(text: str) -> None:
    assert normalize_order_id(text) is None


def test_double_and_tens() -> None:
    assert normalize_order_id("one oh four double two") == "ST-10422"
    assert normalize_order_id("one oh four forty two") == "ST-10442"


@pytest.fixture
def store(tmp_path: Path) -> OrderStore:
    return open_demo_orders(tmp_path, today=TODAY)


def test_demo_orders_cover_statuses_and_catalog(store: OrderStore) -> None:
    orders = store.all()
    assert len(orders) == 12
    assert {o.status for o in orders} == set(OrderStatus)
    catalog_ids = {pid for pid, _, _ in demo_products()}
    assert all(item.product_id in catalog_ids for o in orders for item in o.items)
    assert all(o.carrier and o.tracking_number for o in orders if o.status is not OrderStatus.PLACED)


def test_demo_orders_are_deterministic() -> None:
    products = demo_products()
    assert generate_demo_orders(products, today=TODAY) == generate_demo_orders(products, today=TODAY)


def test_lookup_spoken(store: OrderStore) -> None:
    order = store.lookup("S T one oh four two three")
    assert order is not None and order.id == "ST-10423"
    assert store.lookup("order 99999") is None
    assert store.lookup("where is it") is None


def test_reopen_keeps_orders(tmp_path: Path) -> None:
    first = open_demo_orders(tmp_path, today=TODAY).all()
    again = open_demo_orders(tmp_path, today=date(2027, 1, 1)).all()  # not regenerated: same rows
    assert first == again


def test_status_sentence_uses_only_row_fields(store: OrderStore) -> None:
    for order in store.all():
        text = status_sentence(order, TODAY)
        assert order.id in text
        assert order.items[0].title in text
        if order.carrier:
            assert order.carrier in text or order.status in (OrderStatus.DELIVERED, OrderStatus.RETURNED)
        for carrier in {"UPS", "FedEx", "USPS"} - {order.carrier}:
            assert carrier not in text


def test_status_sentences_by_status() -> None:
    item = (OrderItem("HD02-NAVY", "Ridge Zip Hoodie — Navy", 1, 41.99),)
    shipped = Order(
        "ST-10001", OrderStatus.SHIPPED, date(2026, 11, 22), carrier="UPS", tracking_number="1Z123",
        shipped_on=date(2026, 11, 24), eta=date(2026, 11, 28), items=item,
    )  # fmt: skip
    assert status_sentence(shipped, TODAY) == (
        "Order ST-10001 (Ridge Zip Hoodie — Navy) shipped with UPS on Tuesday, November 24 and should arrive on "
        "Saturday, November 28. The tracking number is 1Z123."
    )
    placed = Order("ST-10002", OrderStatus.PLACED, TODAY, items=item * 1)
    assert (
        status_sentence(placed, TODAY)
        == "Order ST-10002 (Ridge Zip Hoodie — Navy) was placed today and hasn't shipped yet."
    )
    out = Order("ST-10003", OrderStatus.OUT_FOR_DELIVERY, TODAY, carrier="USPS", eta=TODAY, items=item)
    assert "is out for delivery with USPS and should arrive today" in status_sentence(out, TODAY)
    delivered = Order("ST-10004", OrderStatus.DELIVERED, TODAY, delivered_on=date(2026, 11, 25), items=item)
    assert status_sentence(delivered, TODAY).endswith("was delivered yesterday.")
    two = Order(
        "ST-10005", OrderStatus.RETURNED, TODAY, returned_on=date(2026, 11, 20),
        items=(OrderItem("A", "Trucker Hat — Black", 2, 19.0), OrderItem("B", "Crew Socks — Red", 1, 9.0)),
    )  # fmt: skip
    assert status_sentence(two, TODAY) == (
        "Order ST-10005 (2 × Trucker Hat — Black and 1 other item) was returned; we received it on Friday, "
        "November 20."
    )


def test_to_dict_round_trip(tmp_path: Path) -> None:
    store = OrderStore(tmp_path / "o.sqlite")
    order = generate_demo_orders([("X1", "Thing", 10.0)], today=TODAY, count=3)[1]
    store.upsert([order])
    assert store.get(order.id) == order
    assert store.get(order.id).to_dict()["status"] == "shipped"  # type: ignore[union-attr]
