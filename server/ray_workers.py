"""Ray Serve deployments for the model workers (ASR, TTS, text encoder, ranker) and the proxies that call them.

With ``SHOPTALK_RAY_ADDRESS`` set, a front server (``shoptalk serve``) keeps the sessions, the websocket, retrieval
and the dialogue, and sends the model calls of the roles in ``SHOPTALK_RAY_WORKERS`` to a Ray cluster: one Serve
application per role (``shoptalk-stt``, ``shoptalk-tts``, ``shoptalk-encoder``, ``shoptalk-ranker``), each with
one deployment whose replicas load the same models from the same settings as the in-process path. The proxies
(`RemoteSTT`, `RemoteTTS`, `RemoteTextEncoder`, `RemoteRanker`) implement the engines' interfaces by calling a
`DeploymentHandle` and blocking on the result, so they are called from worker threads, never from the event loop.

Query encoding (text encoder and ranker) is micro-batched across sessions on the Ray side (``serve.batch``).

Errors a proxy raises (timeouts and cancellation pass through unchanged)::

    speech.errors.SpeechError
    ├── SpeechToTextError       the STT worker failed or is unreachable (RemoteSTT)
    ├── TextToSpeechError       the TTS worker failed or is unreachable (RemoteTTS)
    └── AudioFormatError, ...   a speech error the worker raised, re-raised as it is
    RemoteWorkerError(RuntimeError)   code = "worker_failed": the encoder or ranker worker failed or is unreachable
    TimeoutError                no answer within the proxy's ``timeout_s`` (the request is cancelled)

Example:
    >>> deploy_workers(settings, "auto", num_cpus=1.0)   # once, from any machine of the cluster
    >>> workers = connect_workers(settings)              # in each front server (settings.ray_address is set)
    >>> workers.encoder.encode_query("black hoodie")
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.exceptions import RayTaskError

from ranking.text_encoder import QueryCache
from server.settings import RAY_ROLES, Settings
from speech.errors import SpeechError, SpeechToTextError, TextToSpeechError
from speech.stt import STTEngine, TranscribeOptions, Transcription, check_audio
from speech.tts import TTSEngine

log = logging.getLogger(__name__)

APP_PREFIX = "shoptalk-"  # one Serve application per role: shoptalk-stt, shoptalk-tts, ...
DEPLOYMENTS = {"stt": "STTWorker", "tts": "TTSWorker", "encoder": "EncoderWorker", "ranker": "RankerWorker"}
CALL_TIMEOUT_S = 60.0  # a final transcript on a busy CPU worker takes seconds; a dead cluster must not hang a turn
QUERY_BATCH = 32  # queries encoded in one forward pass at most
QUERY_BATCH_WAIT_S = 0.005  # a lone query waits this long for company (~half a MiniLM query on 2 CPU cores)
ENCODE_CHUNK = 256  # texts per remote call when a catalog is encoded (keeps each message a few hundred KB)
HEALTH_CHECK_PERIOD_S = 5.0  # how soon Serve notices (and replaces) a dead replica


class RemoteWorkerError(RuntimeError):
    """A remote encoder or ranker worker failed, or the Ray cluster could not be reached.

    Attributes:
        code: Stable machine-readable error code.
        message: Human-readable description.
    """

    code = "worker_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def app_name(role: str) -> str:
    """The Serve application that holds ``role``'s deployment."""
    return APP_PREFIX + role


def worker_roles(settings: Settings) -> list[str]:
    """The roles ``settings.ray_workers`` sends to the cluster, in `RAY_ROLES` order."""
    wanted = {part.strip() for part in settings.ray_workers.split(",") if part.strip()}
    return [role for role in RAY_ROLES if role in wanted]


# --- the deployments (run inside Ray replicas) ------------------------------------------------------------------


def _limit_threads(settings: Settings, num_cpus: float) -> int:
    """Torch threads for a replica: ``cpu_threads`` when set, else the CPUs Ray reserved for it (at least 1)."""
    import torch

    threads = settings.cpu_threads or max(1, round(num_cpus))
    torch.set_num_threads(threads)
    return threads


def ranker_checkpoint(settings: Settings) -> Path | None:
    """The checkpoint the in-process path serves (`server.engines.build_ranked`): trained, else shipped."""
    from ranking.registry import shipped_checkpoint

    checkpoint: Path | None = settings.ranker_checkpoint_path
    if checkpoint is not None and not checkpoint.exists():
        checkpoint = shipped_checkpoint(settings.ranker)
    return checkpoint


class _BatchStats:
    """How a batched method has been called: batches, items and the largest batch."""

    def __init__(self) -> None:
        self.batches = 0
        self.items = 0
        self.largest = 0

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest = max(self.largest, size)

    def as_dict(self) -> dict[str, int]:
        return {"batches": self.batches, "items": self.items, "largest_batch": self.largest}


class _Worker:
    """What every worker deployment shares: its fingerprint (what it was deployed with) and where it runs."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint

    def _info(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                "node_id": ray.get_runtime_context().get_node_id()}


@serve.deployment(name=DEPLOYMENTS["stt"], health_check_period_s=HEALTH_CHECK_PERIOD_S)
class STTWorker(_Worker):
    """Speech-to-text replica: ``settings.stt_model`` with ``settings.stt_workers`` concurrent decodes."""

    def __init__(self, settings: Settings, fingerprint: str, num_cpus: float) -> None:
        super().__init__(fingerprint)
        from speech.registry import create_stt

        threads = _limit_threads(settings, num_cpus)
        self.engine = create_stt(settings.stt_model, cache_dir=settings.cache_dir, device=settings.device,
                                 cpu_threads=threads, workers=settings.stt_workers)

    def info(self) -> dict[str, Any]:
        return {**self._info(), "name": self.engine.name, "max_concurrency": self.engine.max_concurrency}

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None) -> Transcription:
        # Serve runs sync methods in a thread pool; the engine's own semaphore bounds the parallel decodes.
        return self.engine.transcribe(audio, options)


@serve.deployment(name=DEPLOYMENTS["tts"], health_check_period_s=HEALTH_CHECK_PERIOD_S, max_ongoing_requests=4)
class TTSWorker(_Worker):
    """Text-to-speech replica: ``settings.tts_model``."""

    def __init__(self, settings: Settings, fingerprint: str, num_cpus: float) -> None:
        super().__init__(fingerprint)
        from speech.registry import create_tts

        _limit_threads(settings, num_cpus)
        self.engine = create_tts(settings.tts_model, cache_dir=settings.cache_dir, device=settings.device)

    def info(self) -> dict[str, Any]:
        return {**self._info(), "name": self.engine.name, "sample_rate": self.engine.sample_rate}

    def synthesize(self, text: str) -> np.ndarray:
        return self.engine.synthesize(text)


@serve.deployment(name=DEPLOYMENTS["encoder"], health_check_period_s=HEALTH_CHECK_PERIOD_S,
                  max_ongoing_requests=4 * QUERY_BATCH)
class EncoderWorker(_Worker):
    """Sentence-encoder replica (all-MiniLM-L6-v2): catalog texts in chunks, shoppers' queries micro-batched."""

    def __init__(self, settings: Settings, fingerprint: str, num_cpus: float) -> None:
        super().__init__(fingerprint)
        from ranking.text_encoder import TextEncoder

        _limit_threads(settings, num_cpus)
        self.encoder = TextEncoder(device=settings.device)
        self.query_stats = _BatchStats()

    def info(self) -> dict[str, Any]:
        return {**self._info(), "name": self.encoder.name, "model_path": self.encoder.model_path,
                "dim": self.encoder.dim, "device": self.encoder.device}

    def stats(self) -> dict[str, int]:
        return self.query_stats.as_dict()

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode_queries(texts)

    @serve.batch(max_batch_size=QUERY_BATCH, batch_wait_timeout_s=QUERY_BATCH_WAIT_S)
    async def encode_query(self, texts: list[str]) -> list[np.ndarray]:
        # One forward pass for the queries of every session that asked within the wait; off the replica's loop,
        # so the next batch gathers while this one runs.
        vectors = await asyncio.to_thread(self.encoder.encode_queries, texts)
        self.query_stats.record(len(texts))
        return list(vectors)


@serve.deployment(name=DEPLOYMENTS["ranker"], health_check_period_s=HEALTH_CHECK_PERIOD_S,
                  max_ongoing_requests=4 * QUERY_BATCH)
class RankerWorker(_Worker):
    """LLM ranker replica (``settings.ranker`` with its trained or shipped checkpoint); queries micro-batched."""

    def __init__(self, settings: Settings, fingerprint: str, num_cpus: float) -> None:
        super().__init__(fingerprint)
        from ranking.registry import create_ranker

        _limit_threads(settings, num_cpus)
        checkpoint = ranker_checkpoint(settings)
        if checkpoint is None:
            raise RuntimeError(f"no trained ranker at {settings.ranker_checkpoint_path} and none shipped for "
                               f"{settings.ranker!r} (run `shoptalk ranker train`)")
        self.ranker = create_ranker(settings.ranker, cache_dir=settings.cache_dir, checkpoint=checkpoint,
                                    device=settings.device)
        self.checkpoint = str(checkpoint)
        self.query_stats = _BatchStats()

    def info(self) -> dict[str, Any]:
        return {**self._info(), "name": self.ranker.config.name, "config": self.ranker.config,
                "hidden_size": self.ranker.hidden_size, "checkpoint": self.checkpoint}

    def stats(self) -> dict[str, int]:
        return self.query_stats.as_dict()

    def encode_products(self, texts: list[str]) -> np.ndarray:
        return self.ranker.encode_products(texts)

    def score(self, query_vec: np.ndarray, product_vecs: np.ndarray, image_vecs: np.ndarray | None,
              features: np.ndarray) -> Any:
        return self.ranker.score(query_vec, product_vecs, image_vecs, features)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.ranker.encode_queries(texts)

    @serve.batch(max_batch_size=QUERY_BATCH, batch_wait_timeout_s=QUERY_BATCH_WAIT_S)
    async def encode_query(self, texts: list[str]) -> list[np.ndarray]:
        # Right-padded and causal: each query's pooled states are the same as when it is encoded alone.
        vectors = await asyncio.to_thread(self.ranker.encode_queries, texts)
        self.query_stats.record(len(texts))
        return list(vectors)


_WORKERS: dict[str, Any] = {"stt": STTWorker, "tts": TTSWorker, "encoder": EncoderWorker, "ranker": RankerWorker}


# --- deploying ---------------------------------------------------------------------------------------------------


def init_ray(address: str) -> None:
    """Connect this process to the Ray cluster at ``address`` ("auto" or the head's "host:6379") once.

    Raises:
        ConnectionError: Nothing answers at ``address`` (checked first: Ray itself retries for minutes).
    """
    if ray.is_initialized():
        return
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and "://" not in address:
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as err:
            raise ConnectionError(f"no Ray head node answers at {address} ({err})") from err
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)


def parse_replicas(spec: str | int | Mapping[str, int]) -> dict[str, int]:
    """Replicas per role from ``2`` (every role) or ``"stt=2,encoder=1"`` (the others: 1).

    Raises:
        ValueError: An unknown role or a count below 1.
    """
    if isinstance(spec, Mapping):
        counts = dict(spec)
    elif isinstance(spec, int) or str(spec).strip().isdigit():
        counts = dict.fromkeys(RAY_ROLES, int(spec))
    else:
        counts = {}
        for part in str(spec).split(","):
            role, _, count = part.partition("=")
            counts[role.strip()] = int(count)
    unknown = sorted(set(counts) - set(RAY_ROLES))
    if unknown:
        raise ValueError(f"unknown worker role(s) {', '.join(unknown)}; valid: {', '.join(RAY_ROLES)}")
    if any(count < 1 for count in counts.values()):
        raise ValueError("every role needs at least one replica")
    return {role: counts.get(role, 1) for role in RAY_ROLES}


def _fingerprint(role: str, settings: Settings, replicas: int, num_cpus: float) -> str:
    """What a role's deployment depends on; an unchanged fingerprint makes `deploy_workers` a no-op for it."""
    fields = {"stt": ("stt_model", "stt_workers"), "tts": ("tts_model",), "encoder": (),
              "ranker": ("ranker", "ranker_checkpoint")}[role]
    data: dict[str, Any] = {name: str(getattr(settings, name)) for name in ("data_dir", "device", "cpu_threads",
                                                                            *fields)}
    data.update(role=role, replicas=replicas, num_cpus=num_cpus)
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _deployed_fingerprint(role: str) -> str | None:
    """The fingerprint of ``role``'s running deployment, or None when it is missing or not healthy."""
    app = serve.status().applications.get(app_name(role))
    if app is None or app.status != "RUNNING":
        return None
    try:
        handle = serve.get_deployment_handle(DEPLOYMENTS[role], app_name=app_name(role))
        info = handle.info.remote().result(timeout_s=30)
    except Exception:  # noqa: BLE001 - anything wrong with the old deployment means: deploy again
        return None
    return str(info.get("fingerprint"))


def worker_settings(settings: Settings) -> Settings:
    """What the workers are sent: the models' settings without the servers' credentials.

    The auth secret, the API keys and the engine URLs (which may carry passwords) stay on the front servers.
    """
    return settings.model_copy(update={"auth_secret": None, "api_keys": [], "memory_url": None, "vector_url": None,
                                       "rate_limit_storage": "memory://"})


def deploy_workers(settings: Settings, address: str | None = None, *, replicas: str | int | Mapping[str, int] = 1,
                   num_cpus: float = 1.0, roles: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Start (or update) the worker applications on the Ray cluster; idempotent.

    A role whose running deployment was made with the same settings, replicas and CPUs is left alone; the others
    are (re)deployed together, and the call returns when their replicas have loaded their models.

    Args:
        settings: The deployment's settings (models, data dir, device); every node needs the same data dir.
        address: The cluster; default ``settings.ray_address`` or ``"auto"`` (the node this machine runs).
        replicas: Replicas per role (see `parse_replicas`).
        num_cpus: CPUs Ray reserves for each replica (also its torch threads unless ``cpu_threads`` is set).
        roles: Roles to deploy; default `worker_roles(settings)`.

    Returns:
        `workers_status` after the deployment.
    """
    init_ray(address or settings.ray_address or "auto")
    serve.start(proxy_location="Disabled")  # no HTTP ingress: only the front servers' handles call the workers
    counts = parse_replicas(replicas)
    worker_config = worker_settings(settings)
    targets = []
    for role in roles if roles is not None else worker_roles(settings):
        fingerprint = _fingerprint(role, settings, counts[role], num_cpus)
        if _deployed_fingerprint(role) == fingerprint:
            log.info("%s worker already deployed with these settings", role)
            continue
        options: dict[str, Any] = {"num_replicas": counts[role], "ray_actor_options": {"num_cpus": num_cpus}}
        if role == "stt":
            options["max_ongoing_requests"] = 2 * settings.stt_workers  # a small queue per replica, no more
        deployment = _WORKERS[role].options(**options)
        targets.append(serve.RunTarget(deployment.bind(worker_config, fingerprint, num_cpus), name=app_name(role),
                                       route_prefix=None))
    if targets:
        log.info("deploying %s", ", ".join(t.name for t in targets))
        serve.run_many(targets)
    return workers_status()


def workers_status() -> dict[str, dict[str, Any]]:
    """Per role: the application's status and its deployment's replica states (roles not deployed are left out)."""
    out: dict[str, dict[str, Any]] = {}
    applications = serve.status().applications
    for role in RAY_ROLES:
        app = applications.get(app_name(role))
        if app is None:
            continue
        deployment = app.deployments.get(DEPLOYMENTS[role])
        out[role] = {
            "app": app_name(role),
            "status": str(app.status.value),
            "replicas": dict(deployment.replica_states) if deployment is not None else {},
            "message": app.message or (deployment.message if deployment is not None else ""),
        }
    return out


# --- the proxies (run in the front servers) ----------------------------------------------------------------------


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

    Wrap it in `speech.scheduler.ScheduledSTT` as the local engine: the scheduler's worker threads (this engine's
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
        """Encode queries already batched here (e.g. by ``assistant.runtime.batching``) in one call: ``[n, dim]``."""
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
