"""``shoptalk bench ...``: the benchmarks' commands (results to ``bench/results/*.json``).

The ``shoptalk`` CLI finds this group through the ``shoptalk.cli`` entry point (``pyproject.toml``), so the server
never imports the benchmarks: a deployment without them has no ``bench`` command, and nothing else changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from server.cli.common import DataDir, cli_settings

bench_app = typer.Typer(help="Benchmarks (results to bench/results/*.json).", no_args_is_help=True)


@bench_app.command("voice")
def bench_voice(
    data_dir: DataDir,
    queries: Annotated[int, typer.Option(help="Spoken queries to run (>= 20).")] = 20,
    out: Annotated[Path, typer.Option(help="Results JSON.")] = Path("bench/results/voice_latency.json"),
) -> None:
    """End of speech -> first reply audio, against a naive sequential baseline."""
    from bench.voice_latency import main as bench_main

    bench_main(cli_settings(data_dir), n_queries=queries, out=out)


@bench_app.command("load")
def bench_load(
    data_dir: DataDir,
    seconds: Annotated[float, typer.Option(help="Seconds per level.")] = 30.0,
    levels: Annotated[str, typer.Option(help="Concurrent sessions per level, comma-separated.")] = "1,2,4,8,16",
    out: Annotated[Path, typer.Option(help="Results JSON.")] = Path("bench/results/load.json"),
) -> None:
    """N concurrent spoken sessions against a `shoptalk serve` process: turn latency, errors, server RSS."""
    from bench.load import main as bench_main
    from bench.load import parse_levels

    bench_main(cli_settings(data_dir), seconds=seconds, levels=parse_levels(levels), out=out)


@bench_app.command("spoken")
def bench_spoken(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="The bench's own data dir (Luma ingested, clips "
                                           "cached).")] = Path(".data/bench-spoken"),
    requests: Annotated[int | None, typer.Option(help="Requests to use (seeded, both splits; default all).")] = None,
    degraded: Annotated[int, typer.Option(help="Requests per voice in each degraded condition.")] = 50,
    voices: Annotated[str | None, typer.Option(help="Voices, comma-separated (default bench.voices.BENCH_VOICES).")] = None,
    conditions: Annotated[str | None, typer.Option(help="Conditions, comma-separated (default all).")] = None,
    arms: Annotated[str | None, typer.Option(help="Arms, comma-separated: baseline, catalog-aware (default all).")] = None,
    concurrency: Annotated[int, typer.Option(help="Concurrent websocket sessions.")] = 8,
    turns_per_session: Annotated[int, typer.Option(help="Requests per session (1: no context between them).")] = 1,
    latency_queries: Annotated[int, typer.Option(help="Queries of the voice latency rerun (0: skip it).")] = 20,
    no_offline: Annotated[bool, typer.Option("--no-offline", help="Skip the offline decodes.")] = False,
    model_requests: Annotated[int, typer.Option(help="Requests whose clean clips every Whisper size decodes "
                                                "(model by budget; 0: skip).")] = 60,
    seed: Annotated[int, typer.Option(help="Seed of the subsets and the degradations.")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="4 requests, 1 voice, clean + phone, no latency.")] = False,
    out: Annotated[Path, typer.Option(help="Results JSON.")] = Path("bench/results/spoken.json"),
) -> None:
    """Spoken requests from unheard voices (clean, noise, reverb, phone) against the same requests typed."""
    from bench.spoken import arms_named
    from bench.spoken import main as bench_main

    def names(text: str | None) -> list[str] | None:
        return [x.strip() for x in text.split(",") if x.strip()] if text else None

    cli_settings(data_dir)  # offline model hub, as every command
    bench_main(out=out, quick=quick, data_dir=data_dir, n_requests=requests, degraded=None if quick else degraded,
               voices=names(voices), conditions=names(conditions), arms=arms_named(names(arms)),
               concurrency=concurrency, turns_per_session=turns_per_session,
               latency_queries=None if quick else latency_queries, offline=not no_offline, seed=seed,
               model_requests=None if quick else model_requests)


@bench_app.command("photo")
def bench_photo(
    data_dir: DataDir,
    luma_dir: Annotated[Path | None, typer.Option(help="Real catalog with photos (default: $SHOPTALK_SHARED_DATA/luma-dev).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A quarter of the catalog.")] = False,
    out: Annotated[Path, typer.Option(help="Results JSON.")] = Path("bench/results/photo_lookup.json"),
) -> None:
    """Photo lookup top-1/top-5 (aligned model, raw tower, pixels) and text→image recall."""
    from bench.photo_lookup import main as bench_main

    bench_main(cli_settings(data_dir).cache_dir / "vision", out=out, luma_dir=luma_dir, quick=quick)


@bench_app.command("first-run")
def bench_first_run(
    venv: Annotated[Path | None, typer.Option(help="Reuse this virtual environment instead of `make install` in "
                                               "the clone (the install is then not timed).")] = None,
    heads: Annotated[Path | None, typer.Option(help="Also compare demo photo lookup with the shipped heads against "
                                                "these aligned heads.")] = None,
    baseline: Annotated[str | None, typer.Option(help="Also time this earlier commit the same way.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the temporary clone and data dir.")] = False,
    out: Annotated[Path, typer.Option(help="Results JSON.")] = Path("bench/results/first_run.json"),
) -> None:
    """A new user's first minutes: fresh clone, `make install`, `make run`, a typed and a spoken turn, timed."""
    from bench.first_run import main as bench_main

    bench_main(out=out, venv=venv, heads=heads, baseline=baseline, keep=keep)


@bench_app.command("index")
def bench_index(
    quick: Annotated[bool, typer.Option("--quick", help="Smaller sizes.")] = False,
    out: Annotated[Path, typer.Option(help="Results JSON.")] = Path("bench/results/index_scale.json"),
) -> None:
    """Vector index at 100k and 1M clustered vectors: build time, memory, latency, recall@10."""
    from bench.index_scale import main as bench_main

    bench_main(out=out, quick=quick)


@bench_app.command("ranking")
def bench_ranking(
    quick: Annotated[bool, typer.Option("--quick", help="A subset of the queries.")] = False,
    out: Annotated[Path, typer.Option(help="Results JSON.")] = Path("bench/results/ranking.json"),
) -> None:
    """nDCG@10 / MRR of BM25, vector-only and hybrid retrieval on generated and hand-judged Luma queries."""
    from bench.ranking import main as bench_main

    bench_main(out=out, quick=quick)


@bench_app.command("batching")
def bench_batching(
    per_client: Annotated[int, typer.Option(help="Queries each client encodes per level and mode.")] = 24,
    out: Annotated[Path, typer.Option(help="Results JSON.")] = Path("bench/results/batching.json"),
) -> None:
    """Micro-batching across sessions: query encodes of 1-8 concurrent clients, batched vs unbatched."""
    from bench.batching import main as bench_main

    bench_main(out=out, per_client=per_client)


@bench_app.command("llm-runtime")
def bench_llm_runtime(
    data_dir: DataDir,
    prompts: Annotated[int, typer.Option(help="Reply-writer prompts (at most 16).")] = 12,
    out: Annotated[Path, typer.Option(help="Results JSON.")] = Path("bench/results/llm_runtime.json"),
) -> None:
    """SmolLM2 generation: transformers against CTranslate2 (float32, int8): speed and same replies."""
    from bench.llm_runtime import main as bench_main

    bench_main(cli_settings(data_dir).data_dir, out=out, prompts=prompts)


@bench_app.command("report")
def bench_report() -> None:
    """Rewrite the README's benchmark tables from bench/results/*.json."""
    from bench.report import update_readme

    update_readme()


@bench_app.command("dialogue")
def bench_dialogue(
    data_dir: DataDir,
    rules: Annotated[bool, typer.Option("--rules", help="Benchmark the keyword-rules mode instead.")] = False,
    out: Annotated[Path, typer.Option(help="Results JSON.")] = Path("bench/results/dialogue.json"),
    grounding: Annotated[bool, typer.Option("--grounding", help="Also run the SmolLM2 reply grounding section "
                                            "(100 replies, ~10 min on 2 cores).")] = False,
) -> None:
    """Intent accuracy, slot F1, brain latency per turn, and (--grounding) SmolLM2 reply grounding.

    Intents and slots on the hand-written utterances; the brain on scripted conversations; grounding violations
    of SmolLM2 replies before and after the check.
    """
    from bench.dialogue import main as bench_main

    sections = ("intent", "intent_fresh", "brain", *(("grounding",) if grounding else ()))
    bench_main(out=out, cache_dir=cli_settings(data_dir).cache_dir / "intent", mode="rules" if rules else "model",
               sections=sections)
