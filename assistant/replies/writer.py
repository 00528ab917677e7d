"""What writes a reply: the writer protocol and the grounded template writer (the LLM writer is `replies.llm`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from assistant.replies.templates import compose_reply
from assistant.search.query import ProductHit, SearchQuery
from speech.tts import SentenceBuffer


class ReplyWriter(Protocol):
    """Writes the reply text from retrieved facts only, as a stream of text deltas."""

    @property
    def sentence_deltas(self) -> bool:
        """Whether every delta is one whole sentence, so speech may start on each at once (else it is buffered)."""
        ...

    def write(self, text: str, query: SearchQuery, hits: Sequence[ProductHit]) -> AsyncIterator[str]: ...


class TemplateReplyWriter:
    """The grounded template reply of ``assistant.replies.templates``, released sentence by sentence."""

    sentence_deltas = True  # every delta is a whole sentence: speech may start on it at once

    async def write(self, text: str, query: SearchQuery, hits: Sequence[ProductHit]) -> AsyncIterator[str]:
        reply = compose_reply(query, list(hits))
        buffer = SentenceBuffer()
        sentences = buffer.feed(reply) + buffer.flush()
        for i, sentence in enumerate(sentences):
            yield sentence if i == 0 else " " + sentence
