"""Micro-batching across sessions (``shoptalk bench batching``): query encodes of N concurrent clients, batched vs not.

Each of N client threads encodes its own stream of distinct spoken-style queries (the hand-written Luma queries,
numbered per client so no cache helps) back to back, as N sessions' turns would. Two models, three ways each, in
one run:

* MiniLM query encodes (retrieval, intents, the KB): *unbatched* — every client calls ``TextEncoder.encode_query``
  in its own thread, as sessions did before; *batched* — through one ``BatchedQueryEncoder`` (the server's default,
  one worker; and two workers of one torch thread each).
* The ranker's SmolLM2 query encodes: *unbatched* — ``Ranker.encode_query`` under the reranker's lock (one at a
  time, as ``LLMReranker`` scores); *batched* — through ``batched_ranker_queries``.

Reported per N: throughput (queries/s), per-request latency p50/p95, and the batches' mean size; ratios batched /
unbatched in the same run. Two workers win here, encoding alone; in whole voice turns (``bench load``), beside the
STT workers, they starved the event loop, so the server runs one.

And the case against batching ASR windows on CPU: two sessions' windows through the Whisper tiny.en encoder as one
batch of two (one CTranslate2 worker, 2 threads) against the two parallel workers of 1 thread each that the STT
scheduler runs (the encoder's cost does not depend on what the audio says).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import machine, summary, write_results

ROOT = Path(__file__).resolve().parents[1]
LEVELS = (1, 2, 4, 8)
PER_CLIENT = 24


def queries(n_clients: int, per_client: int) -> list[list[str]]:
    """Distinct query texts per client: the hand-written Luma queries, each client's numbered apart."""
    texts = [json.loads(line)["query"] for line in (ROOT / "bench/data/luma_queries.jsonl").read_text().splitlines()
             if line.strip()]
    return [[f"{texts[(c * per_client + i) % len(texts)]} number {c}-{i}" for i in range(per_client)]
            for c in range(n_clients)]


def drive(encode: Callable[[str], Any], streams: list[list[str]]) -> dict[str, Any]:
    """Run one thread per stream, each encoding its texts back to back; latencies and throughput."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(streams))

    def client(texts: list[str]) -> None:
        barrier.wait()
        for text in texts:
            start = time.perf_counter()
            encode(text)
            with lock:
                latencies.append(1000 * (time.perf_counter() - start))

    threads = [threading.Thread(target=client, args=(s,)) for s in streams]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {"qps": round(len(latencies) / wall, 1), "latency_ms": summary(latencies)}


def compare(
    name: str, unbatched: Callable[[str], Any], batched_factory: Callable[[int], Any], per_client: int
) -> list[dict[str, Any]]:
    """Unbatched, and batched on 1 and on 2 workers, at every level; a fresh batcher per run."""
    rows = []
    for n in LEVELS:
        streams = queries(n, per_client)
        drive(unbatched, [[f"warm {t}" for t in s[:3]] for s in streams])  # first calls pay one-off costs
        row: dict[str, Any] = {"model": name, "clients": n, "unbatched": drive(unbatched, streams)}
        for workers in (1, 2):
            batcher, encode = batched_factory(workers)
            drive(encode, [[f"warm up {t}" for t in s[:3]] for s in streams])
            key = "batched" if workers == 1 else "batched_2_workers"
            row[key] = drive(encode, [[f"{t} {workers}" for t in s] for s in streams])  # new texts: no cache
            row[key]["mean_batch"] = batcher.summary()["mean_batch"]
            batcher.close()
        row["throughput_ratio"] = round(row["batched"]["qps"] / row["unbatched"]["qps"], 2)
        row["p95_ratio"] = round(row["batched"]["latency_ms"]["p95"] / row["unbatched"]["latency_ms"]["p95"], 2)
        row["mean_batch"] = row["batched"]["mean_batch"]
        rows.append(row)
        print(f"{name} x{n}: {row['unbatched']['qps']} -> {row['batched']['qps']} (2 workers "
              f"{row['batched_2_workers']['qps']}) q/s, p95 {row['unbatched']['latency_ms']['p95']} -> "
              f"{row['batched']['latency_ms']['p95']} ms", flush=True)
    return rows


def main(out: Path = Path("bench/results/batching.json"), per_client: int = PER_CLIENT,
         threads: int = 2) -> dict[str, Any]:
    """Run the benchmark, write `out`, print the table, return the results.

    Args:
        out: Results JSON.
        per_client: Queries each client encodes per level and mode.
        threads: torch intra-op threads (the server's ``cpu_threads``); a 2-worker batcher runs torch on 1 thread in
            each worker, the ranker's batcher always on 1 (as the server runs them).
    """
    import torch

    from assistant.runtime.scheduling import BatchedQueryEncoder, batched_ranker_queries
    from ranking.registry import create_ranker, shipped_checkpoint
    from ranking.text_encoder import TextEncoder
    from server.settings import Settings

    torch.set_num_threads(threads)
    encoder = TextEncoder(device="cpu")
    encoder.encode_queries(["warm up"] * 8)

    def minilm_batched(workers: int) -> tuple[Any, Callable[[str], Any]]:
        wrapped = BatchedQueryEncoder(encoder, workers=workers, threads=1 if workers > 1 else None)
        return wrapped.batcher, wrapped.encode_query

    rows = compare("MiniLM query encoder", lambda t: encoder.encode_queries([t]), minilm_batched, per_client)

    settings = Settings()
    ranker = create_ranker("smollm2-lora", cache_dir=settings.cache_dir, checkpoint=shipped_checkpoint("smollm2-lora"),
                           device="cpu")
    ranker.encode_queries(["warm up"] * 8)
    lock = threading.Lock()

    def ranker_alone(text: str) -> Any:
        from assistant.search.rerank import single_thread

        with lock, single_thread():
            return ranker.encode_query(text)

    def ranker_batched(workers: int) -> tuple[Any, Callable[[str], Any]]:
        batcher = batched_ranker_queries(ranker, workers=workers)
        return batcher, batcher

    rows += compare("SmolLM2 ranker query encoder", ranker_alone, ranker_batched, per_client)
    results = {"machine": machine(), "torch_threads": threads, "per_client": per_client,
               "rows": rows, "asr_windows": asr_windows(settings)}
    write_results(out, results)
    print(table(results))
    return results


def asr_windows(settings: Any, seconds: tuple[float, ...] = (3.0, 6.0), reps: int = 7) -> list[dict[str, Any]]:
    """Whisper encoder time for two windows: one batch of two (2 threads) vs two parallel 1-thread workers."""
    import ctranslate2
    import numpy as np

    from speech.registry import create_stt

    batched: Any = create_stt("faster-whisper:tiny.en", cache_dir=settings.cache_dir, device="cpu", cpu_threads=2,
                              workers=1)
    parallel: Any = create_stt("faster-whisper:tiny.en", cache_dir=settings.cache_dir, device="cpu", cpu_threads=2,
                               workers=2)
    rng = np.random.default_rng(0)

    def features(n_seconds: float) -> np.ndarray:
        audio = (0.1 * rng.standard_normal(int(16000 * n_seconds))).astype(np.float32)
        f = batched.model.feature_extractor(audio)
        frames = min(f.shape[-1] - f.shape[-1] % 2, 3000)
        return np.ascontiguousarray(f[None, :, :frames], dtype=np.float32)

    def encode(engine: Any, x: np.ndarray) -> None:
        engine.model.model.encode(ctranslate2.StorageView.from_array(x), to_cpu=True)

    def both_parallel(x: np.ndarray) -> None:
        threads = [threading.Thread(target=encode, args=(parallel, x)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def median_ms(fn: Callable[[np.ndarray], None], x: np.ndarray) -> float:
        fn(x)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn(x)
            times.append(1000 * (time.perf_counter() - start))
        return round(float(np.median(times)), 1)

    rows = []
    for n_seconds in seconds:
        one = features(n_seconds)
        pair = np.concatenate([one, features(n_seconds)], axis=0)
        rows.append({"window_s": n_seconds,
                     "batch_of_two_ms": median_ms(lambda x: encode(batched, x), pair),
                     "two_parallel_workers_ms": median_ms(both_parallel, one)})
        print(f"ASR {n_seconds:g} s windows: {rows[-1]}", flush=True)
    return rows


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per model and client count."""
    lines = [
        "| model | clients | q/s unbatched | q/s batched | × throughput | p95 ms unbatched | p95 ms batched | "
        "mean batch | q/s batched, 2 workers | p95 ms, 2 workers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        two = r.get("batched_2_workers") or {"qps": "", "latency_ms": {"p95": ""}}
        lines.append(
            f"| {r['model']} | {r['clients']} | {r['unbatched']['qps']} | {r['batched']['qps']} | "
            f"{r['throughput_ratio']} | {r['unbatched']['latency_ms']['p95']} | {r['batched']['latency_ms']['p95']} | "
            f"{r['mean_batch']} | {two['qps']} | {two['latency_ms']['p95']} |"
        )
    asr = results.get("asr_windows")
    if asr:
        lines += ["", "| two sessions' ASR windows (Whisper tiny.en encoder) | one batch of two, 2 threads | two parallel "
                  "workers, 1 thread each |", "|---|---:|---:|"]
        for r in asr:
            lines.append(f"| {r['window_s']:g} s each | {r['batch_of_two_ms']} ms | {r['two_parallel_workers_ms']} ms |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
