"""Errors of a conversation turn, each with a machine code that the server sends in an ``error`` event.

::

    AssistantError(code, message, param=None)
     ├── InvalidInputError            codes: invalid_event, unsupported_audio_format, frame_too_large,
     │                                        buffer_overflow, empty_buffer, no_speech, image_not_found
     ├── TranscriptionError           code: stt_failed (wraps speech.errors.SpeechError at the voice input)
     ├── SearchError                  code: search_failed
     ├── ReplyError                   code: reply_failed / tts_failed
     └── MemoryUnavailable            code: memory_unavailable (the memory engine is unreachable)

Each stage wraps unknown exceptions at its boundary with ``raise ... from err``; cancellation passes through
unchanged.  ``ErrorFrame.of`` (``assistant.core.frames``) is the one way an error becomes an ``error`` event, with
its code and ``client_error`` flag (the event's ``type``: ``invalid_request_error`` or ``server_error``); an error
ends the turn, never the session.
"""

from __future__ import annotations


class AssistantError(Exception):
    """An error with a protocol code; ``client_error`` is True when the client's input caused it."""

    code = "internal_error"
    client_error = False

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param


class InvalidInputError(AssistantError):
    code = "invalid_event"
    client_error = True


class TranscriptionError(AssistantError):
    code = "stt_failed"


class SearchError(AssistantError):
    code = "search_failed"


class ReplyError(AssistantError):
    code = "reply_failed"


class MemoryUnavailable(AssistantError):
    """The memory engine (Redis, SQLite) failed after its retries; nothing half-written was kept."""

    code = "memory_unavailable"
