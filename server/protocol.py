"""Wire protocol v1 (docs/protocol.md): event names, client-event validation and server-event builders.

Client events are validated with pydantic; anything malformed becomes an ``invalid_event`` error, never an
exception that reaches the connection.
"""

from __future__ import annotations

import base64
import binascii
import json
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assistant.core.errors import InvalidInputError


class ClientEvent(StrEnum):
    SESSION_UPDATE = "session.update"
    AUDIO_APPEND = "input_audio_buffer.append"
    AUDIO_COMMIT = "input_audio_buffer.commit"
    AUDIO_CLEAR = "input_audio_buffer.clear"
    ITEM_CREATE = "conversation.item.create"
    RESPONSE_CREATE = "response.create"
    RESPONSE_CANCEL = "response.cancel"
    FEEDBACK = "feedback"
    KEEPALIVE = "keepalive"


class ServerEvent(StrEnum):
    SESSION_CREATED = "session.created"
    SESSION_UPDATED = "session.updated"
    SESSION_CLOSING = "session.closing"
    SPEECH_STARTED = "input_audio_buffer.speech_started"
    SPEECH_STOPPED = "input_audio_buffer.speech_stopped"
    COMMITTED = "input_audio_buffer.committed"
    CLEARED = "input_audio_buffer.cleared"
    TRANSCRIPT_DELTA = "conversation.item.input_audio_transcription.delta"
    TRANSCRIPT_COMPLETED = "conversation.item.input_audio_transcription.completed"
    ITEM_CREATED = "conversation.item.created"
    RESPONSE_CREATED = "response.created"
    TEXT_DELTA = "response.output_text.delta"
    AUDIO_DELTA = "response.output_audio.delta"
    PRODUCTS = "response.products"
    RESPONSE_DONE = "response.done"
    ERROR = "error"
    KEEPALIVE = "keepalive"


MAX_TEXT_FRAME_BYTES = 256 * 1024  # JSON events (base64 audio of a 64 KiB frame is ~88 KiB)
MAX_INPUT_TEXT_CHARS = 2000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="ignore")


class InputAudio(_Strict):
    rate: int = Field(16000, gt=0, le=192000)


class OutputAudio(_Strict):
    rate: int | None = Field(None, gt=0, le=192000)
    transport: Literal["binary", "json"] = "binary"


class TurnDetection(_Strict):
    type: Literal["server_vad"] = "server_vad"
    silence_duration_ms: int = Field(500, ge=100, le=5000)
    threshold: float = Field(0.5, ge=0.05, le=0.95)
    prefix_padding_ms: int = Field(300, ge=0, le=2000)


class SessionConfig(_Strict):
    input_audio: InputAudio | None = None
    output_audio: OutputAudio | None = None
    turn_detection: TurnDetection | None = Field(default_factory=TurnDetection)
    modalities: list[Literal["text", "audio"]] | None = None
    language: str | None = None
    user_id: str | None = Field(None, max_length=128)
    resume_token: str | None = Field(None, max_length=256)


class SessionUpdate(_Strict):
    session: SessionConfig


class ContentPart(_Strict):
    type: Literal["input_text", "input_image"]
    text: str | None = Field(None, max_length=MAX_INPUT_TEXT_CHARS)
    image_id: str | None = Field(None, max_length=128)


class Item(_Strict):
    role: Literal["user"] = "user"
    type: Literal["message"] = "message"
    content: list[ContentPart] = Field(min_length=1, max_length=8)


class ItemCreate(_Strict):
    item: Item


class AudioAppend(_Strict):
    audio: str


class Feedback(_Strict):
    product_id: str = Field(min_length=1, max_length=128)
    action: Literal["click", "add_to_cart", "purchase", "dislike", "like"]


def parse_client_event(raw: str | bytes) -> tuple[str, dict[str, Any], str | None]:
    """Parse one JSON text frame into ``(type, payload, event_id)``; raises ``InvalidInputError``."""
    if len(raw) > MAX_TEXT_FRAME_BYTES:
        raise InvalidInputError(f"text frame larger than {MAX_TEXT_FRAME_BYTES} bytes", code="frame_too_large")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"text frames must be JSON events: {err}") from err
    except RecursionError as err:  # "[[[[..." nested deeper than the parser's recursion limit
        raise InvalidInputError("text frame JSON is nested too deeply") from err
    if not isinstance(data, dict):
        raise InvalidInputError("an event must be a JSON object")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    if not isinstance(kind, str):
        raise InvalidInputError("an event needs a string 'type'", param="type")
    if kind not in set(ClientEvent):
        names = ", ".join(sorted(e.value for e in ClientEvent))
        raise InvalidInputError(f"unknown event type {kind!r}; expected one of {names}", param="type")
    return kind, data, event_id


def validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidInputError(f"{where}: {first.get('msg')}", param=where or None) from err


def decode_b64_audio(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInputError("input_audio_buffer.append: 'audio' is not valid base64", param="audio") from err


def event(kind: ServerEvent | str, **fields: Any) -> dict[str, Any]:
    return {"type": str(kind), **fields}


def error_event(code: str, message: str, *, event_id: str | None = None, param: str | None = None,
                client_error: bool = True) -> dict[str, Any]:
    err: dict[str, Any] = {
        "type": "invalid_request_error" if client_error else "server_error",
        "code": code,
        "message": message,
    }
    if param:
        err["param"] = param
    out = event(ServerEvent.ERROR, error=err)
    if event_id:
        out["event_id"] = event_id
    return out
