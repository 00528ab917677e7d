"""Websocket protocol tests over a real socket, with fake engines (fast)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from assistant.catalog.view import CatalogView
from assistant.runtime.session import Engines
from assistant.runtime.turn import Brain
from assistant.runtime.uploads import ImageStore
from server.app import create_app
from server.client import TalkClient, TurnResult
from server.engines import App
from server.settings import Settings
from speech.audio import float32_to_pcm16, resample
from tests.fakes import (
    VOICE_TURN_EVENTS,
    ColourPhotoSearcher,
    EnergyVAD,
    FakeSTT,
    FakeTTS,
    KeywordSearcher,
    order_ok,
    silence,
    tone,
)


def make_state(tmp_path: Path, *, tts_delay: float = 0.0, stt_delay: float = 0.0, **settings: Any) -> App:
    stt, tts, searcher = FakeSTT(delay_s=stt_delay), FakeTTS(delay_s=tts_delay), KeywordSearcher()
    images = ImageStore(tmp_path / "uploads")
    engines = Engines(stt=stt, brain=Brain(searcher, tts, images=images, photos=ColourPhotoSearcher(searcher)),
                      vad_factory=EnergyVAD)
    return App(settings=Settings(data_dir=tmp_path, **settings), engines=engines, view=CatalogView(searcher.catalog),
               searcher=searcher, tts=tts, images=images)  # type: ignore[arg-type]


@pytest.fixture
def state(tmp_path: Path) -> App:
    return make_state(tmp_path)


@pytest.fixture
def server(state: App, live_server_factory: Any) -> Any:
    return live_server_factory(create_app(state=state))


async def expect_error(client: TalkClient, code: str) -> dict[str, Any]:
    while True:
        event = await client.recv_event(timeout=10)
        if event["type"] == "error":
            assert event["error"]["code"] == code, event
            assert event["error"]["message"]
            return event


async def still_alive(client: TalkClient) -> None:
    """The session goes on after an error: a typed turn still gets a full reply."""
    result = await client.ask_text("black hoodie", timeout=20)
    assert result.status == "completed", result.types()
    assert result.products


async def test_session_created_describes_limits(server: Any) -> None:
    async with TalkClient(server.ws_url) as client:
        s = client.session
        assert s["id"].startswith("sess_") and s["resume_token"]
        assert s["input_audio"]["rate"] == 16000
        assert s["output_audio"]["rate"] == 24000
        assert s["limits"]["max_frame_bytes"] == 65536
        assert s["turn_detection"]["type"] == "server_vad"


async def test_server_vad_turn_event_order(server: Any, state: App) -> None:
    async with TalkClient(server.ws_url) as client:
        result = await client.say(tone(1.6), realtime=False)
    types = result.types()
    assert order_ok(types, VOICE_TURN_EVENTS), types
    assert result.transcript == "black hoodie under fifty dollars"
    assert result.status == "completed"
    assert result.products and all(p["price"] <= 50 for p in result.products)
    assert {p["title"] for p in result.products} <= {"Harbor Fleece Hoodie", "Ridge Zip Hoodie"}
    assert len(result.audio) > 0 and len(result.audio) % 2 == 0
    assert "Harbor Fleece Hoodie" in result.reply or "Ridge Zip Hoodie" in result.reply


async def test_partials_while_speaking(server: Any, state: App) -> None:
    async with TalkClient(server.ws_url) as client:
        result = await client.say(tone(3.0), realtime=True)
    assert result.partials, result.types()
    stt = state.engines.stt
    # Re-decoding is throttled: far fewer decodes than 20 ms frames.
    assert len(stt.calls) <= 3.0 / 0.7 + 3  # type: ignore[attr-defined]


async def test_push_to_talk_commit(server: Any) -> None:
    async with TalkClient(server.ws_url) as client:
        updated = await client.update(turn_detection=None)
        assert updated["type"] == "session.updated" and updated["session"]["turn_detection"] is None
        result = await client.say(tone(1.0), realtime=False, push_to_talk=True)
    types = result.types()
    assert "input_audio_buffer.speech_started" not in types
    assert order_ok(types, ["input_audio_buffer.committed", "conversation.item.input_audio_transcription.completed",
                            "response.created", "response.done"])
    assert result.status == "completed"


async def test_commit_on_empty_buffer(server: Any) -> None:
    async with TalkClient(server.ws_url) as client:
        await client.update(turn_detection=None)
        await client.send({"type": "input_audio_buffer.commit", "event_id": "e1"})
        event = await expect_error(client, "empty_buffer")
        assert event["event_id"] == "e1"
        await still_alive(client)


async def test_push_to_talk_silence_is_no_turn(server: Any) -> None:
    async with TalkClient(server.ws_url) as client:
        await client.update(turn_detection=None)
        result = await client.say(silence(1.5), realtime=False, push_to_talk=True)
        assert result.transcript == "" and "response.created" not in result.types()
        await still_alive(client)


async def test_server_vad_silence_and_quiet_noise_start_no_turn(server: Any, state: App) -> None:
    async with TalkClient(server.ws_url) as client:
        await client.stream_audio(silence(2.0), realtime=False)
        rng = np.random.default_rng(0)
        await client.stream_audio((rng.standard_normal(16000) * 0.002).astype(np.float32), realtime=False)
        await client.send({"type": "keepalive"})
        event = await client.recv_event(timeout=5)
        assert event["type"] == "keepalive"  # nothing else came before it
    assert state.engines.stt.calls == []  # type: ignore[attr-defined]


async def test_odd_byte_count(server: Any) -> None:
    async with TalkClient(server.ws_url) as client:
        await client.ws.send(b"\x01\x02\x03")
        await expect_error(client, "unsupported_audio_format")
        await still_alive(client)


async def test_oversized_frame(server: Any) -> None:
    async with TalkClient(server.ws_url) as client:
        await client.ws.send(b"\x00" * (64 * 1024 + 2))
        await expect_error(client, "frame_too_large")
        await still_alive(client)


@pytest.mark.parametrize("payload", ["not json", "[1, 2]", '{"no_type": 1}', '{"type": "made.up"}',
                                     '{"type": "input_audio_buffer.append", "audio": "!!notbase64!!"}',
                                     '{"type": "conversation.item.create", "item": {"content": []}}'])
async def test_bad_text_frames(server: Any, payload: str) -> None:
    async with TalkClient(server.ws_url) as client:
        await client.ws.send(payload)
        await expect_error(client, "invalid_event")
        await still_alive(client)


@pytest.mark.parametrize("rate", [12345, 0, -16000, "fast"])
async def test_bad_sample_rates(server: Any, rate: Any) -> None:
    async with TalkClient(server.ws_url) as client:
        await client.send({"type": "session.update", "session": {"input_audio": {"rate": rate}}})
        event = await client.recv_event(timeout=5)
        assert event["type"] == "error"
        assert event["error"]["code"] in ("unsupported_audio_format", "invalid_event")
        # The old configuration is intact: a 16 kHz turn still works.
        result = await client.say(tone(1.0), realtime=False)
        assert result.status == "completed"


async def test_48k_input_is_resampled(server: Any) -> None:
    async with TalkClient(server.ws_url) as client:
        updated = await client.update(input_audio={"rate": 48000})
        assert updated["session"]["input_audio"]["rate"] == 48000
        audio48 = resample(np.concatenate([tone(1.2), silence(1.0)]), 16000, 48000)
        result = TurnResult()
        collector = asyncio.ensure_future(client.collect_turn(result, timeout=20))
        step = 48000 // 50
        for i in range(0, len(audio48), step):
            await client.ws.send(float32_to_pcm16(audio48[i : i + step]))
        await collector
    assert result.status == "completed"
    assert result.events[0]["type"] == "input_audio_buffer.speech_started"


async def test_base64_audio_in_and_out(server: Any) -> None:
    async with TalkClient(server.ws_url) as client:
        updated = await client.update(output_audio={"transport": "json"})
        assert updated["session"]["output_audio"]["transport"] == "json"
        result = TurnResult()
        collector = asyncio.ensure_future(client.collect_turn(result, timeout=20))
        audio = np.concatenate([tone(1.0), silence(1.0)])
        for i in range(0, len(audio), 1600):
            chunk = float32_to_pcm16(audio[i : i + 1600])
            await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})
        await collector
    assert result.status == "completed"
    assert "response.output_audio.delta" in result.types()
    assert len(result.audio) > 0


async def test_text_only_modalities(server: Any) -> None:
    async with TalkClient(server.ws_url) as client:
        await client.update(modalities=["text"])
        result = await client.ask_text("black hoodie")
    assert result.status == "completed" and not result.audio and result.reply


async def test_response_cancel(tmp_path: Path, live_server_factory: Any) -> None:
    state = make_state(tmp_path, tts_delay=0.4)
    server = live_server_factory(create_app(state=state))
    async with TalkClient(server.ws_url) as client:
        await client.send({"type": "conversation.item.create",
                           "item": {"content": [{"type": "input_text", "text": "black hoodie"}]}})
        await client.send({"type": "response.create"})
        while (await client.recv_event())["type"] != "response.products":
            pass
        await client.send({"type": "response.cancel"})
        result = await client.collect_turn(TurnResult(), timeout=10)
        assert result.status == "cancelled"
        await client.send({"type": "response.cancel"})
        await expect_error(client, "response_cancel_not_active")


async def test_barge_in_cancels_remaining_audio(tmp_path: Path, live_server_factory: Any) -> None:
    state = make_state(tmp_path, tts_delay=0.4)
    server = live_server_factory(create_app(state=state))
    async with TalkClient(server.ws_url) as client:
        result = TurnResult()
        collector = asyncio.ensure_future(client.collect_turn(result, timeout=30))
        await client.stream_audio(np.concatenate([tone(1.0), silence(0.7)]), realtime=False)
        # Wait for the reply's audio to start, then talk over it.
        for _ in range(200):
            if result.audio:
                break
            await asyncio.sleep(0.02)
        assert result.audio, result.types()
        await client.stream_audio(tone(0.6), realtime=True)
        await collector
        await client.stream_audio(silence(0.8), realtime=False)
        types = result.types()
        assert result.status == "cancelled", types
        assert types.index("input_audio_buffer.speech_started", 1) < types.index("response.done")
        # Only audio already synthesised (at most one 0.5 s sentence) may follow the barge-in.
        sentences_spoken = len(state.tts.sentences)  # type: ignore[union-attr]
        assert sentences_spoken < 4
        # The barge-in utterance becomes the next turn.
        nxt = await client.collect_turn(TurnResult(), timeout=30)
        assert nxt.status == "completed", nxt.types()


async def test_http_healthz_and_search(server: Any) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        health = (await http.get("/healthz")).json()
        assert health["status"] == "ok" and health["products"] == 4
        body = (await http.post("/v1/search", json={"text": "black hoodie under 50 dollars", "k": 3})).json()
        assert body["products"] and all(p["price"] <= 50 for p in body["products"])
        assert set(body["products"][0]) >= {"id", "parent_id", "title", "price", "currency", "score", "reason",
                                            "image_url"}
        bad = await http.post("/v1/search", json={"text": ""})
        assert bad.status_code == 400 and "text" in bad.text
        missing = await http.post("/v1/search", json={"image_id": "img_" + "0" * 32})
        assert missing.status_code == 404 and "not found" in missing.text
        assert (await http.get("/v1/products/zzz")).status_code == 404
        assert (await http.get("/metrics")).status_code == 200


async def test_many_bad_events_do_not_kill_server(server: Any) -> None:
    for _ in range(3):
        try:
            async with websockets.connect(server.ws_url) as ws:
                await ws.recv()
                await ws.send(json.dumps({"type": "session.update", "session": "x"}))
                reply = json.loads(await ws.recv())
                assert reply["type"] == "error"
        except websockets.ConnectionClosed:
            pytest.fail("server closed the connection on a bad event")
    async with TalkClient(server.ws_url) as client:
        await still_alive(client)


async def test_utterance_over_60_s_is_refused(tmp_path: Path, live_server_factory: Any) -> None:
    # A client allowed to send far faster than real time (the default pacing would refuse it first).
    server = live_server_factory(create_app(state=make_state(tmp_path, max_audio_speed=1000, audio_burst_s=120)))
    async with TalkClient(server.ws_url) as client:
        await client.update(turn_detection=None)
        await client.stream_audio(tone(61.0), realtime=False, frame_ms=100)
        await expect_error(client, "buffer_overflow")
        # What fitted was dropped with the overflow; a fresh short utterance still works.
        result = await client.say(tone(1.0), realtime=False, push_to_talk=True)
        assert result.status == "completed"


async def test_clear_drops_buffered_audio(server: Any) -> None:
    async with TalkClient(server.ws_url) as client:
        await client.update(turn_detection=None)
        await client.stream_audio(tone(1.0), realtime=False)
        await client.send({"type": "input_audio_buffer.clear"})
        while (await client.recv_event())["type"] != "input_audio_buffer.cleared":
            pass  # partial transcripts of the cleared audio may arrive first
        await client.send({"type": "input_audio_buffer.commit"})
        await expect_error(client, "empty_buffer")


async def test_dislike_takes_effect_at_once(server: Any) -> None:
    async with TalkClient(server.ws_url) as client:
        first = await client.ask_text("black hoodie")
        top = first.products[0]["id"]
        await client.send({"type": "feedback", "product_id": top, "action": "dislike"})
        again = await client.ask_text("black hoodie")
        assert again.products and again.products[0]["id"] != top
        await client.send({"type": "feedback", "product_id": top, "action": "like"})
        liked = await client.ask_text("black hoodie")
        assert liked.products[0]["id"] == top  # un-disliked: back to the retrieval order
        await client.send({"type": "feedback", "product_id": top, "action": "teleport"})
        await expect_error(client, "invalid_event")


@pytest.fixture
def memory_server(tmp_path: Path, live_server_factory: Any) -> Any:
    from assistant.memory.store import SQLiteMemory

    state = make_state(tmp_path)
    state.engines.memory = SQLiteMemory(tmp_path / "memory.sqlite")
    server = live_server_factory(create_app(state=state))
    server.memory = state.engines.memory
    return server


async def test_resume_after_disconnect_keeps_turns_and_feedback(memory_server: Any, tmp_path: Path) -> None:
    async with TalkClient(memory_server.ws_url) as client:
        token, first_id = client.session["resume_token"], client.session["id"]
        first = await client.ask_text("black hoodie")
        top = first.products[0]["id"]
        await client.send({"type": "feedback", "product_id": top, "action": "dislike"})
        await client.ask_text("black hoodie")  # the feedback event was handled before this turn
    # the connection dropped; a new one resumes the same memory
    async with TalkClient(memory_server.ws_url) as client:
        updated = await client.update(resume_token=token)
        assert updated["type"] == "session.updated" and updated["session"]["id"] == first_id
        again = await client.ask_text("black hoodie")
        assert again.products[0]["id"] != top  # the dislike survived the disconnect
        resumed = memory_server.memory.resume(token)
        assert [t.text for t in resumed.turns() if t.role == "user"] == ["black hoodie"] * 3
        assert [(e.product_id, e.action) for e in resumed.events()] == [(top, "dislike")]
    # an unknown token is a coded error and the session goes on
    async with TalkClient(memory_server.ws_url) as client:
        await client.send({"type": "session.update", "session": {"resume_token": "nope"}})
        await expect_error(client, "invalid_resume_token")
        await still_alive(client)
    n = memory_server.memory.export_feedback(tmp_path / "feedback.jsonl")
    assert n == 1 and json.loads((tmp_path / "feedback.jsonl").read_text())["kind"] == "dislike"


async def test_friends_and_consent_routes(memory_server: Any) -> None:
    async with httpx.AsyncClient(base_url=memory_server.http_url, timeout=10) as http:
        products = (await http.post("/v1/search", json={"text": "black hoodie"})).json()["products"]
        pid = products[0]["id"]
        r = await http.put("/v1/users/dave/friends", json={"friends": [{"id": "ana", "name": "Ana"}]})
        assert r.status_code == 200 and r.json()["friends"] == [{"id": "ana", "name": "Ana"}]
        assert (await http.post("/v1/users/ana/events", json={"product_id": pid, "action": "purchase"})).status_code \
            == 201
        assert (await http.post("/v1/users/ana/events", json={"product_id": "nope", "action": "purchase"})) \
            .status_code == 404
        assert (await http.post("/v1/users/ana/events", json={"product_id": pid, "action": "steal"})).status_code \
            == 422
        bad = await http.put("/v1/users/dave/friends", json={"friends": [{"id": "dave"}]})
        assert bad.status_code == 400 and "own friend" in bad.json()["detail"]["message"]
        assert (await http.put("/v1/users/dave/consent", json={"consent": True})).json()["consent"] is True
    assert memory_server.memory.social("dave").bought == {pid: ["Ana"]}
    async with TalkClient(memory_server.ws_url) as client:
        assert (await client.update(user_id="dave"))["type"] == "session.updated"
        await still_alive(client)
        assert client.session["resume_token"]
        token = client.session["resume_token"]
    signed_in = memory_server.memory.resume(token)
    assert signed_in.user_id == "dave" and signed_in.signals().friends_bought == {pid: 1}


async def test_http_search_shares_the_session_memory(memory_server: Any) -> None:
    async with TalkClient(memory_server.ws_url) as client:
        token = client.session["resume_token"]
        first = await client.ask_text("black hoodie")
        top = first.products[0]["id"]
        await client.send({"type": "feedback", "product_id": top, "action": "dislike"})
        await client.ask_text("black hoodie")
    async with httpx.AsyncClient(base_url=memory_server.http_url, timeout=10) as http:
        plain = (await http.post("/v1/search", json={"text": "black hoodie"})).json()["products"]
        mine = (await http.post("/v1/search", json={"text": "black hoodie", "resume_token": token})).json()["products"]
        assert plain[0]["id"] == top and mine[0]["id"] != top  # the websocket's dislike applies over HTTP too
        gone = await http.post("/v1/search", json={"text": "black hoodie", "resume_token": "nope"})
        assert gone.status_code == 404 and "resume_token" in gone.json()["detail"]
    assert memory_server.memory.resume(token).shown()[0] == mine[0]["id"]
