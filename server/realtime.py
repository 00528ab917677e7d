"""``WS /v1/realtime``: one conversation per connection (protocol in docs/protocol.md).

Lifecycle: Origin check and connection rate limit -> accept -> authentication (``Authorization: Bearer`` on the
handshake, or a first ``session.authenticate {token}`` message from browsers) -> ``session.created`` -> a receive loop that validates every client frame and hands it to the
``ConversationSession``, and a sender task that drains a bounded outbound queue to the socket.  Frames the session
emits become protocol events in exactly one place (``_to_events``); an ``AssistantError`` becomes an ``error``
event and the session goes on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from assistant.core.errors import AssistantError, InvalidInputError
from assistant.core.frames import (
    ErrorFrame,
    Frame,
    ProductResults,
    ReplyTextDelta,
    ResponseDone,
    ResponseStarted,
    SpeechAudio,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    TranscriptDelta,
)
from assistant.runtime.session import ConversationSession, Engines, SessionOptions
from assistant.runtime.voice import MAX_FRAME_BYTES, MAX_UTTERANCE_S
from server import metrics
from server.auth import OPEN, AuthError, Principal
from server.protocol import (
    AudioAppend,
    ClientEvent,
    Feedback,
    ItemCreate,
    ServerEvent,
    SessionUpdate,
    decode_b64_audio,
    error_event,
    event,
    parse_client_event,
    validate,
)
from server.security import Gate, client_key
from server.serialize import product_json
from speech.vad import VADOptions

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 300
MAX_SESSION_S = 3600
AUTH_TIMEOUT_S = 10
_CLOSE = object()


@dataclass
class LiveSessions:
    """The websockets one server is serving: what its graceful shutdown drains (one per app, not per engines)."""

    connections: set[RealtimeConnection] = field(default_factory=set)
    closing: bool = False


class _CloseWith:
    """Queued after the last events: the sender closes the socket with this code once they are out."""

    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


class RealtimeConnection:
    def __init__(self, ws: WebSocket, engines: Engines, *, queue_size: int = 512, output_rate: int,
                 gate: Gate | None = None, principal: Principal = OPEN, live: LiveSessions | None = None) -> None:
        self.ws = ws
        self.engines = engines
        self.gate = gate
        self.live = live
        self.principal = principal
        self.pacer = gate.pacer() if gate is not None else None
        self._closing = False
        self._too_fast_at = -1.0
        self.kicked = False  # dropped for not reading
        self._run_task: asyncio.Task[Any] | None = None
        self.done = asyncio.Event()  # set when the connection has ended
        self.outbound: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue_size)
        self.audio_transport = "binary"
        self.tts_rate = output_rate
        self.session = ConversationSession(engines, self._on_frame)
        memory = self.session.memory
        self.resume_token = memory.resume_token if memory is not None else secrets.token_urlsafe(24)
        self.feedback: list[dict[str, str]] = []
        self._started = time.monotonic()
        self.limit_key = principal.subject if principal.kind == "shopper" else "conn:" + self.session.id

    # --- outbound -------------------------------------------------------------------------------------------
    async def send(self, message: dict[str, Any] | bytes) -> None:
        try:
            self.outbound.put_nowait(message)
        except asyncio.QueueFull:
            # The client stopped reading: drop it rather than buffer without bound. A close frame could not get
            # through the full socket either (sending it would wait forever), so the session just ends: its
            # receive loop is cancelled, the session is closed, and the server drops the socket.
            if self.kicked:
                return
            self.kicked = True
            log.warning("session %s: client is not reading; dropping it", self.session.id)
            metrics.ERRORS.labels(code="slow_consumer").inc()
            if self._run_task is not None:
                self._run_task.cancel()

    async def _sender(self) -> None:
        while (message := await self.outbound.get()) is not _CLOSE:
            if isinstance(message, bytes):
                await self.ws.send_bytes(message)
            elif isinstance(message, _CloseWith):
                await self.ws.close(code=message.code, reason=message.reason)
                return
            else:
                await self.ws.send_text(wire_text(message))

    async def _on_frame(self, frame: Frame) -> None:
        for message in self._to_events(frame):
            await self.send(message)

    def _to_events(self, frame: Frame) -> list[dict[str, Any] | bytes]:
        if isinstance(frame, SpeechStarted):
            return [event(ServerEvent.SPEECH_STARTED, audio_start_ms=frame.audio_start_ms)]
        if isinstance(frame, SpeechStopped):
            return [event(ServerEvent.SPEECH_STOPPED, audio_end_ms=frame.audio_end_ms)]
        if isinstance(frame, TranscriptDelta):
            return [event(ServerEvent.TRANSCRIPT_DELTA, item_id=frame.item_id, delta=frame.delta,
                          transcript=frame.text)]
        if isinstance(frame, Transcript):
            metrics.TURNS.inc()
            return [
                event(ServerEvent.COMMITTED, item_id=frame.item_id),
                event(ServerEvent.TRANSCRIPT_COMPLETED, item_id=frame.item_id, transcript=frame.text),
            ]
        if isinstance(frame, ResponseStarted):
            return [event(ServerEvent.RESPONSE_CREATED, response={"id": frame.response_id, "status": "in_progress"})]
        if isinstance(frame, ProductResults):
            return [event(ServerEvent.PRODUCTS, response_id=frame.response_id,
                          products=[product_json(h) for h in frame.hits])]
        if isinstance(frame, ReplyTextDelta):
            return [event(ServerEvent.TEXT_DELTA, response_id=frame.response_id, delta=frame.delta)]
        if isinstance(frame, SpeechAudio):
            if self.audio_transport == "binary":
                return [frame.pcm16]
            return [event(ServerEvent.AUDIO_DELTA, response_id=frame.response_id,
                          delta=base64.b64encode(frame.pcm16).decode("ascii"))]
        if isinstance(frame, ResponseDone):
            for name, value in frame.timings_ms.items():
                if name in ("first_audio_ms", "total_ms"):
                    metrics.RESPONSE_LATENCY.labels(stage=name).observe(value / 1000)
            return [event(ServerEvent.RESPONSE_DONE, response={
                "id": frame.response_id, "status": frame.status, "output_text": frame.text,
                "intent": frame.intent, "handoff": frame.handoff,
                "timings_ms": {k: round(v, 1) for k, v in frame.timings_ms.items()}})]
        if isinstance(frame, ErrorFrame):
            return [error_frame_event(frame)]
        log.debug("no event for frame %r", frame)
        return []

    # --- session description ----------------------------------------------------------------------------------
    def _describe(self) -> dict[str, Any]:
        options = self.session.options
        voice = options.voice
        return {
            "id": self.session.id,
            "resume_token": self.resume_token,
            "modalities": list(options.modalities),
            "input_audio": {"format": "pcm16", "rate": voice.input_rate},
            "output_audio": {"format": "pcm16", "rate": options.output_rate or self.tts_rate,
                             "transport": self.audio_transport},
            "turn_detection": (
                {"type": "server_vad", "threshold": voice.vad.threshold,
                 "silence_duration_ms": voice.vad.silence_duration_ms,
                 "prefix_padding_ms": voice.vad.prefix_padding_ms}
                if voice.server_vad else None
            ),
            "limits": {"max_frame_bytes": MAX_FRAME_BYTES, "max_utterance_s": MAX_UTTERANCE_S,
                       "idle_timeout_s": IDLE_TIMEOUT_S, "max_session_s": MAX_SESSION_S},
        }

    # --- inbound --------------------------------------------------------------------------------------------
    # --- limits ---------------------------------------------------------------------------------------------------
    def _limit(self, rule: str, what: str) -> None:
        if self.gate is not None and not self.gate.limits.allow(rule, self.limit_key):
            retry = self.gate.limits.retry_after(rule, self.limit_key)
            raise InvalidInputError(f"too many {what}; retry in {retry:.0f} s", code="rate_limited")

    def _admit_audio(self, n_bytes: int) -> bool:
        """Whether a frame of ``n_bytes`` keeps within the pacing.

        Refused frames are dropped, and the client hears about it at most once a second (not once per frame).
        """
        if self.pacer is None:
            return True
        seconds = n_bytes / 2 / self.session.options.voice.input_rate
        if self.pacer.admit(seconds):
            return True
        now = time.monotonic()
        if now - self._too_fast_at < 1.0:
            return False
        self._too_fast_at = now
        raise InvalidInputError(
                f"audio arrives faster than {self.pacer.speed:g}x real time; this frame was dropped. "
                "Stream at the microphone's pace", code="audio_too_fast")

    async def shutdown(self, *, grace_s: float, reconnect_after_ms: int = 1000) -> None:
        """Graceful shutdown: tell the client, let the reply in flight finish (or mark it cancelled), close 1012."""
        if self._closing:
            return
        self._closing = True
        await self.send(event(ServerEvent.SESSION_CLOSING, reason="server_restart",
                              reconnect_after_ms=reconnect_after_ms))
        finished = await self.session.finish_response(grace_s)
        if not finished:
            log.info("session %s: reply cut short by shutdown", self.session.id)
        with contextlib.suppress(asyncio.QueueFull):
            self.outbound.put_nowait(_CloseWith(1012, "server restarting"))

    async def run(self) -> None:
        self._run_task = asyncio.current_task()
        sender = asyncio.ensure_future(self._sender())
        metrics.SESSIONS.inc()
        if self.live is not None:
            self.live.connections.add(self)
        try:
            if self.principal.user_id:  # a signed-in shopper's session token names them
                try:
                    await self.session.sign_in(self.principal.user_id)
                except AssistantError as err:  # e.g. the memory engine is down: as when the session cannot open
                    log.warning("session not opened: %s", err.message)
                    await refuse(self.ws, err, 1011)
                    return
            await self.send(event(ServerEvent.SESSION_CREATED, session=self._describe()))
            while True:
                try:
                    message = await asyncio.wait_for(self.ws.receive(), timeout=IDLE_TIMEOUT_S)
                except TimeoutError:
                    await self.ws.close(code=1000, reason="idle timeout")
                    return
                if message["type"] == "websocket.disconnect":
                    return
                if time.monotonic() - self._started > MAX_SESSION_S:
                    await self.ws.close(code=1008, reason="maximum session length reached")
                    return
                event_id = None
                try:
                    if message.get("bytes") is not None:
                        if self._admit_audio(len(message["bytes"])):
                            await self.session.append_audio(message["bytes"])
                    elif message.get("text") is not None:
                        self._limit("events", "events")
                        kind, data, event_id = parse_client_event(message["text"])
                        await self._handle(kind, data, event_id)
                except AssistantError as err:  # a client event's error: the same frame a turn's error becomes
                    for out in self._to_events(ErrorFrame.of(err)):
                        await self.send({**out, "event_id": event_id} if event_id and isinstance(out, dict) else out)
        except WebSocketDisconnect:
            pass
        except asyncio.CancelledError:
            if not self.kicked:
                raise
        except Exception:
            log.exception("session %s crashed", self.session.id)
            with contextlib.suppress(Exception):
                await self.ws.close(code=1011, reason="internal error")
        finally:
            metrics.SESSIONS.dec()
            if self.live is not None:
                self.live.connections.discard(self)
            await self.session.close()
            self.done.set()
            with contextlib.suppress(asyncio.QueueFull):
                self.outbound.put_nowait(_CLOSE)
            if not self.kicked:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(sender, timeout=2)
            sender.cancel()

    async def _handle(self, kind: str, data: dict[str, Any], event_id: str | None) -> None:
        if kind == ClientEvent.AUDIO_APPEND:
            pcm = decode_b64_audio(validate(AudioAppend, data).audio)
            if self._admit_audio(len(pcm)):
                await self.session.append_audio(pcm)
        elif kind == ClientEvent.AUDIO_COMMIT:
            self._limit("turns", "turns")
            await self.session.commit_audio()
        elif kind == ClientEvent.AUDIO_CLEAR:
            self.session.clear_audio()
            await self.send(event(ServerEvent.CLEARED))
        elif kind == ClientEvent.SESSION_UPDATE:
            await self._update(validate(SessionUpdate, data), "turn_detection" in (data.get("session") or {}))
            await self.send(event(ServerEvent.SESSION_UPDATED, session=self._describe()))
        elif kind == ClientEvent.ITEM_CREATE:
            await self._item_create(validate(ItemCreate, data))
        elif kind == ClientEvent.RESPONSE_CREATE:
            self._limit("turns", "turns")
            await self.session.create_response()
        elif kind == ClientEvent.RESPONSE_CANCEL:
            if not await self.session.cancel_response():
                raise InvalidInputError("no response is in progress", code="response_cancel_not_active")
        elif kind == ClientEvent.FEEDBACK:
            fb = validate(Feedback, data)
            await self.session.record_feedback(fb.product_id, fb.action)
            self.feedback.append({"product_id": fb.product_id, "action": fb.action})
            del self.feedback[:-256]
        elif kind == ClientEvent.KEEPALIVE:
            await self.send(event(ServerEvent.KEEPALIVE))

    async def _update(self, update: SessionUpdate, has_turn_detection: bool) -> None:
        cfg = update.session
        if cfg.resume_token:
            # A signed-in shopper (their token names the user) resumes only their own sessions.
            owner = self.principal.user_id if self.principal.kind == "shopper" else cfg.user_id
            if not await self.session.resume(cfg.resume_token, user_id=owner):
                raise InvalidInputError("unknown or expired resume_token; this session goes on as a new one",
                                        code="invalid_resume_token", param="session.resume_token")
            self.resume_token = cfg.resume_token
        if cfg.user_id:
            if self.principal.kind == "shopper" and cfg.user_id != self.principal.user_id:
                raise InvalidInputError("session.user_id must be the user the session token was minted for",
                                        code="auth_failed", param="session.user_id")
            await self.session.sign_in(cfg.user_id)
        options = self.session.options
        voice = options.voice
        if cfg.input_audio is not None:
            voice = replace(voice, input_rate=cfg.input_audio.rate)
        if has_turn_detection:
            if cfg.turn_detection is None:
                voice = replace(voice, server_vad=False)
            else:
                td = cfg.turn_detection
                voice = replace(voice, server_vad=True, vad=VADOptions(
                    threshold=td.threshold, silence_duration_ms=td.silence_duration_ms,
                    prefix_padding_ms=td.prefix_padding_ms))
        if cfg.language:
            voice = replace(voice, language=cfg.language)
        output_rate = options.output_rate
        if cfg.output_audio is not None:
            if cfg.output_audio.rate is not None:
                if cfg.output_audio.rate not in (8000, 16000, 22050, 24000, 44100, 48000):
                    raise InvalidInputError(f"unsupported output rate {cfg.output_audio.rate}",
                                            code="unsupported_audio_format", param="session.output_audio.rate")
                output_rate = cfg.output_audio.rate
            self.audio_transport = cfg.output_audio.transport
        modalities = tuple(cfg.modalities) if cfg.modalities else options.modalities
        self.session.update(SessionOptions(voice=voice, modalities=modalities, output_rate=output_rate,
                                           auto_respond=options.auto_respond))

    async def _item_create(self, create: ItemCreate) -> None:
        texts: list[str] = []
        image_id: str | None = None
        for part in create.item.content:
            if part.type == "input_text":
                if not part.text or not part.text.strip():
                    raise InvalidInputError("input_text needs non-empty 'text'", param="item.content.text")
                texts.append(part.text.strip())
            else:
                images = self.engines.brain.images
                if not part.image_id or images is None or not images.exists(part.image_id):
                    raise InvalidInputError(f"image {part.image_id!r} not found; upload it with POST /v1/images",
                                            code="image_not_found", param="item.content.image_id")
                image_id = part.image_id
        text = " ".join(texts)
        await self.session.add_message(text, image_id)
        content: list[dict[str, str]] = [{"type": "input_text", "text": text}] if text else []
        if image_id is not None:
            content.append({"type": "input_image", "image_id": image_id})
        await self.send(event(ServerEvent.ITEM_CREATED, item={"role": "user", "type": "message", "content": content}))


async def authenticate(ws: WebSocket, gate: Gate) -> Principal:
    """The caller of an accepted websocket; raises ``AuthError``.

    Its ``Authorization`` header, else (browsers) a first message ``{"type": "session.authenticate", "token"}``
    within ``AUTH_TIMEOUT_S``.
    """
    authority = gate.authority
    header = ws.headers.get("authorization")
    if header or not authority.required:
        return authority.authenticate(header)
    try:
        message = await asyncio.wait_for(ws.receive(), timeout=AUTH_TIMEOUT_S)
    except TimeoutError as err:
        raise AuthError(f"no session.authenticate within {AUTH_TIMEOUT_S} s") from err
    raw = message.get("text")
    try:
        data = json.loads(raw) if isinstance(raw, str) and len(raw) < 8192 else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("type") != "session.authenticate" or not isinstance(
            data.get("token"), str):
        raise AuthError("authentication required: send 'Authorization: Bearer <token>' on the handshake, or "
                        "{\"type\": \"session.authenticate\", \"token\": ...} as the first message")
    return authority.credential(data["token"])


def error_frame_event(frame: ErrorFrame) -> dict[str, Any]:
    """The one place an error becomes an ``error`` event (and is counted): a turn's, a client event's, a connection's."""
    metrics.ERRORS.labels(code=frame.code).inc()
    return error_event(frame.code, frame.message, param=frame.param, client_error=frame.client_error)


def wire_text(message: dict[str, Any]) -> str:
    """An event as JSON text, UTF-8 where it can be.

    A lone surrogate a client sent (an ``event_id`` of U+D800, echoed back) cannot be UTF-8: that event goes out with
    ASCII escapes, which any JSON reader takes, rather than failing the socket's writer and silencing the session.
    """
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(message, separators=(",", ":"))
    return text


async def refuse(ws: WebSocket, err: Exception, close_code: int, reason: str | None = None) -> None:
    """Tell a connection why it is not served, with an ``error`` event like every other error, then close it."""
    frame = ErrorFrame.of(err)
    with contextlib.suppress(Exception):
        await ws.send_text(wire_text(error_frame_event(frame)))
        await ws.close(code=close_code, reason=reason or frame.code)


async def serve_realtime(ws: WebSocket, engines: Engines, *, queue_size: int, output_rate: int,
                         gate: Gate | None = None, live: LiveSessions | None = None) -> None:
    principal = OPEN
    if live is not None and live.closing:
        await ws.close(code=1013, reason="server restarting")  # before the handshake: HTTP 403, retry elsewhere
        return
    if gate is not None:
        origin = ws.headers.get("origin")
        if not gate.authority.origin_allowed(origin, ws.headers.get("host")):
            # Refused before the handshake completes: the browser sees HTTP 403.
            log.warning("websocket refused: origin %r", origin)
            await ws.close(code=1008, reason="origin not allowed")
            return
        client = ws.client.host if ws.client else None
        if live is not None and len(live.connections) >= gate.settings.max_sessions:
            await ws.accept()
            await refuse(ws, AssistantError("this server is at its session limit; retry shortly", code="server_busy"),
                         1013, "try again later")
            return
        if not gate.limits.allow("connections", client_key(None, client)):
            await ws.accept()
            await refuse(ws, InvalidInputError("too many connections from this address; retry later",
                                               code="rate_limited"), 1013, "try again later")
            return
        await ws.accept()
        try:
            principal = await authenticate(ws, gate)
        except AuthError as err:
            log.info("websocket authentication failed: %s", err.code)
            await refuse(ws, err, 1008)
            return
    else:
        await ws.accept()
    try:
        # Built in a worker thread: opening the session's memory writes to the store.
        conn = await asyncio.to_thread(functools.partial(
            RealtimeConnection, ws, engines, queue_size=queue_size, output_rate=output_rate, gate=gate,
            principal=principal, live=live))
    except AssistantError as err:  # e.g. the memory engine is down: say so, and the server goes on
        log.warning("session not opened: %s", err.message)
        await refuse(ws, err, 1011)
        return
    await conn.run()
    if ws.client_state == WebSocketState.CONNECTED and not conn.kicked:
        with contextlib.suppress(Exception):
            await ws.close(code=1000)
