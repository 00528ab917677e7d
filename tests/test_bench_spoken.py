"""``shoptalk bench spoken``: its metrics, subsets and turn reading, and one small real run through the server."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import spoken as S
from bench.spoken import SpokenRequest

ROOT = Path(__file__).resolve().parents[1]


def _req(qid: str, split: str = "dev", kind: str = "category", judgments: dict[str, int] | None = None,
         text: str = "show me hoodies") -> SpokenRequest:
    return SpokenRequest(qid=qid, text=text, kind=kind, judgments=judgments if judgments is not None else {"A": 3},
                         split=split)


def _pool(n_dev: int = 120, n_heldout: int = 60) -> list[SpokenRequest]:
    return [_req(f"sp-{i:03d}") for i in range(n_dev)] + [_req(f"sph-{i:03d}", "heldout") for i in range(n_heldout)]


# ------------------------------------------------------------------------------------------------------------ WER


def test_normalizer_makes_spoken_and_written_forms_equal() -> None:
    assert S.corpus_wer([("show me hoodies under fifty dollars", "Show me hoodies under $50.")]) == 0.0
    assert S.corpus_wer([("size thirty two", "Size 32!")]) == 0.0
    assert S.word_edits("a black hoodie", "A black hoody") == (1, 3)


def test_corpus_wer_is_total_edits_over_total_words_not_a_mean() -> None:
    long = "show me the black hoodie with a zip in small"
    pairs = [("red", "blue"), (long, long)]
    assert S.corpus_wer(pairs) == pytest.approx(1 / 11)  # the per-utterance mean would be 0.5
    # substitution, deletion and insertion each count 1
    assert S.edit_distance("a b c d".split(), "a x c".split()) == 2
    assert S.edit_distance("a b".split(), "a b c".split()) == 1
    assert S.corpus_wer([("black hoodie", "")]) == 1.0  # a lost request: every word deleted
    assert S.corpus_wer([]) is None


# ----------------------------------------------------------------------------------------------------------- nDCG


def test_ndcg5_counts_parents_and_cuts_at_five() -> None:
    judgments = {"WH01": 3, "WH02": 2}
    shown = [{"id": "WH01-XS-Green", "parent_id": "WH01"}, {"id": "WH01-S-Green", "parent_id": "WH01"},
             {"id": "WH02", "parent_id": None}]
    ids = S.product_ids(shown)
    assert ids == ["WH01", "WH02"]
    assert S.ndcg5(ids, judgments) == pytest.approx(1.0)
    assert S.ndcg5(list(reversed(ids)), judgments) < 1.0
    assert S.ndcg5([], judgments) == 0.0  # no products scores 0
    six = [{"id": f"X{i}"} for i in range(5)] + [{"id": "WH01"}]
    assert S.product_ids(six) == [f"X{i}" for i in range(5)]  # only the first five count
    assert S.ndcg5(S.product_ids(six), judgments) == 0.0


def test_ratios_and_targets() -> None:
    assert S.ratio(0.9, 1.0) == pytest.approx(0.9)
    assert S.ratio(0.5, 0.0) is None and S.ratio(None, 1.0) is None
    assert S.ratio_passes(0.95, S.RATIO_TARGETS["clean"]) is True
    assert S.ratio_passes(0.949, S.RATIO_TARGETS["clean"]) is False
    assert S.ratio_passes(0.86, S.RATIO_TARGETS["phone"]) is True
    assert S.ratio_passes(0.84, S.RATIO_TARGETS["noise10"]) is False
    assert S.ratio_passes(0.1, S.RATIO_TARGETS["reverb"]) is None  # reported, no target
    assert S.wer_passes(0.08) is True and S.wer_passes(0.081) is False
    assert S.offline_ratio(0.10, 0.10) == pytest.approx(1.0)
    assert S.offline_ratio(0.0, 0.0) == 1.0
    assert S.offline_ratio(0.05, 0.0) is None  # infinitely worse


def _turn(qid: str, transcript: str, ndcg: float | None, *, reference: str = "black hoodie", split: str = "dev",
          voice: str = "v1", condition: str = "clean") -> dict[str, Any]:
    return {"qid": qid, "reference": reference, "transcript": transcript, "ndcg@5": ndcg, "split": split,
            "voice": voice, "condition": condition, "errors": [], "status": "completed", "segments": 1,
            "first_audio_ms": 500.0}


def test_group_metrics_compare_spoken_with_typed_on_the_same_requests() -> None:
    typed = {"q1": 1.0, "q2": 0.5, "q3": 0.8}
    turns = [_turn("q1", "black hoodie", 1.0), _turn("q2", "", 0.0), _turn("q9", "good morning", None,
                                                                                reference="good morning")]
    m = S.group_metrics(turns, typed, "clean")
    assert m["turns"] == 3 and m["product_turns"] == 2
    assert m["empty_finals"] == 1 and m["empty_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["wer"] == pytest.approx(2 / 6, abs=1e-4)  # the lost request's 2 words over 6
    assert m["ndcg@5"] == pytest.approx(0.5) and m["typed_ndcg@5"] == pytest.approx(0.75)  # q3 was not spoken
    assert m["ratio"] == pytest.approx(0.5 / 0.75, abs=1e-4)
    assert m["ratio_pass"] is False and m["wer_pass"] is False
    good = S.group_metrics([_turn("q1", "black hoodie", 1.0)], typed, "noise10")
    assert good["ratio_pass"] is True and "wer_pass" not in good


def test_summaries_per_voice_and_split_and_the_table_hides_heldout_texts() -> None:
    secret = "a heldout request nobody may read"
    turns = [_turn("q1", "black hoody", 0.2, voice="v1"), _turn("q1", "black hoodie", 1.0, voice="v2"),
             _turn("h1", secret, 0.0, reference=secret, split="heldout", voice="v1")]
    typed_turns = [{"qid": "q1", "split": "dev", "ndcg@5": 1.0, "errors": []},
                   {"qid": "h1", "split": "heldout", "ndcg@5": 0.5, "errors": []}]
    arm = {"turns": turns, "typed_turns": typed_turns}
    summary = S.summarize_arm(arm)
    assert set(summary["by_voice"]["clean"]) == {"v1", "v2"}
    assert summary["by_split"]["clean"]["heldout"]["ndcg@5"] == 0.0
    assert summary["by_split"]["clean"]["dev"]["ratio"] == pytest.approx(0.6)
    results = {"conditions": ["clean"], "turns_per_session": 1,
               "arms": {"catalog-aware": {**arm, **summary}}}
    results["worst_dev_turns"] = S.worst_turns(results)
    worst = results["worst_dev_turns"]["turns"]
    assert [w["qid"] for w in worst] == ["q1"] and worst[0]["drop"] == pytest.approx(0.8)
    text = S.table(results)
    assert "black hoody" in text and secret not in text
    assert "catalog-aware | clean | 3 |" in text


# --------------------------------------------------------------------------------------------------------- subsets


def test_degraded_subset_is_fixed_per_voice_and_covers_both_splits() -> None:
    pool = _pool()
    a = S.degraded_subset(pool, "espeak-us-m", 50)
    assert a == S.degraded_subset(list(reversed(pool)), "espeak-us-m", 50)  # same draw, whatever the order
    assert len(a) == 50 and len({r.qid for r in a}) == 50 and set(a) <= set(pool)
    splits = [r.split for r in a]
    assert splits.count("dev") == 33 and splits.count("heldout") == 17  # in proportion (2:1)
    assert a != S.degraded_subset(pool, "espeak-gb-f", 50)
    assert a != S.degraded_subset(pool, "espeak-us-m", 50, seed=1)
    # a tiny subset still holds both splits; asking for more than there is gives everything
    assert {r.split for r in S.degraded_subset(pool, "v", 2)} == {"dev", "heldout"}
    assert {r.split for r in S.stratified_sample(_pool(100, 1), 2, "k")} == {"dev", "heldout"}
    assert len(S.degraded_subset(pool, "v", 500)) == len(pool)
    assert S.degraded_subset(pool, "v", 0) == []


def test_plan_uses_every_request_clean_and_one_subset_for_every_degraded_condition() -> None:
    pool = _pool(30, 15)
    plan = S.plan_turns(pool, ["v1", "v2"], ["clean", "noise10", "phone"], 10)
    for voice in ("v1", "v2"):
        clean = {r.qid for r, v, c in plan if v == voice and c == "clean"}
        noisy = [r.qid for r, v, c in plan if v == voice and c == "noise10"]
        phone = [r.qid for r, v, c in plan if v == voice and c == "phone"]
        assert clean == {r.qid for r in pool}
        assert noisy == phone and len(noisy) == 10
    assert len(plan) == 2 * (45 + 2 * 10)


def test_the_spoken_request_files() -> None:
    if not (S.DEV_REQUESTS.is_file() and S.HELDOUT_REQUESTS.is_file()):
        pytest.skip("spoken request sets not written yet")
    requests = S.load_requests()
    assert {r.split for r in requests} == {"dev", "heldout"}
    for r in requests:
        assert r.text.strip()
        assert r.is_product == (r.kind != "other"), r.qid  # "other" rows count for WER only
    subset = S.degraded_subset(requests, "espeak-us-m", 50)
    assert {r.split for r in subset} == {"dev", "heldout"}


def test_arms_are_a_list_and_select_by_name() -> None:
    assert [a.name for a in S.ARMS][:2] == ["baseline", "catalog-aware"]
    base, aware = S.arms_named(["baseline", "catalog-aware"])
    settings = aware.settings(Path("/tmp/x"))
    assert settings.asr_bias and settings.asr_repair
    assert not base.settings(Path("/tmp/x")).asr_bias
    with pytest.raises(ValueError, match="unknown arm"):
        S.arms_named(["nope"])


# ---------------------------------------------------------------------------------------------- reading a turn


class _FakeWS:
    def __init__(self, messages: list[Any]) -> None:
        self.messages = list(messages)

    async def recv(self) -> Any:
        if not self.messages:
            await asyncio.sleep(3600)
        message = self.messages.pop(0)
        return message if isinstance(message, bytes) else json.dumps(message)


class _FakeClient:
    """Streams nothing; the server's events are scripted."""

    def __init__(self, messages: list[Any]) -> None:
        self.ws = _FakeWS(messages)

    async def stream_audio(self, audio: np.ndarray, *, realtime: bool, result: Any, trailing_silence_ms: int) -> None:
        import time

        result.speech_end_sent = time.perf_counter()


def _reply(rid: str, products: list[str], status: str = "completed") -> list[Any]:
    return [{"type": "response.created", "response": {"id": rid}},
            {"type": "response.products", "response_id": rid, "products": [{"id": p} for p in products]},
            b"\x00\x00" * 10, {"type": "response.done", "response": {"id": rid, "status": status}}]


async def test_a_request_the_vad_cut_in_two_is_read_whole() -> None:
    events = [{"type": "input_audio_buffer.speech_started"},
              {"type": "conversation.item.input_audio_transcription.completed", "transcript": "show me"},
              *_reply("r1", ["X1"])[:1],
              {"type": "input_audio_buffer.speech_started"},
              {"type": "response.done", "response": {"id": "r1", "status": "cancelled"}},
              {"type": "conversation.item.input_audio_transcription.completed", "transcript": "black hoodies"},
              *_reply("r2", ["WH01", "WH02"])]
    turn = await S.spoken_turn(_FakeClient(events), np.zeros(1600, np.float32), timeout=5)
    assert turn.transcript == "show me black hoodies" and turn.segments == 2
    assert [p["id"] for p in turn.products] == ["WH01", "WH02"] and turn.status == "completed"
    assert turn.first_audio_ms is not None and turn.first_audio_ms >= 0


async def test_a_request_heard_as_nothing_is_an_empty_final() -> None:
    events = [{"type": "input_audio_buffer.speech_started"},
              {"type": "conversation.item.input_audio_transcription.completed", "transcript": ""}]
    turn = await S.spoken_turn(_FakeClient(events), np.zeros(1600, np.float32), timeout=5)
    assert turn.transcript == "" and turn.products == [] and turn.status is None
    silent = await S.spoken_turn(_FakeClient([]), np.zeros(1600, np.float32), timeout=5)
    assert silent.transcript == "" and silent.segments == 0 and silent.status is None  # the VAD heard nothing


# ----------------------------------------------------------------------------------------------------- a real run


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_small_real_run_through_the_server(tmp_path: Path) -> None:
    from bench.common import shared_data_dir
    from bench.voices import BENCH_VOICES, espeak_available

    if not (shared_data_dir() / "luma-dev" / "products.jsonl").is_file():
        pytest.skip("the Luma catalog (shared data) is not here")
    if not (S.DEV_REQUESTS.is_file() and S.HELDOUT_REQUESTS.is_file()):
        pytest.skip("spoken request sets not written yet")
    voice = next((v for v in BENCH_VOICES if not v.startswith("espeak") or espeak_available()), None)
    if voice is None or (voice.startswith("espeak") and shutil.which("espeak-ng") is None):
        pytest.skip("no bench voice can speak here")
    requests = S.load_requests()
    product = next(r for r in requests if r.split == "dev" and r.is_product and r.kind == "category")
    other = next(r for r in requests if r.split == "dev" and r.kind == "other")
    # the bench's own data dir: the Luma ingest, the index and the intent model are built once and reused
    results = S.run(data_dir=ROOT / ".data" / "bench-spoken", requests=[product, other], voices=[voice],
                    conditions=["clean"], degraded=0, arms=[S.ARMS[-1]], concurrency=2, context_pairs=0,
                    latency_queries=0)
    arm = results["arms"][S.ARMS[-1].name]
    assert len(arm["turns"]) == 2 and {t["qid"] for t in arm["turns"]} == {product.qid, other.qid}
    by_qid = {t["qid"]: t for t in arm["turns"]}
    assert all(t["transcript"] for t in arm["turns"]), arm["turns"]
    assert by_qid[product.qid]["products"] and by_qid[product.qid]["ndcg@5"] is not None
    assert by_qid[other.qid]["ndcg@5"] is None  # WER only
    assert arm["typed"]["requests"] == 1 and arm["typed"]["ndcg@5"] > 0
    clean = arm["conditions"]["clean"]
    assert clean["turns"] == 2 and clean["ref_words"] > 0 and clean["wer"] is not None and clean["ratio"] is not None
    assert arm["offline"]["clips"] == 2 and arm["offline"]["wer_offline"] is not None
    assert arm["offline"]["options"]["beam_size"] >= 1
    assert all(t.get("offline_transcript") is not None for t in arm["turns"])
    assert results["verdict"][S.ARMS[-1].name]
    S.table(results)
