"""Faults of the engines underneath: Redis restarted while sessions talk, Redis gone. Real redis-server, fake speech."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.common import free_port, wait_for_port
from server.app import create_app
from server.client import TalkClient
from tests.fake_server import build


class RedisProcess:
    """A redis-server with an append-only file (what a sessions store runs with), restartable on its port."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.exe, self.workdir, self.port = exe, workdir, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "--port", str(self.port), "--dir", str(self.workdir), "--save", "",
                                      "--appendonly", "yes", "--appendfsync", "always"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port):
            raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    pytest.importorskip("redis")
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_redis_restarted_under_load_loses_no_turn(redis_server: RedisProcess, tmp_path: Path,
                                                        live_server_factory: Any) -> None:
    state = build(tmp_path / "data", memory_url=redis_server.url, rate_limit_turns="1000/minute")
    server = live_server_factory(create_app(state=state))
    results: list[Any] = []
    tokens: list[str] = []

    async def shopper(query: str, seconds: float) -> None:
        async with TalkClient(server.ws_url) as client:
            tokens.append(client.session["resume_token"])
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                results.append(await client.ask_text(query, timeout=30))
                await asyncio.sleep(0.1)  # a shopper reads the answer

    async def restart_redis() -> None:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(redis_server.stop)
        await asyncio.sleep(0.3)  # Redis is gone for a moment while the sessions keep talking
        await asyncio.to_thread(redis_server.start)

    await asyncio.gather(shopper("black hoodie", 5), shopper("red dress", 5), shopper("blue jeans", 5),
                         restart_redis())
    assert len(results) >= 6
    errors = [e for r in results for e in r.errors]
    assert not errors, errors
    assert all(r.status == "completed" for r in results)
    # After the restart the sessions are still in Redis: the first shopper resumes with its results on screen.
    async with TalkClient(server.ws_url) as client:
        await client.send({"type": "session.update", "session": {"resume_token": tokens[0]}})
        assert (await client.recv_event())["type"] == "session.updated"
        again = await client.ask_text("tell me more about the first one", timeout=30)
        assert again.status == "completed" and not again.errors


async def test_redis_down_is_a_coded_error_and_the_server_goes_on(redis_server: RedisProcess, tmp_path: Path,
                                                                  live_server_factory: Any) -> None:
    server = live_server_factory(create_app(state=build(tmp_path / "data", memory_url=redis_server.url)))
    async with TalkClient(server.ws_url) as client:
        assert (await client.ask_text("black hoodie", timeout=30)).status == "completed"
        redis_server.stop()
        down = await client.ask_text("red dress", timeout=60)
        # The turn is refused with a coded error (its memory write failed after the retries); nothing crashed.
        assert [e["code"] for e in down.errors] == ["memory_unavailable"], down.events
        redis_server.start()
        back = await client.ask_text("red dress", timeout=30)
        assert back.status == "completed" and not back.errors, back.events
