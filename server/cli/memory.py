"""``shoptalk memory ...``: the conversation memory's maintenance verbs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from server.cli.common import DataDir, cli_settings

if TYPE_CHECKING:
    from assistant.memory.store import MemoryStore

memory_app = typer.Typer(help="Conversation memory (sessions, users, feedback events).", no_args_is_help=True)


def _store(data_dir: Path) -> MemoryStore:
    from server.engines import build_memory

    return build_memory(cli_settings(data_dir))


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
