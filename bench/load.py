"""Load: N concurrent spoken sessions against one server process on loopback (``shoptalk bench load``).

The server runs as its own process (``shoptalk serve``), as in production, so its memory can be watched: its RSS is
sampled every 0.5 s for the whole run, across all levels.  For each level N (default 1, 2, 4, 8, 16) N websocket
sessions run for ``seconds``; each one loops: stream a spoken shopping query at real-time pace with server VAD (the
client's trailing silence ends the turn), wait for ``response.done``, think 0.5-1.5 s (seeded), repeat.  Session
starts are staggered over the first 1.5 s.

Turn latency is the one ``bench voice`` measures: the last speech frame sent -> the first reply audio byte (so it
includes the VAD's silence wait), and also -> ``response.done``.  Errors are error events, turns that end without a
completed reply, disconnects and timeouts.  N = 1 is the baseline: every level reports p95(N) / p95(1).

Target (2 CPU cores): 8 sessions with first-audio p95 <= 1.5 s, no errors, flat memory.
Run: ``shoptalk bench load`` (results to bench/results/load.json).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import free_port, machine, pct, summary, write_results
from bench.voice_latency import QUERIES, speak_queries, word_error_rate
from server.settings import Settings

log = logging.getLogger(__name__)

ServerCommand = Callable[[int], list[str]]  # free port -> argv of a server listening on 127.0.0.1:port

LOAD_QUERIES = QUERIES[:8]
TARGET = {"n": 8, "p95_first_audio_ms": 1500.0, "errors": 0}
SAMPLE_EVERY_S = 0.5
TURN_TIMEOUT_S = 30.0


def flat_memory(start_mb: float, end_mb: float) -> bool:
    """A level's memory is flat when its RSS grew by at most max(20 MB, 5 %) from its start to its end."""
    return end_mb - start_mb <= max(20.0, 0.05 * start_mb)


FLAT_RULE = "RSS end - start of the level <= max(20 MB, 5 % of start)"


# ---------------------------------------------------------------------------------------------------- the server


def shoptalk_command(data_dir: Path) -> ServerCommand:
    """``shoptalk serve`` from this environment on the data dir (its prepared models), logging warnings only."""
    exe = Path(sys.executable).with_name("shoptalk")
    prefix = [str(exe)] if exe.exists() else [sys.executable, "-c", "from server.cli import app; app()"]
    return lambda port: [*prefix, "serve", "--data-dir", str(data_dir), "--port", str(port),
                         "--log-level", "warning"]


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` and its children, MB (psutil, else /proc VmRSS of the process alone)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20
    except ImportError:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
    except Exception:  # noqa: BLE001 - the process is gone
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far (from /proc, no psutil needed)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class RssSampler:
    """Samples a process's RSS every ``every`` seconds in a thread: ``(seconds since start, MB)``."""

    def __init__(self, pid: int, every: float = SAMPLE_EVERY_S, metrics_url: str | None = None) -> None:
        self.pid, self.every, self.metrics_url = pid, every, metrics_url
        self.t0 = time.perf_counter()
        self.samples: list[tuple[float, float]] = []
        self.lag_samples: list[tuple[float, float]] = []  # (seconds, the server's max event-loop lag lately, s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            mb = rss_mb(self.pid)
            if mb is not None:
                self.samples.append((time.perf_counter() - self.t0, mb))
            lag = server_loop_lag(self.metrics_url) if self.metrics_url else None
            if lag is not None:
                self.lag_samples.append((time.perf_counter() - self.t0, lag))
            self._stop.wait(self.every)

    def lag_max_ms(self, t_start: float, t_end: float) -> float | None:
        """The server's largest event-loop lag during ``[t_start, t_end]`` (None: the server does not export it)."""
        inside = [lag for t, lag in self.lag_samples if t_start <= t <= t_end]
        return round(1000 * max(inside), 1) if inside else None

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def window(self, t_start: float, t_end: float) -> dict[str, float]:
        """RSS at the start and end of ``[t_start, t_end]`` (nearest samples), its max, and its slope (MB/min)."""
        samples = list(self.samples)
        inside = [(t, mb) for t, mb in samples if t_start <= t <= t_end]
        before = [(t, mb) for t, mb in samples if t < t_start]
        if before:
            inside.insert(0, before[-1])
        if not inside:
            return {"start": float("nan"), "end": float("nan"), "max": float("nan"), "slope_mb_per_min": float("nan")}
        return {"start": round(inside[0][1], 1), "end": round(inside[-1][1], 1),
                "max": round(max(mb for _, mb in inside), 1), "slope_mb_per_min": slope(inside)}


def server_loop_lag(metrics_url: str) -> float | None:
    """``shoptalk_event_loop_lag_max_seconds`` from the server's ``/metrics`` (its largest loop lag of late)."""
    import urllib.request

    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as res:
            text = res.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("shoptalk_event_loop_lag_max_seconds "):
            return float(line.split()[1])
    return None


def slope(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of MB over time, in MB per minute."""
    if len(samples) < 2:
        return 0.0
    t = np.asarray([s[0] for s in samples])
    mb = np.asarray([s[1] for s in samples])
    if float(np.ptp(t)) == 0.0:
        return 0.0
    return round(float(np.polyfit(t, mb, 1)[0]) * 60, 2)


class ServerProcess:
    """The server as a child process on a free loopback port; ready once ``GET /healthz`` answers."""

    def __init__(self, command: ServerCommand, *, startup_timeout: float = 300.0) -> None:
        self.port = free_port()
        self.argv = command(self.port)
        self.startup_timeout = startup_timeout
        self.log = tempfile.NamedTemporaryFile(prefix="shoptalk-load-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None
        self.health: dict[str, Any] = {}
        self.startup_s = float("nan")

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServerProcess:
        env = dict(os.environ)
        env.pop("OMP_NUM_THREADS", None)  # the server runs with its own defaults
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        return self.wait_ready(t0)

    def wait_ready(self, t0: float) -> ServerProcess:
        assert self.proc is not None
        deadline = t0 + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}) before it was ready:\n{self.log_tail()}")
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready within {self.startup_timeout} s:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as res:
                    self.health = json.loads(res.read())
                    self.startup_s = time.perf_counter() - t0
                    return self
            except (OSError, ValueError):
                time.sleep(0.2)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- the clients


@dataclass
class Turn:
    session: int
    query: int
    first_audio_ms: float | None
    done_ms: float | None
    transcript: str
    status: str | None
    stages_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class LevelRun:
    turns: list[Turn] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    loop_lag_ms: list[float] = field(default_factory=list)


def _turn_from(result: Any, session: int, query: int) -> tuple[Turn, list[str]]:
    """Latencies of one finished turn, and what went wrong with it (error codes)."""
    end = result.speech_end_sent
    done_at = next((e["_t"] for e in result.events if e["type"] == "response.done"), None)
    first = 1000 * (result.first_audio_at - end) if end is not None and result.first_audio_at is not None else None
    done = 1000 * (done_at - end) if end is not None and done_at is not None else None
    problems = [f"error:{e.get('code', 'unknown')}" for e in result.errors]
    if not result.transcript and not result.errors:
        problems.append("no_transcript")
    elif result.status is not None and result.status != "completed":
        problems.append(f"response_{result.status}")
    elif result.status == "completed" and first is None:
        problems.append("no_audio")
    turn = Turn(session, query, round(first, 1) if first is not None else None,
                round(done, 1) if done is not None else None, result.transcript, result.status,
                _stages(result, end))
    return turn, problems


CLIENT_STAGES = {"input_audio_buffer.speech_stopped": "speech_stopped",
                 "conversation.item.input_audio_transcription.completed": "transcript",
                 "response.created": "response_created", "response.products": "products"}


def _stages(result: Any, end: float | None) -> dict[str, float]:
    """Where a turn's time went: client arrival of each milestone event after the end of speech (``client:*``),
    and the server's own ``response.done`` ``timings_ms`` (``server:*``)."""
    stages: dict[str, float] = {}
    for e in result.events:
        name = CLIENT_STAGES.get(e["type"])
        if name is not None and end is not None and f"client:{name}" not in stages:
            stages[f"client:{name}"] = round(1000 * (e["_t"] - end), 1)
        if e["type"] == "response.done":
            for key, value in (e.get("response", {}).get("timings_ms") or {}).items():
                if isinstance(value, int | float):
                    stages[f"server:{key}"] = float(value)
    return stages


async def _session(index: int, url: str, clips: list[np.ndarray], deadline: float, start_delay: float,
                   think_s: tuple[float, float], seed: int, run: LevelRun) -> None:
    import websockets

    from server.client import TalkClient

    rng = random.Random(seed * 1000 + index)
    await asyncio.sleep(start_delay)
    while time.perf_counter() < deadline:
        try:
            async with TalkClient(url) as client:
                while time.perf_counter() < deadline:
                    query = rng.randrange(len(clips))
                    result = await client.say(clips[query], realtime=True, timeout=TURN_TIMEOUT_S)
                    turn, problems = _turn_from(result, index, query)
                    if problems:
                        run.errors.update(problems)
                    if turn.first_audio_ms is not None and not problems:
                        run.turns.append(turn)
                    await asyncio.sleep(rng.uniform(*think_s))
        except TimeoutError:
            run.errors["timeout"] += 1
        except websockets.ConnectionClosed as exc:
            run.errors[f"disconnect:{exc.rcvd.code if exc.rcvd else 'none'}"] += 1
        except OSError as exc:
            run.errors[f"connect:{type(exc).__name__}"] += 1
        except Exception as exc:  # noqa: BLE001 - count anything else and carry on with a new session
            log.warning("session %d: %r", index, exc)
            run.errors[f"client:{type(exc).__name__}"] += 1
        if time.perf_counter() < deadline:
            await asyncio.sleep(1.0)  # reconnect after a failure


async def _loop_lag(run: LevelRun, stop: asyncio.Event, every: float = 0.1) -> None:
    """How late the client's own event loop wakes up: a busy client would inflate the latencies it measures."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(every)
        run.loop_lag_ms.append(1000 * (time.perf_counter() - t0 - every))


async def run_level(url: str, clips: list[np.ndarray], n: int, seconds: float, *, seed: int = 0,
                    think_s: tuple[float, float] = (0.5, 1.5), stagger_s: float = 1.5) -> LevelRun:
    run = LevelRun()
    deadline = time.perf_counter() + seconds
    stop = asyncio.Event()
    lag = asyncio.ensure_future(_loop_lag(run, stop))
    delays = [stagger_s * i / n for i in range(n)]
    await asyncio.gather(*(_session(i, url, clips, deadline, delays[i], think_s, seed, run) for i in range(n)))
    stop.set()
    await lag
    return run


# ---------------------------------------------------------------------------------------------------- the run


def spoken_queries(settings: Settings, texts: list[str]) -> list[np.ndarray]:
    """The queries spoken by the packaged voice at 16 kHz (bench/voice_latency.py), cached in the data dir."""
    key = hashlib.sha1("\n".join([settings.tts_model, *texts]).encode()).hexdigest()[:12]
    path = settings.cache_dir / "bench" / f"load-queries-{key}.npz"
    if path.exists():
        with np.load(path) as saved:
            return [saved[f"q{i}"] for i in range(len(texts))]
    clips = speak_queries(settings, texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {f"q{i}": c for i, c in enumerate(clips)}
    np.savez(path, **arrays)
    return clips


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run(clips: list[np.ndarray], server_command: ServerCommand, *, levels: Sequence[int] = (1, 2, 4, 8, 16),
        seconds: float = 30.0, texts: list[str] | None = None, seed: int = 0, warmup_turns: int = 2,
        think_s: tuple[float, float] = (0.5, 1.5), stagger_s: float = 1.5, settle_s: float = 2.0,
        notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start the server, warm it up, run every level against it while sampling its RSS; the results dict."""
    load_before = _loadavg()
    server = ServerProcess(server_command)
    rows: list[dict[str, Any]] = []
    try:
        server.start()
        log.info("server ready on port %d after %.1f s (pid %d)", server.port, server.startup_s, server.pid)
        with RssSampler(server.pid, metrics_url=f"http://127.0.0.1:{server.port}/metrics") as sampler:
            t_ready = sampler.now()
            if warmup_turns:
                warm = asyncio.run(_warmup(server.ws_url, clips, warmup_turns))
                log.info("warm-up: %s", warm)
            t_warm = sampler.now()
            for level_index, n in enumerate(levels):
                time.sleep(settle_s)
                cpu0, t0, wall0 = cpu_seconds(server.pid), sampler.now(), time.perf_counter()
                log.info("level n=%d for %.0f s", n, seconds)
                level = asyncio.run(run_level(server.ws_url, clips, n, seconds, seed=seed + level_index,
                                              think_s=think_s, stagger_s=stagger_s))
                cpu1, t1, wall = cpu_seconds(server.pid), sampler.now(), time.perf_counter() - wall0
                rows.append(_level_row(n, level, sampler.window(t0, t1), wall, cpu0, cpu1, clips, texts, t0, t1))
                rows[-1]["server_loop_lag_max_ms"] = sampler.lag_max_ms(t0, t1)
                log.info("n=%d: %s", n, {k: rows[-1][k] for k in ("turns", "first_audio_ms", "errors")})
                if server.proc is not None and server.proc.poll() is not None:
                    raise RuntimeError(f"server died during level n={n}:\n{server.log_tail()}")
            time.sleep(SAMPLE_EVERY_S * 2)
            samples = list(sampler.samples)
        exit_code = server.stop()
    finally:
        tail = server.log_tail()
        server.close()

    base = rows[0]["first_audio_ms"]["p95"] if rows and rows[0]["n"] == 1 else None
    base_done = rows[0]["done_ms"]["p95"] if rows and rows[0]["n"] == 1 else None
    for row in rows:
        row["p95_ratio_vs_n1"] = round(row["first_audio_ms"]["p95"] / base, 2) if base else None
        row["done_p95_ratio_vs_n1"] = round(row["done_ms"]["p95"] / base_done, 2) if base_done else None
    target_row = next((r for r in rows if r["n"] == TARGET["n"]), None)
    results: dict[str, Any] = {
        "benchmark": "load",
        "machine": {**machine(), "loadavg_before": load_before, "loadavg_after": _loadavg(), **(notes or {})},
        "server": {"command": [Path(a).name if i == 0 else a for i, a in enumerate(server.argv)],
                   "startup_s": round(server.startup_s, 1), "health": server.health, "exit_code": exit_code,
                   "log_tail": tail[-2000:] if exit_code not in (0, -signal.SIGTERM, None) else ""},
        "seconds_per_level": seconds,
        "think_s": list(think_s),
        "queries": texts if texts is not None else len(clips),
        "speech_ms": summary([1000 * len(c) / 16000 for c in clips]),
        "latency_definition": "last speech frame sent -> first reply audio byte (first_audio_ms) / response.done "
                              "(done_ms); server VAD, so it includes the VAD silence wait",
        "levels": rows,
        "rss_mb": {
            "every_s": SAMPLE_EVERY_S,
            "after_startup": round(_at(samples, t_ready), 1),
            "after_warmup": round(_at(samples, t_warm), 1),
            "end": round(samples[-1][1], 1) if samples else float("nan"),
            "max": round(max(mb for _, mb in samples), 1) if samples else float("nan"),
            "slope_mb_per_min_after_warmup": slope([s for s in samples if s[0] >= t_warm]),
            "samples": [[round(t, 1), round(mb, 1)] for t, mb in samples],
        },
        "flat_rule": FLAT_RULE,
        "targets": TARGET,
        "target_met": bool(target_row and target_row["target_met"]),
    }
    return results


def _at(samples: list[tuple[float, float]], t: float) -> float:
    before = [mb for ts, mb in samples if ts <= t]
    return before[-1] if before else (samples[0][1] if samples else float("nan"))


async def _warmup(url: str, clips: list[np.ndarray], turns: int) -> list[float | None]:
    from server.client import TalkClient

    out: list[float | None] = []
    async with TalkClient(url) as client:
        for i in range(turns):
            result = await client.say(clips[i % len(clips)], realtime=True, timeout=120)
            out.append(_turn_from(result, -1, i)[0].first_audio_ms)
    return out


def _level_row(n: int, level: LevelRun, rss: dict[str, float], wall: float, cpu0: float | None,
               cpu1: float | None, clips: list[np.ndarray], texts: list[str] | None, t0: float,
               t1: float) -> dict[str, Any]:
    first = [t.first_audio_ms for t in level.turns if t.first_audio_ms is not None]
    done = [t.done_ms for t in level.turns if t.done_ms is not None]
    errors = sum(level.errors.values())
    row: dict[str, Any] = {
        "n": n,
        "wall_s": round(wall, 1),
        "t_s": [round(t0, 1), round(t1, 1)],
        "turns": len(level.turns),
        "turns_per_min": round(60 * len(level.turns) / wall, 1) if wall > 0 else 0.0,
        "first_audio_ms": summary(first, 0) | {"max": round(max(first), 0) if first else float("nan")},
        "done_ms": summary(done, 0) | {"max": round(max(done), 0) if done else float("nan")},
        "stages_p50_ms": _stage_medians(level.turns),
        "errors": errors,
        "errors_by_kind": dict(sorted(level.errors.items())),
        "rss_mb": rss,
        "memory_flat": flat_memory(rss["start"], rss["end"]),
        "server_cpu_cores": round((cpu1 - cpu0) / wall, 2) if cpu0 is not None and cpu1 is not None else None,
        "client_loop_lag_ms": {"p95": round(pct(level.loop_lag_ms, 95), 1),
                               "max": round(max(level.loop_lag_ms), 1) if level.loop_lag_ms else float("nan")},
    }
    if texts is not None:
        wer = [word_error_rate(texts[t.query], t.transcript) for t in level.turns]
        row["word_error_rate"] = round(float(np.mean(wer)), 3) if wer else None
    row["target_met"] = bool(first) and row["first_audio_ms"]["p95"] <= TARGET["p95_first_audio_ms"] \
        and errors <= TARGET["errors"] and row["memory_flat"]
    return row


def _stage_medians(turns: list[Turn]) -> dict[str, float]:
    names = sorted({k for t in turns for k in t.stages_ms})
    return {k: round(pct([t.stages_ms[k] for t in turns if k in t.stages_ms], 50), 0) for k in names}


def table(results: dict[str, Any]) -> str:
    rows = ["| sessions | turns | first audio p50 / p95 ms | p95 / p95(N=1) | response.done p50 / p95 ms | errors "
            "| server RSS MB start → end (max) | server CPU cores | p95 ≤ 1.5 s, no errors, flat |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results["levels"]:
        fa, dn, rss = r["first_audio_ms"], r["done_ms"], r["rss_mb"]
        ratio = f"{r['p95_ratio_vs_n1']:.2f}" if r.get("p95_ratio_vs_n1") is not None else "–"
        errors = str(r["errors"]) + (f" ({', '.join(f'{k} {v}' for k, v in r['errors_by_kind'].items())})"
                                     if r["errors"] else "")
        rows.append(f"| {r['n']} | {r['turns']} | {fa['p50']:.0f} / {fa['p95']:.0f} | {ratio} "
                    f"| {dn['p50']:.0f} / {dn['p95']:.0f} | {errors} | {rss['start']:.0f} → {rss['end']:.0f} "
                    f"({rss['max']:.0f}) | {r['server_cpu_cores']} | {'yes' if r['target_met'] else 'no'} |")
    rows += ["", "| sessions | p50 ms after the end of speech: VAD speech_stopped | final transcript | products "
             "| first reply audio | server: search / first audio after the response started |",
             "|---|---|---|---|---|---|"]
    for r in results["levels"]:
        st = r.get("stages_p50_ms", {})

        def ms(key: str, st: dict[str, float] = st) -> str:
            return f"{st[key]:.0f}" if key in st else "–"

        rows.append(f"| {r['n']} | {ms('client:speech_stopped')} | {ms('client:transcript')} | {ms('client:products')} "
                    f"| {r['first_audio_ms']['p50']:.0f} | {ms('server:search_ms')} / {ms('server:first_audio_ms')} |")
    mem = results["rss_mb"]
    measured = any(r["n"] == TARGET["n"] for r in results["levels"])
    verdict = ("met" if results["target_met"] else "not met") if measured else f"not measured (no N = {TARGET['n']})"
    rows.append("")
    rows.append(f"Server RSS over the whole run: {mem['after_startup']:.0f} MB after startup, "
                f"{mem['after_warmup']:.0f} MB after warm-up, {mem['end']:.0f} MB at the end, max {mem['max']:.0f} MB "
                f"(slope after warm-up {mem['slope_mb_per_min_after_warmup']:+.1f} MB/min). "
                f"Target (8 sessions: p95 ≤ 1.5 s, no errors, flat memory): {verdict}.")
    lags = [(r["n"], r.get("server_loop_lag_max_ms")) for r in results["levels"]]
    if any(lag is not None for _, lag in lags):
        rows.append("Largest server event-loop lag (`shoptalk_event_loop_lag_max_seconds`): "
                    + ", ".join(f"{n} sessions {lag:.0f} ms" for n, lag in lags if lag is not None) + ".")
    return "\n".join(rows)


def parse_levels(text: str) -> list[int]:
    levels = [int(x) for x in text.replace(" ", "").split(",") if x]
    if not levels or any(n < 1 for n in levels):
        raise ValueError(f"levels must be positive integers, got {text!r}")
    return levels


def main(settings: Settings, *, seconds: float = 30.0, levels: Sequence[int] = (1, 2, 4, 8, 16),
         out: Path = Path("bench/results/load.json")) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO)
    texts = list(LOAD_QUERIES)
    clips = spoken_queries(settings, texts)
    notes = {"load_waited_s": float(os.environ["BENCH_LOAD_WAITED_S"])} if "BENCH_LOAD_WAITED_S" in os.environ else {}
    results = run(clips, shoptalk_command(settings.data_dir), levels=levels, seconds=seconds, texts=texts,
                  notes=notes)
    write_results(out, results)
    print(table(results))
    print(f"\nresults written to {out}")
    return results
