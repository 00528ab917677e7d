"""The ``shoptalk`` command line: one typer app, its command groups in the modules beside this one."""

from __future__ import annotations

import sys

import typer

from server.cli.catalog import catalog_app
from server.cli.intent import intent
from server.cli.memory import memory_app
from server.cli.models import models_app, vision_app
from server.cli.ranker import ranker_app
from server.cli.serving import chat, search, serve, talk
from server.cli.token import token_app
from server.cli.workers import workers_app

app = typer.Typer(help="ShopTalk: a voice and photo shopping assistant.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
for command in (serve, talk, search, chat):
    app.command()(command)
app.add_typer(catalog_app, name="catalog")
app.add_typer(models_app, name="models")
app.add_typer(vision_app, name="vision")
app.add_typer(ranker_app, name="ranker")
app.add_typer(memory_app, name="memory")
app.add_typer(token_app, name="token")
app.add_typer(workers_app, name="workers")
app.command("intent")(intent)


def _add_plugins() -> None:
    """Command groups other installed packages add (entry points ``shoptalk.cli``; `bench.cli` adds ``bench``)."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="shoptalk.cli"):
        app.add_typer(entry.load(), name=entry.name)


_add_plugins()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)

