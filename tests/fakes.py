"""Fakes for fast tests: an energy VAD, a fixed-transcript STT, a tone TTS, a keyword searcher."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from PIL import Image

from assistant.catalog.model import Catalog, Product
from assistant.search.query import ProductHit, SearchQuery
from speech.stt import STTEngine, TranscribeOptions, Transcription
from speech.tts import TTSEngine

SR = 16000


def tone(seconds: float, freq: float = 220.0, amp: float = 0.3, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float, sr: int = SR) -> np.ndarray:
    return np.zeros(int(seconds * sr), dtype=np.float32)


class EnergyVAD:
    """Speech probability from frame energy: tones count as speech, zeros as silence."""

    FRAME_SAMPLES = 512

    def prob(self, frame: np.ndarray) -> float:
        return 0.95 if float(np.sqrt(np.mean(np.square(frame)))) > 0.01 else 0.02

    def reset(self) -> None:
        pass


class FakeSTT(STTEngine):
    """Returns a fixed transcript for audio with energy, nothing for silence; counts calls."""

    name = "fake"

    def __init__(self, text: str = "black hoodie under fifty dollars", delay_s: float = 0.0) -> None:
        super().__init__()
        self.text = text
        self.delay_s = delay_s
        self.calls: list[float] = []  # seconds of audio per call
        self.options: list[TranscribeOptions | None] = []  # the options of each call
        self._count_lock = threading.Lock()

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None) -> Transcription:
        with self._lock:
            with self._count_lock:
                self.calls.append(len(audio) / SR)
                self.options.append(options)
            time.sleep(self.delay_s)
            voiced = float(np.sqrt(np.mean(np.square(audio)))) > 0.01 if len(audio) else False
            if not voiced:
                return Transcription("", "en", 0.0, 1.0, len(audio) / SR, is_hallucination=True)
            return Transcription(self.text, "en", -0.1, 0.01, len(audio) / SR)


class FakeTTS(TTSEngine):
    """Half a second of tone per sentence at 24 kHz; ``delay_s`` simulates synthesis time."""

    name = "fake-tts"
    sample_rate = 24000

    def __init__(self, delay_s: float = 0.0, seconds: float = 0.5) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.seconds = seconds
        self.sentences: list[str] = []

    def synthesize(self, text: str) -> np.ndarray:
        self.sentences.append(text)
        time.sleep(self.delay_s)
        return tone(self.seconds, 330, 0.2, self.sample_rate)


def make_products() -> list[Product]:
    rows = [
        ("p1", "Harbor Fleece Hoodie", "Men/Tops/Hoodies", 39.99, "black"),
        ("p2", "Ridge Zip Hoodie", "Men/Tops/Hoodies", 44.0, "black"),
        ("p3", "Summit Parka", "Men/Jackets", 129.0, "black"),
        ("p4", "Trail Runner 2", "Shoes/Running", 89.99, "red"),
    ]
    return [
        Product.from_dict({
            "id": pid, "parent_id": None, "type": "simple", "title": title, "description": f"A {color} item.",
            "category": cat, "categories": [cat], "brand": "Acme", "price": price, "currency": "USD",
            "attributes": {"color": color.title(), "size": ["S", "M", "L"]}, "images": [],
        })
        for pid, title, cat, price, color in rows
    ]


class KeywordSearcher:
    """Matches query words against titles/categories/colours; honours max_price (a `ProductSearcher`)."""

    vocab = None
    ranked = False
    image_encoder = None  # standing in for a retriever: no photo index

    def __init__(self, products: list[Product] | None = None) -> None:
        self.catalog = Catalog(products or make_products())

    def update(self, catalog: Catalog) -> dict[str, int]:
        self.catalog = catalog
        return {}

    def search(self, query: SearchQuery, *, use_ranker: bool = True, signals: object = None) -> list[ProductHit]:
        words = set(query.text.lower().split())
        hits = []
        for p in self.catalog:
            if query.max_price is not None and p.price > query.max_price:
                continue
            text = f"{p.title} {p.category} {' '.join(p.colors())}".lower()
            score = sum(w.rstrip("s") in text for w in words) / max(1, len(words))
            if score > 0:
                hits.append(ProductHit(product=p, score=score, reason="keyword match"))
        hits.sort(key=lambda h: -h.score)
        return hits[: query.k]


class ColourPhotoSearcher:
    """Photo search by the photo's mean colour: a dark photo finds black products (enough to test the plumbing)."""

    def __init__(self, searcher: KeywordSearcher) -> None:
        self.searcher = searcher

    def search_photo(self, image: Image.Image, query: SearchQuery | None) -> list[ProductHit]:
        mean = float(np.asarray(image.convert("L"), dtype=np.float32).mean())
        color = "black" if mean < 80 else "red"
        words = f"{color} {query.text if query else ''}"
        limit = query.max_price if query else None
        return self.searcher.search(SearchQuery(text=words, k=5, max_price=limit))


def order_ok(types: list[str], expected: list[str]) -> bool:
    """True when ``expected`` appears in ``types`` in this order (other events may come between)."""
    it = iter(types)
    return all(any(t == want for t in it) for want in expected)


VOICE_TURN_EVENTS = [  # the ordered events of one hands-free voice turn
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.input_audio_transcription.completed",
    "response.created",
    "response.products",
    "response.output_text.delta",
    "response.done",
]


def check_products(
    products: list[dict[str, Any]],
    catalog: Catalog,
    *,
    max_price: float | None = None,
    colour: str | None = None,
    words: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Check API/event product rows against the request they answer; returns the rows that fit it.

    Every row is a catalog product at its catalog price whose title or category has one of `words`. A row that
    fits (``near_miss`` empty) meets `max_price` and `colour`; a close alternative names each of them it misses,
    and comes after every row that fits.
    """
    assert products
    for row in products:
        full = catalog.get(row["id"])
        assert full is not None, row  # only catalog products, never invented ones
        assert row["price"] == full.price
        if words:
            assert any(w in (full.title + " " + full.category).lower() for w in words), row
        missed = set(row["near_miss"])
        assert missed <= {"colour", "size", "price"}, row
        if max_price is not None:
            assert (row["price"] > max_price) == ("price" in missed), row
        if colour is not None:
            assert (colour not in [c.lower() for c in full.colors()]) == ("colour" in missed), row
    fits = [row for row in products if not row["near_miss"]]
    assert products[: len(fits)] == fits, products
    return fits


def count_encodes(encoder: Any, monkeypatch: Any) -> list[str]:
    """The texts `encoder.encode` is asked to encode from now on (the encoder still encodes them)."""
    encoded: list[str] = []
    real_encode = encoder.encode

    def counting_encode(texts: Any) -> Any:
        encoded.extend(texts)
        return real_encode(texts)

    monkeypatch.setattr(encoder, "encode", counting_encode)
    return encoded
