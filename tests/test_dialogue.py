"""The dialogue layer: scripted multi-turn conversations (references, refinement, cart, policy, orders, friends,
frustration, abuse), with the keyword searcher; the intent recogniser runs in rules mode here and with its real
model in the CLI test at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from assistant.catalog.view import CatalogView
from assistant.conversation.dialogue import DialogueState, check_quoted, merge_refinement, resolve_reference
from assistant.conversation.intent import IntentRecognizer
from assistant.conversation.orders import open_demo_orders
from assistant.core.frames import ProductResults, ResponseDone, UserTurn
from assistant.memory.store import Friend, SQLiteMemory
from assistant.runtime.turn import Brain
from assistant.safety.moderation import Moderator
from assistant.search.query import ProductHit, SearchQuery
from tests.fakes import KeywordSearcher


class Conversation:
    def __init__(self, tmp_path: Path, *, user_id: str | None = None, kb: Any = None) -> None:
        from assistant.conversation.dialogue import Dialogue

        self.searcher = KeywordSearcher()
        self.memory = SQLiteMemory(tmp_path / "memory.sqlite")
        self.orders = open_demo_orders(tmp_path)
        dialogue = Dialogue(IntentRecognizer(mode="rules"), kb=kb, orders=self.orders, moderator=Moderator(None),
                            memory_store=self.memory, categories=["hoodies", "jackets", "running shoes"],
                            catalog=self.searcher.catalog)
        self.brain = Brain(self.searcher, tts=None, dialogue=dialogue)
        self.session = self.memory.open_session(user_id)
        self.state = DialogueState(memory=self.session)
        self.n = 0

    async def say(self, text: str) -> dict[str, Any]:
        self.n += 1
        products: list[ProductHit] | None = None
        done: ResponseDone | None = None
        async for frame in self.brain.respond(UserTurn(item_id=f"i{self.n}", text=text, wants_audio=False),
                                              f"r{self.n}", signals=self.session.signals(), state=self.state):
            if isinstance(frame, ProductResults):
                products = list(frame.hits)
            elif isinstance(frame, ResponseDone):
                done = frame
        assert done is not None and done.status == "completed"
        return {"reply": done.text, "intent": done.intent, "handoff": done.handoff,
                "products": [h.product.id for h in products] if products is not None else None, "hits": products}


async def test_references_refinement_and_cart(tmp_path: Path) -> None:
    c = Conversation(tmp_path)
    first = await c.say("show me hoodies")
    assert first["intent"] == "search" and first["products"][:2] == ["p1", "p2"]
    second = await c.say("the second one in medium")
    assert second["products"] == ["p2"] and "Ridge Zip Hoodie" in second["reply"] and "$44" in second["reply"]
    cheaper = await c.say("something cheaper")
    assert cheaper["intent"] == "refine"
    assert cheaper["products"] and all(h.price < 44.0 for h in cheaper["hits"])
    added = await c.say("add the first one to my cart in large")
    assert added["intent"] == "add_to_cart" and "Added the Harbor Fleece Hoodie in size L" in added["reply"]
    assert [(x.product_id, x.quantity) for x in c.session.cart()] == [("p1", 1)]
    no_size = await c.say("add the first one to my cart in size XXXL")
    assert "doesn't come in" in no_size["reply"] and len(c.session.cart()) == 1


async def test_correction_replaces_the_price_limit(tmp_path: Path) -> None:
    c = Conversation(tmp_path)
    await c.say("hoodies under 50 dollars")
    assert c.state.last_query is not None and c.state.last_query.max_price == 50
    corrected = await c.say("no, under 40")
    assert corrected["intent"] == "refine" and c.state.last_query.max_price == 40
    assert corrected["products"] == ["p1"]


async def test_compare_and_product_question(tmp_path: Path) -> None:
    c = Conversation(tmp_path)
    await c.say("black hoodies")
    compared = await c.say("compare the first and the second")
    assert compared["intent"] == "compare"
    assert "$39.99" in compared["reply"] and "$44" in compared["reply"] and "cheaper one" in compared["reply"]
    sizes = await c.say("what sizes does the second one come in")
    assert sizes["intent"] == "product_question" and "S, M and L" in sizes["reply"]


async def test_order_status_and_unknown_order(tmp_path: Path) -> None:
    c = Conversation(tmp_path)
    order = c.orders.all()[0]
    found = await c.say(f"where is my order {order.id}")
    assert found["intent"] == "order_status" and order.id in found["reply"]
    missing = await c.say("where is my order ST-99999")
    assert "couldn't find" in missing["reply"]
    asked = await c.say("where's my package")
    assert asked["intent"] == "order_status" and "order number" in asked["reply"]


async def test_policy_answers_quote_the_kb_or_hand_off(tmp_path: Path) -> None:
    from assistant.conversation.kb import open_kb
    from ranking.text_encoder import TextEncoder

    kb = open_kb(tmp_path, TextEncoder(device="cpu"))
    c = Conversation(tmp_path, kb=kb)
    answer = await c.say("what's your return policy")
    assert answer["intent"] == "policy" and "return" in answer["reply"].lower() and "(From our" in answer["reply"]
    unknown = await c.say("do you offer a warranty on the moon landing")
    assert unknown["handoff"] or "(From our" in unknown["reply"]


async def test_friend_based_recommendation(tmp_path: Path) -> None:
    c = Conversation(tmp_path, user_id="dave")
    c.memory.set_friends("dave", [Friend("ana", "Ana")])
    c.memory.record_user_event("ana", "p2", "purchase")
    reply = await c.say("my friend bought a hoodie, what would you recommend to go with it")
    assert reply["intent"] == "recommendation", reply
    assert "Your friend Ana bought the Ridge Zip Hoodie" in reply["reply"]
    assert "p2" not in (reply["products"] or [])


async def test_frustrated_shopper_gets_an_apology_and_a_person(tmp_path: Path) -> None:
    c = Conversation(tmp_path)
    reply = await c.say("this is useless!!! third time I ask for BLACK HOODIES")
    assert reply["reply"].startswith("I'm sorry")
    assert reply["handoff"] and len(reply["products"] or []) <= 2


async def test_abusive_input_is_refused_politely_without_search(tmp_path: Path) -> None:
    c = Conversation(tmp_path)
    reply = await c.say("you stupid idiot bot")
    assert reply["products"] is None and "keep it friendly" in reply["reply"]
    after = await c.say("black hoodies")  # the conversation goes on
    assert after["products"]


async def test_greeting_and_too_broad(tmp_path: Path) -> None:
    c = Conversation(tmp_path)
    assert (await c.say("hello there"))["intent"] == "greeting"
    broad = await c.say("show me some stuff")
    assert broad["products"] is None and "hoodies" in broad["reply"]


def test_check_quoted_flags_numbers_not_in_sources() -> None:
    assert check_quoted("Returns are free within 30 days.", ["You can return items within 30 days."]) == []
    assert check_quoted("Returns are free within 60 days.", ["You can return items within 30 days."])


def test_reference_resolution_words() -> None:
    hits = [ProductHit(p, 1.0, "") for p in KeywordSearcher().catalog]
    assert resolve_reference(None, "the cheaper one", hits[:2]).product.id == "p1"
    assert resolve_reference(None, "the red one", hits).product.id == "p4"
    assert resolve_reference(None, "that parka", hits).product.id == "p3"
    assert resolve_reference(None, "the last one", hits).product.id == "p4"
    merged = merge_refinement(SearchQuery("hoodie", max_price=50), SearchQuery("", color="red"), None, hits, "in red")
    assert merged.color == "red" and merged.max_price == 50
    # a colour said as the variant wanted ("in red") keeps the product in focus; "the red one" points
    assert resolve_reference(None, "add a medium in red", hits, hits[0]).product.id == hits[0].product.id
    assert resolve_reference(None, "the red one", hits, hits[0]).product.id == "p4"
    assert resolve_reference(None, "the last one", hits).product.id == hits[-1].product.id
    assert resolve_reference(None, "that was the last we saw of it", hits, hits[0]) is hits[0]


def test_the_other_one_and_the_products_talked_about() -> None:
    a, b, c = [ProductHit(p, 1.0, "") for p in list(KeywordSearcher().catalog)[:3]]
    state = DialogueState(shown=[a, b, c])
    state.focus = a
    assert state.the_other() is None  # three on screen, nothing talked about: no "other" to speak of
    state.talked_about(a, b)
    state.talked_about(a)  # talked about again: moves to the end, kept once
    assert [h.product.id for h in state.discussed] == [b.product.id, a.product.id]
    assert state.the_other() is b
    near = replace(c, near_miss=("kind",))
    assert DialogueState(shown=[a, b, near], focus=b).the_other() is a  # alternatives shown are not "the other"


@pytest.mark.timeout(600)
def test_chat_cli_scripted_conversation_with_real_models(tmp_path: Path) -> None:
    """`shoptalk chat --json` end to end: real intent model, demo catalog, KB and orders, memory and resume."""
    env = {**os.environ, "SHOPTALK_DATA_DIR": str(tmp_path)}
    models = Path(__file__).resolve().parents[1] / ".data" / "models"
    if models.exists():  # share prepared model caches when this checkout has them
        (tmp_path / "models").symlink_to(models)
    cmd = [sys.executable, "-m", "server.cli", "chat", "--json", "--data-dir", str(tmp_path)]
    script = ["hi", "show me black hoodies under fifty dollars", "the second one in medium",
              "what's your return policy?", "where is my order ST-10001"]
    run = subprocess.run([*cmd, *sum((["-m", s] for s in script), [])], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(x) for x in run.stdout.splitlines()]
    token = lines[0]["session"]["resume_token"]
    turns = lines[1:]
    intents = [t["intent"] for t in turns]
    assert intents[:2] == ["greeting", "search"] and intents[3:] == ["policy", "order_status"], intents
    assert intents[2] in ("refine", "product_question"), intents  # "the second one in medium": a pick either way
    assert turns[1]["products"] and all(p["price"] <= 50 for p in turns[1]["products"])
    assert len(turns[2]["products"]) == 1 and turns[2]["products"][0]["id"] == turns[1]["products"][1]["id"]
    assert "return" in turns[3]["reply"].lower()
    again = subprocess.run([*cmd, "--resume", token, "-m", "add it to my cart"], capture_output=True, text=True,
                           env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = [json.loads(x) for x in again.stdout.splitlines()][1:]
    assert resumed[0]["intent"] == "add_to_cart" and resumed[0]["reply"].startswith("Added the")
    bad = subprocess.run([*cmd, "--resume", "nope", "-m", "hi"], capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 2 and "invalid_resume_token" in bad.stderr


async def test_websocket_conversation_with_dialogue_and_resume(tmp_path: Path, live_server_factory: Any) -> None:
    """The same dialogue over the realtime websocket: a pick by position, the cart, and a resumed session."""
    from assistant.runtime.session import Engines
    from assistant.runtime.uploads import ImageStore
    from server.app import create_app
    from server.client import TalkClient
    from server.engines import App
    from server.settings import Settings
    from tests.fakes import EnergyVAD, FakeSTT, FakeTTS

    c = Conversation(tmp_path)
    engines = Engines(stt=FakeSTT(), brain=Brain(c.searcher, FakeTTS(), dialogue=c.brain.dialogue),
                      vad_factory=EnergyVAD, memory=c.memory)
    state = App(settings=Settings(data_dir=tmp_path), engines=engines, view=CatalogView(c.searcher.catalog),
                searcher=c.searcher, tts=engines.brain.tts, images=ImageStore(tmp_path / "uploads"))
    server = live_server_factory(create_app(state=state))
    async with TalkClient(server.ws_url) as client:
        token = client.session["resume_token"]
        listed = await client.ask_text("show me hoodies")
        assert [p["id"] for p in listed.products][:2] == ["p1", "p2"]
        picked = await client.ask_text("the second one in medium")
        assert [p["id"] for p in picked.products] == ["p2"]
    async with TalkClient(server.ws_url) as client:
        assert (await client.update(resume_token=token))["type"] == "session.updated"
        added = await client.ask_text("add it to my cart")
        assert added.status == "completed" and "Added the Ridge Zip Hoodie in size M" in added.reply, added.reply
    resumed = c.memory.resume(token)
    assert resumed is not None and [(x.product_id, x.quantity) for x in resumed.cart()] == [("p2", 1)]
    c.memory.set_friends("dave", [Friend("ana", "Ana")])
    c.memory.record_user_event("ana", "p1", "purchase")
    async with TalkClient(server.ws_url) as client:
        assert (await client.update(user_id="dave"))["type"] == "session.updated"
        friend = await client.ask_text("my friend bought a hoodie, what would you recommend to go with it")
        assert "Your friend Ana bought the Harbor Fleece Hoodie" in friend.reply
        rude = await client.ask_text("you stupid idiot bot")
        assert "keep it friendly" in rude.reply and not rude.products
        upset = await client.ask_text("this is useless!!! third time I ask for BLACK HOODIES")
        done = [e for e in upset.events if e["type"] == "response.done"][-1]["response"]
        assert upset.reply.startswith("I'm sorry") and done["handoff"] is True
        policy = await client.ask_text("order ST-99999 where is it")
        assert "couldn't find" in policy.reply


async def test_whole_sentence_deltas_reach_speech_before_the_writer_finishes() -> None:
    """A writer that yields whole sentences (the LLM writer's template opening) is spoken without waiting."""
    import asyncio
    import time

    from assistant.core.frames import SpeechAudio
    from tests.fakes import FakeTTS

    class SlowWriter:
        sentence_deltas = True

        async def write(self, text: str, query: SearchQuery, hits: Any) -> Any:
            yield "I found two hoodies."
            await asyncio.sleep(1.5)  # the model thinking about its sentence
            yield " The Harbor Fleece Hoodie is $39.99."

    brain = Brain(KeywordSearcher(), FakeTTS(), SlowWriter())
    t0 = time.perf_counter()
    first_audio = None
    async for frame in brain.respond(UserTurn(item_id="i", text="hoodies", wants_audio=True), "r"):
        if isinstance(frame, SpeechAudio) and first_audio is None:
            first_audio = time.perf_counter() - t0
    assert first_audio is not None and first_audio < 1.0


async def test_plural_question_answers_for_each_product(tmp_path: Path) -> None:
    c = Conversation(tmp_path)
    await c.say("black hoodies")
    reply = await c.say("what sizes do they come in")
    assert reply["intent"] == "product_question"
    assert "Harbor Fleece Hoodie comes in sizes S, M and L" in reply["reply"]
    assert "Ridge Zip Hoodie comes in sizes S, M and L" in reply["reply"]


def test_labels_tell_same_named_products_apart() -> None:
    from assistant.catalog.model import Product
    from assistant.conversation.answers import labels as _labels

    def shoe(pid: str, colour: str) -> ProductHit:
        return ProductHit(Product.from_dict({"id": pid, "parent_id": None, "type": "simple", "title": "Velocity Shoes",
                                             "description": "", "category": "Shoes", "categories": [], "brand": None,
                                             "price": 50.0, "currency": "USD", "attributes": {"color": colour},
                                             "images": []}), 1.0, "")

    assert _labels([shoe("a", "Red"), shoe("b", "Pink")]) == ["Velocity Shoes in red", "Velocity Shoes in pink"]


async def test_photo_lookup_without_a_photo_asks_for_one(tmp_path: Path) -> None:
    c = Conversation(tmp_path)
    reply = await c.say("can you find this one from my picture")
    assert reply["intent"] == "photo_lookup" and "Send me a photo" in reply["reply"] and reply["products"] is None


async def test_a_turn_is_planned_off_the_event_loop(tmp_path: Path) -> None:
    """Intent model, search, memory and orders all block: none of them may run on the event-loop thread."""
    import threading

    from assistant.conversation.intent import IntentRecognizer as Recognizer

    loop_thread = threading.get_ident()
    threads: dict[str, set[int]] = {"intent": set(), "search": set()}

    class WatchedRecognizer(Recognizer):
        def recognize(self, text: str, context: Any = None) -> Any:
            threads["intent"].add(threading.get_ident())
            return super().recognize(text, context)

    class WatchedSearcher(KeywordSearcher):
        def search(self, query: Any, **kwargs: Any) -> list[ProductHit]:
            threads["search"].add(threading.get_ident())
            return super().search(query, **kwargs)

    c = Conversation(tmp_path)
    assert c.brain.dialogue is not None
    c.brain.dialogue.recognizer = WatchedRecognizer(mode="rules")
    c.brain.searcher = WatchedSearcher()
    said = await c.say("show me a black hoodie under 50")
    assert said["products"], said
    await c.say("add the first one to my cart")
    assert threads["intent"] and threads["search"]
    assert loop_thread not in threads["intent"] | threads["search"], threads
