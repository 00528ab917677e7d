"""Fast checks of the spoken-request evaluation set (bench/data/spoken_requests*.jsonl) and its grader."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.judging import (
    DEV_FILE,
    HELDOUT_FILE,
    PRODUCT_KINDS,
    REQUEST_KINDS,
    differences,
    judge,
    load_items,
    load_requests,
    validate_spec,
)
from bench.ranking import QUERIES, load_queries
from tests.shared_data import LUMA_DIR

CATALOG = LUMA_DIR / "products.jsonl"
needs_catalog = pytest.mark.skipif(not CATALOG.is_file(), reason="Luma catalog not available")
MINIMUMS = {DEV_FILE: (105, 16), HELDOUT_FILE: (50, 8)}  # product requests, other utterances


def _norm(text: str) -> str:
    """Lower case, punctuation-free, spaces collapsed (apostrophes dropped: "what's" == "whats")."""
    text = text.lower().replace("'", "").replace("’", "")
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def _rows(path: Path) -> list[dict[str, Any]]:
    return load_requests(path)


def _products(path: Path) -> list[dict[str, Any]]:
    return [r for r in _rows(path) if r["kind"] != "other"]


def test_line_format_and_kinds() -> None:
    for path, prefix in ((DEV_FILE, "sp"), (HELDOUT_FILE, "sph")):
        for row in _rows(path):
            assert list(row) == ["qid", "text", "kind", "spec", "judgments"], row["qid"]
            assert re.fullmatch(rf"{prefix}-\d{{3}}", row["qid"]), row["qid"]
            assert row["kind"] in REQUEST_KINDS, row["qid"]
            assert row["text"].strip() == row["text"] and row["text"], row["qid"]
            if row["kind"] == "other":
                assert row["spec"] is None and row["judgments"] == {}, row["qid"]
            else:
                validate_spec(row["spec"])


def test_ids_unique_across_files() -> None:
    qids = [r["qid"] for path in (DEV_FILE, HELDOUT_FILE) for r in _rows(path)]
    assert len(qids) == len(set(qids))


def test_no_text_shared_between_files_or_with_luma_queries() -> None:
    dev = [_norm(r["text"]) for r in _rows(DEV_FILE)]
    held = [_norm(r["text"]) for r in _rows(HELDOUT_FILE)]
    luma = {_norm(q["query"]) for q in load_queries(QUERIES)}
    assert len(dev) == len(set(dev)) and len(held) == len(set(held))
    assert not set(dev) & set(held)
    assert not set(dev) & luma
    assert not set(held) & luma


def test_every_product_request_has_a_good_answer() -> None:
    for path in (DEV_FILE, HELDOUT_FILE):
        for row in _products(path):
            grades = list(row["judgments"].values())
            assert all(g in (1, 2, 3) for g in grades), row["qid"]
            assert any(g >= 2 for g in grades), row["qid"]


def test_minimum_counts_and_mix() -> None:
    shares = {}
    for path, (min_products, min_other) in MINIMUMS.items():
        counts = Counter(r["kind"] for r in _rows(path))
        products = sum(counts[k] for k in PRODUCT_KINDS)
        assert products >= min_products, path.name
        assert counts["other"] >= min_other, path.name
        shares[path] = {k: counts[k] / products for k in PRODUCT_KINDS}
        assert all(counts[k] > 0 for k in PRODUCT_KINDS), path.name
    # the held-out split keeps the dev split's mix of kinds (within 5 points each)
    for kind in PRODUCT_KINDS:
        assert abs(shares[DEV_FILE][kind] - shares[HELDOUT_FILE][kind]) <= 0.05, kind


def test_short_requests_present() -> None:
    short = [r for r in _products(DEV_FILE) if len(r["text"].split()) <= 3]
    assert len(short) >= 15


@needs_catalog
def test_judgments_reference_shoppable_luma_products() -> None:
    rows = [json.loads(line) for line in CATALOG.read_text().splitlines() if line.strip()]
    shoppable = {r["id"] for r in rows if r["type"] != "variant"}
    for path in (DEV_FILE, HELDOUT_FILE):
        for row in _rows(path):
            assert set(row["judgments"]) <= shoppable, row["qid"]


@needs_catalog
def test_stored_judgments_equal_the_graders() -> None:
    items = load_items(CATALOG)
    for path in (DEV_FILE, HELDOUT_FILE):
        assert differences(path, items) == [], path.name


def test_grader_rules_on_a_tiny_catalog(tmp_path: Path) -> None:
    def row(pid: str, kind: str, title: str, category: str, **extra: Any) -> dict[str, Any]:
        base = {"id": pid, "type": kind, "title": title, "category": category, "description": "",
                "price": 30.0, "attributes": {}, "visibility": "Catalog, Search"}
        base.update(extra)
        return base

    def variant(pid: str, parent: str, colour: str, size: str, price: float) -> dict[str, Any]:
        return row(pid, "variant", parent, "Women/Tops/Tees", parent_id=parent, price=price,
                   attributes={"color": colour, "size": size}, visibility="Not Visible Individually")

    rows = [
        row("T1", "configurable", "Alpha Tee", "Women/Tops/Tees", description="Wicks sweat."),
        variant("T1-S-Red", "T1", "Red", "S", 30.0),
        variant("T1-L-Blue", "T1", "Blue", "L", 30.0),
        row("T2", "configurable", "Beta Tee", "Women/Tops/Tees"),
        variant("T2-S-Blue", "T2", "Blue", "S", 20.0),
        row("K1", "configurable", "Gamma Tank", "Women/Tops/Bras & Tanks", attributes={"style_general": "Tank"}),
        variant("K1-S-Blue", "K1", "Blue", "S", 25.0),
        row("B1", "simple", "Delta Backpack", "Gear/Bags", attributes={"style_bags": "Backpack"}),
    ]
    path = tmp_path / "products.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_items(path)
    assert [i.id for i in items] == ["T1", "T2", "K1", "B1"]  # variants are never judged
    # colour and size must hold on one variant together: T1 has blue and S, but not a blue S
    assert judge({"kind": ["tee"], "colour": "blue", "size": "S"}, items) == {"T2": 3, "T1": 1, "K1": 1}
    assert judge({"kind": ["tee"], "max_price": 25}, items) == {"T2": 3, "T1": 1, "K1": 1}
    # a named line in another colour is still 2; other lines of the kind are 1
    assert judge({"kind": ["tee"], "line": "alpha", "colour": "blue", "size": "S"}, items) == {
        "T1": 2, "T2": 1, "K1": 1,
    }
    # soft use terms: found -> 3; missing with no hard constraint -> 1
    assert judge({"kind": ["tee"], "use": [["wick*"]], "related": []}, items) == {"T1": 3, "T2": 1}
    assert judge({"kind": ["backpack"], "grade": {"T2": 1}}, items) == {"B1": 3, "T2": 1}
    with pytest.raises(ValueError):
        validate_spec({"kind": ["sofa"]})
    with pytest.raises(ValueError):
        judge({"kind": ["tee"], "grade": {"T1-S-Red": 3}}, items)
