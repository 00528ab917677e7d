"""Photo lookup: find the product from a photo, against the Luma catalog's real photos.

Index: every colourway's main studio photo (``*_main.jpg``; for products photographed once, their single photo),
one entry per colourway, labelled by the photo's stem (``wh01-green``).  Queries:

* (a) ``real``: the colourway's other real photos (``_alt1``, ``_back``, ``_alternate``, ``_outfit``), never used
  for training;
* (b) ``phone``: phone-style versions of the main photos (crop, rotation, colour jitter, blur, JPEG 30–60, pasted
  on random backgrounds), drawn with a bench seed that neither training nor the index views use.

Rows: a pixel baseline (32×32 colour thumbnails, cosine), the raw frozen image tower (1280-d avg and GeM pooling, no
projection), and the aligned/adapted offline model (after ``vision.align``), with a single-view and a multi-view
index (main photo + phone-style views of it, max over a product's rows).  Each row's top-1 errors are split into
sibling colourways of the same product and other products.  Also text→image: product titles against
main photos, raw (random) heads vs aligned.  Tower features are cached in ``cache_dir``.
Run: ``shoptalk bench photo`` (results to bench/results/photo_lookup.json).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.common import machine, shared_data_dir, write_results
from vision import DEFAULT_MODEL, EmbeddingCache, create_encoder
from vision.align import AlignConfig, align, cache_body_features
from vision.augment import pad_to_square
from vision.encoder import INDEX_VIEW_SEED
from vision.towers import LITE0_BODY_CHANNELS

log = logging.getLogger(__name__)

BENCH_SEED = 90_210  # phone-style query draws; align trains with AlignConfig.seed, index views use INDEX_VIEW_SEED
_SUFFIX = re.compile(r"_(main|alt\d*|back|alternate|outfit)$")


@dataclass
class Colourway:
    key: str
    main: Path
    product: str = ""  # the parent product's id: colourways of one product are siblings
    others: list[Path] = field(default_factory=list)
    title: str = ""
    texts: list[str] = field(default_factory=list)


def default_luma_dir() -> Path:
    return shared_data_dir() / "luma-dev"


def load_colourways(luma_dir: Path) -> list[Colourway]:
    """One entry per photographed colourway, with its title, description and attribute texts."""
    products = [json.loads(line) for line in (luma_dir / "products.jsonl").read_text().splitlines() if line.strip()]
    by_id = {p["id"]: p for p in products}
    groups: dict[str, Colourway] = {}
    for f in sorted((luma_dir / "images").iterdir()):
        key = _SUFFIX.sub("", f.stem)
        g = groups.setdefault(key, Colourway(key, main=f))
        if f.stem.endswith("_main") or (f.stem == key):
            if g.main != f:
                g.others.append(g.main)
            g.main = f
        else:
            g.others.append(f)
    for g in groups.values():
        g.others = [p for p in g.others if p != g.main]
    # texts: the first product showing the main photo; variants name their colour, parents their title
    for p in products:
        imgs = p.get("images") or []
        if not imgs:
            continue
        found = groups.get(_SUFFIX.sub("", Path(imgs[0]).stem))
        if found is None or found.title:
            continue
        g = found
        parent = by_id.get(p.get("parent_id") or "", p)
        attrs = p.get("attributes") or {}
        colour = attrs.get("color")
        title = parent["title"] + (f", {colour}" if colour and p["type"] == "variant" else "")
        values = [v if isinstance(v, str) else ", ".join(map(str, v)) for k, v in attrs.items() if k != "size" and v]
        desc = re.sub(r"\s+", " ", (p.get("description") or "")).strip()[:300]
        g.title = title
        g.product = parent["id"]
        g.texts = [title, f"{title}. {p.get('category') or ''}", ", ".join(values) or title]
        if desc:
            g.texts.append(desc)
    return [g for g in groups.values() if g.title]


def pixel_vectors(paths: list[Path] | None = None, images: list[Image.Image] | None = None) -> np.ndarray:
    """32×32 colour thumbnails of the white-padded photo, mean-removed and unit-normalised."""
    imgs = images if images is not None else [Image.open(p) for p in paths or []]
    vecs = np.stack(
        [np.asarray(pad_to_square(im).resize((32, 32), Image.Resampling.BILINEAR), np.float32).ravel() for im in imgs]
    )
    vecs -= vecs.mean(1, keepdims=True)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True).clip(1e-6)


def topk(
    queries: np.ndarray,
    index: np.ndarray,
    index_labels: np.ndarray,
    query_labels: np.ndarray,
    products: np.ndarray | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 of label retrieval; an index may hold several rows per label (max per label is kept).

    With ``products`` (the product of each label), top-1 errors are split into ``errors_sibling`` (another colourway
    of the same product) and ``errors_other`` (another product).
    """
    scores = queries @ index.T  # [q, rows]
    uniq = np.unique(index_labels)
    per_label = np.full((len(queries), len(uniq)), -np.inf, np.float32)
    for j, lab in enumerate(uniq):
        per_label[:, j] = scores[:, index_labels == lab].max(1)
    order = np.argsort(-per_label, axis=1)[:, :10]
    hits = uniq[order] == query_labels[:, None]
    out: dict[str, float] = {
        "top1": round(float(hits[:, 0].mean()), 3),
        "top5": round(float(hits[:, :5].any(1).mean()), 3),
        "recall10": round(float(hits.any(1).mean()), 3),
        "n": len(queries),
    }
    if products is not None:
        wrong = ~hits[:, 0]
        sibling = wrong & (products[uniq[order[:, 0]]] == products[query_labels])
        out["errors_sibling"] = int(sibling.sum())
        out["errors_other"] = int((wrong & ~sibling).sum())
    return out


def _unit(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=-1).numpy()


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], body: torch.Tensor, size: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(body[i : i + size].float()) for i in range(0, len(body), size)])


def main(
    cache_dir: Path,
    out: Path = Path("bench/results/photo_lookup.json"),
    luma_dir: Path | None = None,
    quick: bool = False,
    checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark, write JSON to ``out``, print a markdown table, return the results.

    With ``checkpoint`` (an ``align`` checkpoint trained on this catalog's main photos and texts), it is benched
    instead of training a new one; the align timings are then the checkpoint's own.
    """
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]  # timings mean little on a busy machine: record how busy it was
    luma_dir = luma_dir or default_luma_dir()
    cache_dir = Path(cache_dir)
    cache = EmbeddingCache(cache_dir / "align_features.sqlite")
    groups = load_colourways(luma_dir)
    if quick:
        groups = groups[::4]
    labels = np.arange(len(groups))
    products = np.array([g.product for g in groups])
    mains = [g.main for g in groups]
    real_q = [(p, n) for n, g in enumerate(groups) for p in g.others]
    n_phone = 1 if quick else 2
    n_index_views = 4
    align_cfg = AlignConfig(epochs=15, image_views=4) if quick else AlignConfig()

    raw = create_encoder(DEFAULT_MODEL, device="auto")
    # -- encode timing, end to end (decode + preprocess + encode), no cache
    t = time.perf_counter()
    raw.encode_image_files(mains[:32])
    encode_ms = (time.perf_counter() - t) / len(mains[:32]) * 1000
    t = time.perf_counter()
    raw.encode_text([g.title for g in groups[:32]])
    text_ms = (time.perf_counter() - t) / len(groups[:32]) * 1000

    # -- frozen tower features (cached): index, real queries, phone queries, index views
    t = time.perf_counter()
    main_body = cache_body_features(raw, mains, 1, 0, cache, True, "bench: main photos")[:, 0]
    real_body = cache_body_features(raw, [p for p, _ in real_q], 1, 0, cache, True, "bench: real queries")[:, 0]
    phone_body = cache_body_features(raw, mains, 1 + n_phone, BENCH_SEED, cache, True, "bench: phone queries")[:, 1:]
    view_body = cache_body_features(raw, mains, n_index_views, INDEX_VIEW_SEED, cache, True, "bench: index views")
    features_s = time.perf_counter() - t
    real_labels = np.array([n for _, n in real_q])
    phone_labels = np.repeat(labels, n_phone)
    phone_body = phone_body.reshape(-1, *phone_body.shape[2:])

    results: dict[str, Any] = {"rows": {}, "text_to_image": {}}

    # -- pixel baseline
    from vision.augment import phone_style
    from vision.encoder import file_sha256, view_seed

    phone_imgs = []
    for g in groups:
        img = Image.open(g.main).convert("RGB")
        sha = file_sha256(g.main)
        phone_imgs += [phone_style(img, np.random.default_rng(view_seed(sha, v, BENCH_SEED))) for v in range(1, 1 + n_phone)]
    px_index = pixel_vectors(mains)
    results["rows"]["pixels 32x32"] = {
        "real": topk(pixel_vectors([p for p, _ in real_q]), px_index, labels, real_labels, products),
        "phone": topk(pixel_vectors(images=phone_imgs), px_index, labels, phone_labels, products),
    }

    # -- raw tower, avg and GeM pooling of the frozen 1280-d features
    trunk = raw.model.visual.trunk

    def avg_pool(b: torch.Tensor) -> torch.Tensor:
        return trunk.bn2(trunk.conv_head(b[:, :LITE0_BODY_CHANNELS])).mean(dim=(-2, -1))

    for pname, fn in (("raw tower, avg pool", avg_pool), ("raw tower, GeM pool", raw.pooled_from_body)):
        idx = _unit(_batched(fn, main_body))
        results["rows"][pname] = {
            "real": topk(_unit(_batched(fn, real_body)), idx, labels, real_labels, products),
            "phone": topk(_unit(_batched(fn, phone_body)), idx, labels, phone_labels, products),
        }
    titles = [g.title for g in groups]
    raw_t2i = topk(raw.encode_text(titles), _unit(_batched(raw.image_from_body, main_body)), labels, labels)

    # -- align (heads + image adapter) on the main photos and their texts
    pairs = [(g.main, text, g.key) for g in groups for text in g.texts]
    if checkpoint is None:
        ckpt = align(pairs, out=cache_dir / f"bench_align{'_quick' if quick else ''}.pt", cache_dir=cache_dir,
                     config=align_cfg, progress=True)
    else:
        ckpt = Path(checkpoint)
        stored = torch.load(ckpt, map_location="cpu", weights_only=True)["align_config"]
        align_cfg = AlignConfig(**{"colour_train_gain": 1.0, **stored})  # checkpoints before it trained at gain 1
    enc = create_encoder(DEFAULT_MODEL, checkpoint=ckpt, device="auto")
    align_metrics = torch.load(ckpt, map_location="cpu", weights_only=True)["metrics"]
    idx = _unit(_batched(enc.image_from_body, main_body))
    real_e = _unit(_batched(enc.image_from_body, real_body))
    phone_e = _unit(_batched(enc.image_from_body, phone_body))
    results["rows"]["aligned+adapted, 1 view"] = {
        "real": topk(real_e, idx, labels, real_labels, products),
        "phone": topk(phone_e, idx, labels, phone_labels, products),
    }
    views = _unit(_batched(enc.image_from_body, view_body.reshape(-1, *view_body.shape[2:])))
    view_labels = np.repeat(labels, n_index_views)
    results["rows"][f"aligned+adapted, {n_index_views} views"] = {
        "real": topk(real_e, views, view_labels, real_labels, products),
        "phone": topk(phone_e, views, view_labels, phone_labels, products),
    }
    # -- query test-time augmentation: whole photo + centre + 4 corner crops at 90%, mean of unit embeddings
    #    (what ``encode_image(..., query_tta=True)`` does for a shopper photo; the index is unchanged)
    real_imgs = [Image.open(p).convert("RGB") for p, _ in real_q]
    real_tta = enc.encode_image(real_imgs, query_tta=True)
    phone_tta = enc.encode_image(phone_imgs, query_tta=True)
    results["rows"]["aligned+adapted, 1 view, query TTA"] = {
        "real": topk(real_tta, idx, labels, real_labels, products),
        "phone": topk(phone_tta, idx, labels, phone_labels, products),
    }
    results["rows"][f"aligned+adapted, {n_index_views} views, query TTA"] = {
        "real": topk(real_tta, views, view_labels, real_labels, products),
        "phone": topk(phone_tta, views, view_labels, phone_labels, products),
    }
    shopper = phone_imgs[:16]
    t = time.perf_counter()
    for im in shopper:
        enc.encode_image([im])
    query_ms = (time.perf_counter() - t) / len(shopper) * 1000
    t = time.perf_counter()
    for im in shopper:
        enc.encode_image([im], query_tta=True)
    query_tta_ms = (time.perf_counter() - t) / len(shopper) * 1000
    t = time.perf_counter()
    q = enc.encode_text(titles)
    text_ms_aligned = (time.perf_counter() - t) / len(titles) * 1000
    results["text_to_image"] = {
        "titles_vs_main_photos_raw_heads": raw_t2i,
        "titles_vs_main_photos_aligned": topk(q, idx, labels, labels),
        "heldout_products_before": align_metrics["before"],
        "heldout_products_after": align_metrics["after"],
        "note": "titles are among the training texts (in-sample); heldout_* are products whose texts align never saw",
    }
    results.update(
        {
            "machine": {**machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                        "device": str(enc.device),
                        "load_avg_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)]},
            "catalog": {"colourways": len(groups), "real_queries": len(real_q), "phone_queries": len(phone_labels),
                        "index_views": n_index_views, "quick": quick},
            "timings": {
                "encode_ms_per_image_end_to_end": round(encode_ms, 1),
                "shopper_photo_ms_single": round(query_ms, 1),
                "shopper_photo_ms_query_tta": round(query_tta_ms, 1),
                "text_ms_per_query": round(text_ms, 1),
                "text_ms_per_query_batched_aligned": round(text_ms_aligned, 1),
                "tower_features_s": round(features_s, 1),
                "align_feature_s": align_metrics["feature_seconds"],
                "align_train_s": align_metrics["train_seconds"],
                "total_s": round(time.perf_counter() - t_start, 1),
            },
            "align_config": asdict(align_cfg),
            "model_config": enc.config,
            "colour_gain_heldout_top1": align_metrics.get("colour_gain_heldout_top1", {}),
            "checkpoint": str(ckpt),
            "checkpoint_reused": checkpoint is not None,
        }
    )
    write_results(Path(out), results)
    print(markdown(results))  # noqa: T201 - a bench prints its table
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| method | real photos top-1 | top-5 | phone-style top-1 | top-5 | phone top-1 errors: sibling / other |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["rows"].items():
        r, p = row["real"], row["phone"]
        errs = f"{p['errors_sibling']} / {p['errors_other']}" if "errors_sibling" in p else "-"
        lines.append(f"| {name} | {r['top1']:.3f} | {r['top5']:.3f} | {p['top1']:.3f} | {p['top5']:.3f} | {errs} |")
    t2i = results["text_to_image"]
    lines += [
        "",
        "| text→image | hit@1 | recall@10 |",
        "|---|---|---|",
        f"| titles, raw heads | {t2i['titles_vs_main_photos_raw_heads']['top1']:.3f} | "
        f"{_r10(t2i['titles_vs_main_photos_raw_heads'])} |",
        f"| titles, aligned (in-sample) | {t2i['titles_vs_main_photos_aligned']['top1']:.3f} | "
        f"{_r10(t2i['titles_vs_main_photos_aligned'])} |",
        f"| held-out products, before | {t2i['heldout_products_before'].get('eval_text_image_hit1', float('nan')):.3f} | "
        f"{t2i['heldout_products_before'].get('eval_text_image_recall10', float('nan')):.3f} |",
        f"| held-out products, after | {t2i['heldout_products_after'].get('eval_text_image_hit1', float('nan')):.3f} | "
        f"{t2i['heldout_products_after'].get('eval_text_image_recall10', float('nan')):.3f} |",
    ]
    return "\n".join(lines)


def _r10(row: dict[str, float]) -> str:
    return f"{row.get('recall10', float('nan')):.3f}"


if __name__ == "__main__":
    import argparse

    logging.basicConfig(level=logging.INFO)
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "shoptalk" / "vision")
    ap.add_argument("--out", type=Path, default=Path("bench/results/photo_lookup.json"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--checkpoint", type=Path, default=None, help="bench this align checkpoint instead of training")
    a = ap.parse_args()
    main(a.cache_dir, a.out, quick=a.quick, checkpoint=a.checkpoint)
