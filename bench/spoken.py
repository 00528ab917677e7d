"""Spoken understanding: requests said by voices the product never heard, against the same requests typed.

One run (``shoptalk bench spoken``, results to ``bench/results/spoken.json``):

1. A data dir of its own (default ``.data/bench-spoken``) with the Luma catalog ingested (idempotent: unchanged
   products are not rewritten); every request is spoken by every voice of ``bench.voices`` (``BENCH_VOICES``) and
   cached under the data dir.
2. For each arm (``ARMS``: ``baseline`` = plain recognition, ``catalog-aware`` = ``asr_bias`` + ``asr_repair``) the
   real server runs in-process (``bench.common.ThreadServer``); ``concurrency`` websocket sessions (default 8) pull
   clips off one queue and stream them at real-time pace with server VAD (binary PCM16 frames, then the trailing
   silence the VAD needs to end the turn). Each request is a new session by default (``turns_per_session=1``):
   the dialogue merges a second request into the first ("refine"), so a session reused across requests leaks
   context; ``context_check`` measures how often it would have (a request typed alone, and after another).
3. The same request texts typed (``conversation.item.create``) through the same server, per arm.
4. Conditions (``bench.voices.CONDITIONS``): every request clean for every voice; for each voice a fixed, seeded
   subset (``degraded_subset``: both splits represented, the same subset for every condition) with noise at 10 dB
   SNR, reverb and a phone line.
5. Per arm x condition (and per voice, per split): corpus WER after Whisper's English normalizer (total word edits /
   total reference words), the share of empty finals (lost requests), nDCG@5 of the turn's products against the
   judgments (product requests only; no products scores 0), typed nDCG@5 over the same requests, and
   spoken / typed. Targets: spoken/typed >= 0.95 clean, >= 0.85 with noise10 and phone (reverb reported), clean
   WER <= 0.08.
6. Streaming vs offline: every clean clip decoded again as one whole utterance through the server's own voice input
   (a ``ConversationSession`` of the arm's engines, push-to-talk, commit at the end: the same STT engine, the same
   ``TranscribeOptions`` and whatever the final path does to a transcript) — WER streamed / offline (target
   <= 1.05) and the empty finals on clean speech (target 0).
7. The voice latency bench (``bench.voice_latency``) in the same process afterwards: end of speech -> first audio,
   push-to-talk and server VAD (target p50 <= 600 ms).

Held-out request texts never appear in the tables (only their qids and aggregate numbers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ThreadServer, machine, shared_data_dir, summary, write_results
from bench.ranking import ndcg_at_k
from server.settings import Settings

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEV_REQUESTS = ROOT / "bench" / "data" / "spoken_requests.jsonl"
HELDOUT_REQUESTS = ROOT / "bench" / "data" / "spoken_requests_heldout.jsonl"
RESULTS = ROOT / "bench" / "results" / "spoken.json"
DEFAULT_DATA_DIR = Path(".data/bench-spoken")
SPLITS = ("dev", "heldout")
K = 5
CLEAN = "clean"
# spoken nDCG@5 / typed nDCG@5 at least this, per condition (None: reported without a target)
RATIO_TARGETS: dict[str, float | None] = {"clean": 0.95, "noise10": 0.85, "phone": 0.85, "reverb": None}
WER_TARGET = 0.08  # corpus WER on clean speech
OFFLINE_RATIO_TARGET = 1.05  # streamed WER / offline WER on clean speech
EMPTY_CLEAN_TARGET = 0  # empty finals on clean speech
LATENCY_TARGET_MS = 600.0  # end of speech -> first audio p50
DEGRADED_PER_VOICE = 50
CONCURRENCY = 8
TURN_TIMEOUT_S = 60.0
LEAD_SILENCE_S = 0.25  # lets the VAD settle before the speech (as TalkClient.say)
TRAILING_SILENCE_MS = 1500  # after the speech: the server VAD's silence_duration_ms (500) with a margin
NO_SPEECH_GRACE_S = 2.0  # after the trailing silence, how long to wait for a VAD that heard nothing
ERROR_IDLE_S = 5.0  # after an error and the end of the stream, how long a silent server is waited for
QUICK: dict[str, Any] = {"requests": 4, "voices": 1, "degraded": 4, "conditions": ("clean", "phone")}


# ------------------------------------------------------------------------------------------------------- the arms


@dataclass(frozen=True)
class Arm:
    """One server configuration under test: a name and the recognition flags it sets."""

    name: str
    asr_bias: bool
    asr_repair: bool
    beam_size: int = 5  # finals' beam (SHOPTALK_STT_BEAM_SIZE); 1 is greedy, as before #8

    def settings(self, data_dir: Path, concurrency: int = CONCURRENCY) -> Settings:
        """The server's settings for this arm (connection and turn limits opened up for the load)."""
        return Settings(data_dir=data_dir, asr_bias=self.asr_bias, asr_repair=self.asr_repair,
                        stt_beam_size=self.beam_size,
                        max_sessions=max(64, 2 * concurrency), rate_limit_connections="100000/minute",
                        rate_limit_turns="100000/minute", rate_limit_events="100000/second")


ARMS: list[Arm] = [
    Arm("baseline", asr_bias=False, asr_repair=False, beam_size=1),  # the product before #8
    Arm("catalog-aware", asr_bias=True, asr_repair=True),
    # Arm("bias-only", asr_bias=True, asr_repair=False),
]
PRIMARY_ARM = "catalog-aware"  # what the product ships; its worst turns are listed


def arms_named(names: Iterable[str] | None) -> list[Arm]:
    """The arms of ``ARMS`` with these names, in ``ARMS`` order (all when ``names`` is None)."""
    if names is None:
        return list(ARMS)
    wanted = [n.strip() for n in names if n.strip()]
    unknown = [n for n in wanted if n not in {a.name for a in ARMS}]
    if unknown:
        raise ValueError(f"unknown arm(s) {', '.join(unknown)}; valid: {', '.join(a.name for a in ARMS)}")
    return [a for a in ARMS if a.name in wanted]


# --------------------------------------------------------------------------------------------------- the requests


@dataclass(frozen=True)
class SpokenRequest:
    """One request of the spoken set: its words, kind, graded judgments (parent ids) and split."""

    qid: str
    text: str
    kind: str
    judgments: Mapping[str, int] = field(hash=False)
    split: str = "dev"

    @property
    def is_product(self) -> bool:
        """Whether the request asks for products (scored by nDCG@5); "other" rows count for WER only."""
        return self.kind != "other" and any(g > 0 for g in self.judgments.values())


def read_requests(path: Path, split: str) -> list[SpokenRequest]:
    """The requests of one JSONL file (``{"qid", "text", "kind", "judgments", ...}`` per line)."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append(SpokenRequest(qid=str(row["qid"]), text=str(row["text"]), kind=str(row.get("kind", "")),
                                      judgments={str(k): int(v) for k, v in (row.get("judgments") or {}).items()},
                                      split=split))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{n}: not a spoken request: {err}") from err
    return rows


def load_requests(dev: Path = DEV_REQUESTS, heldout: Path = HELDOUT_REQUESTS) -> list[SpokenRequest]:
    """Dev and held-out requests; qids must be unique across both."""
    missing = [p for p in (dev, heldout) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"spoken request set missing: {', '.join(map(str, missing))}")
    requests = read_requests(dev, "dev") + read_requests(heldout, "heldout")
    dupes = [q for q, c in Counter(r.qid for r in requests).items() if c > 1]
    if dupes:
        raise ValueError(f"duplicate qids in the spoken request sets: {', '.join(sorted(dupes)[:5])}")
    return requests


def stratified_sample(requests: Sequence[SpokenRequest], n: int, key: str) -> list[SpokenRequest]:
    """``n`` requests drawn with ``random.Random(key)``, the splits in proportion and each present when ``n`` allows.

    Deterministic for a given ``key`` (string seeds do not depend on PYTHONHASHSEED); the result is in (split, qid)
    order. All requests when ``n`` covers them.
    """
    ordered = sorted(requests, key=lambda r: (r.split, r.qid))
    if n >= len(ordered):
        return ordered
    if n <= 0:
        return []
    groups: dict[str, list[SpokenRequest]] = defaultdict(list)
    for r in ordered:
        groups[r.split].append(r)
    names = sorted(groups)
    # largest remainder, with at least one per split while n allows
    exact = {s: n * len(groups[s]) / len(ordered) for s in names}
    counts = {s: min(len(groups[s]), max(1 if n >= len(names) else 0, math.floor(exact[s]))) for s in names}
    by_remainder = sorted(names, key=lambda s: (-(exact[s] - math.floor(exact[s])), s))
    while sum(counts.values()) < n:
        grew = False
        for s in by_remainder:
            if sum(counts.values()) < n and counts[s] < len(groups[s]):
                counts[s] += 1
                grew = True
        if not grew:
            break
    while sum(counts.values()) > n:  # the minimum of one per split overshot
        biggest = max(names, key=lambda s: (counts[s], s))
        counts[biggest] -= 1
    rng = random.Random(key)
    chosen = [r for s in names for r in rng.sample(groups[s], counts[s])]
    return sorted(chosen, key=lambda r: (r.split, r.qid))


def degraded_subset(requests: Sequence[SpokenRequest], voice: str, n: int = DEGRADED_PER_VOICE,
                    seed: int = 0) -> list[SpokenRequest]:
    """The requests ``voice`` says in every degraded condition: fixed per (seed, voice), both splits represented."""
    return stratified_sample(requests, n, f"spoken-degraded:{seed}:{voice}")


# ---------------------------------------------------------------------------------------------------- the metrics


@lru_cache(maxsize=1)
def _normalizer() -> Callable[[str], str]:
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()  # type: ignore[no-any-return]


def normalize(text: str) -> list[str]:
    """Words of ``text`` after Whisper's English normalizer (numbers, spellings, punctuation, "$50" forms)."""
    return _normalizer()(text).split()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Word-level Levenshtein distance (substitutions, deletions and insertions, each 1)."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)]


def word_edits(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words) of one transcript, both normalized."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    return edit_distance(ref, hyp), len(ref)


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> float | None:
    """Total word edits / total reference words over (reference, hypothesis) pairs; None when there are no words."""
    edits = words = 0
    for ref, hyp in pairs:
        e, n = word_edits(ref, hyp)
        edits += e
        words += n
    return edits / words if words else None


def product_ids(products: Sequence[Mapping[str, Any]], k: int = K) -> list[str]:
    """The first ``k`` distinct ids a turn showed, at the level judgments use (the parent of a variant)."""
    ids = [str(p.get("parent_id") or p.get("id")) for p in products]
    return list(dict.fromkeys(ids))[:k]


def ndcg5(ids: Sequence[str], judgments: Mapping[str, int]) -> float:
    """nDCG@5 of the shown ids (``bench.ranking.ndcg_at_k``); nothing shown scores 0."""
    return ndcg_at_k(list(ids), judgments, k=K) if ids else 0.0


def ratio(spoken: float | None, typed: float | None) -> float | None:
    """spoken / typed; None when either is missing or typed is 0."""
    if spoken is None or typed is None or typed <= 0:
        return None
    return spoken / typed


def ratio_passes(value: float | None, target: float | None) -> bool | None:
    """Whether a spoken/typed ratio meets its target (None: no target, or nothing to judge)."""
    if target is None or value is None:
        return None
    return value >= target - 1e-12


def wer_passes(value: float | None, target: float = WER_TARGET) -> bool | None:
    return None if value is None else value <= target + 1e-12


def offline_ratio(streamed: float | None, offline: float | None) -> float | None:
    """Streamed WER / offline WER; 1.0 when both are 0, None (infinite) when only offline is 0."""
    if streamed is None or offline is None:
        return None
    if offline == 0:
        return 1.0 if streamed == 0 else None
    return streamed / offline


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _r(value: float | None, nd: int = 4) -> float | None:
    return None if value is None else round(value, nd)


def group_metrics(turns: Sequence[Mapping[str, Any]], typed: Mapping[str, float],
                  condition: str | None = None) -> dict[str, Any]:
    """Metrics of a group of spoken turns (one arm): WER, empty finals, spoken and typed nDCG@5, their ratio.

    ``typed``: typed nDCG@5 per qid (the same arm's server); the typed mean is over the same turns' requests.
    ``condition``: names the ratio target; the clean WER target applies to "clean".
    """
    edits = words = 0
    for t in turns:
        e, n = word_edits(t["reference"], t["transcript"])
        edits += e
        words += n
    wer = edits / words if words else None
    scored = [t for t in turns if t["ndcg@5"] is not None and t["qid"] in typed]
    spoken_ndcg = _mean([t["ndcg@5"] for t in scored])
    typed_ndcg = _mean([typed[t["qid"]] for t in scored])
    value = ratio(spoken_ndcg, typed_ndcg)
    target = RATIO_TARGETS.get(condition or "", None)
    latencies = [t["first_audio_ms"] for t in turns if t.get("first_audio_ms") is not None]
    empty = sum(1 for t in turns if not t["transcript"].strip())
    out: dict[str, Any] = {
        "turns": len(turns),
        "ref_words": words,
        "word_edits": edits,
        "wer": _r(wer),
        "empty_finals": empty,
        "empty_share": _r(empty / len(turns)) if turns else None,
        "product_turns": len(scored),
        "ndcg@5": _r(spoken_ndcg),
        "typed_ndcg@5": _r(typed_ndcg),
        "ratio": _r(value),
        "ratio_target": target,
        "ratio_pass": ratio_passes(value, target),
        "errors": sum(len(t.get("errors") or []) for t in turns),
        "timeouts": sum(1 for t in turns if t.get("status") == "timeout"),
        "split_utterances": sum(1 for t in turns if t.get("segments", 1) > 1),
        "first_audio_ms": summary(latencies, 0) if latencies else None,
    }
    if condition == CLEAN:
        out["wer_target"] = WER_TARGET
        out["wer_pass"] = wer_passes(wer)
    return out


def grouped(turns: Sequence[Mapping[str, Any]], key: str, typed: Mapping[str, float],
            condition: str | None) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for t in turns:
        groups[str(t[key])].append(t)
    return {name: group_metrics(g, typed, condition) for name, g in sorted(groups.items())}


# ------------------------------------------------------------------------------------------------ data and clips


def prepare_data_dir(data_dir: Path, luma_dir: Path | None = None) -> dict[str, Any]:
    """Ingest the Luma catalog into ``data_dir`` (only changed products are written); the ingest report.

    Raises:
        FileNotFoundError: The shared Luma data is not there.
    """
    from assistant.catalog.ingest import ingest_file
    from assistant.catalog.store import default_store

    products = (luma_dir or shared_data_dir() / "luma-dev") / "products.jsonl"
    if not products.is_file():
        raise FileNotFoundError(f"the Luma catalog is not at {products} (set SHOPTALK_SHARED_DATA); "
                                "the spoken bench needs it")
    data_dir.mkdir(parents=True, exist_ok=True)
    with default_store(data_dir) as store:
        report = ingest_file(products, store, fetch_urls=False)
        count = store.count()
    return {"products": count, "added": report.added, "updated": report.updated, "unchanged": report.unchanged}


@dataclass
class Job:
    """One spoken turn to run: a request said by a voice in a condition."""

    request: SpokenRequest
    voice: str
    condition: str
    clip: np.ndarray = field(repr=False)

    @property
    def seconds(self) -> float:
        return len(self.clip) / 16000


def clip_seed(qid: str, voice: str, seed: int = 0) -> int:
    """The degradation seed of one (request, voice): fixed, different per clip."""
    return zlib.crc32(f"{seed}:{qid}:{voice}".encode()) & 0x7FFFFFFF


def plan_turns(requests: Sequence[SpokenRequest], voices: Sequence[str], conditions: Sequence[str],
               degraded: int, seed: int = 0) -> list[tuple[SpokenRequest, str, str]]:
    """(request, voice, condition) of every spoken turn: all requests clean, each voice's subset degraded."""
    plan: list[tuple[SpokenRequest, str, str]] = []
    for voice in voices:
        subset = degraded_subset(requests, voice, degraded, seed)
        for condition in conditions:
            chosen = requests if condition == CLEAN else subset
            plan += [(r, voice, condition) for r in sorted(chosen, key=lambda r: (r.split, r.qid))]
    return plan


def synthesize_jobs(plan: Sequence[tuple[SpokenRequest, str, str]], cache_dir: Path,
                    seed: int = 0) -> list[Job]:
    """The clips of the plan, through ``bench.voices.speak`` (clean speech cached in ``cache_dir``)."""
    from bench import voices

    unknown = sorted({v for _, v, _ in plan} - set(voices.VOICES))
    if unknown:
        raise ValueError(f"unknown voice(s) {', '.join(unknown)}; valid: {', '.join(voices.VOICES)}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    jobs: list[Job] = []
    t0 = time.perf_counter()
    for i, (request, voice, condition) in enumerate(plan, 1):
        audio = voices.speak(request.text, voices.VOICES[voice], condition, seed=clip_seed(request.qid, voice, seed),
                             cache_dir=cache_dir)
        jobs.append(Job(request, voice, condition, np.asarray(audio, dtype=np.float32)))
        if i % 100 == 0 or i == len(plan):
            log.info("clips: %d/%d (%.0f s)", i, len(plan), time.perf_counter() - t0)
    return jobs


# ----------------------------------------------------------------------------------------------- the live server


@dataclass
class SpokenTurn:
    """What the server did with one spoken clip (all segments the VAD made of it)."""

    transcript: str = ""
    segments: int = 0
    products: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    first_audio_ms: float | None = None
    reply: str = ""
    intent: str | None = None


async def spoken_turn(client: Any, clip: np.ndarray, *, timeout: float = TURN_TIMEOUT_S,
                      trailing_silence_ms: int = TRAILING_SILENCE_MS) -> SpokenTurn:
    """Stream ``clip`` at real-time pace with server VAD; read events until every segment is answered.

    The stream is ``TalkClient.say``'s (lead-in silence, the clip, trailing silence); unlike ``say`` it does not
    stop at the first ``response.done``: when the VAD cuts the request in two, both finals are joined (and the turn
    counts as split) and the products are the last reply's.
    """
    from server.client import TurnResult

    turn = SpokenTurn()
    stream = TurnResult()
    done = asyncio.Event()

    async def send() -> None:
        lead = np.zeros(int(16000 * LEAD_SILENCE_S), dtype=np.float32)
        await client.stream_audio(np.concatenate([lead, clip]), realtime=True, result=stream,
                                  trailing_silence_ms=trailing_silence_ms)
        done.set()

    sender = asyncio.ensure_future(send())
    finals: list[str] = []
    started = completed = replies_done = 0
    response_audio: dict[str, float] = {}
    current: str | None = None
    last_response: str | None = None
    done_at: float | None = None
    last_event_at = time.perf_counter()
    deadline = last_event_at + timeout
    try:
        while True:
            now = time.perf_counter()
            if done.is_set():
                done_at = done_at or now
                # every segment the VAD opened has its final, and every non-empty final its reply
                settled = started == completed and replies_done >= len(finals)
                if settled and (started > 0 or now - done_at > NO_SPEECH_GRACE_S):
                    break
                if turn.errors and now - last_event_at > ERROR_IDLE_S:  # e.g. a failed decode: no final comes
                    break
            if now > deadline:
                turn.status = "timeout"
                break
            try:
                message = await asyncio.wait_for(client.ws.recv(), 0.2)
            except TimeoutError:
                continue
            now = last_event_at = time.perf_counter()
            if isinstance(message, bytes):
                if current is not None and current not in response_audio:
                    response_audio[current] = now
                continue
            event = json.loads(message)
            kind = event.get("type")
            if kind == "input_audio_buffer.speech_started":
                started += 1
            elif kind == "conversation.item.input_audio_transcription.completed":
                completed += 1
                text = (event.get("transcript") or "").strip()
                if text:
                    finals.append(text)
            elif kind == "response.created":
                current = event.get("response", {}).get("id")
                turn.reply = ""
            elif kind == "response.output_text.delta":
                turn.reply += event.get("delta") or ""
            elif kind == "response.output_audio.delta":
                if current is not None and current not in response_audio:
                    response_audio[current] = now
            elif kind == "response.products":
                turn.products = list(event.get("products") or [])
            elif kind == "response.done":
                response = event.get("response", {})
                turn.status = response.get("status")
                turn.intent = response.get("intent")
                last_response = response.get("id")
                replies_done += 1
            elif kind == "error":
                turn.errors.append(event.get("error", {}))
    finally:
        if not sender.done():
            sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    turn.transcript = " ".join(finals)
    turn.segments = started
    end = stream.speech_end_sent
    first = response_audio.get(last_response or "") if last_response else None
    if first is not None and end is not None:
        turn.first_audio_ms = round(1000 * (first - end), 1)
    return turn


async def typed_turn(client: Any, text: str, timeout: float = TURN_TIMEOUT_S) -> Any:
    """One typed request (``TalkClient.ask_text``) on a text-only session; the ``TurnResult``."""
    return await client.ask_text(text, timeout=timeout)


class Progress:
    """Logs turns done / total with the elapsed time and an estimate of what is left."""

    def __init__(self, label: str, total: int, every_s: float = 30.0) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self.done = 0
        self.t0 = self.last = time.perf_counter()

    def step(self) -> None:
        self.done += 1
        now = time.perf_counter()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            elapsed = now - self.t0
            left = elapsed / self.done * (self.total - self.done)
            log.info("%s: %d/%d turns, %.0f s elapsed, ~%.0f s left", self.label, self.done, self.total, elapsed, left)


async def _worker_pool(items: Sequence[Any], run_one: Callable[[Any, Any], Any], url: str, *, concurrency: int,
                       turns_per_session: int, text_only: bool, progress: Progress) -> list[Any]:
    """Run ``run_one(client, item)`` for every item: ``concurrency`` workers on a shared queue, each on its own
    websocket session, renewed every ``turns_per_session`` turns (and after a failure). Results in item order."""
    from server.client import TalkClient

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(items)):
        queue.put_nowait(i)
    results: list[Any] = [None] * len(items)

    async def worker(w: int) -> None:
        await asyncio.sleep(0.2 * w)  # staggered starts
        while not queue.empty():
            try:
                async with TalkClient(url) as client:
                    if text_only:
                        await client.update(modalities=["text"])
                    for _ in range(max(1, turns_per_session)):
                        try:
                            i = queue.get_nowait()
                        except asyncio.QueueEmpty:
                            return
                        try:
                            results[i] = await run_one(client, items[i])
                        except Exception as err:  # noqa: BLE001 - a failed turn is recorded, the run goes on
                            log.warning("turn %d failed: %r", i, err)
                            results[i] = err
                            progress.step()
                            break  # a fresh session after a failure
                        progress.step()
            except Exception as err:  # noqa: BLE001 - could not open a session: wait, retry with the next item
                log.warning("worker %d: session failed: %r", w, err)
                await asyncio.sleep(1.0)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return results


def _spoken_row(arm: str, job: Job, result: Any) -> dict[str, Any]:
    request = job.request
    if isinstance(result, SpokenTurn):
        turn = result
    else:
        turn = SpokenTurn(status="timeout" if isinstance(result, TimeoutError) else "client_error",
                          errors=[{"code": "client", "message": repr(result)}])
    ids = product_ids(turn.products)
    return {
        "arm": arm, "qid": request.qid, "split": request.split, "kind": request.kind, "voice": job.voice,
        "condition": job.condition, "speech_s": round(job.seconds, 2),
        "reference": request.text,  # dropped from held-out rows before the results are written
        "transcript": turn.transcript, "segments": turn.segments, "products": ids, "status": turn.status,
        "errors": [{"code": e.get("code"), "message": e.get("message")} for e in turn.errors],
        "first_audio_ms": turn.first_audio_ms, "intent": turn.intent, "reply": turn.reply[:300],
        "ndcg@5": round(ndcg5(ids, request.judgments), 4) if request.is_product else None,
    }


def _typed_row(arm: str, request: SpokenRequest, result: Any) -> dict[str, Any]:
    products = list(getattr(result, "products", []) or [])
    ids = product_ids(products)
    errors = getattr(result, "errors", None)
    done: dict[str, Any] = next(
        (e for e in getattr(result, "events", []) if e.get("type") == "response.done"), {})
    return {"arm": arm, "qid": request.qid, "split": request.split, "products": ids,
            "status": getattr(result, "status", "client_error"), "intent": done.get("response", {}).get("intent"),
            "reply": str(getattr(result, "reply", ""))[:300],
            "errors": [{"code": e.get("code"), "message": e.get("message")} for e in errors]
            if isinstance(errors, list) else [{"code": "client", "message": repr(result)}],
            "ndcg@5": round(ndcg5(ids, request.judgments), 4)}


async def context_check(url: str, requests: Sequence[SpokenRequest], pairs: int, seed: int = 0) -> dict[str, Any]:
    """Does a session carry one request into the next? For ``pairs`` (A, B) of product requests, B typed in a fresh
    session against B typed right after A in one session: how many B results differ."""
    from server.client import TalkClient

    products = [r for r in requests if r.is_product]
    rng = random.Random(f"spoken-context:{seed}")
    rng.shuffle(products)
    chosen = [(products[2 * i], products[2 * i + 1]) for i in range(min(pairs, len(products) // 2))]
    differing: list[dict[str, Any]] = []
    for a, b in chosen:
        async with TalkClient(url) as client:
            await client.update(modalities=["text"])
            alone = product_ids((await client.ask_text(b.text)).products)
        async with TalkClient(url) as client:
            await client.update(modalities=["text"])
            await client.ask_text(a.text)
            after = product_ids((await client.ask_text(b.text)).products)
        if alone != after:
            differing.append({"first": a.qid, "second": b.qid, "alone": alone, "after_first": after,
                              "ndcg_alone": round(ndcg5(alone, b.judgments), 4),
                              "ndcg_after_first": round(ndcg5(after, b.judgments), 4)})
    return {"pairs": len(chosen), "differing": len(differing), "examples": differing[:10]}


# ------------------------------------------------------------------------------------------- streaming vs offline


async def offline_transcripts(engines: Any, clips: Sequence[np.ndarray], *, concurrency: int = 2,
                              timeout: float = TURN_TIMEOUT_S) -> list[str]:
    """Each clip decoded as one whole utterance through the server's own voice input path.

    A ``ConversationSession`` of the arm's engines (as the websocket builds one), switched to push-to-talk with no
    partials and no reply: the clip is appended, committed, and its final transcript taken — the same STT engine and
    the same final ``TranscribeOptions`` (``VoiceInput._transcribe_options(final=True)``: the catalog prompt, the
    beam) as the streamed finals.
    """
    from dataclasses import replace

    from assistant.core.frames import ErrorFrame, Transcript
    from assistant.runtime.session import ConversationSession
    from speech.audio import float32_to_pcm16

    engines = replace(engines, memory=None)
    gate = asyncio.Semaphore(concurrency)

    async def one(clip: np.ndarray) -> str:
        async with gate:
            finals: list[str] = []
            ready = asyncio.Event()

            async def emit(frame: Any) -> None:
                if isinstance(frame, Transcript):
                    finals.append(frame.text)
                    ready.set()
                elif isinstance(frame, ErrorFrame):
                    log.warning("offline decode failed: %s", frame.message)
                    ready.set()

            # Built as the websocket builds it, then switched as a client's session.update would switch it.
            session = ConversationSession(engines, emit)
            voice = replace(session.options.voice, server_vad=False, partial_interval_ms=10**9)
            session.update(replace(session.options, voice=voice, auto_respond=False))
            try:
                pcm = float32_to_pcm16(np.concatenate([np.zeros(int(16000 * LEAD_SILENCE_S), np.float32), clip]))
                step = 32000  # 1 s of PCM16 per append (the protocol caps a frame at 64 KiB)
                for i in range(0, len(pcm), step):
                    await session.append_audio(pcm[i:i + step])
                await session.commit_audio()
                await asyncio.wait_for(ready.wait(), timeout)
            finally:
                await session.close()
            return finals[0].strip() if finals else ""

    return list(await asyncio.gather(*(one(c) for c in clips)))


def offline_metrics(turns: Sequence[Mapping[str, Any]], offline: Sequence[str]) -> dict[str, Any]:
    """Streamed vs offline WER of the same clean clips, their ratio and the empty finals of each."""
    streamed = corpus_wer((t["reference"], t["transcript"]) for t in turns)
    whole = corpus_wer((t["reference"], o) for t, o in zip(turns, offline, strict=True))
    value = offline_ratio(streamed, whole)
    empty_streamed = sum(1 for t in turns if not t["transcript"].strip())
    return {
        "clips": len(turns),
        "wer_streamed": _r(streamed),
        "wer_offline": _r(whole),
        "ratio": _r(value),
        "ratio_target": OFFLINE_RATIO_TARGET,
        "ratio_pass": None if streamed is None else (value is not None and value <= OFFLINE_RATIO_TARGET + 1e-12),
        "empty_finals_streamed": empty_streamed,
        "empty_finals_offline": sum(1 for o in offline if not o.strip()),
        "empty_target": EMPTY_CLEAN_TARGET,
        "empty_pass": empty_streamed <= EMPTY_CLEAN_TARGET,
        "options": None,
    }


def transcribe_options_of(engines: Any) -> dict[str, Any] | None:
    """The ``TranscribeOptions`` the server's voice input decodes finals with (for the record)."""
    try:
        from assistant.runtime.session import ConversationSession

        async def noop(_: Any) -> None:
            return None

        from dataclasses import replace

        session = ConversationSession(replace(engines, memory=None), noop)
        options = session.voice._transcribe_options(final=True)
        out = asdict(options)
        prompt = out.get("initial_prompt")
        if isinstance(prompt, str) and len(prompt) > 300:
            out["initial_prompt"] = prompt[:300] + f"... ({len(prompt)} chars)"
        return out
    except Exception as err:  # noqa: BLE001 - only a note in the results
        return {"unavailable": repr(err)}


# ---------------------------------------------------------------------------------------------------- the run


def run_arm(arm: Arm, data_dir: Path, jobs: Sequence[Job], requests: Sequence[SpokenRequest], *,
            concurrency: int = CONCURRENCY, turns_per_session: int = 1, offline: bool = True,
            context_pairs: int = 0, seed: int = 0) -> dict[str, Any]:
    """One arm: its server in-process, typed turns, spoken turns, offline decodes of the clean clips."""
    from server.app import create_app
    from server.engines import build_app_state

    settings = arm.settings(data_dir, concurrency)
    t0 = time.perf_counter()
    state = build_app_state(settings)
    startup = time.perf_counter() - t0
    log.info("arm %s: engines ready in %.1f s", arm.name, startup)
    product_requests = [r for r in requests if r.is_product]
    out: dict[str, Any] = {"settings": {"asr_bias": arm.asr_bias, "asr_repair": arm.asr_repair,
                                        "stt": settings.stt_model, "tts": settings.tts_model,
                                        "vad_silence_ms": settings.vad_silence_ms},
                           "startup_s": round(startup, 1)}
    with ThreadServer(create_app(state=state)) as server:
        if context_pairs:
            out["context_check"] = asyncio.run(context_check(server.ws_url, requests, context_pairs, seed))
            log.info("arm %s: context check %s", arm.name,
                     {k: v for k, v in out["context_check"].items() if k != "examples"})
        t1 = time.perf_counter()
        typed = asyncio.run(_worker_pool(
            product_requests, lambda client, r: typed_turn(client, r.text), server.ws_url, concurrency=concurrency,
            turns_per_session=turns_per_session, text_only=True,
            progress=Progress(f"{arm.name} typed", len(product_requests))))
        out["typed_s"] = round(time.perf_counter() - t1, 1)
        t2 = time.perf_counter()
        spoken = asyncio.run(_worker_pool(
            list(jobs), lambda client, job: spoken_turn(client, job.clip), server.ws_url, concurrency=concurrency,
            turns_per_session=turns_per_session, text_only=False,
            progress=Progress(f"{arm.name} spoken", len(jobs))))
        out["spoken_s"] = round(time.perf_counter() - t2, 1)
    out["typed_turns"] = [_typed_row(arm.name, r, res) for r, res in zip(product_requests, typed, strict=True)]
    out["turns"] = [_spoken_row(arm.name, job, res) for job, res in zip(jobs, spoken, strict=True)]
    if offline:
        clean = [(job, row) for job, row in zip(jobs, out["turns"], strict=True) if job.condition == CLEAN]
        t3 = time.perf_counter()
        texts = asyncio.run(offline_transcripts(state.engines, [job.clip for job, _ in clean],
                                                concurrency=max(1, settings.stt_workers)))
        for (_, row), text in zip(clean, texts, strict=True):
            row["offline_transcript"] = text
        out["offline"] = offline_metrics([row for _, row in clean], texts)
        out["offline"]["options"] = transcribe_options_of(state.engines)
        out["offline"]["seconds"] = round(time.perf_counter() - t3, 1)
    del state
    return out


def summarize_arm(arm: Mapping[str, Any]) -> dict[str, Any]:
    """Per condition, and per condition x voice / split, metrics of one arm's turns (see ``group_metrics``)."""
    typed = {t["qid"]: t["ndcg@5"] for t in arm["typed_turns"]}
    by_condition: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for t in arm["turns"]:
        by_condition[t["condition"]].append(t)
    conditions = {c: group_metrics(ts, typed, c) for c, ts in by_condition.items()}
    by_voice = {c: grouped(ts, "voice", typed, c) for c, ts in by_condition.items()}
    by_split = {c: grouped(ts, "split", typed, c) for c, ts in by_condition.items()}
    typed_splits = defaultdict(list)
    for t in arm["typed_turns"]:
        typed_splits[t["split"]].append(t["ndcg@5"])
    return {
        "conditions": conditions,
        "by_voice": by_voice,
        "by_split": by_split,
        "typed": {"requests": len(typed), "ndcg@5": _r(_mean(list(typed.values()))),
                  "by_split": {s: _r(_mean(v)) for s, v in sorted(typed_splits.items())},
                  "errors": sum(len(t["errors"]) for t in arm["typed_turns"])},
    }


def run(*, data_dir: Path = DEFAULT_DATA_DIR, requests: Sequence[SpokenRequest] | None = None,
        n_requests: int | None = None, voices: Sequence[str] | None = None, conditions: Sequence[str] | None = None,
        degraded: int = DEGRADED_PER_VOICE, arms: Sequence[Arm] | None = None, concurrency: int = CONCURRENCY,
        turns_per_session: int = 1, context_pairs: int = 10, offline: bool = True, latency_queries: int = 20,
        seed: int = 0, luma_dir: Path | None = None, model_requests: int = 60) -> dict[str, Any]:
    """The whole bench; the results dict (``main`` writes it)."""
    from bench import voices as voice_bank

    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    ingest = prepare_data_dir(data_dir, luma_dir)
    pool = list(requests) if requests is not None else load_requests()
    if n_requests is not None:
        pool = stratified_sample(pool, n_requests, f"spoken-requests:{seed}")
    voices = list(voices or voice_bank.BENCH_VOICES)
    conditions = list(conditions or voice_bank.CONDITIONS)
    unknown = [c for c in conditions if c not in voice_bank.CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {', '.join(unknown)}; valid: {', '.join(voice_bank.CONDITIONS)}")
    arms = list(arms or ARMS)
    plan = plan_turns(pool, voices, conditions, degraded, seed)
    log.info("%d requests (%d product), %d voices, conditions %s: %d spoken turns per arm, %d arms", len(pool),
             sum(r.is_product for r in pool), len(voices), ",".join(conditions), len(plan), len(arms))
    jobs = synthesize_jobs(plan, data_dir / "clips", seed)
    clips_s = time.perf_counter() - t0
    results: dict[str, Any] = {
        "benchmark": "spoken",
        "machine": machine(),
        "catalog": ingest,
        "requests": {"total": len(pool), "product": sum(r.is_product for r in pool),
                     "by_split": dict(sorted(Counter(r.split for r in pool).items())),
                     "by_kind": dict(sorted(Counter(r.kind for r in pool).items()))},
        "voices": voices,
        "conditions": conditions,
        "degraded_per_voice": degraded,
        "degraded_subsets": {v: [r.qid for r in degraded_subset(pool, v, degraded, seed)] for v in voices},
        "concurrency": concurrency,
        "turns_per_session": turns_per_session,
        "speech_s": summary([j.seconds for j in jobs], 2),
        "clips_s": round(clips_s, 1),
        "k": K,
        "targets": {"ratio": RATIO_TARGETS, "clean_wer": WER_TARGET, "offline_ratio": OFFLINE_RATIO_TARGET,
                    "clean_empty_finals": EMPTY_CLEAN_TARGET, "latency_p50_ms": LATENCY_TARGET_MS},
        "arms": {},
    }
    for i, arm in enumerate(arms):
        raw = run_arm(arm, data_dir, jobs, pool, concurrency=concurrency, turns_per_session=turns_per_session,
                      offline=offline, context_pairs=context_pairs if i == 0 else 0, seed=seed)
        results["arms"][arm.name] = {**{k: v for k, v in raw.items() if k not in ("turns", "typed_turns")},
                                     **summarize_arm(raw), "turns": raw["turns"], "typed_turns": raw["typed_turns"]}
        log.info("arm %s: %s", arm.name, {c: {k: m[k] for k in ("wer", "empty_share", "ndcg@5", "typed_ndcg@5",
                                                                   "ratio")}
                                           for c, m in results["arms"][arm.name]["conditions"].items()})
    if latency_queries > 0:
        results["latency"] = latency(arms[-1].settings(data_dir, concurrency), latency_queries)
    if model_requests > 0:
        results["models"] = model_comparison(data_dir, jobs, model_requests, seed)
    results["verdict"] = verdict(results)
    results["worst_dev_turns"] = worst_turns(results)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    for arm_result in results["arms"].values():
        for row in arm_result["turns"]:
            if row["split"] != "dev":
                row.pop("reference", None)
    return results


MODELS = ("faster-whisper:tiny.en", "faster-whisper:base")  # the two finals models to decide between (#8)


def model_comparison(data_dir: Path, jobs: Sequence[Job], n_requests: int = 60, seed: int = 0,
                     models: Sequence[str] = MODELS) -> dict[str, Any]:
    """Model by budget: each Whisper size decoding the same clean clips, plain and catalog-aware, on this machine.

    A stratified subset of the clean clips (both splits, every voice), each decoded whole by each model with the
    baseline options (greedy, no prompt) and the shipped final options (the catalog prompt, beam 5): corpus WER
    and milliseconds per clip (one decode at a time, ``cpu_threads`` = all cores).
    """
    from assistant.conversation.vocabulary import CatalogVocabulary
    from assistant.runtime.voice import FINAL_BEAM_SIZE, transcribe_options
    from server.engines import load_catalog
    from speech.registry import create_stt

    settings = Settings(data_dir=data_dir)
    prompt = CatalogVocabulary.from_catalog(load_catalog(settings)).prompt
    clean = [j for j in jobs if j.condition == CLEAN]
    chosen = {r.qid for r in stratified_sample(list({j.request.qid: j.request for j in clean}.values()), n_requests,
                                               f"models:{seed}")}
    clips = [j for j in clean if j.request.qid in chosen]
    configs = {"plain": transcribe_options("en", None, final=True, beam_size=1),
               "catalog-aware": transcribe_options("en", prompt, final=True, beam_size=FINAL_BEAM_SIZE)}
    out: dict[str, Any] = {"clips": len(clips), "requests": len(chosen), "rows": []}
    for name in models:
        engine = create_stt(name, cache_dir=settings.cache_dir, device="cpu", cpu_threads=settings.cpu_threads)
        engine.transcribe(clips[0].clip, configs["plain"])  # warm-up
        for config, options in configs.items():
            pairs, ms = [], []
            for job in clips:
                t0 = time.perf_counter()
                text = engine.transcribe(job.clip, options).text
                ms.append(1000 * (time.perf_counter() - t0))
                pairs.append((job.request.text, text))
            speech_s = sum(j.seconds for j in clips)
            out["rows"].append({"model": name, "options": config, "wer": _r(corpus_wer(pairs)),
                                "ms_per_clip": summary(ms, 1), "rtf": round(sum(ms) / 1000 / speech_s, 4)})
            log.info("models: %s %s WER %.3f, p50 %.0f ms", name, config, out["rows"][-1]["wer"] or -1,
                     out["rows"][-1]["ms_per_clip"]["p50"])
        del engine
    return out


def latency(settings: Settings, n_queries: int) -> dict[str, Any]:
    """``bench.voice_latency.run`` in this process: end of speech -> first audio, push-to-talk and server VAD."""
    from bench import voice_latency

    t0 = time.perf_counter()
    res = voice_latency.run(settings, n_queries)
    fa = res["first_audio_ms"]
    return {
        "queries": res["queries"],
        "asr_bias": settings.asr_bias, "asr_repair": settings.asr_repair,
        "first_audio_ms": fa,
        "p50_target_ms": LATENCY_TARGET_MS,
        "ptt_pass": fa["ptt"]["p50"] <= LATENCY_TARGET_MS,
        "server_vad_pass": fa["server_vad"]["p50"] <= LATENCY_TARGET_MS,
        "failures": res["failures"],
        "word_error_rate": res["word_error_rate"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def verdict(results: Mapping[str, Any]) -> dict[str, Any]:
    """Pass/fail of every target, per arm (None: not measured or no target)."""
    out: dict[str, Any] = {}
    for name, arm in results["arms"].items():
        checks: dict[str, bool | None] = {}
        for condition, m in arm["conditions"].items():
            if m.get("ratio_target") is not None:
                checks[f"ratio_{condition}"] = m["ratio_pass"]
        if CLEAN in arm["conditions"]:
            checks["clean_wer"] = arm["conditions"][CLEAN].get("wer_pass")
        if "offline" in arm:
            checks["offline_ratio"] = arm["offline"]["ratio_pass"]
            checks["clean_empty_finals"] = arm["offline"]["empty_pass"]
        out[name] = checks
    lat = results.get("latency")
    if lat:
        out["latency"] = {"ptt_p50": lat["ptt_pass"], "server_vad_p50": lat["server_vad_pass"]}
    return out


def worst_turns(results: Mapping[str, Any], n: int = 10) -> dict[str, Any]:
    """The ``n`` dev turns of the primary arm whose spoken nDCG@5 fell most below the typed one."""
    arms = results["arms"]
    name = PRIMARY_ARM if PRIMARY_ARM in arms else next(iter(arms), None)
    if name is None:
        return {"arm": None, "turns": []}
    typed = {t["qid"]: t["ndcg@5"] for t in arms[name]["typed_turns"]}
    rows = []
    for t in arms[name]["turns"]:
        if t["split"] != "dev" or t["ndcg@5"] is None or t["qid"] not in typed:
            continue
        rows.append({"qid": t["qid"], "voice": t["voice"], "condition": t["condition"],
                     "reference": t["reference"], "transcript": t["transcript"], "typed": typed[t["qid"]],
                     "spoken": t["ndcg@5"], "drop": round(typed[t["qid"]] - t["ndcg@5"], 4)})
    rows.sort(key=lambda r: (-r["drop"], r["qid"], r["voice"], r["condition"]))
    return {"arm": name, "turns": [r for r in rows if r["drop"] > 0][:n]}


# -------------------------------------------------------------------------------------------------- the tables


def _f(value: float | None, nd: int = 3) -> str:
    return "–" if value is None else f"{value:.{nd}f}"


def _mark(ok: bool | None) -> str:
    return "–" if ok is None else ("pass" if ok else "**fail**")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(results: Mapping[str, Any]) -> str:
    """Markdown: arm x condition, per voice, streaming vs offline, latency, the worst dev turns.

    Held-out texts never appear (only dev references and transcripts are listed).
    """
    rows = ["| arm | condition | turns | WER | empty finals | spoken nDCG@5 | typed nDCG@5 | spoken / typed "
            "| target | dev spoken / typed | held-out spoken / typed |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, arm in results["arms"].items():
        for condition in results["conditions"]:
            m = arm["conditions"].get(condition)
            if m is None:
                continue
            target = []
            if m.get("ratio_target") is not None:
                target.append(f"≥ {m['ratio_target']:.2f} {_mark(m['ratio_pass'])}")
            if m.get("wer_target") is not None:
                target.append(f"WER ≤ {m['wer_target']:.2f} {_mark(m['wer_pass'])}")
            splits = arm["by_split"].get(condition, {})

            def split_cell(s: str, splits: Mapping[str, Any] = splits) -> str:
                g = splits.get(s)
                return f"{_f(g['ndcg@5'])} / {_f(g['typed_ndcg@5'])}" if g else "–"

            rows.append(f"| {name} | {condition} | {m['turns']} | {_f(m['wer'])} | {m['empty_finals']} "
                        f"({_f(100 * m['empty_share'] if m['empty_share'] is not None else None, 1)} %) "
                        f"| {_f(m['ndcg@5'])} | {_f(m['typed_ndcg@5'])} | {_f(m['ratio'])} "
                        f"| {'; '.join(target) or '–'} | {split_cell('dev')} | {split_cell('heldout')} |")
    rows += ["", "| arm | condition | voice | WER | empty finals | spoken nDCG@5 | spoken / typed |",
             "|---|---|---|---|---|---|---|"]
    for name, arm in results["arms"].items():
        for condition in results["conditions"]:
            for voice, m in arm["by_voice"].get(condition, {}).items():
                rows.append(f"| {name} | {condition} | {voice} | {_f(m['wer'])} | {m['empty_finals']} "
                            f"| {_f(m['ndcg@5'])} | {_f(m['ratio'])} |")
    offline = {n: a["offline"] for n, a in results["arms"].items() if "offline" in a}
    if offline:
        rows += ["", "| arm | clean clips | WER streamed | WER offline (whole utterance) | streamed / offline "
                 f"(≤ {OFFLINE_RATIO_TARGET}) | empty finals streamed / offline (target {EMPTY_CLEAN_TARGET}) |",
                 "|---|---|---|---|---|---|"]
        for name, o in offline.items():
            rows.append(f"| {name} | {o['clips']} | {_f(o['wer_streamed'])} | {_f(o['wer_offline'])} "
                        f"| {_f(o['ratio'])} {_mark(o['ratio_pass'])} | {o['empty_finals_streamed']} / "
                        f"{o['empty_finals_offline']} {_mark(o['empty_pass'])} |")
    lat = results.get("latency")
    if lat:
        fa = lat["first_audio_ms"]
        rows += ["", f"End of speech → first audio (`bench.voice_latency`, {lat['queries']} queries, after the "
                 f"spoken arms, asr_bias={lat['asr_bias']}): push-to-talk p50 {fa['ptt']['p50']:.0f} ms "
                 f"({_mark(lat['ptt_pass'])}), server VAD p50 {fa['server_vad']['p50']:.0f} ms "
                 f"({_mark(lat['server_vad_pass'])}); target p50 ≤ {lat['p50_target_ms']:.0f} ms."]
    models = results.get("models")
    if models:
        rows += ["", f"Model by budget: the same {models['clips']} clean clips ({models['requests']} requests, every "
                 "voice) decoded whole, one at a time, on this machine's CPU:", "",
                 "| model | options | WER | ms per clip p50 / p95 | real-time factor |", "|---|---|---|---|---|"]
        for m in models["rows"]:
            ms = m["ms_per_clip"]
            rows.append(f"| {m['model']} | {m['options']} | {_f(m['wer'])} | {ms['p50']:.0f} / {ms['p95']:.0f} "
                        f"| {m['rtf']:.3f} |")
    check = next((a["context_check"] for a in results["arms"].values() if "context_check" in a), None)
    if check:
        per = results["turns_per_session"]
        rows += ["", f"Context between requests: {check['differing']} of {check['pairs']} typed requests returned "
                 f"other products right after another request in the same session than alone; "
                 + ("every request above ran in a session of its own." if per == 1
                    else f"the requests above ran {per} to a session.")]
    worst = results.get("worst_dev_turns") or {}
    if worst.get("turns"):
        rows += ["", f"Worst dev turns ({worst['arm']}; typed nDCG@5 − spoken):", "",
                 "| qid | voice | condition | reference | transcript | typed | spoken |", "|---|---|---|---|---|---|---|"]
        for r in worst["turns"]:
            rows.append(f"| {r['qid']} | {r['voice']} | {r['condition']} | {_cell(r['reference'])} "
                        f"| {_cell(r['transcript'])} | {_f(r['typed'])} | {_f(r['spoken'])} |")
    return "\n".join(rows)


def main(*, out: Path = RESULTS, quick: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Run, write ``out``, print the tables. ``quick``: a few requests, one voice, clean and phone, no latency."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if quick:
        from bench import voices as voice_bank

        kwargs.setdefault("n_requests", QUICK["requests"])
        kwargs.setdefault("voices", list(voice_bank.BENCH_VOICES)[: QUICK["voices"]])
        kwargs.setdefault("conditions", list(QUICK["conditions"]))
        kwargs.setdefault("degraded", QUICK["degraded"])
        kwargs.setdefault("latency_queries", 0)
        kwargs.setdefault("context_pairs", 1)
        kwargs.setdefault("model_requests", 0)
    results = run(**kwargs)
    results["quick"] = quick
    write_results(out, results)
    print(table(results))
    print(f"\nresults written to {out} ({results['seconds']:.0f} s)")
    return results
