"""The ``shoptalk talk`` client: a microphone (live, or a WAV file at real-time pace) on the realtime websocket.

Also used by the benchmarks and tests, so it records when each event arrived.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from speech.audio import SAMPLE_RATE, float32_to_pcm16, load_audio

FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000  # 320 samples = 640 bytes of 16 kHz PCM16


@dataclass
class TurnResult:
    """Everything the server sent for one turn, with arrival times (``time.perf_counter``)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    audio_rate: int = 24000
    speech_end_sent: float | None = None  # when the last frame of speech left the client
    first_audio_at: float | None = None
    transcript: str = ""
    partials: list[str] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)
    reply: str = ""
    status: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


class AuthRefused(RuntimeError):
    """The server refused the connection's credentials (``auth_failed``, ``token_expired``)."""


class TalkClient:
    """A realtime client; ``token`` is a session token (or merchant API key) sent as ``Authorization: Bearer``."""

    def __init__(self, url: str, *, token: str | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.url = url
        self.token = token
        self.on_event = on_event
        self.ws: Any = None
        self.session: dict[str, Any] = {}

    async def __aenter__(self) -> TalkClient:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        self.ws = await websockets.connect(self.url, max_size=2**22, additional_headers=headers)
        created = json.loads(await self.ws.recv())
        self._notify(created)
        if created.get("type") == "error":
            await self.ws.close()
            error = created.get("error", {})
            raise AuthRefused(f"{error.get('code')}: {error.get('message')}")
        if created.get("type") != "session.created":
            raise RuntimeError(f"expected session.created, got {created}")
        self.session = created["session"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    def _notify(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def update(self, **session: Any) -> dict[str, Any]:
        await self.send({"type": "session.update", "session": session})
        while True:
            event = await self.recv_event()
            if event["type"] in ("session.updated", "error"):
                return event

    async def recv_event(self, timeout: float = 60) -> dict[str, Any]:
        while True:
            message = await asyncio.wait_for(self.ws.recv(), timeout)
            if isinstance(message, bytes):
                continue
            event = json.loads(message)
            self._notify(event)
            return event  # type: ignore[no-any-return]

    async def stream_audio(self, audio: np.ndarray, *, realtime: bool = True, trailing_silence_ms: int = 0,
                           result: TurnResult | None = None, frame_ms: int = FRAME_MS) -> None:
        """Send 16 kHz float audio as binary PCM16 frames, paced like a microphone when ``realtime``."""
        step = SAMPLE_RATE * frame_ms // 1000
        start = time.perf_counter()
        sent = 0
        for i in range(0, len(audio), step):
            await self.ws.send(float32_to_pcm16(audio[i : i + step]))
            sent += min(step, len(audio) - i)
            if realtime:
                delay = start + sent / SAMPLE_RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
        if result is not None:
            result.speech_end_sent = time.perf_counter()
        silence = np.zeros(step, dtype=np.float32)
        for _ in range(trailing_silence_ms // frame_ms):
            await self.ws.send(float32_to_pcm16(silence))
            sent += step
            if realtime:
                delay = start + sent / SAMPLE_RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def collect_turn(self, result: TurnResult, *, timeout: float = 60,
                           stop_on_error: bool = True) -> TurnResult:
        """Read events until ``response.done`` (or an error, or a turn that ended without words)."""
        deadline = time.perf_counter() + timeout
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"no response.done within {timeout} s; got {result.types()}")
            message = await asyncio.wait_for(self.ws.recv(), remaining)
            now = time.perf_counter()
            if isinstance(message, bytes):
                if result.first_audio_at is None:
                    result.first_audio_at = now
                result.audio.extend(message)
                self._notify({"type": "response.output_audio.binary", "bytes": len(message)})
                continue
            event = json.loads(message)
            event["_t"] = now
            self._notify({k: v for k, v in event.items() if k != "_t"})
            result.events.append(event)
            kind = event["type"]
            if kind == "response.output_audio.delta":
                if result.first_audio_at is None:
                    result.first_audio_at = now
                result.audio.extend(base64.b64decode(event["delta"]))
            elif kind == "conversation.item.input_audio_transcription.delta":
                result.partials.append(event.get("transcript") or event["delta"])
            elif kind == "conversation.item.input_audio_transcription.completed":
                result.transcript = event["transcript"]
                if not result.transcript:
                    return result  # no words: no turn
            elif kind == "response.products":
                result.products = event["products"]
            elif kind == "response.output_text.delta":
                result.reply += event["delta"]
            elif kind == "response.done":
                result.status = event["response"]["status"]
                return result
            elif kind == "error":
                result.errors.append(event["error"])
                if stop_on_error:
                    return result

    async def say_wav(self, path: Path, *, realtime: bool = True, push_to_talk: bool = False,
                      timeout: float = 90) -> TurnResult:
        audio = load_audio(path, SAMPLE_RATE)
        return await self.say(audio, realtime=realtime, push_to_talk=push_to_talk, timeout=timeout)

    async def say(self, audio: np.ndarray, *, realtime: bool = True, push_to_talk: bool = False,
                  timeout: float = 90) -> TurnResult:
        result = TurnResult(audio_rate=int(self.session.get("output_audio", {}).get("rate", 24000)))
        collector = asyncio.ensure_future(self.collect_turn(result, timeout=timeout))
        # Lead-in silence lets the VAD settle; trailing silence lets server VAD see the end of the turn.
        lead = np.zeros(SAMPLE_RATE // 4, dtype=np.float32)
        await self.stream_audio(np.concatenate([lead, audio]), realtime=realtime, result=result,
                                trailing_silence_ms=0 if push_to_talk else 1500)
        if push_to_talk:
            await self.send({"type": "input_audio_buffer.commit"})
        return await collector

    async def ask_text(self, text: str, timeout: float = 60, image_id: str | None = None) -> TurnResult:
        """A typed turn, optionally about an uploaded photo (``image_id`` from :meth:`upload_image`)."""
        result = TurnResult(audio_rate=int(self.session.get("output_audio", {}).get("rate", 24000)))
        content: list[dict[str, str]] = []
        if image_id is not None:
            content.append({"type": "input_image", "image_id": image_id})
        if text:
            content.append({"type": "input_text", "text": text})
        await self.send({"type": "conversation.item.create", "item": {"role": "user", "content": content}})
        await self.send({"type": "response.create"})
        return await self.collect_turn(result, timeout=timeout)

    async def upload_image(self, path: Path) -> str:
        """``POST /v1/images`` on the same server; returns the ``image_id``."""
        import httpx

        base = http_base(self.url)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as http:
            data = await asyncio.to_thread(path.read_bytes)
            res = await http.post("/v1/images", files={"file": (path.name, data)})
        if res.status_code != 201:
            raise RuntimeError(f"upload refused ({res.status_code}): {res.text}")
        return str(res.json()["image_id"])


def http_base(ws_url: str) -> str:
    """``ws://host:port/v1/realtime`` -> ``http://host:port``."""
    scheme, rest = ws_url.split("://", 1)
    return ("https" if scheme == "wss" else "http") + "://" + rest.split("/", 1)[0]


def write_wav(path: Path, pcm16: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm16)


async def mint_token(ws_url: str, api_key: str, *, user_id: str | None = None) -> str:
    """A session token from ``POST /v1/tokens`` with a merchant API key (what a merchant's backend does)."""
    import httpx

    async with httpx.AsyncClient(base_url=http_base(ws_url), timeout=30) as http:
        res = await http.post("/v1/tokens", json={"user_id": user_id} if user_id else {},
                              headers={"Authorization": f"Bearer {api_key}"})
    if res.status_code != 201:
        raise AuthRefused(f"token refused ({res.status_code}): {res.text}")
    return str(res.json()["token"])
