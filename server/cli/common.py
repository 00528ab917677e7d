"""What every ``shoptalk`` command shares: the ``--data-dir`` option and the settings built from it."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from server.settings import Settings, default_data_dir

DataDir = Annotated[Path, typer.Option("--data-dir", help="Data dir (default: $SHOPTALK_DATA_DIR or ~/.shoptalk).",
                                       default_factory=default_data_dir, show_default=False)]


def cli_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a command: ``data_dir`` plus the options given (None: the environment's or the default)."""
    if not os.environ.get("SHOPTALK_ONLINE"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # packaged weights only; no hub round-trips
    return Settings(data_dir=data_dir, **{k: v for k, v in overrides.items() if v is not None})


ProgressFn = Callable[[str, int, int], None]  # (step, done, total)


@contextmanager
def progress_view(json_lines: bool = False) -> Iterator[ProgressFn]:
    """A ``(step, done, total)`` callback for a long command's progress.

    Rich bars on stderr, one per step, each with how far it is, the time spent and roughly the time left (a line
    per tenth when stderr is not a terminal); with `json_lines`, one JSON object per update on stdout instead
    (``{"step", "done", "total"}``: what `server.background` reads from a child process).
    """
    if json_lines:

        def emit(step: str, done: int, total: int) -> None:
            print(json.dumps({"step": step, "done": done, "total": total}), flush=True)

        yield emit
        return
    if not sys.stderr.isatty():  # a log: a line per tenth of each step, with the time left
        yield _progress_lines()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("left"), TimeRemainingColumn(), console=console)
    tasks: dict[str, TaskID] = {}

    def update(step: str, done: int, total: int) -> None:
        if step not in tasks:
            tasks[step] = bars.add_task(step, total=total)
        bars.update(tasks[step], completed=done, total=total)

    with bars:
        yield update


def _progress_lines() -> ProgressFn:
    import time

    started: dict[str, float] = {}
    said: dict[str, int] = {}

    def update(step: str, done: int, total: int) -> None:
        now = time.monotonic()
        started.setdefault(step, now)
        tenth = 10 * done // max(1, total)
        if said.get(step) == tenth:
            return
        said[step] = tenth
        spent = now - started[step]
        left = f", about {spent * (total - done) / done:.0f} s left" if 0 < done < total else ""
        print(f"{step}: {done}/{total}{left}", file=sys.stderr, flush=True)

    return update


console = Console(stderr=True)
"""Where commands print what is for the person (stdout carries results a script reads)."""


class _Redact(logging.Filter):
    """Scrub bearer credentials and tokens from every record, whoever logs it (server/auth.py ``redact``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from server.auth import redact

        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def setup_logging(level: str = "info") -> None:
    """Log lines with time and module, credentials scrubbed from every record."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Redact())
