"""Real-model speech-to-text tests on the packaged Whisper weights and the shared speech clips."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np
import pytest

from speech.audio import SAMPLE_RATE, load_audio
from speech.models import openai_whisper_checkpoint, read_ct2_model, whisper_ct2_dir
from speech.registry import create_stt
from speech.stt import STTEngine, TranscribeOptions, normalize_text
from tests.shared_data import SPEECH_DIR

pytestmark = pytest.mark.real_model

DATA_DIR = SPEECH_DIR
needs_clips = pytest.mark.skipif(not (DATA_DIR / "transcripts.tsv").is_file(), reason="speech clips not available")

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
_ONES += "seventeen eighteen nineteen"
ONES = _ONES.split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def spell(n: int) -> str:
    """Numbers as read aloud; four-digit numbers as years ("1813" -> "eighteen thirteen")."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + spell(n % 100))
    if n < 10000 and n % 100:
        return spell(n // 100) + " " + spell(n % 100)
    return spell(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + spell(n % 1000))


def words(text: str) -> list[str]:
    out: list[str] = []
    for w in normalize_text(text).split():
        out += spell(int(w)).split() if w.isdigit() else [w]
    return out


def wer(ref: str, hyp: str) -> float:
    r, h = words(ref), words(hyp)
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
    return d[len(h)] / max(1, len(r))


def test_wer_helper():
    assert wer("IN EIGHTEEN THIRTEEN", "in 1813.") == 0
    assert wer("EIGHT THE PRESS YARD", "8. The Press Yard") == 0
    assert wer("a b c d", "a x c") == 0.5


def transcripts() -> list[tuple[str, str]]:
    if not (DATA_DIR / "transcripts.tsv").is_file():
        return []
    with open(DATA_DIR / "transcripts.tsv", encoding="utf-8") as f:
        return [(row["file"], row["transcript"]) for row in csv.DictReader(f, delimiter="\t")]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("SHOPTALK_TEST_CACHE")
    return Path(env) if env else tmp_path_factory.getbasetemp() / "speech-models"


@pytest.fixture(scope="module")
def tiny_fw(model_cache: Path) -> STTEngine:
    return create_stt("faster-whisper:tiny.en", cache_dir=model_cache)


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    if not (DATA_DIR / "audio/jfk.flac").is_file():
        pytest.skip("speech clips not available")
    return load_audio(DATA_DIR / "audio/jfk.flac")


@needs_clips
def test_load_audio_stereo_44k_to_mono_16k(jfk: np.ndarray):
    assert jfk.dtype == np.float32 and jfk.ndim == 1
    assert abs(jfk.size / SAMPLE_RATE - 11.0) < 0.01


@needs_clips
def test_tiny_en_jfk(tiny_fw: STTEngine, jfk: np.ndarray):
    result = tiny_fw.transcribe(jfk)
    text = normalize_text(result.text)
    assert "my fellow americans" in text and "your country" in text
    assert result.language == "en" and not result.is_hallucination
    assert result.duration_s == pytest.approx(11.0, abs=0.01)


@needs_clips
@pytest.mark.parametrize(("file", "reference"), transcripts())
def test_tiny_en_word_error_rate(tiny_fw: STTEngine, file: str, reference: str):
    result = tiny_fw.transcribe(load_audio(DATA_DIR / file))
    assert wer(reference, result.text) < 0.3, result.text


@needs_clips
async def test_run_stt_is_async(tiny_fw: STTEngine, jfk: np.ndarray):
    result = await tiny_fw.run_stt(jfk[: 3 * SAMPLE_RATE], TranscribeOptions(beam_size=1))
    assert "fellow" in normalize_text(result.text)


@needs_clips
async def test_concurrent_calls_are_serialized(tiny_fw: STTEngine, jfk: np.ndarray):
    import asyncio

    clip = jfk[: 3 * SAMPLE_RATE]
    first, second = await asyncio.gather(tiny_fw.run_stt(clip), tiny_fw.run_stt(clip))
    assert first.text == second.text and "fellow" in normalize_text(first.text)


@needs_clips
async def test_two_workers_decode_concurrently_through_the_scheduler(model_cache: Path, jfk: np.ndarray):
    import asyncio

    from assistant.runtime.scheduling import ScheduledSTT
    from speech.stt import STTPriority

    engine = create_stt("faster-whisper:tiny.en", cache_dir=model_cache, device="cpu", cpu_threads=2, workers=2)
    assert engine.max_concurrency == 2
    stt = ScheduledSTT(engine)
    try:
        clip = jfk[: 3 * SAMPLE_RATE]
        results = await asyncio.gather(
            stt.run_stt(clip, priority=STTPriority.FINAL, key=1),
            stt.run_stt(clip, priority=STTPriority.SPECULATIVE, key=2),
            stt.run_stt(clip, priority=STTPriority.PARTIAL, key=3),
        )
        assert len({r.text for r in results}) == 1 and "fellow" in normalize_text(results[0].text)
        assert stt.stats["ran_final"] == stt.stats["ran_speculative"] == stt.stats["ran_partial"] == 1
    finally:
        stt.close()


@pytest.mark.parametrize("kind", ["silence", "noise", "quiet_noise"])
def test_no_text_from_silence_or_noise(tiny_fw: STTEngine, kind: str):
    rng = np.random.default_rng(0)
    audio = {
        "silence": np.zeros(3 * SAMPLE_RATE, np.float32),
        "noise": (rng.uniform(-1, 1, 3 * SAMPLE_RATE) * 0.1).astype(np.float32),
        "quiet_noise": (rng.standard_normal(3 * SAMPLE_RATE) * 0.01).astype(np.float32),
    }[kind]
    result = tiny_fw.transcribe(audio)
    assert result.text == "" and result.is_hallucination


def test_ct2_reader_tiny_en():
    spec, variables = read_ct2_model(whisper_ct2_dir("tiny.en", Path("/nonexistent")) / "model.bin")
    assert spec == "WhisperSpec"
    assert variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]  # alias


def test_conversion_is_lossless(model_cache: Path):
    import torch

    path = openai_whisper_checkpoint("tiny.en", model_cache)
    assert openai_whisper_checkpoint("tiny.en", model_cache) == path  # cached
    checkpoint = torch.load(path, weights_only=True)
    _, variables = read_ct2_model(whisper_ct2_dir("tiny.en", model_cache) / "model.bin")
    sd = checkpoint["model_state_dict"]
    fused = variables["decoder/layer_2/self_attention/linear_0/weight"]
    assert torch.equal(sd["decoder.blocks.2.attn.key.weight"], torch.from_numpy(fused[384:768]))
    assert torch.equal(sd["encoder.ln_post.weight"], torch.from_numpy(variables["encoder/layer_norm/gamma"]))
    assert checkpoint["dims"]["n_vocab"] == 51864 and checkpoint["dims"]["n_text_layer"] == 4


@needs_clips
def test_openai_whisper_matches_faster_whisper(tiny_fw: STTEngine, jfk: np.ndarray, model_cache: Path):
    engine = create_stt("openai-whisper:tiny.en", cache_dir=model_cache, device="cpu")
    ours = engine.transcribe(jfk)
    reference = tiny_fw.transcribe(jfk)
    assert wer(reference.text, ours.text) < 0.1, (reference.text, ours.text)
    assert abs(ours.avg_logprob - reference.avg_logprob) < 0.1  # int8 vs fp32: close, not identical


@needs_clips
def test_base_multilingual(jfk: np.ndarray, model_cache: Path):
    engine = create_stt("faster-whisper:base", cache_dir=model_cache)
    assert (whisper_ct2_dir("base", model_cache) / "model.bin").stat().st_size > 100_000_000
    result = engine.transcribe(jfk)
    assert "my fellow americans" in normalize_text(result.text)
    detected = engine.transcribe(jfk, TranscribeOptions(language=None))
    assert detected.language == "en"


@needs_clips
def test_timing_3s_clip(tiny_fw: STTEngine, jfk: np.ndarray):
    clip = jfk[: 3 * SAMPLE_RATE]
    tiny_fw.transcribe(clip)
    start = time.perf_counter()
    tiny_fw.transcribe(clip, TranscribeOptions(beam_size=1))
    assert time.perf_counter() - start < 5.0


@pytest.mark.real_model
def test_short_window_matches_full_window(tiny_fw: STTEngine, jfk: np.ndarray) -> None:
    """Encoding only the utterance (audio_ctx-style) gives the same words as Whisper's 30 s window."""
    short = tiny_fw.transcribe(jfk, TranscribeOptions(short_window=True)).text
    full = tiny_fw.transcribe(jfk, TranscribeOptions(short_window=False)).text
    assert normalize_text(short) == normalize_text(full)
