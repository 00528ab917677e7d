"""End to end with the real offline models: a spoken query over the websocket gets a transcript, products and speech."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.replies.grounding import format_price, spoken_name
from server.app import create_app
from server.client import TalkClient
from server.engines import App, build_app_state
from server.settings import Settings
from speech.audio import pcm16_to_float32, resample
from tests.fakes import VOICE_TURN_EVENTS, check_products, order_ok

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def real_state(tmp_path_factory: pytest.TempPathFactory) -> App:
    data_dir = tmp_path_factory.mktemp("data")
    return build_app_state(Settings(data_dir=data_dir))


@pytest.fixture(scope="module")
def spoken_query(real_state: App) -> np.ndarray:
    assert real_state.tts is not None
    audio = real_state.tts.synthesize("Show me black hoodies under fifty dollars.")
    return resample(audio, real_state.tts.sample_rate, 16000)


@pytest.fixture
def server(real_state: App, live_server_factory: Any) -> Any:
    return live_server_factory(create_app(state=real_state))


async def test_spoken_query_end_to_end(server: Any, spoken_query: np.ndarray, real_state: App) -> None:
    async with TalkClient(server.ws_url) as client:
        result = await client.say(spoken_query, realtime=True, timeout=60)
    types = result.types()
    assert order_ok(types, VOICE_TURN_EVENTS), types
    assert not result.errors
    words = result.transcript.lower()
    assert "hoodie" in words and ("50" in words or "fifty" in words), result.transcript
    assert result.products, types
    # only catalog products, never invented ones; black hoodies under $50 first, then any close matches, marked
    assert check_products(result.products, real_state.catalog, max_price=50, colour="black", words=("hood",))
    assert result.status == "completed"
    # The reply names a product and its price exactly as the catalog has them.
    top = result.products[0]
    assert spoken_name(top["title"]) in result.reply and format_price(top["price"]) in result.reply, result.reply
    # Real speech came back: at least half a second of non-silent 24 kHz audio.
    audio = pcm16_to_float32(bytes(result.audio))
    assert len(audio) > result.audio_rate // 2 and float(np.abs(audio).max()) > 0.05
    # The turn went through the shared micro-batchers (query encodes, TTS), which /metrics counts.
    import httpx

    async with httpx.AsyncClient(base_url=server.http_url) as http:
        text = (await http.get("/metrics")).text
    for name in ("query_encoder", "tts"):
        line = next(x for x in text.splitlines() if x.startswith(f'shoptalk_batcher_requests_total{{batcher="{name}"}}'))
        assert float(line.split()[-1]) > 0, line


async def test_spoken_query_push_to_talk(server: Any, spoken_query: np.ndarray) -> None:
    async with TalkClient(server.ws_url) as client:
        await client.update(turn_detection=None)
        result = await client.say(spoken_query, realtime=False, push_to_talk=True, timeout=60)
    assert "hoodie" in result.transcript.lower()
    assert result.status == "completed" and result.audio


async def test_noise_and_silence_make_no_turn(server: Any) -> None:
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(16000 * 3) * 0.05).astype(np.float32)
    async with TalkClient(server.ws_url) as client:
        await client.stream_audio(np.zeros(16000 * 2, dtype=np.float32), realtime=False)
        await client.stream_audio(noise, realtime=False)
        await client.send({"type": "keepalive"})
        events = []
        while True:
            event = await client.recv_event(timeout=10)
            events.append(event["type"])
            if event["type"] == "keepalive":
                break
    assert "response.created" not in events
    assert "conversation.item.input_audio_transcription.completed" not in events
    # Push-to-talk commit of pure noise: no hallucinated "Thank you" turn either.
    async with TalkClient(server.ws_url) as client:
        await client.update(turn_detection=None)
        result = await client.say(noise, realtime=False, push_to_talk=True, timeout=30)
    assert result.transcript == "" and "response.created" not in result.types()


async def test_cli_talk_json_with_wav(server: Any, spoken_query: np.ndarray, tmp_path: Path) -> None:
    """The README's check: `shoptalk talk --wav q.wav --json` prints a transcript, products and reply audio."""
    import asyncio
    import json
    import sys

    import soundfile as sf

    wav = tmp_path / "q.wav"
    sf.write(wav, spoken_query, 16000)
    out_wav = tmp_path / "reply.wav"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "talk", "--url", server.ws_url, "--wav", str(wav), "--fast", "--json",
        "--save-audio", str(out_wav), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()
    events = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    types = [e["type"] for e in events]
    assert "conversation.item.input_audio_transcription.completed" in types
    assert "response.products" in types and "response.done" in types
    assert out_wav.exists() and out_wav.stat().st_size > 10000
