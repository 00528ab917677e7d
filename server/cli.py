"""The ``shoptalk`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from server.cli_common import DataDir, cli_settings, progress_view
from server.cli_intent import intent
from server.cli_memory import memory_app
from server.cli_token import token_app
from server.cli_workers import workers_app
from server.settings import Settings

app = typer.Typer(help="ShopTalk: a voice and photo shopping assistant.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
catalog_app = typer.Typer(help="Catalog management.", no_args_is_help=True)
models_app = typer.Typer(help="Prepare the packaged models (once, into the data dir).", no_args_is_help=True)
vision_app = typer.Typer(help="The image–text encoder.", no_args_is_help=True)
ranker_app = typer.Typer(help="The LLM ranker (second-stage re-ranking).", no_args_is_help=True)
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

console = Console(stderr=True)
class _Redact(logging.Filter):
    """Scrub bearer credentials and tokens from every record, whoever logs it (server/auth.py ``redact``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from server.auth import redact

        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def _logging(level: str = "info") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Redact())


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (what ``MALLOC_ARENA_MAX`` does), before the server starts its threads.

    Every thread that allocates (STT workers, TTS, the event loop's executor) otherwise gets an arena of its own, and
    RSS steps up by ~100 MB whenever more sessions run at once without being used again (``bench load``).
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return  # the operator chose
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc
    m_arena_max = -8
    libc.mallopt(m_arena_max, arenas)


@app.command()
def serve(
    data_dir: DataDir,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    stt: Annotated[str | None, typer.Option(help="ASR model, e.g. faster-whisper:tiny.en.")] = None,
    tts: Annotated[str | None, typer.Option(help="TTS engine, e.g. hibari.")] = None,
    catalog: Annotated[Path | None, typer.Option(help="products.jsonl to serve.")] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Start the server (websocket at /v1/realtime, HTTP API, /docs)."""
    import uvicorn

    from server.app import create_app

    _logging(log_level)
    from server.app import GracefulServer

    _limit_malloc_arenas()
    settings = cli_settings(data_dir, host=host, port=port, stt_model=stt, tts_model=tts, catalog=catalog,
                         log_level=log_level)
    web = create_app(settings)
    config = uvicorn.Config(web, host=host, port=port, log_level=log_level, ws_max_size=2**20,
                            timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5, log_config=None)
    GracefulServer(config, web, grace_s=settings.shutdown_grace_s).run()


@app.command()
def talk(
    data_dir: DataDir,
    url: Annotated[str, typer.Option(help="Server websocket URL.")] = "ws://127.0.0.1:8000/v1/realtime",
    wav: Annotated[Path | None, typer.Option(help="Stream this audio file as the microphone.")] = None,
    text: Annotated[str | None, typer.Option(help="Send a typed message instead of audio.")] = None,
    image: Annotated[Path | None, typer.Option(help="A product photo (photo lookup).")] = None,
    fast: Annotated[bool, typer.Option(help="Send the WAV faster than real time.")] = False,
    push_to_talk: Annotated[bool, typer.Option("--push-to-talk", help="Commit at the end instead of server VAD.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print every server event as one JSON line.")] = False,
    save_audio: Annotated[Path | None, typer.Option(help="Write the reply audio to this WAV file.")] = None,
    no_audio: Annotated[bool, typer.Option("--no-audio", help="Ask for a text-only reply.")] = False,
    token: Annotated[str | None, typer.Option(envvar="SHOPTALK_TOKEN",
                                              help="Session token (sent as Authorization: Bearer).")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="SHOPTALK_API_KEY",
                                                help="Merchant API key: mint a session token first.")] = None,
) -> None:
    """Talk to a running server: live microphone, a WAV file, or text."""
    from server.talk import run_talk

    for path in (wav, image):
        if path is not None and not path.exists():
            console.print(f"[red]no such file: {path}[/red]")
            raise typer.Exit(2)
    code = asyncio.run(run_talk(url=url, wav=wav, text=text, image=image, fast=fast, push_to_talk=push_to_talk,
                                as_json=as_json, save_audio=save_audio, no_audio=no_audio, token=token,
                                api_key=api_key))
    raise typer.Exit(code)


@app.command()
def search(
    data_dir: DataDir,
    text: Annotated[str | None, typer.Option(help="What to look for.")] = None,
    image: Annotated[Path | None, typer.Option(help="A product photo.")] = None,
    k: Annotated[int, typer.Option(help="How many results.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    ranker: Annotated[str | None, typer.Option(help="Re-ranker: none or smollm2-lora (default: the configured one, "
                                               "when trained).")] = None,
) -> None:
    """Search the catalog (no server needed): words, a photo, or a photo refined by words."""
    from dataclasses import replace

    from assistant.runtime.uploads import ImageRejected, decode_upload
    from assistant.search.query import parse_query
    from server.engines import build_search
    from server.serialize import product_json

    if image is None and not text:
        console.print("[red]give --text, --image, or both[/red]")
        raise typer.Exit(2)
    photo = None
    if image is not None:
        try:
            photo = decode_upload(image.read_bytes())
        except (OSError, ImageRejected) as err:
            console.print(f"[red]cannot use {image}: {err}[/red]")
            raise typer.Exit(2) from err
    from ranking.registry import list_rankers
    from server.engines import build_ranked

    if ranker is not None and ranker not in ("none", *list_rankers()):
        console.print(f"[red]unknown ranker {ranker!r}; valid: none, {', '.join(list_rankers())}[/red]")
        raise typer.Exit(2)
    if ranker is None:
        settings = cli_settings(data_dir)
    elif ranker == "none":
        settings = cli_settings(data_dir, serve_ranker=False)
    else:
        settings = cli_settings(data_dir, ranker=ranker, serve_ranker=True)
    use_vision = photo is not None or settings.aligned_checkpoint.exists()
    catalog, retriever, image_encoder = build_search(settings, vision=use_vision)
    query = replace(parse_query(text or "", retriever.vocab), k=k)
    if photo is not None:
        vector = image_encoder.encode_image([photo])[0]
        hits = retriever.search_image(vector, query if text else None)
    else:
        hits = build_ranked(settings, catalog, retriever).search(query)
    rows = [product_json(h) for h in hits]
    if as_json:
        print(json.dumps({"products": rows}))
        return
    for i, row in enumerate(rows, 1):
        near = f"  [close match: not the asked {'/'.join(row['near_miss'])}]" if row["near_miss"] else ""
        print(f"{i}. {row['title']}  {row['price']:.2f} {row['currency']}  ({row['score']:.3f}) {row['reason']}{near}")


@app.command()
def chat(
    data_dir: DataDir,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per reply.")] = False,
    message: Annotated[list[str] | None, typer.Option("--message", "-m", help="Message(s) instead of stdin.")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue the session with this resume token.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Signed-in user id (history, friends).")] = None,
) -> None:
    """A text conversation with the assistant (reads lines from stdin)."""
    from server.chat import run_chat

    code = run_chat(cli_settings(data_dir), messages=message, as_json=as_json, resume=resume, user_id=user)
    if code:
        raise typer.Exit(code)


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

    _logging("warning")
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


@models_app.command("prepare")
def models_prepare(
    data_dir: DataDir,
    all_models: Annotated[bool, typer.Option("--all", help="Also the multilingual base and openai-whisper.")] = False,
) -> None:
    """Join and convert the packaged weights into the data dir's model cache (idempotent)."""
    from speech.models import openai_whisper_checkpoint, whisper_ct2_dir

    cache = cli_settings(data_dir).cache_dir
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


def _ranker_searcher(settings: Settings, catalog_file: Path | None, ranker: Any) -> Any:
    """A `RankedSearcher` over the training catalog (a products.jsonl, else the served one) with `ranker`."""
    from assistant.catalog.model import Catalog
    from assistant.search.rerank import LLMReranker, RankedSearcher
    from assistant.search.retrieval import HybridRetriever
    from ranking.text_encoder import TextEncoder
    from server.engines import load_catalog

    catalog = Catalog.load_jsonl(catalog_file) if catalog_file is not None else load_catalog(settings)
    index_dir = None if catalog_file is not None else settings.data_dir / "index"
    retriever = HybridRetriever(catalog, TextEncoder(device=settings.device), cache_dir=index_dir)
    return RankedSearcher(retriever, LLMReranker(ranker, catalog))


CatalogFile = Annotated[Path | None, typer.Option("--catalog", help="Train on this products.jsonl instead of the "
                                                  "served catalog.")]


@ranker_app.command("train")
def ranker_train(
    data_dir: DataDir,
    queries: Annotated[int, typer.Option(help="Generated training queries.")] = 4000,
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 4,
    max_seconds: Annotated[float | None, typer.Option(help="Wall-clock budget for training.")] = None,
    feedback: Annotated[Path | None, typer.Option(help="Shopper feedback events (JSONL: query, product_id, "
                                                  "kind = click|add_to_cart|purchase|dislike) to train on too.")] = None,
    catalog: CatalogFile = None,
    out: Annotated[Path | None, typer.Option(help="Checkpoint to write (default: the configured one).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the generated queries and the shuffling.")] = 0,
) -> None:
    """Fine-tune the ranker (LoRA + heads) on generated spoken queries over a catalog and on shopper feedback.

    Candidates and features come from the serving pipeline (hybrid retrieval and its hard negatives).
    """
    import time

    from assistant.search.training import training_examples
    from ranking.registry import create_ranker
    from ranking.train import read_feedback, train
    from server.engines import configure_threads

    _logging()
    settings = cli_settings(data_dir)
    if settings.ranker in ("", "none"):
        console.print("[red]no ranker configured (SHOPTALK_RANKER)[/red]")
        raise typer.Exit(2)
    if feedback is not None and not feedback.is_file():
        console.print(f"[red]no feedback file at {feedback}[/red]")
        raise typer.Exit(2)
    configure_threads(settings)
    started = time.perf_counter()
    model = create_ranker(settings.ranker, cache_dir=settings.cache_dir, device=settings.device)
    searcher = _ranker_searcher(settings, catalog, model)
    events = read_feedback(feedback) if feedback is not None else None
    examples = training_examples(searcher, queries, seed=seed, feedback=events)
    n_feedback = sum(1 for e in examples if e.meta.get("feedback"))
    out = out or settings.ranker_checkpoint_path
    out.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"training {settings.ranker} on {len(examples)} queries ({n_feedback} from feedback; held-out "
                  "evaluations in the log; it may stop early when they stop improving)")
    with progress_view() as progress:
        result = train(model, examples, epochs=epochs, out=out, progress=True, max_seconds=max_seconds,
                       eval_every=100, eval_fraction=0.1, patience=4, seed=seed, on_step=progress)
    console.print(f"held-out nDCG@10 {result['initial']['ndcg@10']:.3f} -> {result['best']['ndcg@10']:.3f}, "
                  f"MRR {result['initial']['mrr']:.3f} -> {result['best']['mrr']:.3f} "
                  f"({result['steps']} steps, {result['seconds']:.0f} s training, "
                  f"{time.perf_counter() - started:.0f} s in all); checkpoint written to {out}")


@ranker_app.command("eval")
def ranker_eval(
    data_dir: DataDir,
    queries: Annotated[int, typer.Option(help="Generated queries (the held-out share is scored).")] = 3000,
    catalog: CatalogFile = None,
) -> None:
    """Held-out nDCG@10 / MRR over the candidate pools: the trained ranker against the untrained one.

    The untrained head reproduces retrieval's order, so the second row is the gain over retrieval.
    """
    from assistant.search.rerank import product_dict
    from assistant.search.training import retrieval_examples
    from ranking.queries import is_heldout, spoken_queries
    from ranking.registry import create_ranker
    from ranking.train import evaluate
    from server.engines import configure_threads

    settings = cli_settings(data_dir)
    out = settings.ranker_checkpoint_path
    if not out.exists():
        console.print(f"[red]no trained ranker at {out} (run `shoptalk ranker train`)[/red]")
        raise typer.Exit(2)
    configure_threads(settings)
    untrained = create_ranker(settings.ranker, cache_dir=settings.cache_dir, device=settings.device)
    trained = create_ranker(settings.ranker, cache_dir=settings.cache_dir, checkpoint=out, device=settings.device)
    searcher = _ranker_searcher(settings, catalog, trained)
    products = [product_dict(searcher.catalog, p) for p in searcher.catalog.parents()]
    heldout = retrieval_examples(searcher, [g for g in spoken_queries(products, queries) if is_heldout(g.text)])
    rows = {"untrained (= retrieval)": evaluate(untrained, heldout), "trained": evaluate(trained, heldout)}
    print(f"{len(heldout)} held-out queries")
    for name, m in rows.items():
        print(f"{name:24s} nDCG@10 {m['ndcg@10']:.4f}  MRR {m['mrr']:.4f}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
