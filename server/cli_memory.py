"""``shoptalk memory ...``: the conversation memory's maintenance verbs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from assistant.memory import MemoryConfig, create_memory
from server.settings import Settings, default_data_dir

memory_app = typer.Typer(help="Conversation memory (sessions, users, feedback events).", no_args_is_help=True)
DataDir = Annotated[Path, typer.Option("--data-dir", help="Data dir (default: $SHOPTALK_DATA_DIR or ~/.shoptalk).",
                                       show_default=False,
                                       default_factory=default_data_dir)]


def _store(data_dir: Path):  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=data_dir)
    return create_memory(settings.memory_url, settings.data_dir,
                         MemoryConfig(session_ttl_s=settings.memory_ttl_days * 86400))


@memory_app.command("export-feedback")
def export_feedback(
    data_dir: DataDir,
    out: Annotated[Path, typer.Option("--out", help="JSONL file for `shoptalk ranker train --feedback`.")] = Path(
        "feedback.jsonl"),
) -> None:
    """Write the stored feedback events (query, product, kind) as JSONL training data."""
    store = _store(data_dir)
    try:
        n = store.export_feedback(out)
    finally:
        store.close()
    Console(stderr=True).print(f"{n} feedback events -> {out}")


@memory_app.command("purge")
def purge(data_dir: DataDir) -> None:
    """Forget expired sessions and old events now (the server also does this at start-up)."""
    store = _store(data_dir)
    try:
        n = store.purge_expired()
    finally:
        store.close()
    Console(stderr=True).print(f"{n} expired sessions forgotten")
