"""Build the shared engines (ASR, VAD, TTS, catalog, search, brain) from ``Settings``, once per process."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.catalog import Catalog
from assistant.demo_catalog import ensure_demo_catalog
from assistant.images import ImageStore
from assistant.pipeline import Brain, BrainOptions
from assistant.search import EmbeddingSearcher
from assistant.session import Engines
from ranking.text_encoder import TextEncoder
from server.settings import Settings
from speech.stt import create_stt
from speech.tts import TTSEngine, create_tts
from speech.vad import SileroVAD

log = logging.getLogger(__name__)


@dataclass
class App:
    """What the HTTP and websocket handlers share."""

    settings: Settings
    engines: Engines
    catalog: Catalog
    searcher: EmbeddingSearcher
    tts: TTSEngine | None
    images: ImageStore


def catalog_path(settings: Settings) -> Path:
    """The catalog to serve: explicit setting, else one ingested into the data dir, else the demo catalog."""
    if settings.catalog is not None:
        return settings.catalog
    ingested = settings.data_dir / "catalog" / "products.jsonl"
    if ingested.exists():
        return ingested
    return ensure_demo_catalog(settings.data_dir)


def configure_threads(settings: Settings) -> None:
    import torch

    threads = settings.cpu_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)


def build_search(settings: Settings) -> tuple[Catalog, EmbeddingSearcher]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    configure_threads(settings)
    catalog = Catalog.load_jsonl(catalog_path(settings))
    encoder = TextEncoder(device=settings.device)
    return catalog, EmbeddingSearcher(catalog, encoder, cache_dir=settings.data_dir / "index")


def build_app_state(settings: Settings, *, warmup: bool = True) -> App:
    t0 = time.perf_counter()
    catalog, searcher = build_search(settings)
    stt = create_stt(settings.stt_model, cache_dir=settings.cache_dir, device=settings.device,
                     cpu_threads=settings.cpu_threads)
    tts = create_tts(settings.tts_model, cache_dir=settings.cache_dir, device=settings.device)
    images = ImageStore(settings.data_dir / "uploads")
    brain = Brain(searcher, tts, options=BrainOptions(k=settings.search_k), images=images)
    engines = Engines(stt=stt, brain=brain, vad_factory=SileroVAD)
    if warmup:
        # First calls pay for lazy initialisation (ONNX graphs, CT2 allocations); pay it before the first shopper.
        stt.transcribe(np.zeros(16000, dtype=np.float32))
        tts.synthesize("Hello.")
        searcher.encoder.encode_query("warm up")
    log.info("engines ready in %.1f s (%d products, stt=%s, tts=%s)", time.perf_counter() - t0, len(catalog),
             settings.stt_model, settings.tts_model)
    return App(settings=settings, engines=engines, catalog=catalog, searcher=searcher, tts=tts, images=images)
