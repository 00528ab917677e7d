"""Intent recognition and slot filling (assistant.conversation.intent), its benchmark plumbing and the `shoptalk intent` CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from assistant.conversation.intent import (
    INTENTS,
    SLOT_NAMES,
    DialogueContext,
    IntentRecognizer,
    extract_slots,
    normalize_asr,
)
from assistant.conversation.intent_data import TEMPLATES, training_examples
from bench.dialogue import FRESH, demo_vocab, intent_metrics, load_utterances, main, slot_metrics

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vocab():
    return demo_vocab()


@pytest.fixture(scope="module")
def rules(vocab):
    return IntentRecognizer(vocab, mode="rules")


@pytest.fixture(scope="module")
def model(vocab, tmp_path_factory):
    # The trained weights are cached by a hash of the training data: reuse the checkout's data dir when there is
    # one (training embeds ~1,500 sentences), else train once into a temporary folder.
    data = REPO / ".data"
    cache = data / "models" / "intent" if data.is_dir() else tmp_path_factory.mktemp("intent")
    recognizer = IntentRecognizer(vocab, cache_dir=cache).warmup()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one short query: a single thread is as fast and immune to a busy machine
    yield recognizer
    torch.set_num_threads(threads)


# --- slots (no model) ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("black hoodie under fifty dollars", {"category": "hoodie", "colour": "black", "price_max": 50.0}),
        ("hoodie under $50", {"category": "hoodie", "price_max": 50.0}),
        ("shoes under 15", {"category": "shoe", "price_max": 15.0}),
        ("jeans between 20 and 40", {"category": "jean", "price_min": 20.0, "price_max": 40.0}),
        ("sneakers between twenty and forty bucks", {"category": "sneaker", "price_min": 20.0, "price_max": 40.0}),
        ("a hat for tea dollars or less", {"category": "hat", "price_max": 40.0}),
        ("boots over a hundred bucks", {"category": "boot", "price_min": 100.0}),
        ("my budget is seventy five", {"price_max": 75.0}),
        ("a 30 dollar backpack", {"category": "backpack", "price_max": 30.0}),
        ("jacket in extra large", {"category": "jacket", "size": "XL"}),
        ("t shirt in x l", {"category": "t shirt", "size": "XL"}),
        ("dress double x l", {"category": "dress", "size": "XXL"}),
        ("running shoes size nine and a half", {"category": "running shoe", "size": "9.5"}),
        ("jeans waist thirty", {"category": "jean", "size": "30"}),
        ("a read dress in medium", {"category": "dress", "colour": "red", "size": "M"}),
        ("navy blue socks", {"category": "sock", "colour": "navy"}),
        ("harbor and pine hoodie", {"category": "hoodie", "brand": "Harbor & Pine"}),
        ("oak crest boots for women", {"category": "boot", "brand": "Oakcrest", "gender": "women"}),
        ("add three of those", {"quantity": 3}),
        ("two black hats", {"category": "hat", "colour": "black", "quantity": 2}),
        ("a couple of those please", {"quantity": 2}),
        ("size 10 boots", {"category": "boot", "size": "10"}),
        ("where is order 10423", {"order_id": "ST-10423"}),
        ("track ST-10421", {"order_id": "ST-10421"}),
        ("order number one oh four two three", {"order_id": "ST-10423"}),
        ("s t ten four twenty two", {"order_id": "ST-10422"}),
        ("hello there", {}),
    ],
)
def test_slots(vocab, text, expected):
    slots = extract_slots(text, vocab)[0]
    assert slots == expected


def test_reference_and_price_direction(vocab):
    _, _, ref, direction = extract_slots("the second one but cheaper", vocab)
    assert (ref, direction) == (2, "lower")
    assert extract_slots("the last one", vocab)[2] == -1
    assert extract_slots("something nicer", vocab)[3] == "higher"
    assert extract_slots("wait a second", vocab)[2] is None
    assert extract_slots("that was the last we saw of it", vocab)[2] is None  # "the last" of a story, no list
    assert extract_slots("I'll take the last", vocab)[2] == -1


def test_normalize_asr(vocab):
    assert normalize_asr("Do you have it in READ?", vocab) == "do you have it in red"
    assert normalize_asr("North Vale tee shirts", vocab) == "northvale t-shirt"


def test_context_of():
    assert DialogueContext.of(None) == DialogueContext()
    assert DialogueContext.of({"products_shown": ["a", "b"], "has_photo": 1}) == DialogueContext(2, True)


# --- rules mode (the fake) -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "context", "intent"),
    [
        ("hi", None, "greeting"),
        ("thank you so much bye", None, "greeting"),
        ("let me speak to a human", None, "human"),
        ("where is order 10423", None, "order_status"),
        ("red hoodie under 40", None, "search"),
        ("in blue", {"products_shown": 4}, "refine"),
        ("what is this", {"has_photo": True}, "photo_lookup"),
        ("what is the meaning of life", None, "out_of_scope"),
    ],
)
def test_rules_mode(rules, text, context, intent):
    result = rules.recognize(text, context)
    assert (result.name, result.source) == (intent, "rule")


# --- the real model (MiniLM + MLP) -----------------------------------------------------------------------------------

CASES = [
    ("i'm looking for a pair of grey sneakers", None, "search"),
    ("got any womens jackets under eighty", None, "search"),
    ("only the kestrel ones", {"products_shown": 5}, "refine"),
    ("cheaper please", {"products_shown": 5}, "refine"),
    ("can you find the shoes in this picture", None, "photo_lookup"),
    ("which of the two is warmer", {"products_shown": 2}, "compare"),
    ("is the first one made of wool", {"products_shown": 4}, "product_question"),
    ("pop the blue one into my cart", {"products_shown": 3}, "add_to_cart"),
    ("can you tell me where order 10425 is", None, "order_status"),
    ("do you ship to ireland", None, "policy"),
    ("what can i buy my aunt for her birthday", None, "recommendation"),
    ("thanks bye", None, "greeting"),
    ("what's the weather in london", None, "out_of_scope"),
    ("i need to speak to an actual human", None, "human"),
    ("the strap on my backpack snapped the first day", None, "complaint"),
]


@pytest.mark.real_model
@pytest.mark.parametrize(("text", "context", "intent"), CASES)
def test_model_intents(model, text, context, intent):
    result = model.recognize(text, context)
    assert result.name == intent, result.scores
    assert set(result.scores) == set(INTENTS)
    assert abs(sum(result.scores.values()) - 1.0) < 1e-4


@pytest.mark.real_model
def test_context_dependent_refine(model):
    shown = {"products_shown": 5}
    second = model.recognize("the second one in medium", shown)
    assert (second.name, second.slots, second.reference) == ("refine", {"size": "M"}, 2)
    assert model.recognize("in navy", shown).name == "refine"
    assert model.recognize("in navy").name != "refine"  # nothing on screen to refine
    assert model.recognize("a navy hoodie in medium").name == "search"
    cheaper = model.recognize("anything cheaper", shown)
    assert (cheaper.name, cheaper.price_direction) == ("refine", "lower")
    add = model.recognize("add it to my cart", {"products_shown": 1})
    assert (add.name, add.reference) == ("add_to_cart", 1)
    assert model.recognize("find something like this", {"has_photo": True}).name == "photo_lookup"


# --- data --------------------------------------------------------------------------------------------------------------


def _key(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def test_eval_set_is_labelled_and_disjoint_from_training():
    rows = load_utterances()
    assert len(rows) >= 300
    counts = {name: sum(r["intent"] == name for r in rows) for name in INTENTS}
    assert min(counts.values()) >= 15, counts
    assert {r["intent"] for r in rows} == set(INTENTS)
    train = {_key(e.text) for e in training_examples()}
    train |= {_key(t) for ts in TEMPLATES.values() for t in ts if "{" not in t}
    fresh = load_utterances(FRESH)
    assert {r["intent"] for r in fresh} == set(INTENTS)
    shared = [r["text"] for r in rows + fresh if _key(r["text"]) in train]
    assert shared == []
    assert len({_key(r["text"]) for r in rows + fresh}) == len(rows) + len(fresh)
    assert all(set(r["slots"]) <= set(SLOT_NAMES) for r in rows + fresh)


def test_training_examples_deterministic():
    a, b = training_examples(), training_examples()
    assert a == b
    assert {e.intent for e in a} == set(INTENTS)


# --- bench metrics and plumbing -----------------------------------------------------------------------------------------


def test_metrics():
    m = intent_metrics(["search", "search", "refine"], ["search", "refine", "refine"])
    assert m["accuracy"] == pytest.approx(2 / 3, abs=1e-3)
    assert m["per_intent"]["refine"]["precision"] == 0.5
    assert m["confusions"] == [{"gold": "search", "predicted": "refine", "count": 1}]
    # gold {size M, colour red} vs predicted {size M, colour blue, brand X}: tp 1, fp 2, fn 1
    s = slot_metrics([{"size": "M", "colour": "red"}], [{"size": "m", "colour": "blue", "brand": "X"}],
                     ["size", "colour", "brand"])
    assert (s["micro"]["tp"], s["micro"]["fp"], s["micro"]["fn"]) == (1, 2, 1)
    assert s["micro"]["precision"] == pytest.approx(1 / 3, abs=1e-3)


def test_bench_rules_mode(tmp_path, vocab):
    out = tmp_path / "dialogue.json"
    results = main(out=out, recognizer=IntentRecognizer(vocab, mode="rules"), sections=("intent",))
    saved = json.loads(out.read_text())
    assert saved["sections"]["intent"]["utterances"] == len(load_utterances())
    assert 0 < results["sections"]["intent"]["intents"]["accuracy"] <= 1


# --- CLI -------------------------------------------------------------------------------------------------------------


def test_cli_intent_json(tmp_path):
    from typer.testing import CliRunner

    from server.cli import app

    data = REPO / ".data" if (REPO / ".data" / "demo-catalog").is_dir() else tmp_path
    result = CliRunner().invoke(
        app, ["intent", "where is order one oh four two three", "--json", "--rules", "--data-dir", str(data)]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["intent"] == "order_status"
    assert payload["slots"] == {"order_id": "ST-10423"}


def test_a_request_for_complements_says_what_it_goes_with(vocab) -> None:
    recognizer = IntentRecognizer(mode="rules", vocab=vocab)
    assert recognizer.recognize("what goes with a black hoodie").goes_with == "black hoodie"
    assert recognizer.recognize("a hat to wear with it").to_dict()["goes_with"] == "it"
    assert recognizer.recognize("i got the trail backpack what should i put in it").goes_with == "trail backpack"
    assert recognizer.recognize("should i go with the cheaper one").goes_with is None
    assert recognizer.recognize("black hoodies under 50").goes_with is None
