"""Proxies that call the model workers on the Ray cluster (`server.workers.deployments`) through the engines' interfaces.

`RemoteSTT`, `RemoteTTS`, `RemoteTextEncoder` and `RemoteRanker` implement the engines' interfaces by calling a
`DeploymentHandle` and blocking on the result, so they are called from worker threads, never from the event loop.

Errors a proxy raises (timeouts and cancellation pass through unchanged)::

    speech.errors.SpeechError
    ├── SpeechToTextError       the STT worker failed or is unreachable (RemoteSTT)
    ├── TextToSpeechError       the TTS worker failed or is unreachable (RemoteTTS)
    └── AudioFormatError, ...   a speech error the worker raised, re-raised as it is
    RemoteWorkerError(RuntimeError)   code = "worker_failed": the encoder or ranker worker failed or is unreachable
    TimeoutError                no answer within the proxy's ``timeout_s`` (the request is cancelled)

Example:
    >>> workers = connect_workers(settings)              # in each front server (settings.ray_address is set)
    >>> workers.encoder.encode_query("black hoodie")
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayTaskError

from ranking.text_encoder import QueryCache
from server.settings import Settings
from server.workers.deployments import (
    CALL_TIMEOUT_S,
    DEPLOYMENTS,
    ENCODE_CHUNK,
    RemoteWorkerError,
    app_name,
    init_ray,
    worker_roles,
)
from speech.errors import SpeechError, SpeechToTextError, TextToSpeechError
from speech.stt import STTEngine, TranscribeOptions, Transcription, check_audio
from speech.tts import TTSEngine

log = logging.getLogger(__name__)

_OFF_LOOP = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ray-proxy")


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Caller:
    """Blocking calls to one deployment; failures become ``error`` (the proxied package's error type).

    Args:
        handle: The deployment's handle.
        role: ``stt``, ``tts``, ``encoder`` or ``ranker`` (for messages).
        error: Builds the exception raised for a failure, from a message.
        passthrough: Exception types the worker may raise that are re-raised as they are (e.g. `SpeechError`).
        timeout_s: Seconds to wait for one answer.
    """

    def __init__(self, handle: Any, role: str, error: Callable[[str], Exception],
                 passthrough: tuple[type[BaseException], ...], timeout_s: float) -> None:
        self.handle = handle
        self.role = role
        self.error = error
        self.passthrough = passthrough
        self.timeout_s = timeout_s

    def __call__(self, method: str, *args: Any) -> Any:
        if _in_event_loop():
            # Start-up (build_app_state in the server's lifespan) calls engines on the loop's thread, and Serve refuses
            # to block a running loop: wait on a helper thread, which blocks the loop as an in-process model would.
            return _OFF_LOOP.submit(self._call, method, *args).result()
        return self._call(method, *args)

    def _call(self, method: str, *args: Any) -> Any:
        try:
            response = getattr(self.handle, method).remote(*args)
        except Exception as err:
            raise self.error(f"{self.role} worker unreachable ({method}): {err}") from err
        try:
            return response.result(timeout_s=self.timeout_s)
        except TimeoutError:
            response.cancel()
            raise
        except RayTaskError as err:  # the worker's method raised
            cause = getattr(err, "cause", None)
            if isinstance(cause, self.passthrough):
                raise cause from err
            what = f"{type(cause).__name__}: {cause}" if cause is not None else str(err).splitlines()[0]
            raise self.error(f"remote {self.role} worker failed in {method}: {what}") from err
        except Exception as err:  # the replica died, the cluster went away, Serve refused the request
            raise self.error(f"remote {self.role} worker unavailable in {method}: {type(err).__name__}: "
                             f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}") from err


def _remote_vectors(value: Any) -> np.ndarray:
    # A copy: arrays from Ray's object store are read-only views, and callers may write to what engines return.
    return np.array(value, dtype=np.float32)


class RemoteSTT(STTEngine):
    """`STTEngine` whose decodes run on the ``STTWorker`` deployment.

    Wrap it in `assistant.runtime.scheduling.ScheduledSTT` as the local engine: the scheduler's worker threads (this engine's
    ``max_concurrency``) are the requests this server keeps in flight to the deployment.
    """

    def __init__(self, handle: Any, *, max_concurrency: int, timeout_s: float = CALL_TIMEOUT_S) -> None:
        super().__init__(max_concurrency)
        self._call = _Caller(handle, "stt", SpeechToTextError, (SpeechError,), timeout_s)
        info = self._call("info")
        self.name = str(info["name"])
        self.worker_info = info

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None) -> Transcription:
        """Transcribe float32 mono 16 kHz audio on the cluster (blocking); see `STTEngine.transcribe`."""
        audio = check_audio(audio)  # a bad shape fails here, before it crosses the network
        with self._lock:
            result: Transcription = self._call("transcribe", audio, options)
        return result


class RemoteTTS(TTSEngine):
    """`TTSEngine` whose synthesis runs on the ``TTSWorker`` deployment."""

    def __init__(self, handle: Any, *, timeout_s: float = CALL_TIMEOUT_S) -> None:
        super().__init__()
        self._call = _Caller(handle, "tts", TextToSpeechError, (SpeechError,), timeout_s)
        info = self._call("info")
        self.name = str(info["name"])
        self.sample_rate = int(info["sample_rate"])
        self.worker_info = info

    def synthesize(self, text: str) -> np.ndarray:
        """Synthesize on the cluster (blocking); float32 mono audio at `sample_rate`."""
        return _remote_vectors(self._call("synthesize", text))


class RemoteTextEncoder:
    """`ranking.text_encoder.TextEncoder`'s interface over the ``EncoderWorker`` deployment.

    ``name`` and ``model_path`` are the worker's, so index caches keyed by them stay valid. Recent query vectors
    are kept here (as `TextEncoder` does), so retrieval and re-ranking pay one round trip per query.
    """

    def __init__(self, handle: Any, *, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._call = _Caller(handle, "encoder", RemoteWorkerError, (), timeout_s)
        info = self._call("info")
        self.model_path = str(info["model_path"])
        self.device = str(info["device"])
        self._name = str(info["name"])
        self._dim = int(info["dim"])
        self.query_cache = QueryCache()
        self.worker_info = info

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self._dim

    @property
    def name(self) -> str:
        """The worker's model name (cache keys)."""
        return self._name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Encode texts on the cluster, `ENCODE_CHUNK` per call: float32 ``[n, dim]``, L2-normalised."""
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        chunks = [_remote_vectors(self._call("encode", list(texts[i : i + ENCODE_CHUNK])))
                  for i in range(0, len(texts), ENCODE_CHUNK)]
        return np.concatenate(chunks)

    def encode_query(self, text: str) -> np.ndarray:
        """Encode one query (batched with other sessions' on the worker): float32 ``[dim]``, L2-normalised."""
        return self.query_cache.get(text, lambda query: _remote_vectors(self._call("encode_query", query)))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Encode queries already batched here (e.g. by ``assistant.runtime.scheduling``) in one call: ``[n, dim]``."""
        if len(texts) == 0:
            return np.zeros((0, self._dim), dtype=np.float32)
        return _remote_vectors(self._call("encode_queries", list(texts)))

    def stats(self) -> dict[str, int]:
        """The replica's query batching so far (``batches``, ``items``, ``largest_batch``)."""
        return dict(self._call("stats"))


class RemoteRanker:
    """The `ranking.ranker.Ranker` calls `assistant.search.rerank.LLMReranker` makes, over the ``RankerWorker`` deployment."""

    def __init__(self, handle: Any, *, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self._call = _Caller(handle, "ranker", RemoteWorkerError, (), timeout_s)
        info = self._call("info")
        self.config = info["config"]  # a ranking.ranker.RankerConfig
        self.hidden_size = int(info["hidden_size"])
        self.worker_info = info

    def encode_query(self, text: str) -> np.ndarray:
        """Pooled query states ``[H]`` (batched with other sessions' on the worker)."""
        return _remote_vectors(self._call("encode_query", text))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled query states ``[n, H]`` of queries already batched here, in one call."""
        if len(texts) == 0:
            return np.zeros((0, self.hidden_size), dtype=np.float32)
        return _remote_vectors(self._call("encode_queries", list(texts)))

    def encode_products(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Product vectors ``[n, H]``, `ENCODE_CHUNK` texts per call (``batch_size`` is the worker's business)."""
        if len(texts) == 0:
            return np.zeros((0, self.hidden_size), dtype=np.float32)
        chunks = [_remote_vectors(self._call("encode_products", list(texts[i : i + ENCODE_CHUNK])))
                  for i in range(0, len(texts), ENCODE_CHUNK)]
        return np.concatenate(chunks)

    def score(self, query_vec: np.ndarray, product_vecs: np.ndarray, image_vecs: np.ndarray | None,
              features: np.ndarray) -> Any:
        """A `ranking.ranker.RankOutput` for one query's candidates."""
        return self._call("score", query_vec, product_vecs, image_vecs, features)

    def stats(self) -> dict[str, int]:
        """The replica's query batching so far."""
        return dict(self._call("stats"))


@dataclass
class RemoteWorkers:
    """The proxies of the roles that run on the cluster (None: that role runs in-process)."""

    stt: RemoteSTT | None = None
    tts: RemoteTTS | None = None
    encoder: RemoteTextEncoder | None = None
    ranker: RemoteRanker | None = None


_connected: dict[tuple[str, str], RemoteWorkers] = {}
_connect_lock = threading.Lock()


def connect_workers(settings: Settings, *, timeout_s: float = CALL_TIMEOUT_S) -> RemoteWorkers | None:
    """Proxies for the roles in ``settings.ray_workers`` on the cluster at ``settings.ray_address``.

    One connection per process and address (the engines built from the same settings share the proxies).

    Returns:
        None when ``settings.ray_address`` is not set (everything runs in-process).

    Raises:
        RemoteWorkerError: The cluster cannot be reached or a role's worker is not deployed (``shoptalk workers
            deploy``); for STT and TTS, ``SpeechToTextError`` / ``TextToSpeechError``.
    """
    if not settings.ray_address:
        return None
    key = (settings.ray_address, settings.ray_workers)
    with _connect_lock:
        if key in _connected:
            return _connected[key]
        try:
            init_ray(settings.ray_address)
        except Exception as err:
            raise RemoteWorkerError(f"cannot reach the Ray cluster at {settings.ray_address!r}: {err}") from err
        workers = RemoteWorkers()
        for role in worker_roles(settings):
            try:
                handle = serve.get_deployment_handle(DEPLOYMENTS[role], app_name=app_name(role))
            except Exception as err:
                raise RemoteWorkerError(f"no {role} worker on the Ray cluster at {settings.ray_address!r} (Serve app "
                                        f"{app_name(role)}): run `shoptalk workers deploy` ({err})") from err
            if role == "stt":
                workers.stt = RemoteSTT(handle, max_concurrency=settings.stt_workers, timeout_s=timeout_s)
            elif role == "tts":
                workers.tts = RemoteTTS(handle, timeout_s=timeout_s)
            elif role == "encoder":
                workers.encoder = RemoteTextEncoder(handle, timeout_s=timeout_s)
            else:
                workers.ranker = RemoteRanker(handle, timeout_s=timeout_s)
        log.info("model workers on Ray (%s): %s", settings.ray_address, ", ".join(worker_roles(settings)) or "none")
        _connected[key] = workers
        return workers
