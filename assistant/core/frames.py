"""Typed frames that flow through a conversation turn.

A turn is a pipeline: audio -> transcript -> query -> products -> reply text -> speech.  Every message inside a
session is one small dataclass frame.  Frames differ by how an interruption (barge-in, ``response.cancel``) treats
them: *system* frames (errors, turn boundaries) are always delivered, *data* frames belonging to a cancelled reply are
dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from assistant.search.query import ProductHit


@dataclass(frozen=True)
class Frame:
    """Base class of everything that moves through a session."""


@dataclass(frozen=True)
class SystemFrame(Frame):
    """Never dropped on interruption."""


@dataclass(frozen=True)
class DataFrame(Frame):
    """Dropped when the reply it belongs to is cancelled."""


# --- input side ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpeechStarted(SystemFrame):
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStopped(SystemFrame):
    audio_end_ms: int


@dataclass(frozen=True)
class TranscriptDelta(SystemFrame):
    """A partial transcript while the shopper speaks; ``text`` is the whole hypothesis so far (it may be revised)."""

    item_id: str
    text: str
    delta: str


@dataclass(frozen=True)
class Transcript(SystemFrame):
    """The final transcript of one user turn."""

    item_id: str
    text: str
    language: str = "en"
    final: bool = True
    avg_logprob: float | None = None  # the transcript's mean token log-probability (None: unknown)
    alternatives: tuple[tuple[str, float], ...] = ()  # other beam hypotheses (text, mean log-probability)


@dataclass(frozen=True)
class UserTurn(SystemFrame):
    """What the brain answers: the words of the turn (typed or transcribed) and, later, an image."""

    item_id: str
    text: str
    image_id: str | None = None
    wants_audio: bool = True
    # Spoken turns: Whisper's confidence and other hypotheses, for the repair of misheard product words
    # (`assistant.conversation.vocabulary`); typed turns have neither.
    avg_logprob: float | None = None
    alternatives: tuple[tuple[str, float], ...] = ()


# --- output side --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResponseStarted(SystemFrame):
    response_id: str


@dataclass(frozen=True)
class ProductResults(DataFrame):
    response_id: str
    hits: tuple[ProductHit, ...]


@dataclass(frozen=True)
class ReplyTextDelta(DataFrame):
    response_id: str
    delta: str


@dataclass(frozen=True)
class SpeechAudio(DataFrame):
    """One chunk of reply speech, PCM16 mono at ``sample_rate``."""

    response_id: str
    pcm16: bytes
    sample_rate: int


@dataclass(frozen=True)
class ResponseDone(SystemFrame):
    response_id: str
    status: str  # "completed" | "cancelled" | "failed"
    text: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    intent: str | None = None  # what the dialogue understood the turn as (None without one)
    handoff: bool = False  # the reply offers the shopper a person


@dataclass(frozen=True)
class ErrorFrame(SystemFrame):
    """A turn's error, as the server will send it; `client_error`: the client's input caused it."""

    code: str
    message: str
    param: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    client_error: bool = False

    @classmethod
    def of(cls, err: BaseException) -> ErrorFrame:
        """The frame of any error, the one way errors become ``error`` events.

        An `AssistantError` (or another error with a ``code``) keeps its code, message, param and client-fault flag;
        anything else is an ``internal_error`` that names only its type.
        """
        code = getattr(err, "code", None)
        if not isinstance(code, str):
            return cls(code="internal_error", message=f"internal error ({type(err).__name__})")
        return cls(code=code, message=str(getattr(err, "message", err)), param=getattr(err, "param", None),
                   client_error=bool(getattr(err, "client_error", False)))


def audio_duration_ms(audio: np.ndarray, sample_rate: int) -> float:
    """Milliseconds of audio in a float array."""
    return 1000.0 * len(audio) / sample_rate
