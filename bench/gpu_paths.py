"""GPU vs CPU: latency and half-precision agreement of the project's own model code paths.

Every model is built through the project's own constructors (``create_ranker``, ``create_encoder``,
``TextEncoder``, ``OpenAIWhisperSTT``) and so runs their device and dtype selection (``autocast_for("cuda")``, the
encoder's bf16 autocast + channels_last, ``.half()`` for MiniLM and Whisper).  The packaged weights are far too big
to travel to a GPU machine, so the weights are RANDOM, drawn from a seed, over the REAL architectures
(SmolLM2-135M's config and tokenizer, EfficientNet-Lite0 + MiniLM-L6, ViT-B/32, Whisper tiny.en/base dimensions):
the FLOPs, and so the timings, do not depend on the weight values; the outputs themselves are meaningless.

Each row times the same call on the GPU (half/bf16 path) and on the CPU (fp32) in one run; each model then checks
that the GPU output agrees with the CPU output for the same inputs and weights (cosine > 0.99; ranker: Spearman
of 100 scores > 0.99).  A model whose dependency is missing is reported as skipped with the reason.

``ranker_train`` times the ranker's TRAINING step (``ranking.train``: query tower under bf16 autocast on CUDA,
fp32 on CPU; LambdaRank + backward + AdamW) at 16 and 64 queries x 50 candidates of synthetic weak-labelled
examples, and checks the first step's gradient (GPU vs CPU), that the trainable weights stay float32 on the GPU,
one short ``train()`` per device, and that the GPU-trained checkpoint loads and ranks the same on the CPU.

Small assets that must travel (tokenizers and configs, no weights) live in ``.gpu_assets/`` at the repo root.
Patches (in this process only, restored afterwards): ``vision.towers.minilm_path`` points at the random MiniLM
folder and ``vision.towers.load_lite0_trunk`` is a no-op (keeps timm's random init); ``soxr`` is stubbed when it
is not installed (``speech.audio`` imports it for resampling, which no row uses).

Run: ``python -m bench.gpu_paths --device cuda [--quick] [--out bench/results/gpu_paths.json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine, summary, write_results

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / ".gpu_assets"
MIN_COSINE = 0.99
MIN_SPEARMAN = 0.99
SAMPLE_RATE = 16000  # Whisper's input rate
BUDGET_S = (
    200.0  # soft limit for the whole run (the remote allows 5 min): later rows drop to minimum repetitions
)
MATERIALS = ["organic cotton", "recycled polyester", "merino wool", "nylon ripstop", "full-grain leather"]
BRANDS = ["Northpeak", "Luma", "Fieldhouse", "Arcadia", "Kestrel", "Tidewater"]  # of the synthetic products
WHISPER_DIMS: dict[
    str, dict[str, int]
] = {  # openai-whisper ModelDimensions of the two sizes the project ships
    "tiny.en": {
        "n_mels": 80,
        "n_audio_ctx": 1500,
        "n_audio_state": 384,
        "n_audio_head": 6,
        "n_audio_layer": 4,
        "n_vocab": 51864,
        "n_text_ctx": 448,
        "n_text_state": 384,
        "n_text_head": 6,
        "n_text_layer": 4,
    },
    "base": {
        "n_mels": 80,
        "n_audio_ctx": 1500,
        "n_audio_state": 512,
        "n_audio_head": 8,
        "n_audio_layer": 6,
        "n_vocab": 51865,
        "n_text_ctx": 448,
        "n_text_state": 512,
        "n_text_head": 8,
        "n_text_layer": 6,
    },
}
DECODE_STEPS = 20


class Skip(Exception):
    """A model cannot run here (missing dependency or asset); the message is the reason."""


# ---- timing ------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """Repetitions of one timed call on one device."""

    warmup: int
    reps: int
    max_s: float  # stop repeating after this long (at least 2 timed calls when the first one is fast)


@dataclass
class Run:
    """State of one benchmark run: devices, repetition plans, the deadline, results."""

    gpu: str | None  # the accelerator's torch device ("cuda", "cuda:1"), or None
    gpu_reason: str  # why GPU rows are skipped when gpu is None
    quick: bool
    tmp: Path
    deadline: float
    results: dict[str, Any] = field(default_factory=dict)

    def plan(self, role: str, cpu_reps: int | None = None) -> Plan:
        late = time.monotonic() > self.deadline
        if role == "gpu":
            return Plan(2, 3, 0.5) if late else Plan(2, 5, 1.0) if self.quick else Plan(3, 20, 1.5)
        # CPU fp32 is the slow reference: few repetitions (the remote's whole run must stay under 5 minutes).
        reps = 1 if late else cpu_reps or (2 if self.quick else 3)
        return Plan(0 if late or reps == 1 else 1, reps, 2.5)  # a single slow call: no untimed warm-up

    def roles(self) -> list[str]:
        """``"gpu"`` (half/bf16 path) when there is one, and ``"cpu"`` (fp32 reference)."""
        return ["gpu", "cpu"] if self.gpu else ["cpu"]

    def dev(self, role: str) -> str:
        """The torch device of a role."""
        return (self.gpu or "cuda") if role == "gpu" else "cpu"


def sync(dev: str) -> None:
    if dev.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_call(dev: str, fn: Callable[[], object], plan: Plan) -> list[float]:
    """Milliseconds of each timed call of ``fn`` after ``plan.warmup`` untimed ones."""
    for _ in range(plan.warmup):
        fn()
    sync(dev)
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(plan.reps):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - start > plan.max_s and len(times) >= 2:
            break
    return times


def measure(
    run: Run,
    section: dict[str, Any],
    name: str,
    items: int,
    fns: dict[str, Callable[[], object]],
    *,
    cpu_reps: int | None = None,
    note: str = "",
) -> None:
    """Time ``fns[role]`` for each role and append the row (p50/p95 ms, items/s, CPU/GPU ratio) to ``section``."""
    row: dict[str, Any] = {"row": name, "items": items}
    if note:
        row["note"] = note
    for role in ("gpu", "cpu"):
        fn = fns.get(role)
        if role == "gpu" and run.gpu is None:
            row[role] = {"skipped": run.gpu_reason}
            continue
        if fn is None:
            row[role] = {"skipped": "not measured on this device"}
            continue
        times = time_call(run.dev(role), fn, run.plan(role, cpu_reps))
        stats = summary(times, ndigits=2)
        stats["per_s"] = round(items / (stats["p50"] / 1e3), 1) if stats["p50"] > 0 else float("nan")
        row[role] = stats
    gpu, cpu = row.get("gpu", {}), row.get("cpu", {})
    if "p50" in gpu and "p50" in cpu and gpu["p50"] > 0:
        row["cpu_over_gpu"] = round(cpu["p50"] / gpu["p50"], 1)
    log.info("%s | %s: %s", section["model"], name, {k: row[k] for k in ("gpu", "cpu")})
    section["rows"].append(row)


# ---- agreement ---------------------------------------------------------------------------------------------------


def row_cosines(a: Any, b: Any) -> dict[str, float]:
    """Cosine of matching rows of two ``[n, d]`` arrays (GPU output vs CPU output): min and mean.

    ``cpu_pairwise`` is the mean cosine between different rows of ``b``: near 1 means the random model maps every
    input to about the same vector, so a high GPU-CPU cosine proves little; ``centered_min`` is then the telling
    number (the cosine after subtracting the CPU's mean row from both).
    """
    x = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    y = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)).clip(1e-30)
    out = {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}
    if len(y) > 1:
        unit = y / np.linalg.norm(y, axis=1, keepdims=True).clip(1e-30)
        gram = unit @ unit.T
        out["cpu_pairwise"] = round(float((gram.sum() - np.trace(gram)) / (len(y) * (len(y) - 1))), 4)
        # The same check on what varies between inputs: both outputs minus the CPU's mean row.
        mu = y.mean(0, keepdims=True)
        xc, yc = x - mu, y - mu
        cc = (xc * yc).sum(1) / (np.linalg.norm(xc, axis=1) * np.linalg.norm(yc, axis=1)).clip(1e-30)
        out["centered_min"] = round(float(cc.min()), 6)
    return out


def detail(cos: dict[str, float]) -> dict[str, float]:
    """What `row_cosines` found besides the minimum (which `agree` checks)."""
    return {k: v for k, v in cos.items() if k != "min"}


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation (no ties expected in float scores)."""
    ra = np.argsort(np.argsort(np.asarray(a, dtype=np.float64))).astype(np.float64)
    rb = np.argsort(np.argsort(np.asarray(b, dtype=np.float64))).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def agree(section: dict[str, Any], check: str, value: float, threshold: float, **extra: Any) -> None:
    section["agreement"].append(
        {
            "check": check,
            "value": round(value, 6),
            "threshold": threshold,
            "pass": bool(value > threshold),
            **extra,
        }
    )


# ---- inputs and random models ------------------------------------------------------------------------------------


def shopper_queries(n: int) -> list[str]:
    """Spoken-style queries from ``bench/data/luma_queries.jsonl`` (synthetic ones when it is missing)."""
    path = ROOT / "bench" / "data" / "luma_queries.jsonl"
    queries: list[str] = []
    if path.is_file():
        queries = [json.loads(line)["query"] for line in path.read_text().splitlines() if line.strip()]
    colours = ["red", "black", "navy", "white", "green", "grey", "pink", "beige"]
    things = ["hoodie", "running shoes", "rain jacket", "backpack", "jeans", "t-shirt", "dress", "boots"]
    while len(queries) < n:
        i = len(queries)
        queries.append(f"show me {colours[i % 8]} {things[(i // 8) % 8]} under {20 + 5 * (i % 13)} dollars")
    return queries[:n]


def product_texts(n: int) -> list[str]:
    """Catalog-like product texts (title, category, colour, material, a description: 40-70 LLM tokens)."""
    rng = np.random.default_rng(0)
    colours = [
        "black",
        "red",
        "navy",
        "olive",
        "white",
        "heather grey",
        "burgundy",
        "sky blue",
        "sand",
        "pink",
    ]
    kinds = [
        ("hoodie", "tops"),
        ("running shoe", "footwear"),
        ("rain jacket", "outerwear"),
        ("backpack", "bags"),
        ("slim jeans", "bottoms"),
        ("crew t-shirt", "tops"),
        ("summer dress", "dresses"),
        ("hiking boot", "footwear"),
        ("beanie", "accessories"),
        ("leggings", "bottoms"),
    ]
    materials, brands = MATERIALS, BRANDS
    out = []
    for i in range(n):
        colour, (kind, cat) = colours[rng.integers(10)], kinds[rng.integers(10)]
        material, brand = materials[rng.integers(5)], brands[rng.integers(6)]
        out.append(
            f"{brand} {colour} {kind} #{i} | category: {cat} | colour: {colour} | material: {material} | "
            f"price: ${10 + rng.integers(190)} | A {material} {kind} for everyday wear, cut for comfort, "
            f"with reinforced seams and a {rng.choice(['relaxed', 'regular', 'tailored'])} fit."
        )
    return out


def random_minilm(tmp: Path) -> Path:
    """A sentence-transformers folder: MiniLM-L6's config, tokenizer and modules, random weights (seed 0)."""
    folder = tmp / "minilm-random"
    if (folder / "model.safetensors").is_file():
        return folder
    src = ASSETS / "minilm"
    if not (src / "config.json").is_file():
        raise Skip(f"missing {src} (MiniLM config and tokenizer)")
    import torch
    from transformers import BertConfig, BertModel

    shutil.copytree(src, folder, dirs_exist_ok=True)
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(str(src))).save_pretrained(str(folder))
    return folder


@contextlib.contextmanager
def patched(module: types.ModuleType, **attrs: Any) -> Iterator[None]:
    old = {k: getattr(module, k) for k in attrs}
    for k, v in attrs.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


def autocast_dtype(ctx: object) -> str:
    """What a project autocast context selects: its dtype, or fp32 for a no-op context."""
    dtype = getattr(ctx, "fast_dtype", None)
    return f"autocast {dtype}" if dtype is not None else "none (fp32)"


def free(dev: str | None) -> None:
    gc.collect()
    if dev and dev.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


# ---- ranker ------------------------------------------------------------------------------------------------------


def random_smollm2(tmp: Path) -> None:
    """The SmolLM2-135M folder ``create_ranker`` loads from ``tmp``: real config and tokenizer, random weights (seed 0)."""
    import torch

    from ranking.registry import SMOLLM2_FOLDER

    folder = tmp / SMOLLM2_FOLDER
    if (folder / "model.safetensors").is_file():
        return
    if not (ASSETS / "smollm2" / "tokenizer.json").is_file():
        raise Skip(f"missing {ASSETS / 'smollm2'} (SmolLM2 config and tokenizer)")
    from transformers import LlamaConfig, LlamaForCausalLM

    shutil.copytree(ASSETS / "smollm2", folder, dirs_exist_ok=True)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig.from_pretrained(str(folder))).save_pretrained(str(folder))


def ranker_pair(
    run: Run, section: dict[str, Any], num_layers: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``create_ranker("smollm2-lora")`` per role over random SmolLM2 weights, identical LoRA/head weights.

    LoRA B, the last MLP layer and the text/image scales start at zero: they are drawn (seed 1) so the backbone
    moves the scores, then copied to every role through the project's checkpoint path. Records the config and
    each role's autocast in ``section``. Returns ``(rankers by role, the shared trainable state)``.
    """
    import torch

    importlib.import_module("peft")
    from ranking.ranker import autocast_for
    from ranking.registry import create_ranker

    random_smollm2(run.tmp)
    overrides: dict[str, Any] = {"num_layers": num_layers} if num_layers else {}
    rankers = {
        role: create_ranker("smollm2-lora", cache_dir=run.tmp, device=run.dev(role), **overrides)
        for role in run.roles()
    }
    cpu = rankers["cpu"]
    section["config"] = cpu.config.to_dict()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in cpu.trainable_parameters():
            if not p.detach().abs().sum():
                p.copy_(0.1 * torch.randn(p.shape, generator=gen) if p.ndim else torch.tensor(1.0))
    state = cpu.trainable_state()  # a copy on every device
    for r in rankers.values():
        r.load_trainable_state(state)  # the project's own checkpoint path: identical weights on both devices
    section["autocast"] = {dev: autocast_dtype(autocast_for(r.device_name)) for dev, r in rankers.items()}
    return rankers, state


def bench_ranker(run: Run, section: dict[str, Any], num_layers: int | None = None) -> None:
    """``ranking`` reranker: SmolLM2-135M config (random), LoRA + heads made random so every term matters."""
    from ranking.ranker import NUM_FEATURES, render_query

    rankers, _ = ranker_pair(run, section, num_layers)
    cpu = rankers["cpu"]

    query = render_query("red running shoes for a marathon", {"colour": "red", "category": "footwear"})
    texts = product_texts(200)
    rng = np.random.default_rng(2)
    images = rng.standard_normal((200, cpu.config.image_dim)).astype(np.float32)
    images[::5] = 0.0  # every fifth candidate has no photo
    features = np.zeros((200, NUM_FEATURES), np.float32)  # zero: scores depend on the backbone and heads only

    def cold(r: Any, n: int, batch_size: int = 32) -> Any:
        r._cache.clear()  # a cache miss for every candidate, as at ingest or for unseen products
        q = r.encode_query(query)
        p = r.encode_products(texts[:n], batch_size=batch_size)
        return q, p, r.score(q, p, images[:n], features[:n])

    def warm(r: Any, vecs: np.ndarray, n: int) -> Any:
        return r.score(r.encode_query(query), vecs[:n], images[:n], features[:n])

    vecs = {role: r.encode_products(texts) for role, r in rankers.items()} if not num_layers else {}

    def fns(f: Callable[..., object], *args: Any, **kwargs: Any) -> dict[str, Callable[[], object]]:
        return {role: partial(f, r, *args, **kwargs) for role, r in rankers.items()}

    tag = f" ({num_layers} layers)" if num_layers else ""
    sizes = (100,) if num_layers else (100, 200)
    cpu_reps = 1 if num_layers else None
    if not num_layers:
        measure(run, section, "encode_query (1 query)", 1, fns(lambda r: r.encode_query(query)))
    for n in sizes:
        measure(
            run,
            section,
            f"cold: encode_query + encode_products + score, n={n}{tag}",
            n,
            fns(cold, n),
            cpu_reps=cpu_reps,
            note="product cache cleared; encode_products batch_size=32 (default)",
        )
        if not num_layers:
            measure(
                run,
                section,
                f"warm: encode_query + score (cached vectors), n={n}",
                n,
                {role: partial(warm, r, vecs[role], n) for role, r in rankers.items()},
            )
    if run.gpu and not num_layers:
        measure(
            run,
            section,
            "cold n=200, encode_products batch_size=200 (one batch)",
            200,
            fns(cold, 200, batch_size=200),
            cpu_reps=1,
        )

    if run.gpu:
        (gq, gp, gs), (cq, cp, cs) = cold(rankers["gpu"], 100), cold(cpu, 100)
        agree(
            section,
            f"cosine query vector (bf16 GPU vs fp32 CPU){tag}",
            row_cosines(gq[None], cq[None])["min"],
            MIN_COSINE,
        )
        agree(
            section,
            f"min cosine of 100 product vectors{tag}",
            row_cosines(gp, cp)["min"],
            MIN_COSINE,
            **detail(row_cosines(gp, cp)),
        )
        agree(
            section,
            f"Spearman of 100 scores{tag}",
            spearman(gs.scores, cs.scores),
            MIN_SPEARMAN,
            score_std=round(float(cs.scores.std()), 4),
            top10_overlap=len(set(np.argsort(-gs.scores)[:10]) & set(np.argsort(-cs.scores)[:10])) / 10,
            max_abs_diff=round(float(np.abs(gs.scores - cs.scores).max()), 5),
        )
    rankers.clear()  # the caller frees memory next
    free(run.gpu)


# ---- ranker training ---------------------------------------------------------------------------------------------


TRAIN_CANDIDATES = 50  # candidates per query (a first-stage pool the reranker reorders)
TRAIN_EXAMPLES = (
    80  # enough for one batch of 64, and for train(): 64 train / 16 eval examples (4 steps of 16)
)


def catalog_products(n: int) -> list[dict[str, Any]]:
    """Product dicts in ``ranking.train``'s shape (see its module docstring): models in colourways (seed 0).

    Every model comes in three colourways (``"<brand> <kind> <model>-<Colour>"``, so `base_name` groups them),
    ten categories, a few sizes, brands and prices: what `make_training_data` needs to grade 0..3.
    """
    rng = np.random.default_rng(0)
    colours = [
        "Black",
        "Red",
        "Navy",
        "Olive",
        "White",
        "Heather Grey",
        "Burgundy",
        "Sky Blue",
        "Sand",
        "Pink",
    ]
    kinds = [
        ("Pullover Hoodie", "women/tops/hoodies"),
        ("Running Shoe", "men/footwear/running"),
        ("Rain Jacket", "women/outerwear/jackets"),
        ("Daypack", "gear/bags/backpacks"),
        ("Slim Jeans", "men/bottoms/jeans"),
        ("Crew T-Shirt", "men/tops/tees"),
        ("Summer Dress", "women/dresses/casual"),
        ("Hiking Boot", "women/footwear/boots"),
        ("Rib Beanie", "gear/accessories/hats"),
        ("Studio Leggings", "women/bottoms/leggings"),
    ]
    materials, brands = MATERIALS, BRANDS
    sizes = ["XS", "S", "M", "L", "XL"]
    out: list[dict[str, Any]] = []
    for i in range(n):
        model, variant = divmod(i, 3)
        kind, category = kinds[model % len(kinds)]
        brand, material = brands[model % len(brands)], materials[(model // 2) % len(materials)]
        colour = colours[(3 * model + variant) % len(colours)]
        first = int(rng.integers(4))
        out.append(
            {
                "id": f"p{i}",
                "title": f"{brand} {kind} {model}-{colour}",
                "description": f"A {material} {kind.lower()} for everyday wear, cut for comfort, with reinforced "
                f"seams and a {('relaxed', 'regular', 'tailored')[model % 3]} fit.",
                "category": category,
                "brand": brand,
                "price": float(15 + 5 * (model % 30) + int(rng.integers(5))),
                "attributes": {"colors": [colour], "sizes": sizes[first : first + 2 + int(rng.integers(3))]},
            }
        )
    return out


def state_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest absolute difference between two `Ranker.trainable_state` dicts (same keys)."""
    return max(
        (float((a[k].float() - v.float()).abs().max()) for k, v in b.items() if v.numel()), default=0.0
    )


def bench_ranker_train(run: Run, section: dict[str, Any]) -> None:
    """``ranking.train`` on the SmolLM2 ranker: the training step per device, a short `train()`, the checkpoint.

    Rows time the project's own step (`_batch_scores` + LambdaRank + backward + clip + AdamW over
    `_param_groups`), product vectors computed once beforehand as `train()` does. Checks: the first step's loss
    and gradient on the GPU (bf16 autocast) vs the CPU (fp32) from the same weights; the trainable parameters
    (and AdamW's state) stay float32 on the GPU; one short `train()` per device ends with finite losses; the
    checkpoint trained on the GPU loads on the CPU (`ranking.registry.load_ranker`) and ranks like the GPU ranker.
    """
    import torch

    from ranking.registry import load_ranker
    from ranking.train import (
        HEAD_LR,
        LOSSES,
        _batch_scores,
        _param_groups,
        _product_vectors,
        make_training_data,
        train,
    )

    parts: dict[str, float] = {}
    t0 = time.perf_counter()
    rankers, state = ranker_pair(run, section)
    products = catalog_products(150)
    examples = make_training_data(products, TRAIN_EXAMPLES, seed=0, n_candidates=TRAIN_CANDIDATES)
    labels = np.concatenate([ex.labels for ex in examples])
    section["data"] = {
        "products": len(products),
        "examples": len(examples),
        "candidates": sorted({len(ex.labels) for ex in examples}),
        "label_counts": {str(g): int((labels == g).sum()) for g in range(4)},
    }
    parts["setup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    vectors = {role: _product_vectors(r, examples) for role, r in rankers.items()}  # once, as train() does
    parts["product_vectors"] = time.perf_counter() - t0

    def trainable_grads(r: Any) -> torch.Tensor:
        return torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().flatten().cpu()
                for p in r.trainable_parameters()
            ]
        )

    # The first step from identical weights, dropout off: loss and gradient on each device.
    t0 = time.perf_counter()
    first: dict[str, dict[str, Any]] = {}
    grads: dict[str, torch.Tensor] = {}
    for role, r in rankers.items():
        r.eval()
        r.zero_grad(set_to_none=True)
        scores, lab, mask = _batch_scores(r, examples[:16], vectors[role])
        loss = LOSSES["lambda"](scores, lab, mask)
        loss.backward()
        grads[role] = trainable_grads(r)
        first[role] = {
            "loss": round(loss.item(), 6),
            "scores_dtype": str(scores.dtype),
            "grad_dtypes": sorted(
                {str(p.grad.dtype) for p in r.trainable_parameters() if p.grad is not None}
            ),
            "grad_norm": round(float(grads[role].norm()), 6),
        }
        r.zero_grad(set_to_none=True)
    section["first_step"] = first
    if run.gpu:
        g, c = grads["gpu"].double(), grads["cpu"].double()
        cos = float(g @ c / (g.norm() * c.norm()).clamp(min=1e-30))
        loss_gap = abs(first["gpu"]["loss"] - first["cpu"]["loss"]) / max(abs(first["cpu"]["loss"]), 1e-9)
        agree(
            section,
            "cosine of the first step's gradient, all trainable parameters (bf16 GPU vs fp32 CPU)",
            cos,
            MIN_COSINE,
            loss_rel_diff=round(loss_gap, 6),
        )

    # Timed rows: the project's training step, train mode (LoRA dropout on) as in train().
    lr = 1e-3  # train()'s default
    optimizers = {
        role: torch.optim.AdamW(_param_groups(r, lr, HEAD_LR), lr=lr, weight_decay=0.01)
        for role, r in rankers.items()
    }

    def step(role: str, batch: list[Any]) -> torch.Tensor:
        r, opt = rankers[role], optimizers[role]
        loss = LOSSES["lambda"](*_batch_scores(r, batch, vectors[role]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(r.trainable_parameters()), 1.0)
        opt.step()
        return loss

    for r in rankers.values():
        r.train()
    for size in (16, 64):
        measure(
            run,
            section,
            f"train step (forward + LambdaRank loss + backward + AdamW), batch {size} queries x "
            f"{TRAIN_CANDIDATES} candidates",
            size,
            {role: partial(step, role, examples[:size]) for role in rankers},
            cpu_reps=1,
            note="items = queries; _batch_scores + LOSSES['lambda'] + clip + AdamW(_param_groups); "
            "product vectors precomputed",
        )
    parts["first_step_and_rows"] = time.perf_counter() - t0

    # The trainable parameters and AdamW's moments must stay float32 on the GPU (autocast, not .half()).
    dtypes: dict[str, Any] = {}
    for role, r in rankers.items():
        params = list(r.trainable_parameters())
        moments = [t for p in params for t in optimizers[role].state.get(p, {}).values() if t.ndim]
        dtypes[role] = {
            "params": {
                d: sum(p.numel() for p in params if str(p.dtype) == d) for d in {str(p.dtype) for p in params}
            },
            "adamw_state": sorted({str(t.dtype) for t in moments}),
            "frozen_backbone": sorted({str(p.dtype) for p in r.parameters() if not p.requires_grad}),
        }
    section["trainable_dtypes"] = dtypes
    if run.gpu:
        params = list(rankers["gpu"].trainable_parameters())
        share = sum(p.numel() for p in params if p.dtype == torch.float32) / max(
            1, sum(p.numel() for p in params)
        )
        agree(
            section,
            "share of trainable parameters in float32 on the GPU after training steps",
            share,
            0.999,
            adamw_state=dtypes["gpu"]["adamw_state"],
        )
    optimizers.clear()

    # One short train() per device from the same weights.
    t0 = time.perf_counter()
    cap = 5.0 if time.monotonic() > run.deadline else 15.0 if run.quick else 30.0
    trained: dict[str, dict[str, Any]] = {}
    saved: dict[str, dict[str, torch.Tensor]] = {}
    checkpoints: dict[str, Path] = {}
    for role, r in rankers.items():
        r.load_trainable_state(state)
        checkpoints[role] = run.tmp / f"ranker-train-{role}.pt"
        res = train(
            r,
            examples,
            epochs=1,
            batch_size=16,
            eval_every=2,
            out=checkpoints[role],
            progress=False,
            max_seconds=cap,
            seed=0,
        )
        losses = [h["loss"] for h in res["history"]]
        trained[role] = {
            "steps": res["steps"],
            "seconds": round(res["seconds"], 2),
            "initial_ndcg@10": round(res["initial"]["ndcg@10"], 4),
            "best_ndcg@10": round(res["best"]["ndcg@10"], 4),
            "losses": [round(x, 5) for x in losses],
            "n_train": res["n_train"],
            "n_eval": res["n_eval"],
        }
        # train() should end holding the best weights it saved (the checkpoint); record how far it is from them.
        saved[role] = torch.load(checkpoints[role], map_location="cpu", weights_only=True)["state"]
        diff = state_diff(r.trainable_state(), saved[role])
        trained[role]["ranker_vs_checkpoint_max_abs_diff"] = diff
        if diff > 0:
            section["notes"].append(
                f"train() on {role} ({run.dev(role)}): the ranker does not hold its saved best checkpoint "
                f"afterwards (max abs diff {diff:.4g}): its best_state snapshot must be a copy "
                "(`Ranker.trainable_state`)"
            )
        finite = bool(losses) and all(math.isfinite(x) for x in losses)
        agree(
            section,
            f"train() on {role} ({run.dev(role)}): history entries, all losses finite",
            float(len(losses)) if finite else 0.0,
            0.0,
            steps=res["steps"],
            initial_ndcg=trained[role]["initial_ndcg@10"],
            best_ndcg=trained[role]["best_ndcg@10"],
        )
    section["train"] = trained
    parts["train"] = time.perf_counter() - t0

    # The checkpoint trained on the GPU, loaded on the CPU, ranks like the GPU ranker (each device's own path).
    t0 = time.perf_counter()
    src = "gpu" if run.gpu else "cpu"
    loaded = load_ranker(checkpoints[src], cache_dir=run.tmp, device="cpu")
    ref = rankers[src]
    ref.load_trainable_state(saved[src])  # a no-op unless train() left other weights (see the notes)
    loaded_diff = state_diff(ref.trainable_state(), loaded.trainable_state())
    rhos, text_rhos = [], []
    for ex in examples[-16:]:
        outs = [
            r.score(r.encode_query(ex.query), r.encode_products(ex.product_texts), None, ex.features)
            for r in (ref, loaded)
        ]
        rhos.append(spearman(outs[0].scores, outs[1].scores))
        text_rhos.append(
            spearman(outs[0].contributions["text_relevance"], outs[1].contributions["text_relevance"])
        )
    agree(
        section,
        f"checkpoint trained on {src} loaded on cpu: min Spearman of {TRAIN_CANDIDATES} scores over 16 queries",
        min(rhos),
        MIN_SPEARMAN,
        mean=round(float(np.mean(rhos)), 6),
        text_relevance_min=round(min(text_rhos), 6),
        state_max_abs_diff=loaded_diff,
        loaded_device=loaded.device_name,
    )
    parts["checkpoint_check"] = time.perf_counter() - t0
    section["parts_s"] = {k: round(v, 1) for k, v in parts.items()}
    del loaded, ref
    rankers.clear()
    free(run.gpu)


# ---- vision ------------------------------------------------------------------------------------------------------


def synthetic_photos(n: int, size: tuple[int, int], seed: int) -> list[Any]:
    """Product-photo-like PIL images: a plain background and a few coloured shapes."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        im = Image.new("RGB", size, tuple(int(c) for c in rng.integers(180, 256, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(4):
            x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
            box = (
                int(x0),
                int(y0),
                int(x0 + rng.integers(20, size[0] // 2)),
                int(y0 + rng.integers(20, size[1] // 2)),
            )
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
        out.append(im)
    return out


def bench_vision(run: Run, section: dict[str, Any], arch: str | None = None) -> None:
    """``vision`` image-text encoder: the default Lite0+MiniLM LiT model, or a random open_clip ``arch``."""
    import torch

    importlib.import_module("open_clip")
    import vision.towers as towers
    from vision.registry import DEFAULT_MODEL, ModelSpec, create_encoder, register_model

    if arch:
        name = f"{arch}/random-bench"
        register_model(ModelSpec(name, "open_clip", arch, None, "random weights (bench only)"))
        ctx: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    else:
        name = DEFAULT_MODEL
        minilm = random_minilm(run.tmp)
        ctx = patched(towers, minilm_path=lambda: minilm, load_lite0_trunk=lambda trunk, **_: None)
    with ctx:
        torch.manual_seed(0)
        cpu = create_encoder(name, device="cpu")
        if cpu.colour_bins:  # the colour branch starts at zero: draw it so its GPU path is checked too
            with torch.no_grad():
                gen = torch.Generator().manual_seed(3)
                for p in cpu.model.visual.colour.parameters():
                    p.copy_(0.05 * torch.randn(p.shape, generator=gen))
        encoders = {"cpu": cpu}
        if run.gpu:
            encoders["gpu"] = create_encoder(name, device=run.gpu)
            encoders["gpu"].model.load_state_dict(cpu.model.state_dict())
    section["encoder"] = {
        "name": name,
        "dim": cpu.dim,
        "autocast": {d: autocast_dtype(e._autocast()) for d, e in encoders.items()},
    }

    pixels = torch.stack([cpu.preprocess(im) for im in synthetic_photos(128, (320, 240), seed=4)])
    for b in (1, 32, 128):
        measure(
            run,
            section,
            f"encode_pixels batch {b} (224 px, one batch)",
            b,
            {role: partial(e.encode_pixels, pixels[:b], batch_size=b) for role, e in encoders.items()},
            cpu_reps=2 if b == 128 else None,
        )
    measure(
        run,
        section,
        "encode_pixels 128 photos, batch_size=16 (project default)",
        128,
        {role: partial(e.encode_pixels, pixels) for role, e in encoders.items()},
        cpu_reps=2,
    )
    photos = synthetic_photos(32, (640, 480), seed=5)
    measure(
        run,
        section,
        "encode_image 32 PIL 640x480 (incl. preprocess, default batch 16)",
        32,
        {role: partial(e.encode_image, photos) for role, e in encoders.items()},
        cpu_reps=2,
    )
    queries = shopper_queries(64)
    for n in (1, 64):
        measure(
            run,
            section,
            f"encode_text {n} quer{'y' if n == 1 else 'ies'}",
            n,
            {role: partial(e.encode_text, queries[:n]) for role, e in encoders.items()},
        )

    if run.gpu:
        g, c = encoders["gpu"], cpu
        img = row_cosines(g.encode_pixels(pixels, batch_size=128), c.encode_pixels(pixels, batch_size=128))
        agree(
            section,
            "min cosine of 128 image embeddings (bf16 autocast GPU vs fp32 CPU)",
            img["min"],
            MIN_COSINE,
            **detail(img),
        )
        txt = row_cosines(g.encode_text(queries), c.encode_text(queries))
        agree(section, "min cosine of 64 text embeddings", txt["min"], MIN_COSINE, **detail(txt))
    encoders.clear()
    free(run.gpu)


# ---- text encoder ------------------------------------------------------------------------------------------------


def bench_text_encoder(run: Run, section: dict[str, Any]) -> None:
    """``ranking.text_encoder.TextEncoder`` (sentence-transformers, fp16 on CUDA) over a random MiniLM-L6."""
    importlib.import_module("sentence_transformers")
    from ranking.text_encoder import TextEncoder

    folder = random_minilm(run.tmp)
    encoders = {role: TextEncoder(model_path=folder, device=run.dev(role)) for role in run.roles()}
    section["dtype"] = {d: str(next(e._model.parameters()).dtype) for d, e in encoders.items()}
    queries = shopper_queries(64)
    counter = iter(range(10**9))

    def fresh_query(e: Any) -> Any:
        # encode_query caches by text: a new text per call
        return e.encode_query(f"{queries[0]} {next(counter)}")

    measure(
        run,
        section,
        "encode_query (1 query, cache miss)",
        1,
        {role: partial(fresh_query, e) for role, e in encoders.items()},
    )
    measure(
        run,
        section,
        "encode 1 query (batched path)",
        1,
        {role: partial(e.encode, queries[:1]) for role, e in encoders.items()},
    )
    measure(
        run,
        section,
        "encode 64 queries (batch_size 64)",
        64,
        {role: partial(e.encode, queries) for role, e in encoders.items()},
    )
    docs = product_texts(256)
    measure(
        run,
        section,
        "encode 256 product texts (ingest)",
        256,
        {role: partial(e.encode, docs) for role, e in encoders.items()},
        cpu_reps=2,
    )
    if run.gpu:
        cos = row_cosines(encoders["gpu"].encode(queries), encoders["cpu"].encode(queries))
        agree(
            section,
            "min cosine of 64 query vectors (fp16 GPU vs fp32 CPU)",
            cos["min"],
            MIN_COSINE,
            **detail(cos),
        )
    encoders.clear()
    free(run.gpu)


# ---- whisper -----------------------------------------------------------------------------------------------------


def speechlike_audio(seconds: float, seed: int) -> np.ndarray:
    """Voiced-speech-like float32 16 kHz audio: a gliding harmonic tone, syllable envelope, light noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.5 * t) ** 2
    return (0.08 * voice * envelope + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def random_whisper_checkpoint(size: str, cache_dir: Path) -> None:
    """``<cache_dir>/openai-whisper/<size>.pt`` with random weights, where ``openai_whisper_checkpoint`` looks."""
    import torch
    import whisper.model

    target = cache_dir / "openai-whisper" / f"{size}.pt"
    if target.is_file():
        return
    dims = WHISPER_DIMS[size]
    torch.manual_seed(0)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**dims))
    with torch.no_grad():  # decoder.positional_embedding is torch.empty: draw every tensor explicitly
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5)
            elif name.endswith("weight"):  # LayerNorm gains
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dims, "model_state_dict": model.state_dict()}, target)


def bench_whisper(run: Run, section: dict[str, Any], size: str) -> None:
    """``speech.openai_whisper_stt.OpenAIWhisperSTT`` (fp16 on CUDA) over random weights of ``size``."""
    import torch
    from torch.nn import functional as F

    importlib.import_module("whisper")
    try:
        importlib.import_module("soxr")
    except ImportError:
        sys.modules["soxr"] = types.ModuleType("soxr")  # speech.audio imports it for resampling; unused here
        section["notes"].append("soxr not installed: stubbed (speech.audio imports it; no row resamples)")
    import whisper
    from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim
    from whisper.decoding import PyTorchInference

    from speech.openai_whisper_stt import OpenAIWhisperSTT
    from speech.stt import TranscribeOptions

    random_whisper_checkpoint(size, run.tmp)
    stts = {role: OpenAIWhisperSTT(size, cache_dir=run.tmp, device=run.dev(role)) for role in run.roles()}
    section["dtype"] = {d: str(next(s.model.parameters()).dtype) for d, s in stts.items()}
    model0 = stts["cpu"].model
    n_mels = model0.dims.n_mels
    tok = whisper.tokenizer.get_tokenizer(
        model0.is_multilingual, num_languages=model0.num_languages, language="en", task="transcribe"
    )
    initial = list(tok.sot_sequence_including_notimestamps)
    audio = {s: speechlike_audio(s, seed=s) for s in (10, 30)}

    def dtype(s: Any) -> torch.dtype:
        return torch.float16 if s.fp16 else torch.float32

    def encode_padded(s: Any, seconds: int) -> torch.Tensor:
        # As whisper.transcribe: mel on CPU over the clip + 30 s of padding, one 30 s window, to the model's dtype.
        mel = pad_or_trim(log_mel_spectrogram(audio[seconds], n_mels, padding=N_SAMPLES), N_FRAMES)
        return s.model.embed_audio(mel.to(s.device).to(dtype(s))[None])

    def encode_window(s: Any, seconds: int) -> torch.Tensor:
        # Encoder over the clip only (audio_ctx = 50 per second), the model's own modules: not what
        # openai-whisper does (it asserts a 30 s window), what TranscribeOptions.short_window asks other backends for.
        enc = s.model.encoder
        x = log_mel_spectrogram(audio[seconds], n_mels).to(s.device).to(dtype(s))[None]
        x = F.gelu(enc.conv2(F.gelu(enc.conv1(x)))).permute(0, 2, 1)
        x = (x + enc.positional_embedding[: x.shape[1]]).to(x.dtype)
        for block in enc.blocks:
            x = block(x)
        return enc.ln_post(x)

    def decode(
        s: Any, audio_features: torch.Tensor, forced: list[int] | None = None
    ) -> tuple[list[int], torch.Tensor]:
        # DECODE_STEPS greedy steps with whisper's own KV-cache inference (batch 1); ``forced`` feeds given tokens.
        inference = PyTorchInference(s.model, len(initial))
        tokens = torch.tensor([initial], device=s.device)
        logits = []
        try:
            for i in range(DECODE_STEPS):
                step = inference.logits(tokens, audio_features)[:, -1]
                nxt = (
                    torch.tensor([[forced[i]]], device=s.device) if forced else step.argmax(-1, keepdim=True)
                )
                tokens = torch.cat([tokens, nxt], dim=-1)
                logits.append(step.float())
        finally:
            inference.cleanup_caching()
        return tokens[0, len(initial) :].tolist(), torch.cat(logits)

    with torch.inference_mode():
        feats = {d: encode_padded(s, 10) for d, s in stts.items()}
        for seconds in (10, 30):
            measure(
                run,
                section,
                f"mel + encoder, {seconds} s clip (padded to the 30 s window)",
                1,
                {role: partial(encode_padded, s, seconds) for role, s in stts.items()},
            )
        measure(
            run,
            section,
            "encoder, 10 s window only (short_window style)",
            1,
            {role: partial(encode_window, s, 10) for role, s in stts.items()},
        )
        measure(
            run,
            section,
            f"decoder {DECODE_STEPS} greedy steps, KV cache",
            DECODE_STEPS,
            {role: partial(decode, s, feats[role]) for role, s in stts.items()},
            note="items = tokens",
        )
    counts: dict[str, int] = {}

    def transcribe(s: Any, d: str) -> None:
        counts[d] = len(s.transcribe(audio[10], TranscribeOptions()).text)

    measure(
        run,
        section,
        "OpenAIWhisperSTT.transcribe 10 s (end to end)",
        1,
        {role: partial(transcribe, s, role) for role, s in stts.items()},
        cpu_reps=1,
        note="random weights decode a random number of tokens: a smoke test, not a comparable timing",
    )
    section["transcribe_chars"] = counts

    if run.gpu:
        with torch.inference_mode():
            g, c = stts["gpu"], stts["cpu"]
            enc = row_cosines(encode_padded(g, 30)[0].float().cpu(), encode_padded(c, 30)[0])
            agree(
                section,
                "min cosine of 1500 encoder frames, 30 s (fp16 GPU vs fp32 CPU)",
                enc["min"],
                MIN_COSINE,
                **detail(enc),
            )
            cpu_tokens, cpu_logits = decode(c, feats["cpu"])
            _, gpu_logits = decode(g, feats["gpu"], forced=cpu_tokens)  # teacher-forced on the CPU's tokens
            lc = row_cosines(gpu_logits.cpu(), cpu_logits)
            same = float((gpu_logits.argmax(-1).cpu() == cpu_logits.argmax(-1)).float().mean())
            agree(
                section,
                f"min cosine of decoder logits over {DECODE_STEPS} steps",
                lc["min"],
                MIN_COSINE,
                **detail(lc),
                argmax_agreement=round(same, 3),
            )
    stts.clear()
    feats.clear()
    free(run.gpu)


# ---- driver ------------------------------------------------------------------------------------------------------


def run_section(run: Run, key: str, model: str, fn: Callable[[dict[str, Any]], None], out: Path) -> None:
    """Run one model's benchmark; a missing dependency becomes ``skipped``, any other failure ``error``."""
    section: dict[str, Any] = {"model": model, "status": "ok", "rows": [], "agreement": [], "notes": []}
    run.results["models"][key] = section
    start = time.perf_counter()
    on_cuda = bool(run.gpu and run.gpu.startswith("cuda"))
    if on_cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    try:
        fn(section)
    except (ImportError, Skip) as err:
        section.update(status="skipped", reason=f"{type(err).__name__}: {err}")
    except Exception as err:  # noqa: BLE001 (one broken model must not hide the others' results)
        section.update(
            status="error",
            reason=f"{type(err).__name__}: {err}",
            traceback=traceback.format_exc().splitlines()[-12:],
        )
    section["seconds"] = round(time.perf_counter() - start, 1)
    if on_cuda and section["status"] != "skipped":
        import torch

        section["gpu_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    log.info("%s: %s in %.1f s %s", key, section["status"], section["seconds"], section.get("reason", ""))
    write_results(out, run.results)
    free(run.gpu)


def environment(gpu: str | None) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {**machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    for mod in (
        "transformers",
        "peft",
        "timm",
        "open_clip",
        "sentence_transformers",
        "whisper",
        "torchvision",
    ):
        try:
            env[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except Exception as err:  # noqa: BLE001
            env[mod] = f"missing ({type(err).__name__}: {err})"
    if gpu and gpu.startswith("cuda"):
        props = torch.cuda.get_device_properties(gpu)
        env.update(
            gpu=props.name,
            gpu_mib=props.total_memory // 2**20,
            cuda=torch.version.cuda,
            bf16=torch.cuda.is_bf16_supported(),
            capability=f"{props.major}.{props.minor}",
        )
    return env


def fmt(stats: dict[str, Any]) -> tuple[str, str]:
    if "p50" not in stats:
        return (f"skipped: {stats.get('skipped', '')}", "")
    return (f"{stats['p50']:.2f} / {stats['p95']:.2f} (n={stats['n']})", f"{stats['per_s']:.1f}")


def markdown(results: dict[str, Any]) -> str:
    """Rows and agreement checks as markdown tables."""
    lines = [
        f"Random weights, real architectures ({results['meta']['note_short']}).",
        "",
        "| model | row | items | GPU p50 / p95 ms | GPU items/s | CPU p50 / p95 ms | CPU items/s | CPU/GPU |",
        "|---|---|---:|---|---:|---|---:|---:|",
    ]
    checks, other = [], []
    for key, sec in results["models"].items():
        if sec["status"] != "ok":
            other.append(f"- **{key}**: {sec['status']}: {sec.get('reason', '')}")
        for row in sec["rows"]:
            g, c = fmt(row.get("gpu", {})), fmt(row.get("cpu", {}))
            lines.append(
                f"| {key} | {row['row']} | {row['items']} | {g[0]} | {g[1]} | {c[0]} | {c[1]} | "
                f"{row.get('cpu_over_gpu', '')} |"
            )
        for chk in sec["agreement"]:
            extra = ", ".join(
                f"{k}={v}" for k, v in chk.items() if k not in ("check", "value", "threshold", "pass")
            )
            checks.append(
                f"| {key} | {chk['check']} | {chk['value']:.6f} | > {chk['threshold']} | "
                f"{'PASS' if chk['pass'] else 'FAIL'} | {extra} |"
            )
        other += [f"- {key}: {note}" for note in sec["notes"]]
    if checks:
        lines += [
            "",
            "| model | agreement check | value | threshold | result | detail |",
            "|---|---|---:|---|---|---|",
            *checks,
        ]
    if other:
        lines += ["", *other]
    return "\n".join(lines)


def main(
    out: Path = Path("bench/results/gpu_paths.json"), device: str = "auto", quick: bool = False
) -> dict[str, Any]:
    """Benchmark every model path on the GPU (half/bf16) and the CPU (fp32); write JSON; return the results.

    Args:
        out: JSON results file (rewritten after every model, so a cut-off run keeps what it measured).
        device: ``auto``/``cuda``/``cuda:N`` (GPU and CPU rows) or ``cpu`` (CPU rows only).
        quick: Fewer repetitions and models (tiny.en only, no ViT-B/32, no full-depth ranker).
    """
    import torch

    t0 = time.perf_counter()
    cuda = torch.cuda.is_available()
    gpu = None if device == "cpu" or not cuda else ("cuda" if device == "auto" else device)
    reason = "no CUDA" if not cuda else "--device cpu"
    if os.environ.get("GPU_PATHS_AS_GPU"):  # test hook: a second device (e.g. "cpu") plays the GPU role
        gpu = os.environ["GPU_PATHS_AS_GPU"]
    tmp = Path(tempfile.mkdtemp(prefix="shoptalk-gpu-paths-"))
    run = Run(gpu=gpu, gpu_reason=reason, quick=quick, tmp=tmp, deadline=time.monotonic() + BUDGET_S)
    run.results = {
        "meta": {
            "note": "RANDOM weights (seeded) of the real architectures: timings are valid (FLOPs do not depend on "
            "weight values), outputs are meaningless; agreement compares the GPU half/bf16 path with CPU "
            "fp32 on the same weights and inputs.",
            "note_short": "timings valid, outputs meaningless",
            "device_arg": device,
            "gpu": gpu,
            "gpu_skipped_reason": None if gpu else reason,
            "quick": quick,
            "env": environment(gpu),
        },
        "models": {},
    }
    sections: list[tuple[str, str, Callable[[dict[str, Any]], None]]] = [
        ("ranker", "ranking.ranker.Ranker smollm2-lora (4 layers)", lambda s: bench_ranker(run, s)),
        (
            "ranker_train",
            "ranking.train smollm2-lora (4 layers): LambdaRank step, train(), checkpoint to CPU",
            lambda s: bench_ranker_train(run, s),
        ),
        ("vision_lit", "vision ImageTextEncoder lite0-minilm-lit", lambda s: bench_vision(run, s)),
        ("text_encoder", "ranking.text_encoder.TextEncoder MiniLM-L6", lambda s: bench_text_encoder(run, s)),
        ("whisper_tiny.en", "speech OpenAIWhisperSTT tiny.en", lambda s: bench_whisper(run, s, "tiny.en")),
    ]
    if not quick:
        sections += [
            ("whisper_base", "speech OpenAIWhisperSTT base", lambda s: bench_whisper(run, s, "base")),
            (
                "ranker_30_layers",
                "ranking.ranker.Ranker smollm2-lora, all 30 layers",
                lambda s: bench_ranker(run, s, num_layers=30),
            ),
            (
                "vision_vitb32",
                "vision ImageTextEncoder open_clip ViT-B-32",
                lambda s: bench_vision(run, s, "ViT-B-32"),
            ),
        ]
    try:
        for key, model, fn in sections:
            if time.monotonic() > run.deadline and key in ("vision_vitb32", "ranker_30_layers"):
                run.results["models"][key] = {
                    "model": model,
                    "status": "skipped",
                    "reason": "time budget",
                    "rows": [],
                    "agreement": [],
                    "notes": [],
                }
                continue
            run_section(run, key, model, fn, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    checks = [c for s in run.results["models"].values() for c in s["agreement"]]
    run.results["meta"].update(
        total_s=round(time.perf_counter() - t0, 1),
        all_checks_pass=all(c["pass"] for c in checks) if checks else None,
    )
    write_results(out, run.results)
    out.with_suffix(".md").write_text(markdown(run.results) + "\n")
    return run.results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and models")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_paths.json"))
    args = parser.parse_args()
    # Progress at INFO from this module only (open_clip logs its model building at INFO on the root logger).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for ours in ("__main__", "bench"):
        logging.getLogger(ours).setLevel(logging.INFO)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with contextlib.suppress(
        ImportError
    ):  # load reports of the truncated backbone and progress bars: noise here
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    res = main(args.out, args.device, args.quick)
    print(markdown(res))
    print(
        f"\ntotal {res['meta']['total_s']} s; all agreement checks pass: {res['meta']['all_checks_pass']}; "
        f"JSON: {args.out}"
    )
