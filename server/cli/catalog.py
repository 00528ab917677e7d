"""``shoptalk catalog ...``: the served catalog (demo, show, ingest, delete)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from server.cli.common import DataDir, cli_settings, console, progress_view, setup_logging

catalog_app = typer.Typer(help="Catalog management.", no_args_is_help=True)


@catalog_app.command("demo")
def catalog_demo(data_dir: DataDir) -> None:
    """Generate the demo catalog into the data dir."""
    from assistant.catalog.demo import ensure_demo_catalog

    path = ensure_demo_catalog(data_dir)
    console.print(f"demo catalog at {path}")


@catalog_app.command("show")
def catalog_show(data_dir: DataDir) -> None:
    """Print which catalog the server would serve and its size."""
    from assistant.catalog.model import Catalog
    from assistant.catalog.store import default_store
    from server.engines import catalog_path, serves_store

    settings = cli_settings(data_dir)
    if serves_store(settings):
        with default_store(settings.data_dir) as store:
            catalog = store.load_catalog()
            print(json.dumps({"path": str(store.db_path), "products": len(catalog), "version": store.version()}))
        return
    path = catalog_path(settings)
    catalog = Catalog.load_jsonl(path)
    print(json.dumps({"path": str(path), "products": len(catalog)}))


@catalog_app.command("ingest")
def catalog_ingest(
    path: Annotated[Path, typer.Argument(help="Catalog file: .jsonl, .json or .csv.")],
    data_dir: DataDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    sync: Annotated[bool, typer.Option("--sync", help="Full sync: delete products the file no longer lists.")] = False,
    no_fetch: Annotated[bool, typer.Option("--no-fetch", help="Do not download http(s) images.")] = False,
) -> None:
    """Ingest a product file into the data dir's catalog (only changed products are written).

    Bad rows are skipped and listed; exit code 0 if the file was read (even with bad rows), 2 if it could not be.
    """
    from assistant.catalog.ingest import IngestError, ingest_file
    from assistant.catalog.store import default_store

    setup_logging("warning")
    shown = not as_json and sys.stderr.isatty()
    with default_store(data_dir) as store, (progress_view() if shown else contextlib.nullcontext()) as progress:
        try:
            report = ingest_file(path, store, progress=progress, fetch_urls=not no_fetch, delete_missing=sync)
        except IngestError as err:
            console.print(f"[red]{err}[/red]")
            raise typer.Exit(2) from err
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        Console().print(report.render())


@catalog_app.command("delete")
def catalog_delete(
    ids: Annotated[list[str], typer.Argument(help="Product ids (a parent's variants go with it).")],
    data_dir: DataDir,
) -> None:
    """Delete products from the data dir's catalog."""
    from assistant.catalog.store import default_store, store_exists

    if not store_exists(data_dir):
        console.print(f"[red]no ingested catalog in {data_dir}[/red]")
        raise typer.Exit(2)
    with default_store(data_dir) as store:
        deleted = store.delete(ids)
        store.prune_images()
        print(json.dumps({"deleted": deleted, "products": store.count(), "version": store.version()}))
    if not deleted:
        raise typer.Exit(1)
