"""Ray Serve deployments for the model workers (ASR, TTS, text encoder, ranker).

With ``SHOPTALK_RAY_ADDRESS`` set, a front server (``shoptalk serve``) keeps the sessions, the websocket, retrieval
and the dialogue, and sends the model calls of the roles in ``SHOPTALK_RAY_WORKERS`` to a Ray cluster: one Serve
application per role (``shoptalk-stt``, ``shoptalk-tts``, ``shoptalk-encoder``, ``shoptalk-ranker``), each with
one deployment whose replicas load the same models from the same settings as the in-process path. The front
server calls them through `server.workers.proxies`.

Query encoding (text encoder and ranker) is micro-batched across sessions on the Ray side (``serve.batch``).

Example:
    >>> deploy_workers(settings, "auto", num_cpus=1.0)   # once, from any machine of the cluster
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve

from server.settings import RAY_ROLES, Settings
from speech.stt import TranscribeOptions, Transcription

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
