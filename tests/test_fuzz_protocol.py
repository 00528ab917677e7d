"""Fuzzing the realtime wire protocol (PROTOCOL.md) with hypothesis.

a. Text frames -- random text, random JSON, events from the protocol's vocabulary with random or mutated fields,
   huge and deeply nested frames -- through ``server.protocol.parse_client_event`` + ``validate`` and, for a share of
   them, the websocket handler's own dispatch (``RealtimeConnection._handle``, fake engines, no socket): 10,000
   cases in all.  The only exception allowed is an ``AssistantError`` with a code and a message, and every frame
   that is certainly bad must get one.
b. Binary audio frames (empty, odd lengths, oversize, random bytes, every input rate, server VAD and push-to-talk)
   through ``assistant.runtime.voice.VoiceInput``: coded errors only, and the buffer never holds more than the caps allow.
c. A hypothesis state machine over a real websocket (uvicorn on loopback, fake engines): random orders of every
   client event, valid and not.  The server never closes the connection, every error event carries a code and a
   message, a final typed turn still gets its ``response.done``, and a fresh connection is served afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from PIL import Image
from pydantic import BaseModel
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from assistant.catalog.view import CatalogView
from assistant.core.errors import AssistantError, InvalidInputError
from assistant.core.frames import ErrorFrame, Frame, Transcript
from assistant.runtime.session import Engines
from assistant.runtime.turn import Brain
from assistant.runtime.uploads import ImageStore
from assistant.runtime.voice import MAX_FRAME_BYTES, SUPPORTED_RATES, VoiceInput, VoiceOptions
from server.app import create_app
from server.engines import App
from server.protocol import (
    MAX_INPUT_TEXT_CHARS,
    MAX_TEXT_FRAME_BYTES,
    AudioAppend,
    ClientEvent,
    Feedback,
    ItemCreate,
    SessionUpdate,
    parse_client_event,
    validate,
)
from server.realtime import RealtimeConnection
from server.settings import Settings
from speech.audio import float32_to_pcm16
from speech.vad import SileroVAD
from tests.fakes import ColourPhotoSearcher, EnergyVAD, FakeSTT, FakeTTS, KeywordSearcher, silence, tone

FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, print_blob=True)


def fuzz(n: int) -> settings:
    return settings(FUZZ, max_examples=n)


MODELS: dict[str, type[BaseModel]] = {
    ClientEvent.SESSION_UPDATE: SessionUpdate,
    ClientEvent.AUDIO_APPEND: AudioAppend,
    ClientEvent.ITEM_CREATE: ItemCreate,
    ClientEvent.FEEDBACK: Feedback,
}
VOICE_CODES = {"frame_too_large", "unsupported_audio_format", "buffer_overflow"}


# Rate limits far above what a fuzzer sends, so it exercises the handlers rather than the limiter.
NO_LIMITS: dict[str, Any] = {"rate_limit_http": "1000000/minute", "rate_limit_uploads": "1000000/minute",
                             "rate_limit_turns": "1000000/minute", "rate_limit_events": "1000000/second",
                             "rate_limit_connections": "1000000/minute"}


def make_state(tmp_path: Path) -> App:
    stt, tts, searcher = FakeSTT(), FakeTTS(), KeywordSearcher()
    images = ImageStore(tmp_path / "uploads")
    engines = Engines(stt=stt, brain=Brain(searcher, tts, images=images, photos=ColourPhotoSearcher(searcher)),
                      vad_factory=EnergyVAD)  # type: ignore[arg-type]
    return App(settings=Settings(data_dir=tmp_path, copy_llm=False, **NO_LIMITS), engines=engines, view=CatalogView(searcher.catalog),
               searcher=searcher, tts=tts, images=images)


def assert_coded(err: BaseException) -> None:
    assert isinstance(err, AssistantError), f"uncoded {type(err).__name__}: {err}"
    assert isinstance(err.code, str) and err.code, err
    assert isinstance(err.message, str) and err.message, err


def check_frame(raw: str | bytes) -> tuple[str, Any] | None:
    """parse + validate one text frame as the server does; (kind, model) or None when it was refused (coded)."""
    try:
        kind, data, _ = parse_client_event(raw)
        assert kind in set(ClientEvent)
        model = MODELS.get(kind)
        return kind, validate(model, data) if model is not None else data
    except Exception as err:  # noqa: BLE001 - the assertion is that it is coded
        assert_coded(err)
        return None


def expect_refused(raw: str | bytes, code: str = "invalid_event") -> None:
    with pytest.raises(InvalidInputError) as info:
        kind, data, _ = parse_client_event(raw)
        model = MODELS.get(kind)
        if model is not None:
            validate(model, data)
    assert info.value.code == code and info.value.message


# --- strategies --------------------------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
weird = json_values | st.sampled_from([-1, 0, 2**63, -(2**70), 1e308, "", " ", "\x00", "\ud800", [], {}, "0" * 300])


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid value, sometimes anything at all."""
    return st.one_of(valid, valid, valid, weird)


rates = maybe(st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000, 12345, 0, -16000, 192001]))
session_config = st.fixed_dictionaries({}, optional={
    "input_audio": maybe(st.fixed_dictionaries({"rate": rates})),
    "output_audio": maybe(st.fixed_dictionaries({}, optional={"rate": rates, "transport": maybe(
        st.sampled_from(["binary", "json", "carrier-pigeon"]))})),
    "turn_detection": maybe(st.none() | st.fixed_dictionaries({}, optional={
        "type": maybe(st.just("server_vad")), "silence_duration_ms": maybe(st.integers(0, 6000)),
        "threshold": maybe(st.floats(0, 1)), "prefix_padding_ms": maybe(st.integers(-10, 3000))})),
    "modalities": maybe(st.lists(st.sampled_from(["text", "audio", "video"]), max_size=3)),
    "language": maybe(st.sampled_from(["en", "de", "xx"])),
    "user_id": maybe(st.text(string.ascii_lowercase, min_size=1, max_size=140)),
    "resume_token": maybe(st.text(max_size=300)),
})
content_part = st.fixed_dictionaries({"type": maybe(st.sampled_from(["input_text", "input_image", "output_text"]))},
                                     optional={"text": maybe(st.sampled_from(["black hoodie", "", "  ", "x" * 2001])
                                                             | st.text(max_size=40)),
                                               "image_id": maybe(st.sampled_from(["img_" + "0" * 32, "../etc"]))})
item = st.fixed_dictionaries({"content": maybe(st.lists(content_part, max_size=10))},
                             optional={"role": maybe(st.sampled_from(["user", "assistant", "system"])),
                                       "type": maybe(st.just("message"))})
b64_audio = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()) | st.sampled_from(
    ["!!notbase64!!", "AAA", "QUJD\n", ""])
event_fields = {
    "session.update": {"session": maybe(session_config)},
    "input_audio_buffer.append": {"audio": maybe(b64_audio)},
    "input_audio_buffer.commit": {},
    "input_audio_buffer.clear": {},
    "conversation.item.create": {"item": maybe(item)},
    "response.create": {},
    "response.cancel": {},
    "feedback": {"product_id": maybe(st.sampled_from(["p1", "p4", "nope", ""]) | st.text(max_size=130)),
                 "action": maybe(st.sampled_from(["click", "add_to_cart", "purchase", "dislike", "like", "steal"]))},
    "keepalive": {},
}


@st.composite
def vocabulary_events(draw: st.DrawFn) -> dict[str, Any]:
    """An event of the protocol's vocabulary: fields present or dropped, valid or mutated, extra keys, odd type."""
    kind = draw(st.sampled_from(sorted(event_fields)))
    out: dict[str, Any] = {"type": kind}
    for name, strategy in event_fields[kind].items():
        if draw(st.integers(0, 9)) > 0:  # a required field is sometimes missing
            out[name] = draw(strategy)
    if draw(st.booleans()):
        out["event_id"] = draw(maybe(st.text(max_size=12)))
    if draw(st.integers(0, 4)) == 0:
        out[draw(st.text(max_size=6))] = draw(json_values)  # unknown extra keys are ignored
    if draw(st.integers(0, 9)) == 0:
        out["type"] = draw(st.sampled_from([kind.upper(), kind + " ", kind.replace(".", "_"), 7, None, [kind]]))
    return out


def dumps(value: Any, *, ascii_only: bool = False) -> str:
    return json.dumps(value, allow_nan=True, ensure_ascii=ascii_only)


def wire(value: Any) -> str:
    """JSON for a websocket text frame (valid UTF-8: lone surrogates travel as \\u escapes)."""
    return dumps(value, ascii_only=True)


# --- a. text frames: 10,000 cases --------------------------------------------------------------------------------


@fuzz(1500)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_random_text_frames(raw: str | bytes) -> None:
    result = check_frame(raw)
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        assert result is None, "non-JSON text must be refused"
        return
    if not isinstance(parsed, dict) or parsed.get("type") not in set(ClientEvent):
        assert result is None


@fuzz(1500)
@given(json_values)
def test_random_json_frames(value: Any) -> None:
    result = check_frame(dumps(value))
    if not isinstance(value, dict) or not isinstance(value.get("type"), str) or value["type"] not in set(ClientEvent):
        assert result is None
        expect_refused(dumps(value))


@fuzz(3500)
@given(vocabulary_events(), st.booleans())
def test_vocabulary_events(ev: dict[str, Any], as_bytes: bool) -> None:
    raw = dumps(ev)
    result = check_frame(raw.encode("utf-8", "surrogatepass") if as_bytes else raw)
    if result is None:
        return
    kind, model = result
    # What passed validation honours the documented limits.
    if kind == ClientEvent.ITEM_CREATE:
        assert 1 <= len(model.item.content) <= 8
        assert all(p.text is None or len(p.text) <= MAX_INPUT_TEXT_CHARS for p in model.item.content)
    elif kind == ClientEvent.FEEDBACK:
        assert model.action in ("click", "add_to_cart", "purchase", "dislike", "like") and model.product_id
    elif kind == ClientEvent.SESSION_UPDATE and model.session.input_audio is not None:
        assert 0 < model.session.input_audio.rate <= 192000


@pytest.mark.parametrize("raw", [
    "[" * 100_000, '{"a":' * 40_000, '{"type": "keepalive", "x": ' + "[" * 50_000 + "]" * 50_000 + "}",
    '{"type": "feedback", "product_id": "p1", "action": "steal"}',
    '{"type": "conversation.item.create", "item": {"content": []}}',
    '{"type": "session.update", "session": "x"}', '{"type": "input_audio_buffer.append", "audio": 7}',
    '{"type": "session.update", "session": {"input_audio": {"rate": 1e999}}}', "1" * 5000, "\ud800",
], ids=lambda raw: f"{len(raw)}:{raw[:12]}")
def test_known_bad_frames_are_coded(raw: str) -> None:
    expect_refused(raw)


@fuzz(500)
@given(st.integers(1, 3 * MAX_TEXT_FRAME_BYTES), st.sampled_from(["x", "{", "[", '{"type":"keepalive","p":"']),
       st.booleans())
def test_huge_and_nested_frames(size: int, unit: str, as_bytes: bool) -> None:
    raw: str | bytes = unit * size
    if as_bytes:
        raw = raw.encode()
    result = check_frame(raw)
    assert result is None  # none of these is a complete event
    if size > MAX_TEXT_FRAME_BYTES:
        expect_refused(raw, "frame_too_large")


class _FakeSocket:
    """What ``RealtimeConnection`` needs of a websocket when its handler is driven directly."""

    closed: tuple[int, str] | None = None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)


@pytest.fixture(scope="module")
def handler_state(tmp_path_factory: pytest.TempPathFactory) -> App:
    state = make_state(tmp_path_factory.mktemp("handler"))
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 10, 10)).save(buf, "PNG")
    state.known_image = state.images.put(buf.getvalue())  # type: ignore[attr-defined]
    return state


@fuzz(3000)
@given(st.lists(vocabulary_events(), min_size=1, max_size=4), st.booleans())
def test_events_through_the_session_handler(handler_state: App, events: list[dict[str, Any]], known: bool) -> None:
    """The websocket handler's dispatch (session, voice, dialogue) with fake engines: coded errors only."""
    for ev in events:  # point some image ids at a stored photo
        content = ev["item"].get("content") if isinstance(ev.get("item"), dict) else None
        for part in content if isinstance(content, list) else []:
            if known and isinstance(part, dict) and "image_id" in part:
                part["image_id"] = handler_state.known_image  # type: ignore[attr-defined]

    async def drive() -> None:
        ws = _FakeSocket()
        conn = RealtimeConnection(ws, handler_state.engines, output_rate=24000)  # type: ignore[arg-type]
        try:
            for ev in events:
                try:
                    kind, data, event_id = parse_client_event(dumps(ev))
                    await conn._handle(kind, data, event_id)
                except Exception as err:  # noqa: BLE001
                    assert_coded(err)
            await asyncio.sleep(0)
        finally:
            await conn.session.close()
        assert ws.closed is None, ws.closed
        while not conn.outbound.empty():
            message = conn.outbound.get_nowait()
            if isinstance(message, dict) and message["type"] == "error":
                assert message["error"]["code"] and message["error"]["message"], message

    asyncio.run(drive())


# --- b. binary audio frames --------------------------------------------------------------------------------------

frames = st.one_of(
    st.binary(max_size=4000),  # random bytes, odd and even lengths
    st.just(b""),
    st.integers(MAX_FRAME_BYTES // 2 - 8, MAX_FRAME_BYTES // 2 + 8).map(lambda n: b"\x01\x00" * n),  # around the cap
    st.integers(MAX_FRAME_BYTES + 1, 4 * MAX_FRAME_BYTES).map(lambda n: b"\x00" * n),  # oversize
    st.floats(0.02, 0.3).map(lambda s: float32_to_pcm16(tone(s))),  # speech-like
    st.floats(0.02, 0.6).map(lambda s: float32_to_pcm16(silence(s))),
)


@fuzz(200)
@given(st.lists(frames, min_size=1, max_size=25), st.sampled_from(SUPPORTED_RATES), st.booleans(),
       st.lists(st.sampled_from(["commit", "clear", None, None, None]), min_size=25, max_size=25))
def test_binary_audio_frames(chunks: list[bytes], rate: int, server_vad: bool, actions: list[str | None]) -> None:
    limit = 1 * 16000  # a 1 s utterance cap so the overflow path is reached with small inputs
    keep = int(0.3 * 16000) + SileroVAD.FRAME_SAMPLES * 8 + 16000  # prefix padding, VAD frames, resampler slack
    emitted: list[Frame] = []

    async def emit(frame: Frame) -> None:
        emitted.append(frame)

    async def on_final(t: Transcript) -> None:
        emitted.append(t)

    async def drive() -> None:
        voice = VoiceInput(FakeSTT(), EnergyVAD, VoiceOptions(input_rate=rate, server_vad=server_vad,  # type: ignore
                                                              max_utterance_s=1), emit, on_final)
        try:
            for chunk, action in zip(chunks, actions, strict=False):
                try:
                    await voice.append(chunk)
                except Exception as err:  # noqa: BLE001
                    assert_coded(err)
                    assert err.code in VOICE_CODES, err  # type: ignore[attr-defined]
                    if len(chunk) > MAX_FRAME_BYTES:
                        assert err.code == "frame_too_large"  # type: ignore[attr-defined]
                    elif len(chunk) % 2:
                        assert err.code == "unsupported_audio_format"  # type: ignore[attr-defined]
                else:
                    assert len(chunk) <= MAX_FRAME_BYTES and len(chunk) % 2 == 0
                assert voice._utterance_samples() <= limit
                assert voice._buffered <= limit + keep, (voice._buffered, limit + keep)
                try:
                    if action == "commit":
                        await voice.commit()
                    elif action == "clear":
                        voice.clear()
                except Exception as err:  # noqa: BLE001
                    assert_coded(err)
                    assert err.code == "empty_buffer"  # type: ignore[attr-defined]
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            await voice.close()
        for frame in emitted:
            if isinstance(frame, ErrorFrame):
                assert frame.code and frame.message

    asyncio.run(drive())


def test_speech_starting_inside_a_frame_counts_its_prefix_padding() -> None:
    """The case the fuzzer found: an utterance opened inside a frame reaches back into the audio before it."""
    from speech.audio import float32_to_pcm16

    errors: list[str] = []

    async def ignore(_: Frame) -> None:
        pass

    async def drive() -> VoiceInput:
        voice = VoiceInput(FakeSTT(), EnergyVAD, VoiceOptions(input_rate=16000, server_vad=True,  # type: ignore[arg-type]
                                                              max_utterance_s=1), ignore, ignore)
        await voice.append(float32_to_pcm16(silence(0.5)))  # kept as the next utterance's prefix padding
        try:
            await voice.append(float32_to_pcm16(tone(0.95)))  # under 1 s itself; with its padding over
        except InvalidInputError as err:
            errors.append(err.code)
        assert voice._utterance_samples() <= 16000
        await voice.append(float32_to_pcm16(silence(0.1)))  # and the session goes on
        return voice

    asyncio.run(drive())
    assert errors == ["buffer_overflow"]


# --- c. a state machine over a real websocket --------------------------------------------------------------------

RUN = {"steps": 0, "final_turns": 0}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.conftest import LiveServer

    state = make_state(tmp_path_factory.mktemp("live"))
    with LiveServer(create_app(state=state)) as server:
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (10, 10, 10)).save(buf, "JPEG")
        res = httpx.post(server.http_url + "/v1/images", files={"file": ("a.jpg", buf.getvalue())}, timeout=30)
        assert res.status_code == 201, res.text
        server.image_id = res.json()["image_id"]
        yield server


class RealtimeMachine(RuleBasedStateMachine):
    """Random client behaviour on one connection; after each step a keepalive round trip syncs with the server."""

    def __init__(self, server: Any) -> None:
        super().__init__()
        self.server = server
        self.ws: Any = None
        self.events: list[dict[str, Any]] = []

    @initialize()
    def open(self) -> None:
        self.ws = connect(self.server.ws_url, max_size=2**22, open_timeout=20)
        created = json.loads(self.ws.recv(timeout=20))
        assert created["type"] == "session.created"

    def _recv(self, timeout: float) -> dict[str, Any] | None:
        """One JSON event (binary audio skipped); fails if the server closed the connection."""
        while True:
            try:
                message = self.ws.recv(timeout=timeout)
            except ConnectionClosed as closed:
                rcvd = closed.rcvd
                raise AssertionError(f"server closed the connection: {rcvd}") from closed
            if isinstance(message, bytes):
                continue
            ev = json.loads(message)
            self.events.append(ev)
            if ev["type"] == "error":
                err = ev["error"]
                assert isinstance(err.get("code"), str) and err["code"], ev
                assert isinstance(err.get("message"), str) and err["message"], ev
            return ev  # type: ignore[no-any-return]

    def _send(self, message: str | bytes) -> None:
        RUN["steps"] += 1
        try:
            self.ws.send(message)
        except ConnectionClosed as closed:
            raise AssertionError(f"server closed the connection: {closed.rcvd}") from closed
        self._send_json({"type": "keepalive", "event_id": "sync"}, sync=False)
        while (ev := self._recv(timeout=20)) is not None and ev["type"] != "keepalive":
            pass

    def _send_json(self, ev: dict[str, Any], *, sync: bool = True) -> None:
        if sync:
            self._send(wire(ev))
        else:
            self.ws.send(wire(ev))

    @rule(session=maybe(session_config))
    def session_update(self, session: Any) -> None:
        if isinstance(session, dict):
            session.pop("resume_token", None)  # no memory store here: every token is unknown (a coded error)
        self._send_json({"type": "session.update", "session": session})

    @rule(chunk=frames.filter(lambda b: len(b) <= 2 * MAX_FRAME_BYTES))
    def audio_frame(self, chunk: bytes) -> None:
        self._send(chunk)

    @rule(audio=maybe(b64_audio))
    def append_b64(self, audio: Any) -> None:
        self._send_json({"type": "input_audio_buffer.append", "audio": audio})

    @rule()
    def commit(self) -> None:
        self._send_json({"type": "input_audio_buffer.commit", "event_id": "c"})

    @rule()
    def clear(self) -> None:
        self._send_json({"type": "input_audio_buffer.clear"})

    @rule(text=st.sampled_from(["black hoodie", "red running shoes under 100", "", "the second one"])
          | st.text(max_size=30), image=st.sampled_from([None, "known", "img_" + "f" * 32, "bogus"]),
          garbage=st.none() | item)
    def item_create(self, text: str, image: str | None, garbage: Any) -> None:
        if garbage is not None:
            self._send_json({"type": "conversation.item.create", "item": garbage})
            return
        content: list[dict[str, str]] = [{"type": "input_text", "text": text}] if text else []
        if image is not None:
            content.append({"type": "input_image",
                            "image_id": self.server.image_id if image == "known" else image})
        self._send_json({"type": "conversation.item.create", "item": {"role": "user", "content": content}})

    @rule()
    def response_create(self) -> None:
        self._send_json({"type": "response.create"})

    @rule()
    def response_cancel(self) -> None:
        self._send_json({"type": "response.cancel"})

    @rule(product_id=st.sampled_from(["p1", "p3", "nope"]) | st.text(max_size=10),
          action=st.sampled_from(["click", "like", "dislike", "purchase", "add_to_cart", "teleport"]))
    def feedback(self, product_id: str, action: str) -> None:
        self._send_json({"type": "feedback", "product_id": product_id, "action": action})

    @rule()
    def keepalive(self) -> None:
        self._send_json({"type": "keepalive"})

    @rule(raw=st.text(max_size=60) | json_values.map(wire) | vocabulary_events().map(wire))
    def garbage(self, raw: str) -> None:
        self._send(raw)

    def teardown(self) -> None:
        if self.ws is None:
            return
        try:
            # A typed turn after whatever came before still gets its response.done.
            self.ws.send(wire({"type": "conversation.item.create",
                                "item": {"content": [{"type": "input_text", "text": "black hoodie"}]}}))
            self.ws.send(wire({"type": "response.create", "event_id": "final"}))
            mine: set[str] = set()
            statuses: dict[str, str] = {}
            seen = len(self.events)
            while True:
                ev = self._recv(timeout=30)
                assert ev is not None
                if ev["type"] == "response.created":
                    mine.add(ev["response"]["id"])
                elif ev["type"] == "response.done" and ev["response"]["id"] in mine:
                    statuses[ev["response"]["id"]] = ev["response"]["status"]
                    if ev["response"]["status"] == "completed":
                        RUN["final_turns"] += 1
                        break
                    assert ev["response"]["status"] == "cancelled", (ev, self.events[seen:][-10:])
                elif ev["type"] == "error" and ev.get("event_id") == "final":
                    raise AssertionError(f"the final turn was refused: {ev}")
                assert len(self.events) - seen < 2000, self.events[seen:][-20:]
        finally:
            with contextlib.suppress(Exception):
                self.ws.close()
        # The server keeps serving: a fresh connection is greeted and answers.
        with connect(self.server.ws_url, open_timeout=20) as fresh:
            assert json.loads(fresh.recv(timeout=20))["type"] == "session.created"
            fresh.send(wire({"type": "keepalive"}))
            assert json.loads(fresh.recv(timeout=20))["type"] == "keepalive"


def test_realtime_state_machine(live: Any) -> None:
    run_state_machine_as_test(
        lambda: RealtimeMachine(live),
        settings=settings(FUZZ, max_examples=50, stateful_step_count=15),
    )
    assert RUN["final_turns"] >= 50 and RUN["steps"] >= 200, RUN  # it really ran sequences over the socket


def test_a_lone_surrogate_in_an_event_id_does_not_silence_the_session(live: Any) -> None:
    """Found by the state machine: an event_id of "\\ud800" (valid JSON, not UTF-8) is echoed back; the writer
    used to fail on it and the session went silent. It answers, and the next turn is served."""
    machine = RealtimeMachine(live)
    machine.open()
    machine.garbage(raw='{"type": "input_audio_buffer.commit", "event_id": "\\ud800"}')
    assert any(ev.get("event_id") == "\ud800" for ev in machine.events if ev["type"] == "error")
    machine.teardown()


def test_an_unknown_event_type_names_the_valid_ones() -> None:
    with pytest.raises(AssistantError) as caught:
        parse_client_event(json.dumps({"type": "response.craete"}))
    message = str(caught.value)
    assert "'response.craete'" in message and "response.create, session.update" in message and "<" not in message
