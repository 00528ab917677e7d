"""Build the shared engines (catalog, retrieval, vision, ASR, VAD, TTS, brain) from ``Settings``, once per process."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.catalog.demo import ensure_demo_catalog
from assistant.catalog.model import Catalog
from assistant.catalog.store import CatalogStore, default_store, store_exists
from assistant.catalog.view import CatalogView
from assistant.conversation.dialogue import Dialogue
from assistant.conversation.intent import IntentRecognizer
from assistant.conversation.intent_data import CatalogWords
from assistant.conversation.vocabulary import CatalogVocabulary
from assistant.memory.bought_together import BoughtTogether
from assistant.memory.factory import create_memory
from assistant.memory.store import MemoryConfig, MemoryStore
from assistant.runtime.scheduling import (
    BatchedQueryEncoder,
    MicroBatcher,
    ScheduledSTT,
    ScheduledTTS,
    batched_ranker_queries,
)
from assistant.runtime.session import Engines
from assistant.runtime.turn import Brain, BrainOptions
from assistant.runtime.uploads import ImageStore
from assistant.search.complements import TABLE_FILE as COMPLEMENTS_FILE
from assistant.search.complements import load_table
from assistant.search.query import ProductSearcher
from assistant.search.retrieval import HybridRetriever
from ranking.text_encoder import TextEncoder
from server.background import BackgroundWorker
from server.metrics import watch_batchers
from server.security import Gate
from server.settings import Settings
from speech.audio import SAMPLE_RATE, resample
from speech.registry import create_stt, create_tts
from speech.tts import TTSEngine
from speech.vad import SileroVAD

log = logging.getLogger(__name__)


@dataclass
class App:
    """What the HTTP and websocket handlers share."""

    settings: Settings
    engines: Engines
    view: CatalogView  # the served catalog (shared with the turn and the dialogue; a reload swaps it)
    searcher: ProductSearcher  # NearMissSearcher or RankedSearcher over `retriever` when served
    tts: TTSEngine | None
    images: ImageStore
    store: CatalogStore | None = None
    copy_writer: Any = None  # built on the first POST /v1/copy
    retriever: HybridRetriever | None = None  # first-stage retrieval, under `searcher` (its photo index is swapped)
    heads: HeadsChoice | None = None  # the aligned heads serving photos now
    background: BackgroundWorker | None = None  # quality work after the first answer (``settings.background``)
    _reindex_lock: threading.Lock = field(default_factory=threading.Lock)
    _gate: Gate | None = None
    _store_version: int | None = None  # the store's change counter the served catalog was loaded at

    @property
    def gate(self) -> Gate:
        """Authentication, rate limits and the live connections (built from the settings on first use)."""
        if self._gate is None:
            self._gate = Gate.from_settings(self.settings)
        return self._gate

    @property
    def catalog(self) -> Catalog:
        """The catalog served now."""
        return self.view.catalog

    @property
    def memory(self) -> MemoryStore | None:
        return self.engines.memory

    def reload_catalog(self) -> dict[str, int]:
        """Re-read the catalog store and update the indexes incrementally (after an ingest or a delete)."""
        if self.store is None:
            return {}
        with self._reindex_lock:
            self._store_version = self.store.version()
            catalog = self.store.load_catalog()
            if self.retriever is not None:  # the merchant may have edited what goes with what too
                self.retriever.complements_table = load_table(self.settings.data_dir / COMPLEMENTS_FILE)
            stats = dict(self.searcher.update(catalog))  # the indexes first: they serve the new catalog's ids
            self.view.swap(catalog)  # then every reader at once: the turn, the dialogue, Whisper's prompt, routes
            self.improve(self.view.derived("vocabulary", CatalogVocabulary.from_catalog))
            return stats

    def start_background(self) -> None:
        """Start the background worker (``settings.background``) and queue what the served catalog lacks."""
        if not self.settings.background or self.background is not None:
            return
        from server.background import BackgroundWorker

        self.background = BackgroundWorker()
        self.improve()
        if self.store is not None and self.settings.catalog_poll_s > 0:
            if self._store_version is None:
                self._store_version = self.store.version()
            threading.Thread(target=self._watch_store, args=(self.background.stopping,), name="shoptalk-catalog",
                             daemon=True).start()

    def stop_background(self) -> None:
        if self.background is not None:
            self.background.close()

    def _watch_store(self, stop: threading.Event) -> None:
        """Reload when another process changed the store (``shoptalk catalog ingest`` while the server runs)."""
        while not stop.wait(self.settings.catalog_poll_s):
            store = self.store
            try:
                changed = store is not None and store.version() != self._store_version
                if changed:
                    log.info("the catalog store changed outside this server: reloading")
                    self.reload_catalog()
            except Exception:  # noqa: BLE001 - a failed reload is logged; the server serves the catalog it has
                log.exception("catalog reload failed")

    def improve(self, vocabulary: CatalogVocabulary | None = None) -> None:
        """Queue the quality work the served catalog lacks.

        Heads aligned on it when those serving cover too little of it; with `vocabulary` (a new catalog's), the
        intent model trained on its words; the configured ranker when its backbone was not ready at start-up.
        """
        worker = self.background
        if worker is None or worker.stopping.is_set():
            return
        from server.background import align_task, ranker_task

        dialogue = self.engines.brain.dialogue
        recognizer = dialogue.recognizer if dialogue is not None else None
        if vocabulary is not None and isinstance(recognizer, IntentRecognizer):
            words = catalog_words(vocabulary)
            vocab = self.retriever.vocab if self.retriever is not None else None
            def retrain(report: Callable[[str, float], None]) -> None:
                recognizer.retrain(words, vocab)

            worker.submit("intent-train", retrain)
        if self.settings.ranker_enabled and self.retriever is not None and not self.searcher.ranked:
            worker.submit("ranker-prepare", ranker_task(self.settings, worker.stopping, self.use_ranker,
                                                        prepared=ranker_prepared(self.settings)))
        if self.retriever is None or self.retriever.image_encoder is None:
            return
        heads = choose_heads(self.settings, self.catalog)
        if self.heads is not None and heads.checkpoint != self.heads.checkpoint:
            # e.g. the demo's heads on a merchant's new catalog: the raw tower serves it until it is aligned
            worker.submit("vision-heads", lambda report: self.use_best_heads())
        if heads.needs_align:
            worker.submit("vision-align", align_task(self.settings, worker.stopping,
                                                     lambda: self.use_best_heads(force=True)))

    def use_ranker(self) -> None:
        """Build the configured ranker (preparing its backbone) and let it rank every search from now on."""
        if self.retriever is None or self.searcher.ranked:
            return
        catalog = self.catalog
        searcher = build_ranked(self.settings, catalog, self.retriever)
        if not searcher.ranked:
            return  # no trained or shipped checkpoint: retrieval alone, as build_ranked logged
        with self._reindex_lock:
            if self.catalog is not catalog:  # reloaded while the ranker was being built
                searcher.update(self.catalog)
            self.searcher = self.engines.brain.searcher = searcher
        watch_batchers(shared_batchers(None, searcher, None))  # the ranker's, beside those watched already

    def use_best_heads(self, *, force: bool = False) -> None:
        """Serve photos with the heads that cover the catalog best now (`choose_heads`).

        The catalog's photos are encoded with them, then encoder and index switch at once
        (`HybridRetriever.set_image_encoder`). Nothing changes when those are the heads serving, unless `force`
        (the file was just rewritten).
        """
        heads = choose_heads(self.settings, self.catalog)
        if self.retriever is None:
            return
        if force or self.heads is None or heads.checkpoint != self.heads.checkpoint:
            self.retriever.set_image_encoder(build_image_encoder(self.settings, heads))
        self.heads = heads


def catalog_path(settings: Settings) -> Path:
    """The catalog file to serve when no store exists: the explicit setting, else the demo catalog."""
    if settings.catalog is not None:
        return settings.catalog
    return ensure_demo_catalog(settings.data_dir)


def serves_store(settings: Settings) -> bool:
    """True when the served catalog is the ingested store (no explicit file, and the store has products)."""
    if settings.catalog is not None or not store_exists(settings.data_dir):
        return False
    with default_store(settings.data_dir) as store:
        return store.count() > 0


def load_catalog(settings: Settings) -> Catalog:
    """The served catalog: an explicit file, else the ingested store, else the generated demo catalog."""
    if serves_store(settings):
        with default_store(settings.data_dir) as store:
            return store.load_catalog()
    return Catalog.load_jsonl(catalog_path(settings))


def configure_threads(settings: Settings) -> None:
    import torch

    threads = settings.cpu_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)


ALIGN_COVERAGE = 0.9
"""Share of a catalog's photographed colourways that heads must have been trained on to be left as they are; below
it a background align (`server.background`) trains heads on the catalog."""
MIN_HEADS_COVERAGE = 0.5
"""Below this share the heads are not used at all: photo lookup uses the raw tower (text→image off) until aligned."""


@dataclass(frozen=True)
class HeadsChoice:
    """Which aligned heads serve a catalog's photos, and how much of the catalog they were trained on."""

    checkpoint: Path | None  # None: the raw tower
    coverage: float  # share of the catalog's (photo, text) labels the heads were trained on
    explicit: bool = False  # SHOPTALK_VISION_CHECKPOINT: the operator's choice, never replaced in the background

    @property
    def needs_align(self) -> bool:
        return not self.explicit and self.coverage < ALIGN_COVERAGE


def choose_heads(settings: Settings, catalog: Catalog) -> HeadsChoice:
    """The aligned heads for `catalog`.

    The data dir's (``shoptalk vision align`` or a background align) or those shipped for the demo catalog,
    whichever was trained on more of it; none when neither covers `MIN_HEADS_COVERAGE` of it.
    """
    from assistant.catalog.pairs import catalog_labels
    from vision.registry import checkpoint_labels, shipped_heads

    if settings.vision_checkpoint is not None:
        return HeadsChoice(settings.vision_checkpoint, 1.0, explicit=True)
    labels = catalog_labels(catalog)
    if not labels:
        return HeadsChoice(None, 1.0)  # no photos: nothing to align on
    best = HeadsChoice(None, 0.0)
    for path in (settings.aligned_checkpoint, shipped_heads(settings.vision_model)):
        if path is None or not path.is_file():
            continue
        try:
            trained = checkpoint_labels(path)
        except (OSError, ValueError, RuntimeError) as err:
            log.warning("ignoring unreadable aligned heads %s: %s", path, err)
            continue
        coverage = len(labels & trained) / len(labels) if trained else 1.0  # heads older than the record: trusted
        if coverage > best.coverage:
            best = HeadsChoice(path, coverage)
    return best if best.coverage >= MIN_HEADS_COVERAGE else HeadsChoice(None, best.coverage)


def build_image_encoder(settings: Settings, heads: HeadsChoice) -> Any:
    """The image–text encoder with `heads` (the raw tower when there are none)."""
    from vision import create_encoder

    if heads.checkpoint is None:
        log.warning("no aligned heads cover this catalog: photo lookup uses raw image features and text->image is "
                    "off until they are aligned (%s)", "in the background" if settings.background
                    else "run `shoptalk vision align`")
    else:
        log.info("aligned heads %s (trained on %.0f%% of this catalog)", heads.checkpoint, 100 * heads.coverage)
    return create_encoder(settings.vision_model, cache_dir=settings.cache_dir / "vision", checkpoint=heads.checkpoint,
                          device=settings.device)


def remote_worker(settings: Settings, role: str) -> Any:
    """The Ray Serve proxy of ``role`` ("stt", "tts", "encoder", "ranker"), or None: the model runs in-process.

    A proxy when ``SHOPTALK_RAY_ADDRESS`` is set and ``SHOPTALK_RAY_WORKERS`` names the role.
    """
    if not settings.ray_address:
        return None
    from server.workers.proxies import connect_workers

    return getattr(connect_workers(settings), role)


def batch_options(settings: Settings) -> dict[str, Any]:
    """`assistant.runtime.scheduling` keyword arguments from the settings."""
    return {"max_batch": settings.batch_max, "max_wait_s": settings.batch_wait_ms / 1000,
            "workers": settings.batch_workers, "threads": 1 if settings.batch_workers > 1 else None}


def build_search(settings: Settings, *, vision: bool = True) -> tuple[Catalog, HybridRetriever, Any]:
    catalog, retriever, image_encoder, _ = _build_search(settings, vision=vision)
    return catalog, retriever, image_encoder


def _build_search(settings: Settings, *, vision: bool = True
                  ) -> tuple[Catalog, HybridRetriever, Any, HeadsChoice | None]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_threads(settings)
    catalog = load_catalog(settings)
    # With a remote encoder, the index's product texts are encoded on the workers too (in chunks, then cached), and
    # the workers batch the queries; in-process, sessions' query encodes share batches here.
    encoder = remote_worker(settings, "encoder")
    if encoder is None:
        encoder = TextEncoder(device=settings.device)
        if settings.micro_batching:
            encoder = BatchedQueryEncoder(encoder, **batch_options(settings))
    heads = choose_heads(settings, catalog) if vision else None
    image_encoder = build_image_encoder(settings, heads) if heads is not None else None
    # What goes with what: the merchant's own table when the data dir has one, else the catalog's tree decides.
    table = load_table(settings.data_dir / COMPLEMENTS_FILE)
    retriever = HybridRetriever(catalog, encoder, image_encoder=image_encoder, cache_dir=settings.data_dir / "index",
                                vector_url=settings.vector_url, complements_table=table)
    return catalog, retriever, image_encoder, heads


def ranker_prepared(settings: Settings) -> bool:
    """Whether the configured ranker's backbone is ready to load (the dequantized SmolLM2 takes ~40 s once)."""
    from ranking.registry import SMOLLM2_FOLDER, get_config

    try:
        backbone = get_config(settings.ranker).backbone
    except KeyError:
        return True  # an unknown ranker fails when it is built, as before
    if backbone != "smollm2":
        return True
    from ranking.llm import is_prepared

    return is_prepared(settings.cache_dir / SMOLLM2_FOLDER)


def build_ranked(settings: Settings, catalog: Catalog, retriever: HybridRetriever, *,
                 prepare: bool = True) -> ProductSearcher:
    """The searcher the server runs.

    `retriever` wrapped in a `RankedSearcher` when a ranker is configured and trained, else `retriever` itself
    (in a `NearMissSearcher` when ``settings.near_misses``). With `prepare` False, a ranker whose backbone is not
    prepared yet is left out (`App.improve` prepares it in the background and switches to it).
    """
    from assistant.search.retrieval import NearMissSearcher

    plain: ProductSearcher = NearMissSearcher(retriever) if settings.near_misses else retriever
    if not settings.ranker_enabled:
        return plain
    remote = remote_worker(settings, "ranker")
    if remote is None and not prepare and not ranker_prepared(settings):
        log.info("ranker %s: its backbone is prepared in the background; retrieval alone serves until then",
                 settings.ranker)
        return plain
    if remote is not None:  # the worker loaded the trained (or shipped) checkpoint
        from assistant.search.rerank import LLMReranker, RankedSearcher

        return RankedSearcher(retriever, LLMReranker(remote, catalog), near_misses=settings.near_misses,
                              retrieval_weight=settings.ranker_retrieval_weight)
    from ranking.registry import shipped_checkpoint

    checkpoint: Path | None = settings.ranker_checkpoint_path
    if checkpoint is not None and not checkpoint.exists():
        checkpoint = shipped_checkpoint(settings.ranker)  # the project's default, trained on the demo catalog
    if checkpoint is None:
        log.warning("no trained ranker at %s and none shipped: serving retrieval only (run `shoptalk ranker "
                    "train`)", settings.ranker_checkpoint_path)
        return plain
    from assistant.search.rerank import LLMReranker, RankedSearcher
    from ranking.registry import create_ranker

    t0 = time.perf_counter()
    ranker = create_ranker(settings.ranker, cache_dir=settings.cache_dir, checkpoint=checkpoint,
                           device=settings.device)
    # torch on one thread for the ranker's short query encodes, whatever the workers (see LLMReranker.one_thread)
    batcher = (batched_ranker_queries(ranker, **{**batch_options(settings), "threads": 1})
               if settings.micro_batching else None)
    searcher = RankedSearcher(retriever, LLMReranker(ranker, catalog, query_batcher=batcher),
                              near_misses=settings.near_misses, retrieval_weight=settings.ranker_retrieval_weight)
    log.info("ranker %s ready in %.1f s (%s)", settings.ranker, time.perf_counter() - t0, checkpoint)
    return searcher


def build_dialogue(settings: Settings, catalog: Catalog | CatalogView, retriever: HybridRetriever,
                   memory: MemoryStore | None, *, warmup: bool = True,
                   vocabulary: CatalogVocabulary | None = None) -> Dialogue:
    """The conversation layer: intents, the knowledge base, orders, moderation, references (``assistant.conversation.dialogue``).

    ``catalog``: the served catalog's shared view (a reload swaps it), or a catalog served as it is.
    ``vocabulary``: the catalog's spoken vocabulary when the caller has built it (else built here).
    """
    from assistant.conversation.kb import open_kb
    from assistant.conversation.orders import open_demo_orders
    from assistant.safety.moderation import Moderator

    if isinstance(catalog, Catalog):
        catalog = CatalogView(catalog, **({"vocabulary": vocabulary} if vocabulary is not None else {}))
    view = catalog
    encoder = retriever.encoder
    vocabulary = view.derived("vocabulary", CatalogVocabulary.from_catalog)
    recognizer = IntentRecognizer(retriever.vocab, encoder, cache_dir=settings.cache_dir / "intent",
                                  words=catalog_words(vocabulary))
    if warmup:
        recognizer.warmup()
        vocabulary.warm()  # the spelling dictionaries, so the first typed message does not wait for them
    kb = open_kb(settings.data_dir, encoder, docs=settings.kb_dir)
    orders = open_demo_orders(settings.data_dir)
    return Dialogue(recognizer, kb=kb, orders=orders, moderator=Moderator(encoder), memory_store=memory, view=view)


def listens_with_vocabulary(settings: Settings) -> bool:
    """Whether the catalog's words bias Whisper or repair what it misheard (``SHOPTALK_ASR_BIAS``/``_REPAIR``)."""
    return settings.asr_bias or settings.asr_repair


def asr_prompt(settings: Settings, brain: Brain) -> Callable[[Sequence[str]], str | None] | None:
    """What a session prompts Whisper with, given its products on screen (None: no biasing).

    It reads the brain's current vocabulary at every call, so a catalog reload changes the prompt.
    """
    if not settings.asr_bias:
        return None

    def prompt(shown: Sequence[str]) -> str | None:
        vocabulary = brain.vocabulary
        return vocabulary.prompt_for(shown) if vocabulary is not None else None

    return prompt


def catalog_words(vocabulary: CatalogVocabulary) -> CatalogWords:
    """The catalog's kinds, product lines, brands and colours, for the intent model's training utterances."""
    return CatalogWords(kinds=tuple(sorted(vocabulary.kind_counts)), lines=tuple(sorted(vocabulary.line_names.values())),
                        brands=tuple(sorted(vocabulary.brands.values())), colours=vocabulary.colours)


def build_memory(settings: Settings) -> MemoryStore:
    """The configured memory engine (``SHOPTALK_MEMORY_URL``; SQLite under the data dir by default)."""
    return create_memory(settings.memory_url, settings.data_dir,
                         MemoryConfig(session_ttl_s=settings.memory_ttl_days * 86400))


def shared_batchers(encoder: object, searcher: ProductSearcher, tts: TTSEngine | None) -> dict[str, MicroBatcher[Any, Any]]:
    """The micro-batchers the engines use, by name (for ``/metrics``)."""
    from assistant.search.rerank import RankedSearcher

    found: dict[str, MicroBatcher[Any, Any]] = {}
    if isinstance(encoder, BatchedQueryEncoder):
        found["query_encoder"] = encoder.batcher
    if isinstance(searcher, RankedSearcher) and isinstance(searcher.reranker.query_batcher, MicroBatcher):
        found["ranker_queries"] = searcher.reranker.query_batcher
    if isinstance(tts, ScheduledTTS):
        found["tts"] = tts.batcher
    return found


def build_app_state(settings: Settings, *, warmup: bool = True) -> App:
    t0 = time.perf_counter()
    catalog, retriever, image_encoder, heads = _build_search(settings)
    # One engine for all sessions behind a priority scheduler (finals before partials, stale partials dropped);
    # its workers decode independent requests in parallel, cpu_threads split between them.
    # With SHOPTALK_RAY_ADDRESS the engine is a proxy to the Ray workers; the scheduler then bounds the requests
    # in flight to them (stt_workers).
    stt = ScheduledSTT(remote_worker(settings, "stt")
                       or create_stt(settings.stt_model, cache_dir=settings.cache_dir, device=settings.device,
                                     cpu_threads=settings.cpu_threads, workers=settings.stt_workers))
    tts = remote_worker(settings, "tts") or create_tts(settings.tts_model, cache_dir=settings.cache_dir,
                                                       device=settings.device)
    if settings.micro_batching:
        tts = ScheduledTTS(tts)  # every reply's first sentence before any reply's later ones
    images = ImageStore(settings.data_dir / "uploads")
    photos = retriever if image_encoder is not None else None  # photo lookup: HybridRetriever.search_photo
    searcher = build_ranked(settings, catalog, retriever, prepare=not settings.background)
    memory = build_memory(settings)
    memory.purge_expired()
    retriever.co_purchases = BoughtTogether(memory)  # "often bought with": shoppers' baskets rank complements
    view = CatalogView(catalog)  # the served catalog, shared by the turn, the dialogue and the routes
    dialogue = build_dialogue(settings, view, retriever, memory, warmup=warmup) if settings.dialogue else None
    writer = None
    if settings.reply_writer == "llm":
        from assistant.replies.llm import LLMReplyWriter

        writer = LLMReplyWriter.from_cache(settings.cache_dir, device=settings.device, runtime=settings.llm_runtime)
        if warmup:
            writer.warm_up()
    brain = Brain(searcher, tts, writer, options=BrainOptions(k=settings.search_k), images=images, photos=photos,
                  dialogue=dialogue, view=view if listens_with_vocabulary(settings) else None,
                  repair=settings.asr_repair)
    engines = Engines(stt=stt, brain=brain, vad_factory=SileroVAD, memory=memory,
                      asr_prompt=asr_prompt(settings, brain), final_beam_size=settings.stt_beam_size)
    store = default_store(settings.data_dir) if serves_store(settings) else None
    watch_batchers(shared_batchers(retriever.encoder, searcher, tts))
    if warmup:
        # First calls pay for lazy initialisation (ONNX graphs, CT2 allocations); pay it before the first shopper.
        spoken = tts.synthesize("Hello. Show me black hoodies under fifty dollars.")
        stt.warm_up(resample(spoken, tts.sample_rate, SAMPLE_RATE))  # every STT worker, at once
        retriever.encoder.encode_query("warm up")
    log.info("engines ready in %.1f s (%d products, stt=%s, tts=%s, vision=%s)", time.perf_counter() - t0,
             len(catalog), settings.stt_model, settings.tts_model, image_encoder.name if image_encoder is not None else None)
    return App(settings=settings, engines=engines, view=view, searcher=searcher, tts=tts, images=images,
               store=store, retriever=retriever, heads=heads)
