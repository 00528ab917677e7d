"""Weak-label training data, fine-tuning (LoRA + heads) and evaluation for `ranking.ranker.Ranker`.

Training data comes from the catalog itself: each query is built from one product's attributes, and every
candidate gets a graded label::

    3  the exact item / colourway the query names
    2  same category, every asked attribute matches (colour, size, price)
    1  same category, a wrong colour, size or price
    0  another category

Shopper feedback (click, add to cart, purchase, dislike) enters as extra examples (`feedback_examples`).
The loss is listwise (ListNet on gains ``2**label - 1``); early stopping watches nDCG@10 on a held-out split.

A product here is a plain dict (callers convert their catalog rows)::

    {"id": str, "title": str, "description": str, "category": str, "brand": str | None, "price": float | None,
     "attributes": {"colors": [str, ...], "sizes": [str, ...]}}
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ranking.features import (
    base_name,
    leaf_name,
    product_colors,
    product_sizes,
    product_text,
    slot_features,
    word_set,
)
from ranking.ranker import FEATURE_INDEX, NUM_FEATURES, Ranker, render_query

log = logging.getLogger(__name__)

_COL = FEATURE_INDEX
FEEDBACK_GRADES: dict[str, int] = {"purchase": 3, "add_to_cart": 2, "click": 1, "dislike": 0}


@dataclass
class Example:
    """One query with its candidates and graded labels.

    Attributes:
        query: The query tower's input (transcript + rendered slots, see `render_query`).
        product_ids: Candidate ids, ``[n]``.
        product_texts: Candidate texts for the product tower, ``[n]`` (see `product_text`).
        labels: ``[n]`` graded relevance 0..3.
        features: ``[n, len(FEATURE_NAMES)]`` float32.
        image_vecs: ``[n, image_dim]`` or None.
    """

    query: str
    product_ids: list[str]
    product_texts: list[str]
    labels: np.ndarray
    features: np.ndarray
    image_vecs: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# --- features -------------------------------------------------------------------------------------------------


def _feature_matrix(
    query: str, slots: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]], texts: Sequence[str]
) -> np.ndarray:
    """Slot matches plus a lexical first-stage score (Jaccard overlap) and its reciprocal rank."""
    feats = np.zeros((len(candidates), NUM_FEATURES), np.float32)
    qw = word_set(query)
    overlap = np.array([len(qw & word_set(t)) / max(1, len(qw | word_set(t))) for t in texts], np.float32)
    order = np.argsort(-overlap, kind="stable")
    feats[:, _COL["retrieval_score"]] = overlap
    feats[order, _COL["retrieval_rank_recip"]] = 1.0 / (1.0 + np.arange(len(candidates)))
    feats[:, _COL["in_retrieval"]] = 1.0
    for i, product in enumerate(candidates):
        for name, value in slot_features(slots, product).items():
            feats[i, _COL[name]] = value
    return feats


def simulate_session(
    feats: np.ndarray, labels: np.ndarray, rng: random.Random, *, personal_labels: bool = False
) -> None:
    """Weak session/social signals, mildly correlated with relevance (in place).

    Real signals come from feedback events; these only teach the head the sign and rough size of each.
    With `personal_labels` the labels become this shopper's (in place too): a product they disliked is not
    wanted whatever the query (0), one they liked that fits the query is worth a grade more.
    """
    for i, label in enumerate(labels):
        good = label >= 2
        viewed = rng.random() < (0.25 if good else 0.06)
        feats[i, _COL["viewed"]] = float(viewed)
        feats[i, _COL["liked"]] = float(rng.random() < (0.15 if good else 0.03))
        feats[i, _COL["bought"]] = float(rng.random() < (0.05 if good else 0.02))
        feats[i, _COL["disliked"]] = float(rng.random() < (0.02 if good else 0.08))
        feats[i, _COL["friends_bought"]] = math.log1p(
            np.random.default_rng(rng.randrange(2**31)).poisson(0.4 if good else 0.15)
        )
        feats[i, _COL["friends_liked"]] = math.log1p(
            np.random.default_rng(rng.randrange(2**31)).poisson(0.6 if good else 0.25)
        )
        feats[i, _COL["recency"]] = rng.random() if viewed else 0.0
        if personal_labels and feats[i, _COL["disliked"]]:
            labels[i] = 0
        elif personal_labels and feats[i, _COL["liked"]] and label >= 1:
            labels[i] = min(3, int(label) + 1)


# --- weak labels ----------------------------------------------------------------------------------------------


def grade(spec: Mapping[str, Any], product: Mapping[str, Any]) -> int:
    """Graded relevance of ``product`` for a query spec (``name``, ``category``, ``colour``, ``size``, ``max_price``)."""
    if str(product.get("category") or "") != spec["category"]:
        return 0
    colour_ok = not spec.get("colour") or spec["colour"].lower() in {c.lower() for c in product_colors(product)}
    size_ok = not spec.get("size") or spec["size"].lower() in {s.lower() for s in product_sizes(product)}
    price = product.get("price")
    price_ok = spec.get("max_price") is None or (price is not None and float(price) <= spec["max_price"])
    if not (colour_ok and size_ok and price_ok):
        return 1
    if spec.get("name"):
        return 3 if base_name(product) == spec["name"] else 1
    return 2


def _query_from(target: Mapping[str, Any], rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A spoken-style query and its full slot spec built from one product's attributes."""
    category = str(target.get("category") or "")
    leaf = leaf_name(category)
    colors, sizes = product_colors(target), product_sizes(target)
    colour = rng.choice(colors) if colors and rng.random() < 0.8 else None
    size = rng.choice(sizes) if sizes and rng.random() < 0.4 else None
    price = target.get("price")
    spec: dict[str, Any] = {
        "category": category,
        "colour": colour,
        "size": size,
        "max_price": None,
        "name": None,
    }
    words = []
    if rng.random() < 0.5:  # names the item
        spec["name"] = base_name(target)
        words = [colour or "", spec["name"]]
    else:
        if price is not None and rng.random() < 0.5:
            spec["max_price"] = float(math.ceil((float(price) + 1) / 10) * 10)
        words = [colour or "", leaf]
    text = " ".join(w for w in words if w).lower()
    if size:
        text += f" in size {size}"
    if spec["max_price"] is not None:
        text += f" under {spec['max_price']:.0f} dollars"
    prefix = rng.choice(["", "show me ", "i'm looking for ", "do you have ", "find me "])
    return prefix + text, spec


def make_training_data(
    products: Sequence[Mapping[str, Any]],
    n_queries: int,
    seed: int = 0,
    *,
    n_candidates: int = 16,
    slot_dropout: float = 0.3,
    session_fraction: float = 0.5,
) -> list[Example]:
    """Weak-labelled ranking examples generated from catalog attributes.

    Args:
        products: Product dicts (see module docstring).
        n_queries: Examples to generate.
        seed: RNG seed.
        n_candidates: Candidates per query: the target, its variants, same-category items, others.
        slot_dropout: Probability that the slot extractor "missed" each slot (the query text still says it),
            so the model must read the text and cannot rely on the match features alone.
        session_fraction: Share of examples with simulated session/social signals.
    """
    rng = random.Random(seed)
    by_category: dict[str, list[int]] = defaultdict(list)
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(products):
        by_category[str(p.get("category") or "")].append(i)
        by_name[base_name(p)].append(i)
    texts = [product_text(p) for p in products]
    examples = []
    for _ in range(n_queries):
        t = rng.randrange(len(products))
        query, spec = _query_from(products[t], rng)
        pool = [t]
        pool += rng.sample(by_name[base_name(products[t])], min(4, len(by_name[base_name(products[t])])))
        same = by_category[spec["category"]]
        pool += rng.sample(same, min(n_candidates // 2, len(same)))
        pool = list(dict.fromkeys(pool))[: n_candidates * 3 // 4]
        while len(pool) < min(n_candidates, len(products)):
            j = rng.randrange(len(products))
            if j not in pool:
                pool.append(j)
        rng.shuffle(pool)
        slots = {
            "colour": spec["colour"],
            "size": spec["size"],
            "max_price": spec["max_price"],
            "category": leaf_name(spec["category"]) if spec["name"] is None else None,
        }
        slots = {k: v for k, v in slots.items() if v is not None and rng.random() >= slot_dropout}
        cands = [products[j] for j in pool]
        labels = np.array([grade(spec, c) for c in cands], np.int64)
        cand_texts = [texts[j] for j in pool]
        feats = _feature_matrix(query, slots, cands, cand_texts)
        if rng.random() < session_fraction:
            simulate_session(feats, labels, rng)
        examples.append(
            Example(
                query=render_query(query, slots),
                product_ids=[str(c.get("id")) for c in cands],
                product_texts=cand_texts,
                labels=labels,
                features=feats,
                meta={"spec": spec},
            )
        )
    return examples


Candidates = Callable[[str, Mapping[str, Any]], tuple[list[str], list[str], np.ndarray]]
"""``(query text, slots) -> (product ids, product texts, features [n, NUM_FEATURES])``: a query's candidate pool
as the serving pipeline draws and featurises it (e.g. ``assistant.search.training.feedback_candidates``)."""


def feedback_examples(
    events: Sequence[Mapping[str, Any]],
    products: Sequence[Mapping[str, Any]],
    *,
    n_negatives: int = 8,
    seed: int = 0,
    candidates: Candidates | None = None,
) -> list[Example]:
    """Examples from shopper feedback, one per distinct query.

    Args:
        events: Dicts with ``query`` (transcript), ``product_id``, ``kind`` (or ``type``: ``click``,
            ``add_to_cart``, ``purchase``, ``dislike``), optional ``slots`` (dict) and ``features`` (name → value,
            e.g. session signals at the time). The strongest event per (query, product) sets the label (purchase
            3, cart 2, click 1); a dislike sets 0 and overrides the others.
        products: Product dicts; events naming unknown ids are skipped.
        n_negatives: Without `candidates`: random catalog items added to each query as label-0 candidates.
        seed: RNG seed for the negatives.
        candidates: The serving pipeline's pool for a query (retrieval's hard negatives, the same features
            as at serving time); its items without an event get label 0, evented items outside it are appended.
    """
    rng = random.Random(seed)
    index = {str(p.get("id")): p for p in products}
    grouped: dict[str, dict[str, tuple[int, Mapping[str, Any]]]] = defaultdict(dict)
    slots_of: dict[str, Mapping[str, Any]] = {}
    for event in events:
        pid, kind = str(event.get("product_id")), str(event.get("kind") or event.get("type"))
        if pid not in index or kind not in FEEDBACK_GRADES:
            continue
        query = str(event.get("query") or "")
        slots_of.setdefault(query, event.get("slots") or {})
        label = FEEDBACK_GRADES[kind]
        previous = grouped[query].get(pid)
        if previous is None or (label > previous[0] and previous[0] != 0) or kind == "dislike":
            grouped[query][pid] = (label, event.get("features") or {})
    examples = []
    for query, items in grouped.items():
        slots = dict(slots_of[query])
        if candidates is not None:
            ids, texts, feats = candidates(query, slots)
            missing = [pid for pid in items if pid not in ids]
            ids = [*ids, *missing]
            texts = [*texts, *(product_text(index[pid]) for pid in missing)]
            feats = np.concatenate([feats, np.zeros((len(missing), NUM_FEATURES), np.float32)])
        else:
            ids = list(items)
            others = [pid for pid in index if pid not in items]
            ids += rng.sample(others, min(n_negatives, len(others)))
            cands = [index[pid] for pid in ids]
            texts = [product_text(c) for c in cands]
            feats = _feature_matrix(query, slots, cands, texts)
        for i, pid in enumerate(ids):
            for name, value in (items[pid][1] if pid in items else {}).items():
                if name in _COL:
                    feats[i, _COL[name]] = float(value)
        labels = np.array([items[pid][0] if pid in items else 0 for pid in ids], np.int64)
        examples.append(Example(render_query(query, slots), ids, texts, labels, feats, meta={"feedback": True}))
    return examples


def read_feedback(path: Path) -> list[dict[str, Any]]:
    """Feedback events from a JSONL file (one ``{"query", "product_id", "kind"}`` object a line; bad lines skipped)."""
    import json

    events = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s:%d: not JSON, skipped", path, n)
            continue
        if isinstance(event, dict) and event.get("query") and event.get("product_id"):
            events.append(event)
    return events


# --- metrics --------------------------------------------------------------------------------------------------


def ndcg_at(scores: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """nDCG@k with gains ``2**label - 1``; 0 when no candidate is relevant."""
    gains = 2.0 ** labels.astype(np.float64) - 1.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    top = np.argsort(-scores, kind="stable")[:k]
    ideal = np.sort(gains)[::-1][:k]
    best = float((ideal * discounts[: len(ideal)]).sum())
    return float((gains[top] * discounts[: len(top)]).sum()) / best if best > 0 else 0.0


def reciprocal_rank(scores: np.ndarray, labels: np.ndarray) -> float:
    """1 / rank of the first candidate carrying the example's highest label (0 when all labels are 0)."""
    if labels.max() <= 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    return 1.0 / (1 + int(np.flatnonzero(labels[order] == labels.max())[0]))


# --- batching -------------------------------------------------------------------------------------------------


def _batch_tensors(
    ranker: Ranker, batch: Sequence[Example], vectors: Mapping[str, np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad a batch to its longest candidate list: products [B,n,H], images, features [B,n,F], labels, mask."""
    dev = ranker.device_name
    n = max(len(ex.labels) for ex in batch)
    hidden, di = ranker.hidden_size, ranker.config.image_dim
    products = np.zeros((len(batch), n, hidden), np.float32)
    feats = np.zeros((len(batch), n, NUM_FEATURES), np.float32)
    labels = np.zeros((len(batch), n), np.float32)
    mask = np.zeros((len(batch), n), bool)
    images = (
        np.zeros((len(batch), n, di), np.float32) if any(ex.image_vecs is not None for ex in batch) else None
    )
    for b, ex in enumerate(batch):
        m = len(ex.labels)
        products[b, :m] = np.stack([vectors[t] for t in ex.product_texts])
        feats[b, :m] = ex.features
        labels[b, :m] = ex.labels
        mask[b, :m] = True
        if images is not None and ex.image_vecs is not None:
            images[b, :m] = ex.image_vecs
    t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
    return t(products), None if images is None else t(images), t(feats), t(labels), t(mask)


def _product_vectors(ranker: Ranker, examples: Sequence[Example]) -> dict[str, np.ndarray]:
    texts = sorted({t for ex in examples for t in ex.product_texts})
    return dict(zip(texts, ranker.encode_products(texts), strict=True))


def _batch_scores(
    ranker: Ranker, batch: Sequence[Example], vectors: Mapping[str, np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores ``[B, n]`` (padding at -inf), labels ``[B, n]`` and mask ``[B, n]`` of a batch."""
    products, images, feats, labels, mask = _batch_tensors(ranker, batch, vectors)
    q = ranker.query_states([ex.query for ex in batch])  # [B, H]
    scores = ranker.head(q, products, images, feats)["score"]  # [B, n]
    return scores.masked_fill(~mask, float("-inf")), labels, mask


@torch.no_grad()
def evaluate(
    ranker: Ranker,
    examples: Sequence[Example],
    *,
    batch_size: int = 64,
    vectors: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Mean nDCG@10 and MRR of the ranker over ``examples``."""
    was_training = ranker.training
    ranker.eval()
    vectors = _product_vectors(ranker, examples) if vectors is None else vectors
    ndcgs, rrs = [], []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        scores = _batch_scores(ranker, batch, vectors)[0].float().cpu().numpy()
        for ex, row in zip(batch, scores, strict=True):
            s = row[: len(ex.labels)]
            ndcgs.append(ndcg_at(s, ex.labels))
            rrs.append(reciprocal_rank(s, ex.labels))
    ranker.train(was_training)
    return {"ndcg@10": float(np.mean(ndcgs)) if ndcgs else 0.0, "mrr": float(np.mean(rrs)) if rrs else 0.0}


def listnet_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between softmax(scores) and the gain distribution ``(2**label - 1) / Σ``, per query."""
    gains = (torch.pow(2.0, labels) - 1.0) * mask
    total = gains.sum(-1, keepdim=True)
    valid = total.squeeze(-1) > 0
    target = gains / total.clamp(min=1e-9)
    logp = torch.log_softmax(scores.float(), dim=-1).masked_fill(~mask, 0.0)
    loss = -(target * logp).sum(-1)
    return loss[valid].mean() if bool(valid.any()) else scores.sum() * 0.0


def lambda_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LambdaRank: a pairwise logistic loss over (better, worse) pairs, weighted by the nDCG@10 swap change.

    Each pair's weight is the change in nDCG@10 from swapping the two at their current ranks. Unlike ListNet it
    does not ask scores to match a gain distribution (which flattens the retrieval prior on queries where most
    candidates are equally good), only for order.
    """
    s = scores.float().masked_fill(~mask, -1e4)  # [B, n]
    gains = (torch.pow(2.0, labels) - 1.0) * mask
    with torch.no_grad():
        order = torch.argsort(s, dim=-1, descending=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(-1, order, torch.arange(s.shape[-1], device=s.device).expand_as(order))
        discount = torch.where(ranks < 10, 1.0 / torch.log2(ranks.float() + 2.0), torch.zeros_like(s))
        ideal = torch.sort(gains, dim=-1, descending=True).values[:, :10]
        idcg = (ideal / torch.log2(torch.arange(ideal.shape[-1], device=s.device).float() + 2.0)).sum(-1)
        delta = (gains[:, :, None] - gains[:, None, :]).abs() * (discount[:, :, None] - discount[:, None, :]).abs()
        delta = delta / idcg.clamp(min=1e-9)[:, None, None]
        better = (labels[:, :, None] > labels[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    diff = s[:, :, None] - s[:, None, :]  # [B, n, n]: s_i - s_j
    pair = torch.nn.functional.softplus(-diff) * delta * better
    valid = better.flatten(1).any(-1)
    if not bool(valid.any()):
        return scores.sum() * 0.0
    per_query = pair.flatten(1).sum(-1) / better.flatten(1).sum(-1).clamp(min=1)
    return per_query[valid].mean() * 10.0


LOSSES = {"lambda": lambda_loss, "listnet": listnet_loss}


HEAD_LR = 0.03
_SCALAR_PARAMS = ("head.feature_weights", "head.text_scale", "head.image_scale")


def _param_groups(ranker: Ranker, lr: float, head_lr: float) -> list[dict[str, Any]]:
    """The LoRA adapter and the projections/MLP at `lr`; the additive scalars at `head_lr`, without decay."""
    scalars: list[torch.nn.Parameter] = []
    rest: list[torch.nn.Parameter] = []
    for name, param in ranker.named_parameters():
        if param.requires_grad:
            (scalars if name in _SCALAR_PARAMS else rest).append(param)
    return [{"params": rest, "lr": lr}, {"params": scalars, "lr": head_lr, "weight_decay": 0.0}]


def split_examples(
    examples: Sequence[Example], eval_fraction: float, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Shuffle and split into (train, eval)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(len(examples) * eval_fraction))) if eval_fraction > 0 else 0
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]


def train(
    ranker: Ranker,
    examples: Sequence[Example],
    *,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 16,
    eval_fraction: float = 0.2,
    patience: int = 2,
    out: Path,
    progress: bool = True,
    eval_every: int = 0,
    max_seconds: float | None = None,
    seed: int = 0,
    loss_name: str = "lambda",
    head_lr: float = HEAD_LR,
    on_step: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune the LoRA adapter and heads with a listwise loss; keep the best checkpoint by held-out nDCG@10.

    Args:
        ranker: The model (trained in place; it ends holding the best weights seen).
        examples: Training examples (`make_training_data`, `feedback_examples`).
        epochs: Passes over the training split.
        lr: AdamW learning rate.
        batch_size: Queries per step.
        eval_fraction: Share of examples held out for evaluation and early stopping.
        patience: Evaluations without improvement before stopping.
        out: Checkpoint path (`Ranker.save`); written at every improvement.
        progress: Log progress at INFO level.
        eval_every: Evaluate every this many steps (0: once per epoch).
        max_seconds: Wall-clock budget; training stops (after a final evaluation) when exceeded.
        seed: Shuffling seed.
        loss_name: ``lambda`` (LambdaRank, default) or ``listnet``.
        head_lr: Learning rate of the per-feature weights and the text/image scales (a few scalars that must
            move by whole units in a few hundred steps, e.g. a "disliked" weight of -3).
        on_step: Called as ``(step name, steps done, steps planned)`` after every step (a progress view).

    Returns:
        ``{"initial": metrics, "best": metrics, "history": [...], "steps": int, "seconds": float}``.
    """
    start = time.perf_counter()
    train_set, eval_set = split_examples(examples, eval_fraction, seed)
    vectors = _product_vectors(ranker, examples)
    if progress:
        log.info(
            "ranker training: %d train / %d eval examples, %d products encoded in %.1f s",
            len(train_set),
            len(eval_set),
            len(vectors),
            time.perf_counter() - start,
        )
    eval_on = eval_set or train_set
    initial = evaluate(ranker, eval_on, vectors=vectors)
    best, best_state = dict(initial), ranker.trainable_state()
    history: list[dict[str, Any]] = []
    optimizer = torch.optim.AdamW(_param_groups(ranker, lr, head_lr), lr=lr, weight_decay=0.01)
    rng = random.Random(seed)
    steps, bad, stop = 0, 0, False
    steps_per_epoch = max(1, math.ceil(len(train_set) / batch_size))
    every = eval_every or steps_per_epoch
    ranker.save(out, extra={"metrics": initial, "steps": 0})
    for epoch in range(epochs):
        order = list(range(len(train_set)))
        rng.shuffle(order)
        ranker.train()
        for s in range(steps_per_epoch):
            batch = [train_set[i] for i in order[s * batch_size : (s + 1) * batch_size]]
            loss = LOSSES[loss_name](*_batch_scores(ranker, batch, vectors))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(ranker.trainable_parameters()), 1.0)
            optimizer.step()
            steps += 1
            if on_step is not None:
                on_step("ranker: training", steps, epochs * steps_per_epoch)
            over_time = max_seconds is not None and time.perf_counter() - start > max_seconds
            if steps % every == 0 or over_time or s == steps_per_epoch - 1 and eval_every == 0:
                metrics = evaluate(ranker, eval_on, vectors=vectors)
                history.append({"epoch": epoch, "step": steps, "loss": loss.item(), **metrics})
                if progress:
                    log.info(
                        "epoch %d step %d loss %.4f eval ndcg@10 %.4f mrr %.4f",
                        epoch,
                        steps,
                        loss.item(),
                        metrics["ndcg@10"],
                        metrics["mrr"],
                    )
                if metrics["ndcg@10"] > best["ndcg@10"]:
                    best, best_state, bad = dict(metrics), ranker.trainable_state(), 0
                    ranker.save(out, extra={"metrics": best, "steps": steps})
                else:
                    bad += 1
                    stop = bad >= patience
                ranker.train()
            if stop or over_time:
                stop = True
                break
        if stop:
            break
    ranker.load_trainable_state(best_state)
    ranker.eval()
    return {
        "initial": initial,
        "best": best,
        "history": history,
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "n_train": len(train_set),
        "n_eval": len(eval_set),
    }
