"""The brain of one turn: query -> products -> grounded reply text -> speech, streamed as frames.

Stages are separate, injectable objects (the searcher and the reply writer are the seams later issues replace):

``UserTurn`` -> ``parse_query`` -> ``ProductSearcher.search`` -> ``ReplyWriter.write`` (text deltas, each sentence
checked against the facts it was built from) -> ``TTSEngine`` (one sentence at a time, the first one synthesised
while the rest of the reply is still being written).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
from PIL import Image

from assistant.catalog.view import CatalogView
from assistant.conversation.dialogue import Dialogue, DialogueState, Plan, check_quoted
from assistant.conversation.vocabulary import CatalogVocabulary, Understood
from assistant.core.errors import AssistantError, ReplyError, SearchError
from assistant.core.frames import Frame, ProductResults, ReplyTextDelta, ResponseDone, SpeechAudio, UserTurn
from assistant.core.signals import SessionSignals
from assistant.replies.grounding import check_grounding, facts_from_hits
from assistant.replies.writer import ReplyWriter, TemplateReplyWriter
from assistant.runtime.uploads import ImageStore
from assistant.search.query import ProductHit, ProductSearcher, SearchQuery, parse_query
from speech.audio import float32_to_pcm16, resample
from speech.tts import SentenceBuffer, TTSEngine

log = logging.getLogger(__name__)

AUDIO_CHUNK_MS = 100  # reply audio is sent in 100 ms pieces so a barge-in stops it within one piece


class PhotoSearcher(Protocol):
    """Finds products that look like a photo, optionally constrained by the shopper's words."""

    def search_photo(self, image: Image.Image, query: SearchQuery | None) -> list[ProductHit]: ...


def demote_disliked(hits: list[ProductHit], signals: SessionSignals | None) -> list[ProductHit]:
    """Move products the shopper disliked to the end (stable), so a dislike takes effect at once."""
    if signals is None or not signals.disliked:
        return hits
    keep = [h for h in hits if h.product.id not in signals.disliked]
    return keep + [h for h in hits if h.product.id in signals.disliked]


@dataclass(frozen=True)
class BrainOptions:
    k: int = 5
    output_rate: int | None = None  # None: the TTS engine's own rate


class Brain:
    """Answers one ``UserTurn`` with a stream of frames."""

    def __init__(
        self,
        searcher: ProductSearcher,
        tts: TTSEngine | None,
        writer: ReplyWriter | None = None,
        options: BrainOptions | None = None,
        *,
        photos: PhotoSearcher | None = None,
        images: ImageStore | None = None,
        dialogue: Dialogue | None = None,
        vocabulary: CatalogVocabulary | None = None,
        view: CatalogView | None = None,
        repair: bool = True,
    ) -> None:
        self.searcher = searcher
        # The served catalog's spoken vocabulary: the shared view's (a reload swaps it), else a fixed one, else none
        # (no Whisper prompt, no repair). `repair`: misheard product words are repaired with it before the turn is
        # understood.
        self.view = view
        self._vocabulary = vocabulary
        self.repair = repair
        self.photos = photos
        self.images = images
        self.tts = tts
        self.writer: ReplyWriter = writer or TemplateReplyWriter()
        self.dialogue = dialogue
        self.options = options or BrainOptions()

    @property
    def vocabulary(self) -> CatalogVocabulary | None:
        """The served catalog's spoken vocabulary, for Whisper's prompt and repairs (None: neither)."""
        if self.view is not None:
            return self.view.derived("vocabulary", CatalogVocabulary.from_catalog)
        return self._vocabulary

    def search(
        self,
        text: str,
        k: int | None = None,
        image_id: str | None = None,
        *,
        use_ranker: bool = True,
        signals: SessionSignals | None = None,
        query: SearchQuery | None = None,
    ) -> tuple[SearchQuery, list[ProductHit]]:
        """Text search, photo search, or photo refined by words ("like this but in blue, under $40").

        It blocks: the turn calls it from its worker thread, ``POST /v1/search`` through ``asyncio.to_thread``.

        ``query``: an already built query (a refinement merged by the dialogue) instead of parsing ``text``.

        ``use_ranker=False`` skips a re-ranking searcher's second stage (`assistant.search.rerank.RankedSearcher`).
        ``signals`` (this shopper's views, likes, dislikes, purchases) go to the ranker, and whatever the searcher,
        a product the shopper disliked is never shown first again.
        """
        query, hits = self._search(text, k, image_id, use_ranker=use_ranker, signals=signals, query=query)
        return query, demote_disliked(hits, signals)

    def _search(
        self, text: str, k: int | None, image_id: str | None, *, use_ranker: bool, signals: SessionSignals | None,
        query: SearchQuery | None = None,
    ) -> tuple[SearchQuery, list[ProductHit]]:
        # The searcher's vocabulary (the catalog's brands and categories) lets the parser find those slots too.
        parsed = query if query is not None else parse_query(text, self.searcher.vocab)
        query = replace(parsed, k=k or self.options.k)
        if image_id is not None:
            if self.photos is None or self.images is None:
                raise SearchError("photo search is not available on this server", code="photo_search_unavailable")
            image = self.images.get(image_id)
            words = query if text.strip() else None
            try:
                hits = self.photos.search_photo(image, words)
            except AssistantError:
                raise
            except Exception as err:
                raise SearchError(f"photo search failed: {err}") from err
            return query, hits
        try:
            hits = self.searcher.search(query, use_ranker=use_ranker, signals=signals)
        except Exception as err:
            raise SearchError(f"product search failed: {err}") from err
        return query, hits

    def plan(self, turn: UserTurn, *, signals: SessionSignals | None, state: DialogueState | None
             ) -> tuple[Understood, Plan]:
        """The turn's words as understood, and what to answer (it blocks: `respond` runs it in a worker thread).

        With a ``Dialogue`` and the conversation's ``state`` the turn is planned by intent; without, every turn is
        a product search.
        """
        understood = self.understand(turn)
        said = understood.text
        if self.dialogue is not None and state is not None:
            with state.planning:
                state.heard = turn.avg_logprob is not None or bool(turn.alternatives)  # a transcript, not typed text
                plan = self.dialogue.plan(said, image_id=turn.image_id, state=state, search=self.search,
                                          signals=signals, k=self.options.k)
        else:
            query, hits = self.search(said, image_id=turn.image_id, signals=signals)
            plan = Plan(None, query, hits=hits, facts=facts_from_hits(hits))
        return understood, plan

    def understand(self, turn: UserTurn) -> Understood:
        """The turn's words after the repair of misheard product words (unchanged when repair is off)."""
        if not self.repair or self.vocabulary is None or not turn.text.strip():
            return Understood(turn.text)
        understood = self.vocabulary.repair(turn.text, turn.alternatives, turn.avg_logprob)
        if understood.changed:
            log.info("understood %r as %r (%s)", turn.text, understood.text,
                     ", ".join(f"{r.heard!r}->{r.meant!r} by {r.source}" for r in understood.repairs))
        return understood

    async def respond(
        self,
        turn: UserTurn,
        response_id: str,
        *,
        output_rate: int | None = None,
        signals: SessionSignals | None = None,
        state: DialogueState | None = None,
    ) -> AsyncIterator[Frame]:
        """Stream the reply to ``turn``: products, text deltas and (if wanted) speech, then ``ResponseDone``.

        With a ``Dialogue`` and the conversation's ``state`` the turn is planned by intent (references,
        refinements, policy, orders, cart ...); without, every turn is a product search.
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        # Repair, intent, search, memory, knowledge base: all of it blocks, so none of it runs on the event loop.
        understood, plan = await asyncio.to_thread(self.plan, turn, signals=signals, state=state)
        said = understood.text
        if understood.changed and plan.hits and plan.reply is None:
            plan.preface = " ".join(filter(None, [understood.shown_as(), plan.preface]))  # "Showing hoodies."
        timings["search_ms"] = 1000 * (time.perf_counter() - t0)
        if plan.hits is not None:
            yield ProductResults(response_id=response_id, hits=tuple(plan.hits))
        query, hits, facts = plan.query, plan.hits or [], plan.facts

        def violations_of(text: str) -> list[str]:
            screened = self.dialogue.screen(text) if self.dialogue is not None else []
            if plan.reply is not None:  # built from its sources by the dialogue: its numbers must be theirs
                return screened + check_quoted(text, plan.sources, facts)
            return screened + check_grounding(text, facts, query=query)

        async def reply_deltas() -> AsyncIterator[tuple[str, bool]]:
            """(text delta, whether it is whole sentences): whole ones go to speech at once, unbuffered."""
            if plan.preface:
                yield plan.preface + " ", True
            if plan.reply is not None:
                buffer = SentenceBuffer()
                for i, sentence in enumerate(buffer.feed(plan.reply) + buffer.flush()):
                    yield (sentence if i == 0 else " " + sentence), True
            else:
                whole = self.writer.sentence_deltas
                async for delta in self.writer.write(said, query, hits):
                    yield delta, whole
            if plan.postscript:
                yield " " + plan.postscript, True

        speak = turn.wants_audio and self.tts is not None
        out: asyncio.Queue[Frame | None] = asyncio.Queue()
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        parts: list[str] = []

        async def produce_text() -> None:
            buffer = SentenceBuffer()
            try:
                async for delta, whole in reply_deltas():
                    parts.append(delta)
                    await out.put(ReplyTextDelta(response_id=response_id, delta=delta))
                    if whole:
                        for sentence in buffer.flush():
                            await sentences.put(sentence)
                        if delta.strip():
                            await sentences.put(delta.strip())
                    else:
                        for sentence in buffer.feed(delta):
                            await sentences.put(sentence)
                for sentence in buffer.flush():
                    await sentences.put(sentence)
            finally:
                await sentences.put(None)

        async def produce_audio() -> None:
            assert self.tts is not None
            index = 0
            while (sentence := await sentences.get()) is not None:
                violations = violations_of(sentence)
                if violations:
                    raise ReplyError(f"reply failed its grounding check: {violations}")
                try:
                    audio = await self.tts.run_tts(sentence, priority=index)
                except Exception as err:
                    raise ReplyError(f"speech synthesis failed: {err}", code="tts_failed") from err
                index += 1
                if "first_audio_ms" not in timings:
                    timings["first_audio_ms"] = 1000 * (time.perf_counter() - t0)
                rate = self.tts.sample_rate
                if output_rate and output_rate != rate:
                    audio, rate = resample(audio, rate, output_rate), output_rate
                step = rate * AUDIO_CHUNK_MS // 1000
                for i in range(0, len(audio), step):
                    pcm = float32_to_pcm16(np.asarray(audio[i : i + step], dtype=np.float32))
                    await out.put(SpeechAudio(response_id=response_id, pcm16=pcm, sample_rate=rate))

        async def drain_sentences() -> None:
            while await sentences.get() is not None:
                pass

        async def run() -> None:
            try:
                await asyncio.gather(produce_text(), produce_audio() if speak else drain_sentences())
            finally:
                await out.put(None)

        worker = asyncio.ensure_future(run())
        try:
            while (frame := await out.get()) is not None:
                yield frame
            await worker  # re-raises a stage's error
        finally:
            if not worker.done():
                worker.cancel()
                with contextlib.suppress(BaseException):
                    await worker
        text = "".join(parts)
        violations = violations_of(text)
        if violations:
            raise ReplyError(f"reply failed its grounding check: {violations}")
        timings["total_ms"] = 1000 * (time.perf_counter() - t0)
        yield ResponseDone(response_id=response_id, status="completed", text=text, timings_ms=timings,
                           intent=plan.intent.name if plan.intent is not None else None, handoff=plan.handoff)
