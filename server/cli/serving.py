"""``shoptalk serve``, ``talk``, ``search`` and ``chat``: the server and the ways to talk to it."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from server.cli.common import DataDir, cli_settings, console, setup_logging


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

    setup_logging(log_level)
    from server.app import GracefulServer

    _limit_malloc_arenas()
    settings = cli_settings(data_dir, host=host, port=port, stt_model=stt, tts_model=tts, catalog=catalog,
                         log_level=log_level)
    web = create_app(settings)
    config = uvicorn.Config(web, host=host, port=port, log_level=log_level, ws_max_size=2**20,
                            timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5, log_config=None)
    GracefulServer(config, web, grace_s=settings.shutdown_grace_s).run()


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
