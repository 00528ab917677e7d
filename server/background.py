"""Work that only improves quality, run after the server answers: one task at a time, its progress in ``/healthz``.

The server answers as soon as the speech models are warm. What makes answers better but is not needed for the
first one runs here, in a worker thread, while sessions go on:

* ``vision-align``: heads aligned on a catalog they were not trained on (a merchant's first ingest, or one that
  changed much). The training runs in a ``shoptalk vision align`` child process at a lower CPU priority, so it
  takes the cores sessions leave idle; photo lookup uses what it had (the raw tower) meanwhile, and the new heads
  take over at once when the catalog's photos are encoded with them (`HybridRetriever.set_image_encoder`).
* ``intent-train``: the intent model retrained on a new catalog's kinds, product lines and brands
  (`IntentRecognizer.retrain`, queued by `server.engines.App.improve`); the old one answers meanwhile.

A task submitted while one of the same name waits replaces it (the newest catalog wins); one submitted while it
runs is queued after it.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.settings import Settings

log = logging.getLogger(__name__)

Report = Callable[[str, float], None]
"""``(step, fraction done)`` of the running task."""

NICE = 10  # CPU priority offset of child processes: the training yields to the sessions' turns


@dataclass
class Task:
    """One unit of background work and where it stands."""

    name: str
    run: Callable[[Report], None]
    state: str = "queued"  # queued, running, done, failed
    step: str = ""
    progress: float = 0.0
    error: str | None = None
    submitted: float = field(default_factory=time.time)
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.name, "state": self.state, "progress": round(self.progress, 3)}
        if self.step:
            out["step"] = self.step
        if self.error:
            out["error"] = self.error
        return out


class BackgroundWorker:
    """Runs submitted tasks one after another on a daemon thread; `snapshot` says where each stands."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Task | None] = queue.Queue()
        self._lock = threading.Lock()
        self._tasks: list[Task] = []  # queued and running, then the last outcome of each name
        self._closed = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._loop, name="shoptalk-background", daemon=True)
        self._thread.start()

    def submit(self, name: str, run: Callable[[Report], None]) -> Task:
        """Queue `run` as task `name` (replacing a queued task of that name)."""
        with self._lock:
            for task in self._tasks:
                if task.name == name and task.state == "queued":
                    task.run = run  # not started yet: it will run the newest work
                    return task
            self._tasks = [t for t in self._tasks if not (t.name == name and t.state in ("done", "failed"))]
            task = Task(name, run)
            self._tasks.append(task)
        self._queue.put(task)
        log.info("background: %s queued", name)
        return task

    def snapshot(self) -> list[dict[str, Any]]:
        """Each task's name, state, progress (0..1), step and error: running first, then queued, then finished."""
        order = {"running": 0, "queued": 1, "failed": 2, "done": 3}
        with self._lock:
            return [t.to_dict() for t in sorted(self._tasks, key=lambda t: (order[t.state], t.submitted))]

    def busy(self) -> bool:
        with self._lock:
            return any(t.state in ("queued", "running") for t in self._tasks)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no task is queued or running (True), or `timeout` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while any(t.state in ("queued", "running") for t in self._tasks):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the running task (a running child process is told to stop)."""
        self._closed.set()
        self._queue.put(None)
        self._thread.join(timeout)

    @property
    def stopping(self) -> threading.Event:
        """Set when the worker is closing: long tasks check it and stop early."""
        return self._closed

    def _loop(self) -> None:
        while True:
            task = self._queue.get()
            if task is None or self._closed.is_set():
                return
            with self._lock:
                task.state = "running"

            def report(step: str, fraction: float, task: Task = task) -> None:
                with self._lock:
                    task.step, task.progress = step, min(1.0, max(task.progress, fraction))

            start = time.perf_counter()
            log.info("background: %s started", task.name)
            error: str | None = None
            try:
                task.run(report)
            except Exception as err:  # noqa: BLE001 - a failed task is reported, the server goes on
                log.exception("background: %s failed", task.name)
                outcome, error = "failed", f"{type(err).__name__}: {err}"
            else:
                outcome = "done"
                log.info("background: %s done in %.1f s", task.name, time.perf_counter() - start)
            with self._idle:
                task.state, task.error, task.finished = outcome, error, time.time()
                if outcome == "done":
                    task.progress = 1.0
                self._idle.notify_all()


# -- the tasks --

ALIGN_STEPS = {"align: tower features": (0.0, 0.6), "align: training": (0.6, 0.95)}
"""Share of a background align's progress each step of ``shoptalk vision align --progress-json`` spans; encoding
the catalog's photos with the new heads takes the rest."""


def run_child(command: list[str], report: Report, steps: dict[str, tuple[float, float]],
              stop: threading.Event, env: dict[str, str] | None = None) -> None:
    """Run `command` at a lower priority, its JSON progress lines (``{"step", "done", "total"}``) sent to `report`.

    Raises:
        RuntimeError: it failed (with the end of its error output), or `stop` was set.
    """
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    preexec = (lambda: os.nice(NICE)) if hasattr(os, "nice") else None  # noqa: E731
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          preexec_fn=preexec) as child:
        errors: list[str] = []
        drain = threading.Thread(target=lambda: errors.extend(child.stderr or ()), daemon=True)
        drain.start()

        def stop_child() -> None:  # the server is closing: the child must not outlive it
            while child.poll() is None:
                if stop.wait(0.5):
                    child.terminate()
                    return

        threading.Thread(target=stop_child, daemon=True).start()
        for line in child.stdout or ():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            step = str(event.get("step", ""))
            low, high = steps.get(step, (0.0, 0.0))
            total = max(1, int(event.get("total", 1)))
            report(step.removeprefix("align: "), low + (high - low) * int(event.get("done", 0)) / total)
        code = child.wait()
        drain.join(5)
    if stop.is_set():
        raise RuntimeError("stopped: the server is shutting down")
    if code != 0:
        raise RuntimeError(f"{' '.join(command[2:5])} exited with {code}: {''.join(errors[-5:]).strip()[-400:]}")


def align_task(settings: Settings, stop: threading.Event, done: Callable[[], None]) -> Callable[[Report], None]:
    """Align the heads on the served catalog in a ``shoptalk vision align`` child process, then call `done`.

    `done` encodes the catalog's photos with the new heads and switches photo lookup over.
    """

    def run(report: Report) -> None:
        command = [sys.executable, "-m", "server.cli", "vision", "align", "--data-dir", str(settings.data_dir),
                   "--force", "--epochs", str(settings.align_epochs), "--progress-json"]
        env = {"SHOPTALK_VISION_MODEL": settings.vision_model}  # the child aligns what this server serves
        if settings.catalog is not None:
            env["SHOPTALK_CATALOG"] = str(settings.catalog)
        if settings.cpu_threads:
            env["SHOPTALK_CPU_THREADS"] = str(settings.cpu_threads)
        run_child(command, report, ALIGN_STEPS, stop, env)
        report("encoding the catalog's photos", ALIGN_STEPS["align: training"][1])
        done()

    return run


def ranker_task(settings: Settings, stop: threading.Event, done: Callable[[], None], *,
                prepared: bool) -> Callable[[Report], None]:
    """Prepare the served ranker's backbone in a ``shoptalk models prepare --ranker`` child process, then `done`.

    Dequantizing SmolLM2 takes ~40 s of both cores once; at a lower priority, like the align, so that the sessions
    being served go first. `done` loads the ranker and lets it rank every search from then on.
    """

    def run(report: Report) -> None:
        if not prepared:
            report("preparing the ranker's backbone", 0.0)
            command = [sys.executable, "-m", "server.cli", "models", "prepare", "--ranker", "--data-dir",
                       str(settings.data_dir)]
            run_child(command, report, {}, stop, {"SHOPTALK_RANKER": settings.ranker})
        report("loading the ranker", 0.9)
        done()

    return run
