"""Reciprocal rank fusion of several ranked lists (lexical, text->text, text->image ...).

RRF scores an id by ``sum over sources of weight / (k + rank)`` with 1-based ranks (Cormack et al., 2009). It needs
no score calibration between sources: BM25 scores, cosine similarities and CLIP logits mix by rank alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

RRF_K = 60  # the constant of the original paper; damps the gap between rank 1 and rank 2


@dataclass(frozen=True)
class FusedHit:
    """One fused result.

    Attributes:
        id: The item id.
        score: Fused RRF score.
        ranks: Source name to the item's 1-based rank in that source (absent where the source did not list it).
        scores: Source name to the item's original score in that source.
    """

    id: str
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    *,
    weights: Mapping[str, float] | None = None,
    k: int = RRF_K,
) -> list[FusedHit]:
    """Fuse ranked lists by reciprocal rank.

    Args:
        rankings: Source name to ``(id, score)`` pairs, best first. An id listed twice in one source counts at its
            best rank.
        weights: Source name to weight (default 1.0; a weight of 0 mutes a source but keeps its ranks in the hits).
        k: RRF constant.

    Returns:
        Hits sorted by descending fused score; ties go to the id with the better best rank, then by id.
    """
    weights = weights or {}
    fused: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    scores: dict[str, dict[str, float]] = {}
    for source, ranked in rankings.items():
        weight = float(weights.get(source, 1.0))
        for rank, (id_, score) in enumerate(ranked, start=1):
            if source in ranks.setdefault(id_, {}):
                continue
            ranks[id_][source] = rank
            scores.setdefault(id_, {})[source] = float(score)
            fused[id_] = fused.get(id_, 0.0) + weight / (k + rank)
    hits = [FusedHit(id_, fused[id_], ranks[id_], scores[id_]) for id_ in fused]
    hits.sort(key=lambda h: (-h.score, min(h.ranks.values()), h.id))
    return hits
