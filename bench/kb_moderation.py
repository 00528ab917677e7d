"""Knowledge-base answer accuracy and moderation precision/recall on hand-written sets.

* ``bench/data/kb_questions.jsonl``: policy questions over the demo policies (``assistant/conversation/demo_kb``). ``doc`` is the
  document that answers it (null: the policies do not, so the right answer is to decline); ``answer_contains`` a
  fact the quoted answer should hold; ``split`` is ``calibration`` (used only to pick `SUPPORT_THRESHOLD`) or
  ``eval`` (reported). A supported question is correct when it is answered from its document; an unsupported one
  when it is declined.
* ``bench/data/moderation_eval.jsonl``: utterances labelled sentiment / frustrated / abusive / unsafe, none of them
  in the classifier's training rows (`assistant.safety.moderation_data`). Reported for the full moderator (lexicons +
  MiniLM heads) and the lexicon layer alone.

Run ``python -m bench.kb_moderation`` (``--calibrate`` prints the threshold the calibration split suggests).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, write_results

DATA = Path(__file__).with_name("data")
KB_QUESTIONS = DATA / "kb_questions.jsonl"
MODERATION_EVAL = DATA / "moderation_eval.jsonl"
RESULTS = Path(__file__).with_name("results") / "kb_moderation.json"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def calibrate_threshold(scored: list[tuple[float, bool]]) -> float:
    """The threshold with the best accuracy on ``(best score, should answer)`` pairs: the midpoint of the widest
    best-accuracy gap between consecutive scores."""
    values = sorted({s for s, _ in scored})
    cuts = [(a + b) / 2 for a, b in zip(values, values[1:], strict=False)] or values
    best = max(sum((s >= c) == y for s, y in scored) for c in cuts)
    good = [c for c in cuts if sum((s >= c) == y for s, y in scored) == best]
    return round(sorted(good)[len(good) // 2], 3)


def evaluate_kb(encoder: Any, threshold: float | None = None) -> dict[str, Any]:
    from assistant.conversation.kb import SUPPORT_THRESHOLD, open_kb

    rows = _read_jsonl(KB_QUESTIONS)
    with tempfile.TemporaryDirectory() as tmp:
        kb = open_kb(Path(tmp), encoder, threshold=threshold if threshold is not None else SUPPORT_THRESHOLD)
        cal = [
            (kb.search(r["question"], k=1)[0].score, r["doc"] is not None)
            for r in rows
            if r["split"] == "calibration"
        ]
        per_split: dict[str, dict[str, Any]] = {}
        failures: list[dict[str, Any]] = []
        latencies: list[float] = []
        for split in ("calibration", "eval"):
            counts: dict[str, Any] = {
                "n": 0,
                "correct": 0,
                "supported_n": 0,
                "supported_correct": 0,
                "fact_found": 0,
                "unsupported_n": 0,
                "unsupported_refused": 0,
            }
            for r in (r for r in rows if r["split"] == split):
                t0 = time.perf_counter()
                answer = kb.answer_policy(r["question"])
                latencies.append((time.perf_counter() - t0) * 1000)
                cited = answer.citations[0].passage_id.split("#")[0] if answer.citations else None
                counts["n"] += 1
                if r["doc"] is None:
                    ok = not answer.supported
                    counts["unsupported_n"] += 1
                    counts["unsupported_refused"] += int(ok)
                else:
                    ok = answer.supported and cited == r["doc"]
                    counts["supported_n"] += 1
                    counts["supported_correct"] += int(ok)
                    counts["fact_found"] += int(ok and r["answer_contains"].lower() in answer.text.lower())
                counts["correct"] += int(ok)
                if not ok and split == "eval":
                    failures.append(
                        {
                            "qid": r["qid"],
                            "question": r["question"],
                            "doc": r["doc"],
                            "cited": cited,
                            "score": round(answer.score, 3),
                        }
                    )
            counts["accuracy"] = round(counts["correct"] / max(counts["n"], 1), 3)
            per_split[split] = counts
        used = kb.threshold
        kb.close()
    latencies.sort()
    return {
        "threshold": used,
        "calibrated_threshold": calibrate_threshold(cal),
        **per_split,
        "answer_ms_p50": round(latencies[len(latencies) // 2], 1),
        "eval_failures": failures,
    }


def _prf(pred: list[bool], gold: list[bool]) -> dict[str, Any]:
    tp = sum(p and g for p, g in zip(pred, gold, strict=True))
    fp = sum(p and not g for p, g in zip(pred, gold, strict=True))
    fn = sum(g and not p for p, g in zip(pred, gold, strict=True))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "positives": sum(gold),
    }


def evaluate_moderation(encoder: Any) -> dict[str, Any]:
    from assistant.safety.moderation import Moderator

    rows = _read_jsonl(MODERATION_EVAL)
    texts = [r["text"] for r in rows]
    out: dict[str, Any] = {"n": len(rows)}
    t0 = time.perf_counter()
    full = Moderator(encoder)
    out["train_s"] = round(time.perf_counter() - t0, 2)
    for name, moderator in (("lexicon+minilm", full), ("lexicon_only", Moderator(None))):
        got = moderator.assess_many(texts)
        res: dict[str, Any] = {
            flag: _prf([getattr(a, flag) for a in got], [bool(r[flag]) for r in rows])
            for flag in ("abusive", "unsafe", "frustrated")
        }
        res["sentiment_accuracy"] = round(
            sum(a.sentiment == r["sentiment"] for a, r in zip(got, rows, strict=True)) / len(rows), 3
        )
        calm = [
            (a, r)
            for a, r in zip(got, rows, strict=True)
            if not (r["frustrated"] or r["abusive"] or r["unsafe"])
        ]
        res["calm_flagged_rate"] = round(sum(a.flagged for a, _ in calm) / max(len(calm), 1), 3)
        res["errors"] = [
            {
                "id": r["id"],
                "text": r["text"],
                "wrong": [f for f in ("abusive", "unsafe", "frustrated") if getattr(a, f) != bool(r[f])],
            }
            for a, r in zip(got, rows, strict=True)
            if any(getattr(a, f) != bool(r[f]) for f in ("abusive", "unsafe", "frustrated"))
        ]
        out[name] = res
    return out


def main(out: Path = RESULTS, *, calibrate: bool = False) -> dict[str, Any]:
    from ranking.text_encoder import TextEncoder

    encoder = TextEncoder(device="cpu")
    kb = evaluate_kb(encoder)
    if calibrate:
        print(f"calibration split suggests SUPPORT_THRESHOLD = {kb['calibrated_threshold']}")
    results = {
        "machine": machine(),
        "load_avg_1m": round(os.getloadavg()[0], 2),  # timings are only comparable at a similar load
        "encoder": encoder.name,
        "kb": kb,
        "moderation": evaluate_moderation(encoder),
    }
    write_results(out, results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()
    res = main(args.out, calibrate=args.calibrate)
    print(
        json.dumps(
            {
                "kb": {k: v for k, v in res["kb"].items() if k != "eval_failures"},
                "moderation": {
                    k: ({kk: vv for kk, vv in v.items() if kk != "errors"} if isinstance(v, dict) else v)
                    for k, v in res["moderation"].items()
                },
            },
            indent=1,
        )
    )
