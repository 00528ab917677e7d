"""The Ray Serve model workers on a real local Ray cluster: each proxy answers as the in-process engine does.

A head node (no CPUs, as a front machine joins) and a worker node (2 logical CPUs) are started with ``ray start`` in
their own temp dir; the four workers are deployed with their real models (faster-whisper tiny.en, hibari, MiniLM,
the SmolLM2 ranker with the shipped checkpoint), and the same models are loaded here to compare with.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.settings import Settings
from speech.audio import resample
from speech.errors import AudioFormatError, TextToSpeechError
from tests.fakes import check_products


def _missing(why: str) -> None:
    # CI sets SHOPTALK_REQUIRE_RAY=1: there a missing ray is a failed install step, not a skip.
    if os.environ.get("SHOPTALK_REQUIRE_RAY") == "1":
        pytest.fail(why, pytrace=False)
    pytest.skip(why, allow_module_level=True)


try:
    import ray
    from ray import serve  # noqa: F401 (the [serve] extra)
except ImportError:
    _missing("ray[serve] is not installed (pip install 'shoptalk[ray]')")

from server.workers.deployments import (  # noqa: E402 (needs ray)
    RemoteWorkerError,
    app_name,
    deploy_workers,
    ranker_checkpoint,
    worker_settings,
    workers_status,
)
from server.workers.proxies import (  # noqa: E402 (needs ray)
    RemoteRanker,
    RemoteSTT,
    RemoteTextEncoder,
    RemoteTTS,
    RemoteWorkers,
    connect_workers,
)

pytestmark = [pytest.mark.real_model, pytest.mark.timeout(300)]

SPOKEN = "Show me black hoodies under fifty dollars."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop_cluster(temp_dir: str) -> None:
    """Stop the processes of the cluster that lives in ``temp_dir`` (and no other Ray on this machine)."""
    import psutil

    ours = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(temp_dir in part for part in proc.info["cmdline"] or ()):
                ours.append(proc)
    for proc in ours:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(ours, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A two-node Ray cluster laid out as the README's deployment, on this one machine.

    The head is started as a front machine joins (``ray start --head --num-cpus=0``: it takes no model work) and a
    second node as a worker machine joins (``ray start --address=... --num-cpus=2``), so every replica must land
    on the worker node.
    """
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must stay under 108 chars
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = str(Path(sys.executable).with_name("ray"))
    common = ["--disable-usage-stats", "--node-ip-address=127.0.0.1", "--object-store-memory=200000000"]
    head = [ray_cli, "start", "--head", "--num-cpus=0", "--include-dashboard=false", f"--port={port}",
            f"--temp-dir={temp_dir}", *common]
    worker = [ray_cli, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2", *common]
    try:
        subprocess.run(head, check=True, env=env, capture_output=True, text=True, timeout=120)
        subprocess.run(worker, check=True, env=env, capture_output=True, text=True, timeout=120)
        address = f"127.0.0.1:{port}"
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        yield address
    finally:
        ray.shutdown()  # the whole cluster goes: no need to shut Serve down first
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def settings(cluster: str, smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    from ranking.registry import SMOLLM2_FOLDER

    data_dir = tmp_path_factory.mktemp("ray-data")
    (data_dir / "models").mkdir()
    (data_dir / "models" / SMOLLM2_FOLDER).symlink_to(smollm2_dir)  # the prepared backbone, not prepared again
    return Settings(data_dir=data_dir, device="cpu", cpu_threads=1, stt_workers=2, serve_ranker=True,
                    ray_address=cluster)


@pytest.fixture(scope="module")
def workers(settings: Settings, cluster: str) -> RemoteWorkers:
    t0 = time.perf_counter()
    status = deploy_workers(settings, cluster, num_cpus=0.25)  # 4 replicas on the 2 logical CPUs
    assert {role: s["status"] for role, s in status.items()} == dict.fromkeys(("stt", "tts", "encoder", "ranker"),
                                                                                 "RUNNING"), status
    print(f"deployed the four workers in {time.perf_counter() - t0:.1f} s")
    remote = connect_workers(settings)
    assert remote is not None
    return remote


@pytest.fixture(scope="module")
def local_tts() -> Any:
    from speech.registry import create_tts

    return create_tts("hibari")


@pytest.fixture(scope="module")
def clip(local_tts: Any) -> np.ndarray:
    return resample(local_tts.synthesize(SPOKEN), local_tts.sample_rate, 16000)


@pytest.fixture(scope="module")
def local_encoder() -> Any:
    from ranking.text_encoder import TextEncoder

    return TextEncoder(device="cpu")


def test_in_process_without_address_and_a_clear_error_without_cluster() -> None:
    from server.engines import remote_worker

    assert remote_worker(Settings(), "stt") is None and connect_workers(Settings()) is None
    if ray.is_initialized():
        pytest.skip("this process is already connected to a cluster")
    dead = Settings(ray_address=f"127.0.0.1:{_free_port()}")  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(RemoteWorkerError, match="cannot reach the Ray cluster"):
        remote_worker(dead, "encoder")
    assert time.perf_counter() - t0 < 10 and not ray.is_initialized()


def test_replicas_run_on_the_worker_node_not_the_front(workers: RemoteWorkers) -> None:
    """The README's layout: the front machine's node (no CPUs) holds no model; the worker machine's holds them all."""
    cpus = {node["NodeID"]: node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]}
    assert sorted(cpus.values()) == [0, 2], cpus
    for proxy in (workers.stt, workers.tts, workers.encoder, workers.ranker):
        assert proxy is not None
        assert cpus[proxy.worker_info["node_id"]] == 2, proxy.worker_info


def test_workers_get_no_credentials() -> None:
    secret = Settings(auth_secret="s3cret-signing-key", api_keys="key-one,key-two",  # type: ignore[arg-type]
                      memory_url="redis://:pw@redis:6379/0", vector_url="https://qdrant:6333?api-key=k",
                      rate_limit_storage="redis://:pw@redis:6379/1", stt_model="faster-whisper:tiny.en")
    sent = worker_settings(secret)
    dumped = sent.model_dump_json()
    for leak in ("s3cret", "key-one", "pw@", "api-key"):
        assert leak not in dumped, leak
    assert sent.stt_model == secret.stt_model and sent.data_dir == secret.data_dir  # the models' settings stay


def test_deploy_is_idempotent(workers: RemoteWorkers, settings: Settings, cluster: str) -> None:
    before = {role: s["replicas"] for role, s in workers_status().items()}
    t0 = time.perf_counter()
    after = deploy_workers(settings, cluster, num_cpus=0.25)
    assert time.perf_counter() - t0 < 10  # nothing redeployed: no model loads
    assert {role: s["replicas"] for role, s in after.items()} == before
    assert workers.encoder is not None
    assert workers.encoder.encode_query("still there") is not None


def test_stt_matches_in_process(workers: RemoteWorkers, settings: Settings, clip: np.ndarray) -> None:
    from speech.registry import create_stt

    assert isinstance(workers.stt, RemoteSTT)
    assert workers.stt.name == settings.stt_model and workers.stt.max_concurrency == settings.stt_workers
    local = create_stt(settings.stt_model, cache_dir=settings.cache_dir, device="cpu", cpu_threads=1)
    remote = workers.stt.transcribe(clip)
    assert remote.text == local.transcribe(clip).text
    assert "hoodie" in remote.text.lower(), remote.text
    with pytest.raises(AudioFormatError):  # a bad shape is refused before it crosses the network
        workers.stt.transcribe(np.zeros((2, 16000), np.float32))


def test_tts_matches_in_process(workers: RemoteWorkers, local_tts: Any) -> None:
    assert isinstance(workers.tts, RemoteTTS)
    assert workers.tts.sample_rate == local_tts.sample_rate and workers.tts.name == local_tts.name
    remote = workers.tts.synthesize(SPOKEN)
    local = local_tts.synthesize(SPOKEN)
    assert remote.dtype == np.float32 and remote.shape == local.shape
    np.testing.assert_allclose(remote, local, atol=1e-4)  # the same fixed noise seed on both sides


def test_encoder_matches_in_process(workers: RemoteWorkers, local_encoder: Any) -> None:
    encoder = workers.encoder
    assert isinstance(encoder, RemoteTextEncoder)
    assert (encoder.name, encoder.dim, encoder.model_path) == (local_encoder.name, local_encoder.dim,
                                                               local_encoder.model_path)
    texts = ["Black cotton hoodie", "Red running shoes, size 42", "A waterproof jacket for hiking"] * 100
    np.testing.assert_allclose(encoder.encode(texts), local_encoder.encode(texts), atol=1e-5)  # 2 chunks
    assert encoder.encode([]).shape == (0, local_encoder.dim)
    np.testing.assert_allclose(encoder.encode_query("black hoodie"), local_encoder.encode_query("black hoodie"),
                               atol=1e-5)
    queries = ["black hoodie", "waterproof jacket for hiking in the rain"]
    np.testing.assert_allclose(encoder.encode_queries(queries), local_encoder.encode_queries(queries), atol=1e-5)


def _concurrently(call: Any, texts: list[str]) -> list[np.ndarray]:
    """``call(text)`` for every text from its own thread, all released at once."""
    barrier = threading.Barrier(len(texts))

    def one(text: str) -> np.ndarray:
        barrier.wait()
        return np.asarray(call(text))

    with ThreadPoolExecutor(len(texts)) as pool:
        return list(pool.map(one, texts))


def test_concurrent_queries_are_batched(workers: RemoteWorkers, local_encoder: Any) -> None:
    assert workers.encoder is not None
    texts = [f"{colour} {item} under {price} dollars" for colour, item, price in
             zip(["black", "red", "blue", "green", "grey", "white", "navy", "pink"] * 2,
                 ["hoodie", "sneakers", "jeans", "jacket"] * 4, range(20, 100, 5), strict=False)]
    before = workers.encoder.stats()
    vectors = _concurrently(workers.encoder.encode_query, texts)
    after = workers.encoder.stats()
    assert after["items"] - before["items"] == len(texts)
    assert after["batches"] - before["batches"] < len(texts)  # some requests shared a forward pass
    assert after["largest_batch"] > 1
    for text, vec in zip(texts, vectors, strict=True):  # each caller got its own query's vector
        np.testing.assert_allclose(vec, local_encoder.encode_query(text), atol=1e-5)


def test_ranker_matches_in_process(workers: RemoteWorkers, settings: Settings) -> None:
    from ranking.ranker import NUM_FEATURES
    from ranking.registry import create_ranker

    ranker = workers.ranker
    assert isinstance(ranker, RemoteRanker)
    local = create_ranker(settings.ranker, cache_dir=settings.cache_dir, checkpoint=ranker_checkpoint(settings),
                          device="cpu")
    assert ranker.config == local.config and ranker.hidden_size == local.hidden_size
    products = ["Luma black pullover hoodie, cotton", "Trail runner sneakers in red", "Slim blue denim jeans",
                "Waterproof grey shell jacket with hood"]
    product_vecs = ranker.encode_products(products)
    np.testing.assert_allclose(product_vecs, local.encode_products(products), atol=1e-4)
    queries = ["black hoodie | color: black", "red sneakers", "jeans under 40 dollars", "rain jacket"]
    before = ranker.stats()
    qvecs = _concurrently(ranker.encode_query, queries)
    assert ranker.stats()["items"] - before["items"] == len(queries)
    for query, qvec in zip(queries, qvecs, strict=True):
        np.testing.assert_allclose(qvec, local.encode_query(query), atol=1e-4)
    np.testing.assert_allclose(ranker.encode_queries(queries), np.stack(qvecs), atol=1e-4)
    rng = np.random.default_rng(0)
    feats = rng.random((len(products), NUM_FEATURES), dtype=np.float32)
    images = rng.standard_normal((len(products), local.config.image_dim)).astype(np.float32)
    images[1] = 0  # a product without a photo
    remote_out = ranker.score(qvecs[0], product_vecs, images, feats)
    local_out = local.score(qvecs[0], product_vecs, images, feats)
    np.testing.assert_allclose(remote_out.scores, local_out.scores, atol=1e-4)
    assert remote_out.contributions.keys() == local_out.contributions.keys()


def test_remote_failures_are_clear_and_the_proxy_recovers(workers: RemoteWorkers) -> None:
    assert workers.ranker is not None and workers.tts is not None and workers.encoder is not None
    # The worker raises: the proxy raises its package's error, with the worker's reason.
    vec = workers.ranker.encode_query("hoodie")
    with pytest.raises(RemoteWorkerError, match="remote ranker worker failed in score: ValueError: features must"):
        workers.ranker.score(vec, np.zeros((3, workers.ranker.hidden_size), np.float32), None,
                             np.zeros((3, 2), np.float32))
    with pytest.raises(TextToSpeechError, match="tts"):
        workers.tts.synthesize(None)  # type: ignore[arg-type]
    assert workers.ranker.encode_query("hoodie").shape == vec.shape  # the same replica serves on
    # A replica dies under a request: that call fails with the encoder's error type; Serve starts a new replica
    # and the same proxy works again (calls made meanwhile wait for it, or fail the same clear way).
    [replica] = [a for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith(f"SERVE_REPLICA::{app_name('encoder')}#")]
    long_texts = [f"{i} " + "waterproof hiking jacket with a hood and taped seams " * 12 for i in range(64)]
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(workers.encoder.encode, long_texts)  # seconds of work on a quarter CPU
        time.sleep(0.5)
        ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]))
        with pytest.raises(RemoteWorkerError, match="remote encoder worker unavailable in encode") as failed:
            in_flight.result(timeout=60)
    print(f"in-flight call: {failed.value}")
    errors: list[Exception] = []
    deadline = time.monotonic() + 90
    while True:
        try:
            vector = workers.encoder.encode_query(f"after the crash {len(errors)}")  # not in the proxy's cache
            break
        except RemoteWorkerError as err:
            errors.append(err)
            assert "encoder" in str(err)
            assert time.monotonic() < deadline, errors[-3:]
            time.sleep(1)
    assert vector.shape == (workers.encoder.dim,)
    print(f"{len(errors)} failed call(s) while the replica was replaced: {errors[:1]}")


def test_server_serves_through_remote_workers(workers: RemoteWorkers, settings: Settings, clip: np.ndarray,
                                             live_server_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`shoptalk serve`'s path: build_app_state (with its warm-up) in the app's lifespan, then a voice turn."""
    from assistant.runtime.scheduling import ScheduledSTT, ScheduledTTS
    from server.app import create_app
    from server.client import TalkClient
    from server.workers import proxies
    from speech.audio import pcm16_to_float32
    from tests.fakes import VOICE_TURN_EVENTS, order_ok

    assert workers.ranker is not None
    before = workers.ranker.stats()
    monkeypatch.setattr(proxies, "_connected", {})  # the server connects on its own, as on a front machine
    fastapi_app = create_app(settings)
    server = live_server_factory(fastapi_app)
    app = fastapi_app.state.shoptalk  # built in the lifespan, on the event loop's thread
    assert isinstance(app.engines.stt, ScheduledSTT) and isinstance(app.engines.stt.engine, RemoteSTT)
    assert app.engines.stt.workers == settings.stt_workers
    assert isinstance(app.tts, ScheduledTTS) and isinstance(app.tts.engine, RemoteTTS)  # first sentences first
    assert isinstance(app.searcher.retriever.encoder, RemoteTextEncoder)
    assert isinstance(app.searcher.reranker.ranker, RemoteRanker)

    async def talk() -> Any:
        async with TalkClient(server.ws_url) as client:
            return await client.say(clip, realtime=False, timeout=90)

    result = asyncio.run(talk())
    assert order_ok(result.types(), VOICE_TURN_EVENTS), result.types()
    assert not result.errors and result.status == "completed"
    assert "hoodie" in result.transcript.lower(), result.transcript
    assert check_products(result.products, app.catalog, max_price=50, words=("hood",))
    audio = pcm16_to_float32(bytes(result.audio))  # spoken by the TTS worker
    assert len(audio) > result.audio_rate // 2 and float(np.abs(audio).max()) > 0.05
    assert workers.ranker.stats()["items"] > before["items"]  # re-ranked on the worker


def test_cli_deploy_and_status(workers: RemoteWorkers, settings: Settings, cluster: str) -> None:
    """The operator's commands, from another process (as on another machine): deploy is a no-op, status lists."""
    import json

    from typer.testing import CliRunner

    from server.cli import app

    env = {**os.environ, "SHOPTALK_DEVICE": "cpu", "SHOPTALK_CPU_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(Path(sys.executable).with_name("shoptalk")), "workers", "deploy", "--address", cluster,
                           "--data-dir", str(settings.data_dir), "--num-cpus", "0.25", "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    deployed = json.loads(done.stdout.strip().splitlines()[-1])
    assert {role: row["status"] for role, row in deployed.items()} == dict.fromkeys(
        ("stt", "tts", "encoder", "ranker"), "RUNNING")
    assert "deploying" not in done.stderr  # the same settings: nothing was redeployed
    result = CliRunner().invoke(app, ["workers", "status", "--address", cluster, "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output.strip().splitlines()[-1])
    assert status["ranker"]["replicas"] == {"RUNNING": 1} and status["stt"]["app"] == "shoptalk-stt"
