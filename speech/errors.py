"""Errors raised by the speech package.

Every error carries a machine-readable ``code`` so that callers (the assistant pipeline, the server) can turn it
into an ``error`` event without parsing messages::

    SpeechError(Exception)                      code = "speech_error"
    ├── AudioFormatError(SpeechError, ValueError)   code = "unsupported_audio_format"
    ├── SpeechToTextError                           code = "stt_failed"
    ├── TextToSpeechError                           code = "tts_failed"
    └── ModelNotFoundError(SpeechError, KeyError)   code = "unknown_model"

Stages wrap unexpected exceptions at their boundary with ``raise SpeechToTextError(...) from err``;
cancellation and timeouts pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable


class SpeechError(Exception):
    """Base class of all speech errors.

    Attributes:
        code: Stable machine-readable error code.
        message: Human-readable description.
    """

    code: str = "speech_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class AudioFormatError(SpeechError, ValueError):
    """Audio bytes or arrays that cannot be interpreted (odd PCM length, unsupported rate, ...)."""

    code = "unsupported_audio_format"


class SpeechToTextError(SpeechError):
    """A speech-to-text engine failed to load or to transcribe."""

    code = "stt_failed"


class TextToSpeechError(SpeechError):
    """A text-to-speech engine failed to load or to synthesize."""

    code = "tts_failed"


class ModelNotFoundError(SpeechError, KeyError):
    """An unknown model or engine name was requested; the message lists the valid names.

    Attributes:
        name: The name that was asked for.
        valid: The names that would have been accepted.
    """

    code = "unknown_model"

    def __init__(self, name: str, valid: Iterable[str], *, kind: str = "model") -> None:
        self.name = name
        self.valid = list(valid)
        super().__init__(f"unknown {kind} {name!r}; valid names: {', '.join(self.valid)}")


class RequestDropped(SpeechError):
    """A partial transcription was dropped by the scheduler (superseded or stale); not a failure."""

    code = "stt_dropped"
