"""Index scale: build time, memory, single-query latency and recall@10 of `ranking.index.FaissIndex` at 100k and 1M.

Vectors are random but clustered like real embeddings: 1,000 gaussian clusters around random unit centres, each
point normalised (a point's cosine with its own centre is ~0.7, with another centre ~0). Queries are 1,000 database
points with a little noise added, normalised. Recall@10 is measured against exact ``IndexFlatIP`` search; latency is
one query per call (as a shopper's request is), on all cores faiss is given.

Run: ``python -m bench.index_scale`` (``--quick`` for a small smoke run). Target at 1M: p50 <= 10 ms and
recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench.common import machine, write_results
from ranking.index import FaissIndex

log = logging.getLogger(__name__)

N_CLUSTERS = 1_000
CLUSTER_NOISE = (
    0.05  # per-dimension sigma: at 384-d the noise norm is ~1, so a point keeps ~0.7 cosine to its centre
)
QUERY_NOISE = 0.02  # per-dimension sigma of the query perturbation (norm ~0.4 at 384-d)
N_QUERIES = 1_000
K = 10
EXACT_LATENCY_QUERIES = 100  # exact search at 1M takes ~0.1 s a query: fewer suffice for its percentiles
NPROBE_SWEEP = (4, 8, 16, 32)
TARGET_P50_MS = 10.0
TARGET_RECALL = 0.95


def clustered_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """`n` unit vectors [n, dim] drawn around `N_CLUSTERS` random unit centres (generated in chunks to bound memory)."""
    centres = rng.standard_normal((N_CLUSTERS, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        chunk = centres[rng.integers(0, N_CLUSTERS, stop - start)]
        chunk += rng.standard_normal(chunk.shape, dtype=np.float32) * CLUSTER_NOISE
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start:stop] = chunk
    return out


def perturbed_queries(data: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` database points plus noise, normalised [n, dim]."""
    q = (
        data[rng.integers(0, len(data), n)]
        + rng.standard_normal((n, data.shape[1]), dtype=np.float32) * QUERY_NOISE
    )
    return np.ascontiguousarray(q / np.linalg.norm(q, axis=1, keepdims=True))


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _latencies(search: Any, queries: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    found: list[list[int]] = []
    times = np.empty(len(queries))
    for i, q in enumerate(queries):
        start = time.perf_counter()
        hits = search(q)
        times[i] = (time.perf_counter() - start) * 1000
        found.append([int(h[0]) for h in hits])
    return found, times


def _recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]))


def run_size(n: int, dim: int, n_queries: int, seed: int = 0) -> dict[str, Any]:
    """Measure one database size: the auto-chosen structure, an nprobe sweep and the exact baseline."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    data = clustered_vectors(n, dim, rng)
    queries = perturbed_queries(data, n_queries, rng)
    gen_s = time.perf_counter() - start

    threads = faiss.omp_get_max_threads()
    exact = faiss.IndexFlatIP(dim)
    exact.add(data)
    start = time.perf_counter()
    _, truth = exact.search(queries, K)  # batched: ground truth
    truth_s = time.perf_counter() - start
    faiss.omp_set_num_threads(1)  # single queries run on one thread, as FaissIndex.search does
    _, exact_ms = _latencies(
        lambda q: [(i, 0.0) for i in exact.search(q[None], K)[1][0]], queries[:EXACT_LATENCY_QUERIES]
    )
    faiss.omp_set_num_threads(threads)
    exact.reset()  # free its copy of the vectors before building

    before = rss_mb()
    ids = [str(i) for i in range(n)]
    start = time.perf_counter()
    index = FaissIndex(dim)  # kind="auto": what the retriever would pick
    index.add(ids, data)
    build_s = time.perf_counter() - start
    memory_mb = rss_mb() - before
    del ids

    found, times = _latencies(lambda q: index.search(q, K), queries)
    row: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "structure": index.structure,
        "nprobe": index.nprobe if index.structure == "ivf" else None,
        "build_s": round(build_s, 1),
        "memory_mb": round(memory_mb),
        "vectors_mb": round(data.nbytes / 2**20),
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p95_ms": round(float(np.percentile(times, 95)), 3),
        "recall_at_10": round(_recall(found, truth), 4),
        "exact_p50_ms": round(float(np.percentile(exact_ms, 50)), 2),
        "exact_p95_ms": round(float(np.percentile(exact_ms, 95)), 2),
        "generate_s": round(gen_s, 1),
        "ground_truth_s": round(truth_s, 1),
    }
    if index.structure == "ivf":
        default = index.nprobe
        sweep = []
        for nprobe in NPROBE_SWEEP:
            index.nprobe = nprobe
            f, t = _latencies(lambda q: index.search(q, K), queries)
            sweep.append(
                {
                    "nprobe": nprobe,
                    "p50_ms": round(float(np.percentile(t, 50)), 3),
                    "p95_ms": round(float(np.percentile(t, 95)), 3),
                    "recall_at_10": round(_recall(f, truth), 4),
                }
            )
        index.nprobe = default
        row["nprobe_sweep"] = sweep
    log.info("n=%d: %s", n, row)
    return row


def table(results: dict[str, Any]) -> str:
    """Markdown table of the rows (and nprobe sweeps)."""
    lines = [
        "| vectors | dim | index | build s | memory MiB | p50 ms | p95 ms | recall@10 | exact p50 ms |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        index = r["structure"] + (f" (nprobe {r['nprobe']})" if r["nprobe"] else "")
        lines.append(
            f"| {r['n']:,} | {r['dim']} | {index} | {r['build_s']} | {r['memory_mb']} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['recall_at_10']:.4f} | {r['exact_p50_ms']} |"
        )
    for r in results["rows"]:
        for s in r.get("nprobe_sweep", []):
            lines.append(
                f"| {r['n']:,} | {r['dim']} | ivf (nprobe {s['nprobe']}) | | | {s['p50_ms']} | {s['p95_ms']} | "
                f"{s['recall_at_10']:.4f} | |"
            )
    return "\n".join(lines)


def main(
    out: Path = Path("bench/results/index_scale.json"),
    sizes: tuple[int, ...] = (100_000, 1_000_000),
    dim: int = 384,
    quick: bool = False,
) -> dict[str, Any]:
    """Run the benchmark, write JSON to `out`, print a markdown table, and return the results.

    Args:
        out: Result file.
        sizes: Database sizes.
        dim: Vector dimension (384 for MiniLM; pass the image encoder's for photo vectors).
        quick: Small sizes and 200 queries (a smoke run of a few seconds).
    """
    logging.basicConfig(level=logging.INFO)
    n_queries = N_QUERIES
    if quick:
        sizes, n_queries = (10_000, 60_000), 200
    start = time.perf_counter()
    rows = [run_size(n, dim, n_queries) for n in sizes]
    big = rows[-1]
    results = {
        "machine": {**machine(), "faiss_threads": faiss.omp_get_max_threads()},
        "clusters": N_CLUSTERS,
        "queries": n_queries,
        "k": K,
        "rows": rows,
        "target": {"n": big["n"], "p50_ms": TARGET_P50_MS, "recall_at_10": TARGET_RECALL},
        "target_met": big["p50_ms"] <= TARGET_P50_MS and big["recall_at_10"] >= TARGET_RECALL,
        "total_s": round(time.perf_counter() - start, 1),
    }
    write_results(out, results)
    print(table(results))
    print(
        f"\ntarget at {big['n']:,}: p50 <= {TARGET_P50_MS} ms, recall@10 >= {TARGET_RECALL}: "
        f"{'met' if results['target_met'] else 'NOT met'}; total {results['total_s']} s; written to {out}"
    )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/index_scale.json"))
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    main(args.out, tuple(args.sizes), args.dim, args.quick)
