"""Who gets in and how much they may do: tokens, API keys, Origin, rate limits, audio pacing, graceful shutdown,
and faults (SIGTERM during a reply, kill -9 mid-turn). Fake speech engines; real server, sockets and SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from prometheus_client import REGISTRY

from bench.common import free_port
from server.app import create_app
from server.auth import AUDIENCE, Authority, load_secret, redact
from server.client import AuthRefused, TalkClient
from tests.fake_server import build
from tests.fakes import tone
from tests.test_realtime_protocol import still_alive

KEY = "merchant-key-for-tests-0123456789"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def secured(tmp_path: Path, live_server_factory: Any) -> Any:
    """A server with auth on, one merchant key, and tight limits to hit in tests."""
    state = build(tmp_path, auth="on", api_keys=[KEY], rate_limit_http="20/minute", rate_limit_turns="3/minute",
                  allowed_origins=["https://shop.example"])
    server = live_server_factory(create_app(state=state))
    server.state = state
    return server


def authority(server: Any) -> Authority:
    return server.state.gate.authority  # type: ignore[no-any-return]


def shopper_token(server: Any, user: str | None = None) -> str:
    return authority(server).mint(f"user:{user}" if user else "anon:test", user_id=user).token


async def first_event(url: str, **connect: Any) -> tuple[dict[str, Any], int | None]:
    """The first event of a new connection, and the code the server then closes it with (None: it stays open)."""
    async with websockets.connect(url, **connect) as ws:
        event = json.loads(await ws.recv())
        if event.get("type") == "session.created":
            return event, None
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        return event, ws.close_code


# --- authentication ----------------------------------------------------------------------------------------------
async def test_no_bad_or_expired_token_is_refused_on_the_websocket(secured: Any, tmp_path: Path) -> None:
    secret = load_secret(tmp_path, None)
    expired = jwt.encode({"sub": "anon:x", "aud": AUDIENCE, "iat": int(time.time()) - 900,
                          "exp": int(time.time()) - 300}, secret, algorithm="HS256")
    forged = jwt.encode({"sub": "anon:x", "aud": AUDIENCE, "iat": int(time.time()), "exp": int(time.time()) + 300},
                        b"not-the-secret-" * 4, algorithm="HS256")
    cases = {"none": (None, "auth_failed"), "garbage": ("garbage", "auth_failed"),
             "forged": (forged, "auth_failed"), "expired": (expired, "token_expired")}
    for name, (token, code) in cases.items():
        headers = {"Authorization": f"Bearer {token}"} if token else None
        if token is None:
            # A browser-style client that never authenticates is told within the timeout; here it sends junk first.
            async with websockets.connect(secured.ws_url) as ws:
                await ws.send(json.dumps({"type": "session.update", "session": {}}))
                event = json.loads(await ws.recv())
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                close = ws.close_code
        else:
            event, close = await first_event(secured.ws_url, additional_headers=headers)
        assert event["type"] == "error" and event["error"]["code"] == code, (name, event)
        assert close == 1008, (name, close)
    with pytest.raises(AuthRefused, match="auth_failed"):
        async with TalkClient(secured.ws_url, token="garbage"):
            pass


async def test_a_valid_token_opens_a_session_by_header_or_first_message(secured: Any) -> None:
    async with TalkClient(secured.ws_url, token=shopper_token(secured)) as client:
        await still_alive(client)
    async with websockets.connect(secured.ws_url) as ws:  # a browser: the token is the first message
        await ws.send(json.dumps({"type": "session.authenticate", "token": shopper_token(secured)}))
        assert json.loads(await ws.recv())["type"] == "session.created"


async def test_http_needs_a_token_and_admin_needs_the_merchant_key(secured: Any) -> None:
    shopper = {"Authorization": f"Bearer {shopper_token(secured)}"}
    merchant = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=secured.http_url) as http:
        refused = await http.post("/v1/search", json={"text": "black hoodie"})
        assert refused.status_code == 401 and refused.json()["detail"]["code"] == "auth_failed"
        assert refused.headers["www-authenticate"] == "Bearer"
        assert (await http.post("/v1/search", json={"text": "black hoodie"}, headers=shopper)).status_code == 200
        assert (await http.get("/v1/catalog", headers=shopper)).status_code == 403
        assert (await http.get("/v1/catalog")).status_code == 401
        assert (await http.post("/v1/tokens", json={}, headers=shopper)).status_code == 403
        minted = await http.post("/v1/tokens", json={"user_id": "ana"}, headers=merchant)
        assert minted.status_code == 201 and minted.json()["expires_at"] > time.time()
        claims = jwt.decode(minted.json()["token"], options={"verify_signature": False})
        assert claims["uid"] == "ana" and claims["exp"] - claims["iat"] <= 600
        # Public catalog data needs nothing: product pages and photos load in <img> tags.
        assert (await http.get("/healthz")).status_code == 200


async def test_a_users_data_is_theirs(secured: Any) -> None:
    ana = {"Authorization": f"Bearer {shopper_token(secured, 'ana')}"}
    body = {"friends": [{"id": "ben", "name": "Ben"}]}
    async with httpx.AsyncClient(base_url=secured.http_url) as http:
        assert (await http.put("/v1/users/ana/friends", json=body, headers=ana)).status_code == 200
        other = await http.put("/v1/users/ben/friends", json=body, headers=ana)
        assert other.status_code == 403 and other.json()["detail"]["code"] == "forbidden"
        assert (await http.get("/v1/users/ben/friends", headers=ana)).status_code == 403
        merchant = {"Authorization": f"Bearer {KEY}"}
        assert (await http.get("/v1/users/ben/friends", headers=merchant)).status_code == 200


async def test_sessions_are_isolated(secured: Any) -> None:
    async with TalkClient(secured.ws_url, token=shopper_token(secured, "ana")) as ana:
        await ana.ask_text("black hoodie", timeout=20)
        ana_resume = ana.session["resume_token"]
    async with TalkClient(secured.ws_url, token=shopper_token(secured, "ben")) as ben:
        # Ben cannot claim to be Ana, nor open Ana's session with her resume token.
        await ben.send({"type": "session.update", "session": {"user_id": "ana"}})
        assert (await ben.recv_event())["error"]["code"] == "auth_failed"
        await ben.send({"type": "session.update", "session": {"resume_token": ana_resume}})
        assert (await ben.recv_event())["error"]["code"] == "invalid_resume_token"
    async with TalkClient(secured.ws_url, token=shopper_token(secured, "ana")) as again:
        await again.send({"type": "session.update", "session": {"resume_token": ana_resume}})
        assert (await again.recv_event())["type"] == "session.updated"


async def test_tokens_never_reach_the_logs(secured: Any, caplog: pytest.LogCaptureFixture) -> None:
    token = shopper_token(secured)
    caplog.set_level(logging.DEBUG)
    async with TalkClient(secured.ws_url, token=token) as client:
        await client.ask_text("black hoodie", timeout=20)
    with pytest.raises(AuthRefused):
        async with TalkClient(secured.ws_url, token=token + "x"):
            pass
    async with httpx.AsyncClient(base_url=secured.http_url) as http:
        await http.post("/v1/search", json={"text": "hoodie"}, headers={"Authorization": f"Bearer {token}x"})
    server_side = [r for r in caplog.records if not r.name.startswith(("websockets.client", "httpx", "httpcore"))]
    assert server_side
    leaked = [f"{r.name}: {r.getMessage()}" for r in server_side if token in r.getMessage()]
    assert not leaked, leaked[:3]
    # And the filter `shoptalk serve` installs scrubs them from anything that does log them.
    assert token not in redact(f"GET / Authorization: Bearer {token} and {token}")
    assert redact(f"Bearer {KEY}") == "Bearer [redacted]"


# --- Origin --------------------------------------------------------------------------------------------------------
async def test_foreign_origins_are_refused(secured: Any) -> None:
    token = {"Authorization": f"Bearer {shopper_token(secured)}"}
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(secured.ws_url, origin="https://evil.example", additional_headers=token):
            pass
    assert refused.value.response.status_code == 403
    for origin in (f"http://127.0.0.1:{secured.port}", "https://shop.example"):  # our own page, an allowed one
        async with websockets.connect(secured.ws_url, origin=origin, additional_headers=token) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
    async with httpx.AsyncClient(base_url=secured.http_url) as http:
        foreign = await http.post("/v1/search", json={"text": "x"}, headers={**token, "Origin": "https://evil.example"})
        assert foreign.status_code == 403 and foreign.json()["detail"]["code"] == "origin_not_allowed"
        page = await http.post("/v1/tokens/page", headers={"Origin": f"http://127.0.0.1:{secured.port}"})
        assert page.status_code == 200 and page.json()["required"] is True
        async with websockets.connect(secured.ws_url) as ws:
            await ws.send(json.dumps({"type": "session.authenticate", "token": page.json()["token"]}))
            assert json.loads(await ws.recv())["type"] == "session.created"
        assert (await http.post("/v1/tokens/page")).status_code == 403  # not a browser on our page


# --- limits ----------------------------------------------------------------------------------------------------------
async def test_http_rate_limit_answers_429_with_retry_after(secured: Any) -> None:
    headers = {"Authorization": f"Bearer {shopper_token(secured)}"}
    async with httpx.AsyncClient(base_url=secured.http_url) as http:
        codes = [(await http.post("/v1/search", json={"text": "hoodie"}, headers=headers)).status_code
                 for _ in range(22)]
        assert codes[:20] == [200] * 20 and codes[20:] == [429, 429]
        limited = await http.post("/v1/search", json={"text": "hoodie"}, headers=headers)
        assert limited.json()["detail"]["code"] == "rate_limited" and int(limited.headers["retry-after"]) >= 1
        # Another client is counted on its own.
        other = {"Authorization": f"Bearer {shopper_token(secured, 'ana')}"}
        assert (await http.post("/v1/search", json={"text": "hoodie"}, headers=other)).status_code == 200


async def test_turn_rate_limit_is_a_coded_error_and_the_session_goes_on(secured: Any) -> None:
    async with TalkClient(secured.ws_url, token=shopper_token(secured)) as client:
        for _ in range(3):
            assert (await client.ask_text("black hoodie", timeout=20)).status == "completed"
        result = await client.ask_text("black hoodie", timeout=20)
        assert [e["code"] for e in result.errors] == ["rate_limited"]
        await client.send({"type": "keepalive"})
        assert (await client.recv_event())["type"] == "keepalive"


async def test_audio_faster_than_real_time_is_refused(tmp_path: Path, live_server_factory: Any) -> None:
    server = live_server_factory(create_app(state=build(tmp_path)))
    async with TalkClient(server.ws_url) as client:
        await client.update(turn_detection=None)
        # 40 s of audio at once: the 20 s burst goes through, then frames are refused as too fast.
        await client.stream_audio(tone(40.0), realtime=False, frame_ms=100)
        while (event := await client.recv_event(timeout=10))["type"] != "error":
            pass
        assert event["error"]["code"] == "audio_too_fast"
        # Told once (not once per dropped frame), and the session goes on.
        await client.send({"type": "input_audio_buffer.clear"})
        while (event := await client.recv_event(timeout=10))["type"] != "input_audio_buffer.cleared":
            assert event["type"] != "error", event
        await still_alive(client)


# --- shutdown and faults ---------------------------------------------------------------------------------------------
async def test_graceful_shutdown_finishes_the_reply_then_closes_1012(tmp_path: Path) -> None:
    from tests.conftest import LiveServer

    live = LiveServer(create_app(state=build(tmp_path, tts_delay=0.4))).__enter__()
    try:
        async with TalkClient(live.ws_url) as client:
            await client.send({"type": "conversation.item.create",
                               "item": {"content": [{"type": "input_text", "text": "black hoodie"}]}})
            await client.send({"type": "response.create"})
            while (await client.recv_event())["type"] != "response.created":
                pass
            stopping = asyncio.get_running_loop().run_in_executor(None, live.__exit__, None, None, None)
            seen = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    seen.append(await client.recv_event(timeout=20))
            await stopping
        types = [e["type"] for e in seen]
        assert "session.closing" in types and types.index("session.closing") < types.index("response.done")
        assert seen[types.index("response.done")]["response"]["status"] == "completed"
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    finally:
        live.__exit__(None, None, None)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "tests.fake_server", "--port", str(port),
                                 "--data-dir", str(tmp_path / "data"), *args], cwd=ROOT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        procs.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("fake server did not start")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_sigterm_during_a_reply_finishes_it_and_closes_1012(spawn: Any) -> None:
    port = free_port()
    proc = spawn(port, "--tts-delay", "0.4")
    async with TalkClient(f"ws://127.0.0.1:{port}/v1/realtime") as client:
        await client.send({"type": "conversation.item.create",
                           "item": {"content": [{"type": "input_text", "text": "black hoodie"}]}})
        await client.send({"type": "response.create"})
        while (await client.recv_event())["type"] != "response.created":
            pass
        proc.send_signal(signal.SIGTERM)
        seen = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                seen.append(await client.recv_event(timeout=20))
    types = [e["type"] for e in seen]
    closing = types.index("session.closing")
    assert seen[closing]["reconnect_after_ms"] > 0 and closing < types.index("response.done"), types
    assert seen[types.index("response.done")]["response"]["status"] == "completed"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    # uvicorn re-raises the signal once shut down, so the exit status says "terminated by SIGTERM", cleanly.
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)


async def test_kill_9_mid_turn_loses_nothing_committed(spawn: Any, tmp_path: Path) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/v1/realtime"
    proc = spawn(port, "--tts-delay", "0.5")
    async with TalkClient(url) as client:
        token = client.session["resume_token"]
        first = await client.ask_text("black hoodie", timeout=30)
        assert first.status == "completed" and first.products
        await client.send({"type": "feedback", "product_id": first.products[0]["id"], "action": "like"})
        await client.send({"type": "keepalive"})
        while (await client.recv_event())["type"] != "keepalive":
            pass
        await client.send({"type": "conversation.item.create",
                           "item": {"content": [{"type": "input_text", "text": "red dress"}]}})
        await client.send({"type": "response.create"})
        while (await client.recv_event())["type"] != "response.created":
            pass
        proc.kill()  # SIGKILL mid-reply: no shutdown code runs
        proc.wait()
    spawn(port)
    async with TalkClient(url) as client:
        await client.send({"type": "session.update", "session": {"resume_token": token}})
        assert (await client.recv_event())["type"] == "session.updated"
        # The finished turn and the like survived; "the first one" still means what was on screen.
        result = await client.ask_text("tell me more about the first one", timeout=30)
        assert result.status == "completed" and not result.errors, result.events
        assert first.products[0]["title"].split(" — ")[0] in result.reply, (first.products[0], result.reply)
    from assistant.memory.store import SQLiteMemory

    store = SQLiteMemory(tmp_path / "data" / "memory.sqlite")
    try:
        store.export_feedback(tmp_path / "feedback.jsonl")
    finally:
        store.close()
    rows = [json.loads(line) for line in (tmp_path / "feedback.jsonl").read_text().splitlines()]
    assert {"product_id": first.products[0]["id"], "kind": "like"}.items() <= rows[0].items(), rows


async def test_session_cap_and_a_client_that_never_reads(tmp_path: Path, live_server_factory: Any) -> None:
    state = build(tmp_path, max_sessions=2, outbound_queue=8, rate_limit_turns="10000/minute",
                  rate_limit_events="10000/second")
    app = create_app(state=state)
    server = live_server_factory(app)
    async with TalkClient(server.ws_url), TalkClient(server.ws_url):
        event, close = await first_event(server.ws_url)
        assert event["error"]["code"] == "server_busy" and close == 1013
    # A client that asks and asks but never reads: the server stops buffering for it and closes it (1008).
    slow_before = REGISTRY.get_sample_value("shoptalk_errors_total", {"code": "slow_consumer"}) or 0.0
    # (Uncompressed, and a small receive buffer, so that the socket fills up as it would on a real network.)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    async with websockets.connect(server.ws_url, sock=sock, max_queue=1, max_size=2**20, compression=None) as hog:
        await hog.recv()  # session.created; from here on it reads nothing
        hog.transport.pause_reading()
        turn = [json.dumps({"type": "conversation.item.create",
                            "item": {"content": [{"type": "input_text", "text": "black hoodie"}]}}),
                json.dumps({"type": "response.create"})]
        deadline = time.monotonic() + 60
        with contextlib.suppress(websockets.ConnectionClosed):
            while time.monotonic() < deadline and app.state.live.connections:
                for message in turn:
                    await hog.send(message)
                await asyncio.sleep(0.01)
        assert not app.state.live.connections, "the server kept a client that never reads"
    assert (REGISTRY.get_sample_value("shoptalk_errors_total", {"code": "slow_consumer"}) or 0.0) > slow_before
    # Everyone else is served as before.
    async with TalkClient(server.ws_url) as client:
        await still_alive(client)
