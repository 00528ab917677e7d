"""The multi-turn conversation benchmark (`bench.conversations`): its data files, every check, and a small real run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from assistant.catalog.model import Catalog, Product
from assistant.conversation.intent import INTENTS
from bench import conversations as bc
from bench.conversations import CHECKS, CatalogView, Shown, TurnResult, evaluate_turn
from tests.shared_data import LUMA_DIR

LUMA = LUMA_DIR / "products.jsonl"
needs_luma = pytest.mark.skipif(not LUMA.is_file(), reason="luma-dev catalog not available")
PRODUCT_KEYS = {"category", "max_price", "min_price", "color", "size", "title_contains"}
ID_CHECKS = ("top3_any", "about", "about_all", "products_none_of")
KINDS = {"kind", "brand", "material", "feature"}


def _all_convs() -> dict[str, list[dict[str, Any]]]:
    return {split: bc.load_conversations(split) for split in bc.SPLITS}


def _ids(checks: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in ID_CHECKS:
        value = checks.get(key)
        if value is None:
            continue
        out += [value] if isinstance(value, str) else list(value)
    return [v for v in out if not v.startswith("@")]


# --- data files ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("split", "prefix", "least"), [("dev", "lc-", 42), ("heldout", "lch-", 20)])
def test_conversation_files_are_well_formed(split: str, prefix: str, least: int) -> None:
    convs = bc.load_conversations(split)
    assert len(convs) >= least
    cids = [c["cid"] for c in convs]
    assert len(set(cids)) == len(cids)
    for conv in convs:
        assert set(conv) == {"cid", "turns"}
        assert re.fullmatch(re.escape(prefix) + r"\d{3}", conv["cid"]), conv["cid"]
        assert 2 <= len(conv["turns"]) <= 6, conv["cid"]
        assert any(t.get("checks") for t in conv["turns"]), f"{conv['cid']}: nothing checked"
        for turn in conv["turns"]:
            assert set(turn) <= {"user", "checks"}
            assert isinstance(turn["user"], str) and turn["user"].strip()
            for name, expected in turn.get("checks", {}).items():
                assert name in CHECKS, f"{conv['cid']}: unknown check {name}"
                if name == "intent":
                    labels = [expected] if isinstance(expected, str) else expected
                    assert set(labels) <= set(INTENTS), labels
                elif name in ("reply_any", "reply_none"):
                    assert isinstance(expected, list) and expected
                    for pattern in expected:
                        re.compile(pattern)
                elif name == "products_all":
                    assert expected and set(expected) <= PRODUCT_KEYS, expected
                elif name in ("no_match_claimed", "says_not_carried"):
                    assert isinstance(expected, bool)
                elif name == "about":
                    assert isinstance(expected, str)
                else:
                    assert isinstance(expected, list) and expected
                for ref in ([expected] if isinstance(expected, str) else expected if isinstance(expected, list)
                            else []):
                    if name in ID_CHECKS and ref.startswith("@"):
                        assert re.fullmatch(r"@[1-9]", ref), ref


def test_not_carried_file_is_well_formed() -> None:
    rows = bc.load_not_carried()
    assert len(rows) >= 42
    nids = [r["nid"] for r in rows]
    assert len(set(nids)) == len(nids)
    for row in rows:
        assert set(row) <= {"nid", "text", "split", "kind_of_absence", "closest", "absent"}
        assert row["split"] in bc.SPLITS
        assert row["kind_of_absence"] in KINDS
        assert row["text"].strip()
        assert row["absent"] and all(re.compile(p) for p in row["absent"])
        assert isinstance(row.get("closest", []), list)
    heldout = sum(r["split"] == "heldout" for r in rows) / len(rows)
    assert 0.25 <= heldout <= 0.45
    for split in bc.SPLITS:
        assert {r["kind_of_absence"] for r in rows if r["split"] == split} == KINDS


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def test_no_text_is_shared_between_dev_and_heldout() -> None:
    texts: dict[str, set[str]] = {}
    for split, convs in _all_convs().items():
        texts[split] = {_norm(t["user"]) for c in convs for t in c["turns"]}
        texts[split] |= {_norm(r["text"]) for r in bc.load_not_carried(split)}
    assert not texts["dev"] & texts["heldout"]


@pytest.fixture(scope="module")
def luma_view() -> CatalogView:
    if not LUMA.is_file():
        pytest.skip("luma-dev catalog not available")
    return CatalogView(Catalog.load_jsonl(LUMA))


@needs_luma
def test_every_checked_product_exists_in_luma(luma_view: CatalogView) -> None:
    missing = [(c["cid"], pid) for convs in _all_convs().values() for c in convs for t in c["turns"]
               for pid in _ids(t.get("checks", {})) if pid not in luma_view]
    assert not missing


@needs_luma
def test_products_all_specs_are_satisfiable(luma_view: CatalogView) -> None:
    """Every products_all constraint set is met by at least one luma-dev product (no impossible check)."""
    parents = luma_view.catalog.parents()
    for convs in _all_convs().values():
        for conv in convs:
            for turn in conv["turns"]:
                spec = turn.get("checks", {}).get("products_all")
                if spec is None:
                    continue
                fits = [p.id for p in parents
                        if not bc.product_satisfies(spec, Shown(p.id, p.title, p.price), luma_view)]
                assert fits, f"{conv['cid']}: nothing in luma-dev satisfies {spec}"


def _kind_text(record: dict[str, Any]) -> str:
    attrs: dict[str, Any] = record.get("attributes") or {}
    styles: list[str] = []
    for key in ("style_general", "style_bottom"):
        value = attrs.get(key)
        styles += [str(v) for v in value] if isinstance(value, list) else [str(value)] if value else []
    return " ".join([record["title"], *(record.get("categories") or []), *styles]).lower()


def _full_text(record: dict[str, Any]) -> str:
    values = [str(x) for v in (record.get("attributes") or {}).values() for x in (v if isinstance(v, list) else [v])]
    return " ".join([record["title"], record.get("description") or "", *(record.get("categories") or []), *values,
                     record.get("brand") or ""]).lower()


@needs_luma
def test_not_carried_requests_are_really_absent(luma_view: CatalogView) -> None:
    """A kind is absent from titles, categories and style attributes; a brand, material or feature from all text."""
    records = [json.loads(line) for line in LUMA.read_text(encoding="utf-8").splitlines() if line.strip()]
    paths = {c.lower() for p in luma_view.catalog for c in p.categories}
    for row in bc.load_not_carried():
        text = _kind_text if row["kind_of_absence"] == "kind" else _full_text
        for pattern in row["absent"]:
            found = [r["id"] for r in records if re.search(pattern, text(r), re.IGNORECASE)]
            assert not found, f"{row['nid']} {pattern!r} is in {found[:5]}"
        for ref in row.get("closest", []):
            assert ref in luma_view or any(ref.lower() in p for p in paths), f"{row['nid']}: closest {ref}"


# --- checks on hand-made turns ---------------------------------------------------------------------------------------


def _record(pid: str, title: str, price: float, category: str, **extra: Any) -> Product:
    return Product.from_dict({"id": pid, "title": title, "price": price, "category": category,
                              "categories": [category], **extra})


@pytest.fixture
def view() -> CatalogView:
    hoodies = "Women/Tops/Hoodies & Sweatshirts"
    products = [
        _record("WH02", "Hera Pullover Hoodie", 48, hoodies, type="configurable",
                attributes={"available_color": ["Blue", "Green"], "available_size": ["S", "M"]}),
        _record("WH02-M-Blue", "Hera Pullover Hoodie-M-Blue", 48, hoodies, parent_id="WH02", type="variant",
                attributes={"color": "Blue", "size": "M"}),
        _record("WH02-S-Green", "Hera Pullover Hoodie-S-Green", 48, hoodies, parent_id="WH02", type="variant",
                attributes={"color": "Green", "size": "S"}),
        _record("WH01", "Mona Pullover Hoodlie", 57, hoodies, type="configurable",
                attributes={"available_color": ["Gray"], "available_size": ["L"]}),
        _record("WH01-L-Gray", "Mona Pullover Hoodlie-L-Gray", 57, hoodies, parent_id="WH01", type="variant",
                attributes={"color": "Gray", "size": "L"}),
        _record("MG03", "Summit Watch", 54, "Gear/Watches"),
        _record("MB03", "Crown Summit Backpack", 38, "Gear/Bags"),
        _record("B55-blue", "Sprite Stasis Ball 55 cm", 23, "Gear/Fitness Equipment"),
        _record("B55-pink", "Sprite Stasis Ball 55 cm", 23, "Gear/Fitness Equipment"),
        _record("B65-blue", "Sprite Stasis Ball 65 cm", 27, "Gear/Fitness Equipment"),
    ]
    return CatalogView(Catalog(products))


def _shown(view: CatalogView, *ids: str, near: dict[str, tuple[str, ...]] | None = None) -> list[Shown]:
    out = []
    for pid in ids:
        p = view.product(pid)
        assert p is not None
        out.append(Shown(p.id, p.title, p.price, (near or {}).get(pid, ())))
    return out


def _turn(reply: str = "", shown: list[Shown] | None = None, *, intent: str | None = "search",
          on_screen: list[Shown] | None = None) -> TurnResult:
    return TurnResult(user="u", text="u", intent=intent, shown=shown or [], on_screen=on_screen or [], reply=reply)


def _passes(checks: dict[str, Any], turn: TurnResult, view: CatalogView) -> bool:
    return all(o.passed for o in evaluate_turn(checks, turn, view))


def test_names_are_titles_and_distinctive_product_lines(view: CatalogView) -> None:
    assert view.names("WH02") == ("hera pullover hoodie", "hera")
    assert view.names("WH02-M-Blue") == view.names("WH02")  # a variant is named as its parent
    assert view.names("MG03") == ("summit watch",)  # "Summit" alone is also the Crown Summit Backpack
    assert view.names("B65-blue") == ("sprite stasis ball 65 cm", "sprite stasis ball 65")
    assert view.same_name("B55-blue", "B55-pink") and not view.same_name("B55-blue", "B65-blue")


def test_intent_check(view: CatalogView) -> None:
    assert _passes({"intent": "compare"}, _turn(intent="compare"), view)
    assert _passes({"intent": ["complaint", "human"]}, _turn(intent="human"), view)
    assert not _passes({"intent": "compare"}, _turn(intent="search"), view)
    assert not _passes({"intent": ["complaint", "human"]}, _turn(intent=None), view)


def test_top3_any_check(view: CatalogView) -> None:
    shown = _shown(view, "MG03", "MB03", "WH01", "WH02")
    assert _passes({"top3_any": ["WH01", "B55-blue"]}, _turn(shown=shown), view)
    assert _passes({"top3_any": ["WH01-L-Gray"]}, _turn(shown=shown), view)  # variant ids mean their parent
    assert not _passes({"top3_any": ["WH02"]}, _turn(shown=shown), view)  # fourth
    assert not _passes({"top3_any": ["WH02"]}, _turn(), view)


def test_products_all_check(view: CatalogView) -> None:
    both = _shown(view, "WH02", "WH01")
    assert _passes({"products_all": {"category": "hoodies", "max_price": 60}}, _turn(shown=both), view)
    assert not _passes({"products_all": {"max_price": 50}}, _turn(shown=both), view)
    assert not _passes({"products_all": {"min_price": 50}}, _turn(shown=both), view)
    assert not _passes({"products_all": {"category": "Watches"}}, _turn(shown=both), view)
    assert _passes({"products_all": {"color": "blue", "size": "m"}}, _turn(shown=_shown(view, "WH02")), view)
    # colour and size must be on one variant: the Hera has blue M and green S, no blue S
    assert not _passes({"products_all": {"color": "Blue", "size": "S"}}, _turn(shown=_shown(view, "WH02")), view)
    assert _passes({"products_all": {"color": "grey"}}, _turn(shown=_shown(view, "WH01")), view)
    assert _passes({"products_all": {"title_contains": ["Watch", "Hoodie"]}},
                   _turn(shown=_shown(view, "MG03", "WH02")), view)
    assert not _passes({"products_all": {"title_contains": "Watch"}}, _turn(shown=_shown(view, "MG03", "MB03")),
                       view)
    # alternatives (near misses) are exempt, but at least one product must be shown as a match
    near = _shown(view, "WH02", "WH01", near={"WH01": ("price",)})
    assert _passes({"products_all": {"max_price": 50}}, _turn(shown=near), view)
    only_near = _shown(view, "WH01", near={"WH01": ("price",)})
    assert not _passes({"products_all": {"max_price": 50}}, _turn(shown=only_near), view)
    assert not _passes({"products_all": {"category": "Hoodies"}}, _turn(), view)


def test_no_match_claimed_check(view: CatalogView) -> None:
    near = _shown(view, "WH01", near={"WH01": ("colour",)})
    honest = "Sorry, we don't carry dresses. The closest are the Mona Pullover Hoodlie at $57."
    assert _passes({"no_match_claimed": True}, _turn(honest, near), view)
    assert _passes({"no_match_claimed": True}, _turn("I couldn't find that in blue. I found nothing else."), view)
    assert _passes({"no_match_claimed": True}, _turn("Show me two products first, then I can compare them."), view)
    assert not _passes({"no_match_claimed": True}, _turn(honest, _shown(view, "WH01")), view)  # shown as a match
    for claim in ("I found five options.", "Here are three hoodies.", "I've got one match in white.",
                  "The top three are the Hera and the Mona.", "There's the Hera at $48."):
        assert not _passes({"no_match_claimed": True}, _turn(claim), view), claim
    assert _passes({"no_match_claimed": False}, _turn("Here are two.", _shown(view, "WH02")), view)


def test_says_not_carried_check(view: CatalogView) -> None:
    for said in ("Sorry, we don't carry laptops.", "Laptops aren't something we sell.",
                 "There are no dresses in our catalog.", "Hmm. I couldn't find any dresses.",
                 "We only carry women's clothing, so no men's jackets."):
        assert _passes({"says_not_carried": True}, _turn(said), view), said
    assert not _passes({"says_not_carried": True}, _turn("Here are five options."), view)
    late = "Here are five options. The top three are these. By the way, we don't carry laptops."
    assert not _passes({"says_not_carried": True}, _turn(late), view)  # only the first two sentences count
    assert _passes({"says_not_carried": False}, _turn("Here are five options."), view)


def test_about_check(view: CatalogView) -> None:
    screen = _shown(view, "WH02", "WH01", "MG03")
    assert _passes({"about": "WH02"}, _turn("The Hera is made of wool.", on_screen=screen), view)
    assert _passes({"about": "WH02"}, _turn("The Hera Pullover Hoodie is $48.", on_screen=screen), view)
    assert not _passes({"about": "WH02"}, _turn("It is made of wool.", on_screen=screen), view)
    assert not _passes({"about": "WH02"}, _turn("The Hera and the Mona are wool.", on_screen=screen), view)
    # other products' names count only when they are on screen or shown this turn
    assert _passes({"about": "WH02"}, _turn("The Hera is warmer than the Mona."), view)
    # "Summit" alone does not name the Summit Watch (the Crown Summit Backpack has it too)
    assert _passes({"about": "MB03"}, _turn("The Crown Summit Backpack is $38.", on_screen=screen), view)
    assert not _passes({"about": "MG03"}, _turn("The Crown Summit Backpack is $38.", on_screen=screen), view)
    # "@N": the N-th product of the list on screen before the turn
    assert _passes({"about": "@2"}, _turn("The Mona is $57.", on_screen=screen), view)
    assert not _passes({"about": "@1"}, _turn("The Mona is $57.", on_screen=screen), view)
    assert not _passes({"about": "@4"}, _turn("The Mona is $57.", on_screen=screen), view)
    # same-titled products (colours of one ball) cannot be told apart by name: not "another" product
    balls = _shown(view, "B55-blue", "B55-pink")
    assert _passes({"about": "B55-pink"}, _turn("The Sprite Stasis Ball 55 cm is $23.", on_screen=balls), view)


def test_about_all_check(view: CatalogView) -> None:
    screen = _shown(view, "WH02", "WH01")
    reply = "The Hera Pullover Hoodie is $48 and the Mona Pullover Hoodlie is $57."
    assert _passes({"about_all": ["WH02", "WH01"]}, _turn(reply), view)
    assert _passes({"about_all": ["@1", "@2"]}, _turn(reply, on_screen=screen), view)
    assert not _passes({"about_all": ["WH02", "MG03"]}, _turn(reply), view)
    assert not _passes({"about_all": ["@1", "@3"]}, _turn(reply, on_screen=screen), view)


def test_reply_regex_checks(view: CatalogView) -> None:
    turn = _turn("It comes in Blue, Green and Orange.")
    assert _passes({"reply_any": ["purple", "green"]}, turn, view)
    assert not _passes({"reply_any": ["purple"]}, turn, view)
    assert _passes({"reply_none": ["which size"]}, turn, view)
    assert not _passes({"reply_none": ["BLUE"]}, turn, view)  # case-insensitive


def test_products_none_of_check(view: CatalogView) -> None:
    shown = _shown(view, "WH02", "WH01", near={"WH01": ("price",)})
    assert _passes({"products_none_of": ["WH01", "MG03"]}, _turn(shown=shown), view)  # WH01 only as alternative
    assert not _passes({"products_none_of": ["WH02-M-Blue"]}, _turn(shown=shown), view)


def test_a_failed_turn_fails_every_check_and_unknown_checks_are_refused(view: CatalogView) -> None:
    turn = _turn("We don't carry that.")
    turn.error = "ReplyError: boom"
    assert not any(o.passed for o in evaluate_turn({"says_not_carried": True, "reply_none": ["x"]}, turn, view))
    with pytest.raises(ValueError, match="unknown checks"):
        evaluate_turn({"vibes": True}, _turn(), view)


def test_scores_and_table_keep_heldout_failures_out_of_the_table(view: CatalogView) -> None:
    conv = {"cid": "x-1", "turns": [{"user": "hoodies"}, {"user": "the hera", "checks": {"about": "WH02"}},
                                    {"user": "the mona", "checks": {"about": "WH01"}}]}
    runs = [[_turn("Here are two.", _shown(view, "WH02", "WH01")), _turn("The Hera is $48."),
             _turn("SECRET heldout reply")]]
    scored = bc.score_conversations([conv], runs, view)
    assert (scored["checked_turns"], scored["right_turns"], scored["share_right"]) == (2, 1, 0.5)
    assert scored["per_check"]["about"] == {"n": 2, "passed": 1, "rate": 0.5}
    assert [f["turn"] for f in scored["failures"]] == [2]
    nc = bc.score_not_carried([{"nid": "n1", "text": "dresses", "kind_of_absence": "kind"},
                               {"nid": "n2", "text": "nike", "kind_of_absence": "brand"}],
                              [_turn("Sorry, we don't carry dresses."), _turn("Here are five options.")], view)
    assert (nc["honest"], nc["honesty_rate"], nc["by_kind"]["brand"]["rate"]) == (1, 0.5, 0.0)
    results = {"spoken": None, "splits": {"dev": {"conversations": scored, "not_carried": nc},
                                          "heldout": {"conversations": scored, "not_carried": nc}}}
    text = bc.table(results)
    assert "| dev | 1 | 2 | 0.500" in text and "| heldout |" in text and "| about | 0.500 (1/2)" in text
    assert text.count("SECRET heldout reply") == 1  # listed once: dev's failures only
    hidden = bc.redact({"conversations": scored, "not_carried": nc, "run_s": 1.0})
    assert "SECRET" not in json.dumps(hidden) and "hera" not in json.dumps(hidden).lower()
    assert "dresses" not in json.dumps(hidden) and "nike" not in json.dumps(hidden)
    assert hidden["conversations"]["failures"] == [{"cid": "x-1", "turn": 2, "intent": "search",
                                                   "failed": ["about"]}]
    assert [t["right"] for t in hidden["conversations"]["transcript"]] == [True, False]
    assert hidden["not_carried"]["failures"] == [{"nid": "n2", "intent": "search",
                                                 "failed": ["no_match_claimed", "says_not_carried"]}]
    assert hidden["conversations"]["per_check"] == scored["per_check"] and hidden["redacted"]
    assert "| heldout | 1 | 2 | 0.500" in bc.table({"spoken": None, "splits": {"heldout": hidden}})


# --- a real run ------------------------------------------------------------------------------------------------------


@pytest.mark.real_model
@needs_luma
def test_runner_drives_the_real_brain_over_luma(tmp_path: Path) -> None:
    """Two conversations and two not-carried requests through the server's brain over ingested luma-dev."""
    convs = {"dev": [
        {"cid": "t-1", "turns": [{"user": "do you have any hoodies?", "checks": {"products_all": {"category":
                                                                                                 "Hoodies"}}},
                                 {"user": "what's the second one made of", "checks": {"intent":
                                                                                      "product_question"}}]},
        {"cid": "t-2", "turns": [{"user": "hi there", "checks": {"intent": "greeting"}},
                                 {"user": "can i talk to a real person", "checks": {"intent": "human"}}]},
    ]}
    requests = {"dev": [{"nid": "n-1", "text": "do you sell laptops", "split": "dev", "kind_of_absence": "kind"},
                        {"nid": "n-2", "text": "anything from nike", "split": "dev", "kind_of_absence": "brand"}]}
    out = tmp_path / "conversations.json"
    results = bc.run(("dev",), out=out, data_dir=tmp_path / "data", conversations=convs, not_carried=requests)
    assert json.loads(out.read_text()) == results
    assert results["catalog_products"] > 1000
    dev = results["splits"]["dev"]["conversations"]
    assert dev["conversations"] == 2 and dev["checked_turns"] == 4
    first = [t for t in dev["transcript"] if t["cid"] == "t-1"]
    assert first[0]["shown"] and first[0]["reply"]
    assert dev["per_check"]["intent"]["n"] == 3
    nc = results["splits"]["dev"]["not_carried"]
    assert nc["n"] == 2 and 0.0 <= nc["honesty_rate"] <= 1.0
    assert "| dev | 2 | 4 |" in bc.table(results)
