"""One conversation: voice input, typed input and the replies, independent of any transport.

The server's websocket handler owns one ``ConversationSession`` per connection and turns the frames it emits into
protocol events.  The session enforces the turn rules: one reply at a time, a new user turn or a barge-in cancels the
reply in flight (its data frames are dropped, a ``ResponseDone(status="cancelled")`` is still emitted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from assistant.conversation.dialogue import DialogueState
from assistant.core.errors import AssistantError, InvalidInputError
from assistant.core.frames import (
    DataFrame,
    ErrorFrame,
    Frame,
    ProductResults,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    Transcript,
    UserTurn,
)
from assistant.core.signals import SessionSignals
from assistant.memory.store import MemoryStore, SessionMemory
from assistant.runtime.turn import Brain
from assistant.runtime.voice import FINAL_BEAM_SIZE, VoiceInput, VoiceOptions
from speech.stt import STTEngine
from speech.vad import SileroVAD

log = logging.getLogger(__name__)

Emit = Callable[[Frame], Awaitable[None]]
MAX_SIGNAL_IDS = 500  # products remembered per signal kind and session


@dataclass(frozen=True)
class SessionOptions:
    voice: VoiceOptions = VoiceOptions()
    modalities: tuple[str, ...] = ("text", "audio")
    output_rate: int | None = None  # None: what the TTS engine makes
    auto_respond: bool = True  # answer a final transcript without waiting for response.create


@dataclass
class Engines:
    """Everything heavy a session uses, built once per server and shared by all sessions."""

    stt: STTEngine
    brain: Brain
    vad_factory: Callable[[], SileroVAD]
    memory: MemoryStore | None = None  # durable session/user memory; None keeps it in this process only
    # The served catalog's Whisper prompt given the product ids on screen (`CatalogVocabulary.prompt_for`), read at
    # every decode; None: no biasing
    asr_prompt: Callable[[Sequence[str]], str | None] | None = None
    final_beam_size: int = FINAL_BEAM_SIZE  # beam width of final transcripts (`VoiceOptions.final_beam_size`)


def new_response_id() -> str:
    return "resp_" + uuid.uuid4().hex[:16]


class ConversationSession:
    """One shopper's conversation: voice input, turns, replies, and what is remembered of them.

    Building one opens its memory session (a store write): the server builds it in a worker thread.
    """

    def __init__(self, engines: Engines, emit: Emit, options: SessionOptions | None = None) -> None:
        self.engines = engines
        self.memory: SessionMemory | None = engines.memory.open_session() if engines.memory is not None else None
        self.id = self.memory.session_id if self.memory is not None else "sess_" + uuid.uuid4().hex[:16]
        self._emit_raw = emit
        self.options = options or SessionOptions(voice=VoiceOptions(final_beam_size=engines.final_beam_size))
        self.dialogue = DialogueState(memory=self.memory)  # what "the second one" and "cheaper" refer to
        self.voice = VoiceInput(engines.stt, engines.vad_factory, self.options.voice, self._emit, self._on_transcript,
                                prompt=self._asr_prompt if engines.asr_prompt is not None else None)
        self._response: asyncio.Task[None] | None = None
        self._response_id: str | None = None
        self._pending_text: list[str] = []
        self._pending_image: str | None = None  # a photo the next turn (typed or spoken) is about
        self.history: list[tuple[str, str]] = []  # (role, text), bounded
        self._cancelled: deque[str] = deque(maxlen=16)  # recent cancelled replies whose late frames are dropped
        self.signals = SessionSignals()  # what this shopper viewed/liked/bought/disliked, for ranking

    # --- memory ---------------------------------------------------------------------------------------------
    def _asr_prompt(self) -> str | None:
        """Whisper's prompt for this session: the catalog's words, the lines of the products on screen first."""
        if self.engines.asr_prompt is None:
            return None
        return self.engines.asr_prompt([h.product.id for h in self.dialogue.shown])

    async def resume(self, token: str, user_id: str | None = None) -> bool:
        """Continue an earlier session (``session.update {resume_token}``): its turns, results, cart and signals.

        The store is read in a worker thread; the session switches to what was read on the loop.
        """
        store = self.engines.memory
        if store is None:
            return False
        catalog = self.engines.brain.searcher.catalog

        def load() -> tuple[SessionMemory, list[tuple[str, str]], DialogueState, SessionSignals] | None:
            found = store.resume(token, user_id=user_id)
            if found is None:
                return None
            return (found, [(t.role, t.text) for t in found.turns()], DialogueState.restore(found, catalog),
                    found.signals())

        loaded = await asyncio.to_thread(load)
        if loaded is None:
            return False
        memory, self.history, self.dialogue, signals = loaded
        self.memory, self.id = memory, memory.session_id
        signals.viewed |= self.signals.viewed
        self.signals = signals
        return True

    async def sign_in(self, user_id: str) -> None:
        """The shopper's user id (``session.update {user_id}``): their history (with consent) and friends count."""
        memory = self.memory
        if memory is None:
            return

        def attach() -> SessionSignals:
            memory.attach_user(user_id)
            return memory.signals()

        signals = await asyncio.to_thread(attach)
        signals.viewed |= self.signals.viewed
        self.signals = signals

    def _refresh_signals(self) -> None:
        if self.memory is None:
            return
        shown = self.signals.viewed
        self.signals = self.memory.signals()
        self.signals.viewed |= shown

    # --- configuration --------------------------------------------------------------------------------------
    def update(self, options: SessionOptions) -> None:
        if options.voice != self.options.voice:
            self.voice.configure(options.voice)
        self.options = options

    def with_voice(self, **changes: object) -> SessionOptions:
        return replace(self.options, voice=replace(self.options.voice, **changes))  # type: ignore[arg-type]

    # --- inputs ---------------------------------------------------------------------------------------------
    async def append_audio(self, pcm16: bytes) -> None:
        await self.voice.append(pcm16)

    async def commit_audio(self) -> None:
        await self.voice.commit()

    def clear_audio(self) -> None:
        self.voice.clear()

    async def add_message(self, text: str, image_id: str | None = None) -> None:
        """A user message (``conversation.item.create``): typed words and/or an uploaded photo."""
        if text:
            self._pending_text.append(text)
        if image_id is not None:
            self._pending_image = image_id

    async def create_response(self) -> None:
        """``response.create``: answer the pending message (words, photo, or both)."""
        text = " ".join(self._pending_text).strip()
        image_id, self._pending_image = self._pending_image, None
        self._pending_text.clear()
        if not text and image_id is None:
            raise InvalidInputError("nothing to respond to: add a user message first", code="empty_buffer")
        await self.start_response(UserTurn(item_id="item_" + uuid.uuid4().hex[:16], text=text, image_id=image_id,
                                           wants_audio=self._audio_out))

    @property
    def _audio_out(self) -> bool:
        return "audio" in self.options.modalities

    async def _on_transcript(self, transcript: Transcript) -> None:
        await self._emit(transcript)
        if transcript.text and self.options.auto_respond:
            # A photo sent before speaking ("like this but in blue") belongs to this spoken turn.
            image_id, self._pending_image = self._pending_image, None
            await self.start_response(UserTurn(item_id=transcript.item_id, text=transcript.text, image_id=image_id,
                                               wants_audio=self._audio_out, avg_logprob=transcript.avg_logprob,
                                               alternatives=transcript.alternatives))

    # --- replies --------------------------------------------------------------------------------------------
    async def start_response(self, turn: UserTurn) -> str:
        if self.memory is not None and turn.text:  # SQLite/Redis, off the event loop; a failure refuses the turn
            await asyncio.to_thread(self.memory.add_turn, "user", turn.text)
        await self.cancel_response()
        response_id = new_response_id()
        self._response_id = response_id
        self.history.append(("user", turn.text))
        del self.history[:-40]
        await self._emit(ResponseStarted(response_id=response_id))
        self._response = asyncio.ensure_future(self._run_response(turn, response_id))
        return response_id

    async def _run_response(self, turn: UserTurn, response_id: str) -> None:
        status = "failed"
        text = ""
        timings: dict[str, float] = {}
        done: ResponseDone | None = None
        try:
            async for frame in self.engines.brain.respond(turn, response_id, output_rate=self.options.output_rate,
                                                          signals=self.signals, state=self.dialogue):
                if isinstance(frame, ProductResults):
                    await asyncio.to_thread(self._remember_shown, frame)
                if isinstance(frame, ResponseDone):
                    status, text, timings, done = frame.status, frame.text, frame.timings_ms, frame
                    continue
                await self._emit(frame)
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except AssistantError as err:
            await self._emit(ErrorFrame.of(err))
        except Exception as err:  # the one place unknown reply errors become an error event
            log.exception("reply %s failed", response_id)
            await self._emit(ErrorFrame.of(err))
        finally:
            if status == "completed" and text:
                self.history.append(("assistant", text))
                if self.memory is not None:
                    try:
                        await asyncio.to_thread(self._remember_reply, text)
                    except AssistantError as err:  # the reply went out; say the memory missed it, and finish
                        log.warning("reply %s not remembered: %s", response_id, err.message)
                        await self._emit(ErrorFrame.of(err))
            if self._response_id == response_id:
                self._response_id = None
            await self._emit_raw(ResponseDone(response_id=response_id, status=status, text=text, timings_ms=timings,
                                              intent=done.intent if done else None,
                                              handoff=done.handoff if done else False))

    def _remember_reply(self, text: str) -> None:
        assert self.memory is not None
        self.memory.add_turn("assistant", text)
        self.dialogue.save()

    async def record_feedback(self, product_id: str, action: str) -> None:
        """A ``feedback`` event: it shifts this session's ranking at once (a disliked item is not shown first).

        With memory the event is durable before this returns (it trains the next ranker) and the signals are
        rebuilt from memory; without, they change in this process only.
        """
        if self.memory is not None:
            await asyncio.to_thread(self._record_event, product_id, action)
            return
        signals = self.signals
        target = {"like": signals.liked, "click": signals.viewed, "add_to_cart": signals.liked,
                  "purchase": signals.bought, "dislike": signals.disliked}[action]
        if action == "dislike":
            signals.liked.discard(product_id)
        else:
            signals.disliked.discard(product_id)
        target.add(product_id)
        signals.recency[product_id] = 1.0
        for ids in (signals.viewed, signals.liked, signals.bought, signals.disliked):
            while len(ids) > MAX_SIGNAL_IDS:  # bounded per-session state
                ids.pop()

    def _record_event(self, product_id: str, action: str) -> None:
        assert self.memory is not None
        self.memory.record_event(product_id, action)
        self._refresh_signals()

    def _remember_shown(self, frame: ProductResults) -> None:
        if self.memory is not None:
            self.memory.set_shown([hit.product.id for hit in frame.hits])
        for hit in frame.hits:
            self.signals.viewed.add(hit.product.id)
        while len(self.signals.viewed) > MAX_SIGNAL_IDS:
            self.signals.viewed.pop()

    async def cancel_response(self) -> bool:
        """Cancel the reply in flight (``response.cancel`` or barge-in); True if there was one."""
        task, response_id = self._response, self._response_id
        if task is None or task.done() or response_id is None:
            return False
        self._cancelled.append(response_id)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return True

    async def finish_response(self, timeout: float) -> bool:
        """Let the reply in flight finish within ``timeout`` s (graceful shutdown); True if it did (or there was none).

        A reply still running then is cancelled, so its ``response.done`` says ``cancelled``.
        """
        task = self._response
        if task is None or task.done():
            return True
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if done:
            return True
        await self.cancel_response()
        return False

    @property
    def responding(self) -> bool:
        return self._response is not None and not self._response.done()

    # --- output ---------------------------------------------------------------------------------------------
    async def _emit(self, frame: Frame) -> None:
        if isinstance(frame, SpeechStarted) and self.responding:
            await self._emit_raw(frame)
            await self.cancel_response()  # barge-in
            return
        if isinstance(frame, DataFrame) and getattr(frame, "response_id", None) in self._cancelled:
            return
        await self._emit_raw(frame)

    async def wait_idle(self) -> None:
        if self._response is not None:
            with contextlib.suppress(BaseException):
                await self._response

    async def close(self) -> None:
        await self.cancel_response()
        await self.voice.close()
