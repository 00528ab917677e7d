"""Text-to-speech: the engine interface, the engine registry and sentence chunking for streamed replies.

A reply streams in from the language model as text deltas; :class:`SentenceBuffer` hands out whole sentences as
soon as they are complete, so the first sentence is being spoken while the rest is still being written.

Example:
    >>> tts = create_tts("hibari")
    >>> buffer = SentenceBuffer()
    >>> for delta in reply_deltas:
    ...     for sentence in buffer.feed(delta):
    ...         audio = await tts.run_tts(sentence)
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from abc import ABC, abstractmethod

import numpy as np

log = logging.getLogger(__name__)

COQUI_PREFIX = "coqui:"
COQUI_EXAMPLE_MODELS = (
    "tts_models/en/ljspeech/vits",
    "tts_models/en/vctk/vits",
    "tts_models/multilingual/multi-dataset/xtts_v2",
)
MAX_SENTENCE_CHARS = 180  # a longer clause is split at a comma so the first audio is not delayed
# Lowercase words that end with a period without ending the sentence ("Mr. Smith", "e.g. red").
ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "inc", "ltd", "co", "no", "approx",
     "prof", "mt", "ft", "oz", "lb", "lbs", "sq", "dept", "est", "fig", "u.s", "a.m", "p.m"}
)
_BOUNDARY = re.compile(r"[.!?…]+[\"”’')\]]*\s+|\n+")
_CLAUSE_END = re.compile(r"[,;:—]\s+")
_MARKDOWN = re.compile(r"\*\*|__|`+|^#+\s*|^\s*[-*•]\s+", re.MULTILINE)
_SPOKEN_FORMS = (
    (re.compile(r"\be\.g\.", re.IGNORECASE), "for example"),
    (re.compile(r"\bi\.e\.", re.IGNORECASE), "that is"),
    (re.compile(r"\s&\s"), " and "),
    (re.compile(r"\bw/\s?"), "with "),
    (re.compile(r"https?://\S+"), "the link"),
)


def normalize_for_speech(text: str) -> str:
    """Rewrite text that reads badly aloud: markdown marks, "e.g."/"i.e.", "&", URLs, extra whitespace.

    Prices, numbers, times and titles ("$49.99", "1,250", "7:30 pm", "Mr.") are left alone: hibari's own text
    normalizer already reads them well ("$49.99" -> "forty nine dollars and ninety nine cents").

    Args:
        text: Text as written by the assistant.

    Returns:
        Text ready for a TTS engine.
    """
    out = _MARKDOWN.sub("", text)
    for pattern, spoken in _SPOKEN_FORMS:
        out = pattern.sub(spoken, out)
    return " ".join(out.split())


def _is_sentence_end(text: str, punct_start: int, next_char: str) -> bool:
    """Decide whether the punctuation at ``punct_start`` ends a sentence (``next_char`` follows the space)."""
    if text[punct_start] == "\n":
        return True
    if text[punct_start] != ".":
        return True
    if next_char.islower():
        return False
    word = text[text.rfind(" ", 0, punct_start) + 1 : punct_start].lstrip("(\"“'‘").lower()
    return not (word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()))


class SentenceBuffer:
    """Collect streamed text and return complete sentences.

    A sentence ends at ``.``, ``!``, ``?`` or ``…`` followed by whitespace and a non-lowercase character (so the
    decision waits for the first character of the next sentence), or at a newline. Decimal numbers ("$49.99")
    and abbreviations ("e.g.", "Mr.") do not end sentences. A clause longer than ``max_chars`` is cut at its last
    comma.

    Args:
        max_chars: Length after which an unfinished sentence is split at a comma.
    """

    def __init__(self, max_chars: int = MAX_SENTENCE_CHARS) -> None:
        self.max_chars = max_chars
        self._text = ""

    def feed(self, delta: str) -> list[str]:
        """Add streamed text; return the sentences it completed (stripped, in order)."""
        self._text += delta
        out: list[str] = []
        start = 0
        for match in _BOUNDARY.finditer(self._text):
            if match.end() >= len(self._text):
                break  # the next character is not known yet
            if _is_sentence_end(self._text, match.start(), self._text[match.end()]):
                out.extend(self._emit(self._text[start : match.end()]))
                start = match.end()
        self._text = self._text[start:]
        while len(self._text) > self.max_chars:
            cut = self._long_clause_cut(self._text)
            if cut is None:
                break
            out.extend(self._emit(self._text[:cut]))
            self._text = self._text[cut:]
        return out

    def flush(self) -> list[str]:
        """Return whatever text remains as the final sentence(s) and empty the buffer."""
        rest, self._text = self._text, ""
        out: list[str] = []
        buffer = SentenceBuffer(self.max_chars)
        out.extend(buffer.feed(rest + "\x00"))  # a sentinel reveals the last boundary's next character
        out.extend(self._emit(buffer._text.rstrip("\x00")))
        return out

    def _long_clause_cut(self, text: str) -> int | None:
        cuts = [m.end() for m in _CLAUSE_END.finditer(text) if m.end() <= self.max_chars and m.start() > 0]
        if cuts:
            return cuts[-1]
        if len(text) > 2 * self.max_chars:  # no comma anywhere near: cut at a space rather than wait forever
            space = text.rfind(" ", 0, self.max_chars)
            return space + 1 if space > 0 else None
        return None

    @staticmethod
    def _emit(piece: str) -> list[str]:
        sentence = piece.strip()
        return [sentence] if re.search(r"\w", sentence) else []


def split_sentences(text: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Split a whole text into sentences with the same rules as :class:`SentenceBuffer`."""
    buffer = SentenceBuffer(max_chars)
    return buffer.feed(text) + buffer.flush()


class TTSEngine(ABC):
    """A text-to-speech engine.

    ``synthesize`` blocks; ``run_tts`` runs it in a worker thread. One instance is never entered by two threads
    at once (subclasses hold ``self._lock`` around model calls).

    Attributes:
        name: Registry name, e.g. ``"hibari"``.
        sample_rate: Sample rate of the returned audio.
    """

    name: str
    sample_rate: int

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @abstractmethod
    def synthesize(self, text: str) -> np.ndarray:
        """Synthesize ``text`` (blocking).

        Args:
            text: One sentence or a short reply.

        Returns:
            Float32 mono audio at :attr:`sample_rate` (empty for text with nothing to say).

        Raises:
            TextToSpeechError: If the engine fails.
        """

    async def run_tts(self, text: str, *, priority: int = 0) -> np.ndarray:
        """Synthesize without blocking the event loop (runs :meth:`synthesize` in a thread).

        Args:
            text: One sentence.
            priority: The sentence's index in its reply; a shared scheduler (``assistant.runtime.scheduling.ScheduledTTS``)
                serves lower values first. A plain engine ignores it.
        """
        return await asyncio.to_thread(self.synthesize, text)
