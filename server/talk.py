"""``shoptalk talk``: print (or emit as JSON lines) what the server says, play or save the reply audio."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from server.client import AuthRefused, TalkClient, TurnResult, mint_token, write_wav
from speech.audio import SAMPLE_RATE, pcm16_to_float32

console = Console(stderr=True)


def _printer(as_json: bool) -> Any:
    def show(event: dict[str, Any]) -> None:
        if as_json:
            print(json.dumps(event), flush=True)
            return
        kind = event.get("type")
        if kind == "conversation.item.input_audio_transcription.delta":
            console.print(f"[dim]… {event.get('transcript') or event.get('delta')}[/dim]")
        elif kind == "conversation.item.input_audio_transcription.completed":
            console.print(f"[bold]you:[/bold] {event['transcript'] or '(no speech)'}")
        elif kind == "response.products":
            for i, p in enumerate(event["products"], 1):
                console.print(f"  {i}. {p['title']} — {p['price']:.2f} {p['currency']}  [dim]{p['reason']}[/dim]")
        elif kind == "response.done":
            console.print(f"[bold]shoptalk:[/bold] {event['response'].get('output_text', '')}")
        elif kind == "error":
            console.print(f"[red]error {event['error']['code']}: {event['error']['message']}[/red]")
    return show


def _play(result: TurnResult) -> None:
    try:
        import sounddevice as sd

        sd.play(pcm16_to_float32(bytes(result.audio)), result.audio_rate, blocking=True)
    except Exception as err:  # no output device is common on servers
        console.print(f"[yellow]cannot play audio ({err}); use --save-audio[/yellow]")


async def _microphone_turn(client: TalkClient) -> TurnResult:
    """Stream the default input device until the server ends the turn (server VAD)."""
    try:
        import sounddevice as sd

        sd.query_devices(kind="input")
    except Exception as err:
        raise SystemExit(f"no microphone available ({err}); use --wav FILE or --text") from err
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, bytes(indata))

    result = TurnResult(audio_rate=int(client.session["output_audio"]["rate"]))
    collector = asyncio.ensure_future(client.collect_turn(result, timeout=120))
    console.print("[green]listening… speak now[/green]")
    with sd.RawInputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16", blocksize=SAMPLE_RATE // 50,
                           callback=callback):
        while not collector.done():
            try:
                frame = await asyncio.wait_for(queue.get(), 0.5)
            except TimeoutError:
                continue
            await client.ws.send(frame)
    return await collector


async def run_talk(*, url: str, wav: Path | None, text: str | None, image: Path | None, fast: bool,
                   push_to_talk: bool, as_json: bool, save_audio: Path | None, no_audio: bool,
                   token: str | None = None, api_key: str | None = None) -> int:
    show = _printer(as_json)
    try:
        if token is None and api_key:
            token = await mint_token(url, api_key)
        async with TalkClient(url, token=token, on_event=show) as client:
            update: dict[str, Any] = {}
            if push_to_talk:
                update["turn_detection"] = None
            if no_audio:
                update["modalities"] = ["text"]
            if update:
                await client.update(**update)
            image_id = None
            if image is not None:
                try:
                    image_id = await client.upload_image(image)
                except RuntimeError as err:
                    console.print(f"[red]{err}[/red]")
                    return 2
            if image_id is not None and wav is not None:
                # Photo plus spoken words: the photo waits for the next voice turn ("like this but in blue").
                await client.send({"type": "conversation.item.create",
                                   "item": {"content": [{"type": "input_image", "image_id": image_id}]}})
                await client.recv_event()
                result = await client.say_wav(wav, realtime=not fast, push_to_talk=push_to_talk)
            elif image_id is not None:
                result = await client.ask_text(text or "", image_id=image_id)
            elif text is not None:
                result = await client.ask_text(text)
            elif wav is not None:
                result = await client.say_wav(wav, realtime=not fast, push_to_talk=push_to_talk)
            else:
                result = await _microphone_turn(client)
    except OSError as err:
        console.print(f"[red]cannot connect to {url}: {err}[/red]")
        return 1
    except AuthRefused as err:
        console.print(f"[red]not allowed in: {err} (pass --token, or --api-key to mint one)[/red]")
        return 3
    if result.audio:
        if save_audio is not None:
            write_wav(save_audio, bytes(result.audio), result.audio_rate)
            console.print(f"[dim]reply audio written to {save_audio}[/dim]")
        elif not as_json and sys.stdout.isatty():
            _play(result)
    return 1 if result.errors else 0
