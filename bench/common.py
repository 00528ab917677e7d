"""Helpers shared by the benchmarks: an in-process server on loopback, percentiles, result files."""

from __future__ import annotations

import json
import platform
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> bool:
    """Whether something accepts connections on loopback ``port`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class ThreadServer:
    """uvicorn serving ``app`` from a background thread on a free loopback port."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = free_port() if port is None else port
        from server.app import GracefulServer

        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", ws_max_size=2**20)
        # The server's own shutdown path: websockets get session.closing, replies in flight finish, close 1012.
        self.server = GracefulServer(config, app, grace_s=5.0)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server failed to start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def summary(values: list[float], ndigits: int = 1) -> dict[str, float]:
    return {"p50": round(pct(values, 50), ndigits), "p95": round(pct(values, 95), ndigits),
            "mean": round(float(np.mean(values)), ndigits) if values else float("nan"), "n": len(values)}


def machine() -> dict[str, Any]:
    import os

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


def shared_data_dir() -> Path:
    """Real data for tests and benchmarks, never copied into the project.

    ``$SHOPTALK_SHARED_DATA``, else ``shared/data`` beside the checkout. It holds ``luma-dev/`` (a real catalog with
    photos) and ``speech/`` (real speech clips); the tests and benchmarks that need them skip when they are absent.
    """
    import os

    env = os.environ.get("SHOPTALK_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"
