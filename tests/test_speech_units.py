"""Fast unit tests for speech/: audio conversion, resampling, errors, registries, sentence splitting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speech.audio import (
    SAMPLE_RATE,
    SUPPORTED_INPUT_RATES,
    StreamResampler,
    float32_to_pcm16,
    pcm16_to_float32,
    resample,
)
from speech.errors import (
    AudioFormatError,
    ModelNotFoundError,
    SpeechError,
    SpeechToTextError,
    TextToSpeechError,
)
from speech.registry import available_stt_models, available_tts, create_stt, create_tts
from speech.stt import (
    SegmentStats,
    TranscribeOptions,
    build_transcription,
    collapse_repeat,
    hallucination_reason,
    normalize_text,
)
from speech.tts import SentenceBuffer, normalize_for_speech, split_sentences


def sine(freq: float, sr: int, seconds: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# -- PCM ---------------------------------------------------------------------------------------------------------


def test_pcm16_round_trip():
    audio = np.array([0.0, 0.5, -0.5, 0.999, -1.0], np.float32)
    data = float32_to_pcm16(audio)
    assert len(data) == 2 * audio.size
    back = pcm16_to_float32(data)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, audio, atol=2 / 32767)  # one quantization step


def test_float32_to_pcm16_clips():
    data = float32_to_pcm16(np.array([2.0, -3.0], np.float32))
    assert np.frombuffer(data, "<i2").tolist() == [32767, -32767]


def test_pcm16_odd_byte_count_raises():
    with pytest.raises(AudioFormatError) as info:
        pcm16_to_float32(b"\x00\x01\x02")
    assert info.value.code == "unsupported_audio_format"
    assert isinstance(info.value, ValueError)


def test_error_tree_codes():
    assert SpeechToTextError("x").code == "stt_failed"
    assert TextToSpeechError("x").code == "tts_failed"
    err = ModelNotFoundError("nope", ["a", "b"])
    assert isinstance(err, KeyError) and isinstance(err, SpeechError)
    assert err.code == "unknown_model" and "a, b" in str(err)


# -- resampling --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orig_sr", [48000, 8000, 44100, 24000])
def test_resample_lengths(orig_sr: int):
    assert orig_sr in SUPPORTED_INPUT_RATES
    audio = sine(440, orig_sr, 1.0)
    out = resample(audio, orig_sr, SAMPLE_RATE)
    assert out.dtype == np.float32
    assert abs(out.size - SAMPLE_RATE) <= 2
    # A 440 Hz tone stays a 440 Hz tone: the spectrum peaks at bin 440 of a 1 s window.
    spectrum = np.abs(np.fft.rfft(out[:SAMPLE_RATE]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1


def test_resample_same_rate_is_identity():
    audio = sine(100, SAMPLE_RATE, 0.1)
    np.testing.assert_array_equal(resample(audio, SAMPLE_RATE, SAMPLE_RATE), audio)


@pytest.mark.parametrize("orig_sr", [48000, 8000])
def test_stream_resampler_matches_one_shot(orig_sr: int):
    audio = sine(300, orig_sr, 1.0)
    rs = StreamResampler(orig_sr, SAMPLE_RATE)
    chunk = orig_sr // 50  # 20 ms chunks, like a websocket stream
    parts = [rs.process(audio[i : i + chunk]) for i in range(0, audio.size, chunk)]
    streamed = np.concatenate([*parts, rs.flush()])
    assert abs(streamed.size - SAMPLE_RATE) <= 2
    whole = resample(audio, orig_sr, SAMPLE_RATE)
    n = min(streamed.size, whole.size)
    # Continuity: no clicks at chunk edges, so the streamed signal equals the one-shot one (away from the ends).
    np.testing.assert_allclose(streamed[200 : n - 200], whole[200 : n - 200], atol=1e-3)
    assert float(np.max(np.abs(np.diff(streamed[200 : n - 200])))) < 0.1


def test_stream_resampler_reusable_after_flush():
    rs = StreamResampler(48000, SAMPLE_RATE)
    first = np.concatenate([rs.process(sine(200, 48000, 0.5)), rs.flush()])
    second = np.concatenate([rs.process(sine(200, 48000, 0.5)), rs.flush()])
    assert first.size == second.size


# -- registries --------------------------------------------------------------------------------------------------


def test_available_stt_models():
    names = available_stt_models()
    assert {"faster-whisper:tiny.en", "faster-whisper:base", "openai-whisper:tiny.en", "openai-whisper:base"} <= set(
        names
    )


def test_create_stt_unknown_name_lists_valid(tmp_path: Path):
    with pytest.raises(ModelNotFoundError) as info:
        create_stt("whisper:huge", cache_dir=tmp_path)
    assert info.value.code == "unknown_model"
    assert "faster-whisper:tiny.en" in str(info.value)


def test_create_tts_unknown_name_lists_valid():
    assert "hibari" in available_tts()
    with pytest.raises(ModelNotFoundError) as info:
        create_tts("espeak")
    assert "hibari" in str(info.value) and "coqui:" in str(info.value)


def test_transcribe_options_replace():
    import dataclasses

    opts = dataclasses.replace(TranscribeOptions(), beam_size=5)
    assert opts.beam_size == 5 and opts.language == "en"
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.beam_size = 1  # type: ignore[misc]


# -- hallucination guard -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "logprob", "no_speech", "expected"),
    [
        ("", -0.1, 0.01, "empty"),
        (" . ", -0.1, 0.01, "empty"),
        ("[BLANK_AUDIO]", -0.3, 0.1, "empty"),
        ("Show me red shoes.", -1.5, 0.9, "no_speech"),
        ("Thank you.", -0.8, 0.1, "stock_phrase"),
        ("you", -0.3, 0.5, "stock_phrase"),
        ("buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy", -0.2, 0.01, "repetition"),
        ("Thank you.", -0.1, 0.02, None),  # confidently said: a real "thank you"
        ("Show me red running shoes under fifty dollars.", -0.3, 0.05, None),
    ],
)
def test_hallucination_reason(text: str, logprob: float, no_speech: float, expected: str | None):
    assert hallucination_reason(text, logprob, no_speech) == expected


def test_build_transcription_guards_and_merges():
    good = build_transcription(
        [SegmentStats(" Hello there.", -0.2, 0.05, 4), SegmentStats(" Red shoes.", -0.4, 0.1, 4)], "en", 3.0
    )
    assert good.text == "Hello there. Red shoes." and not good.is_hallucination
    assert good.avg_logprob == pytest.approx(-0.3) and good.no_speech_prob == pytest.approx(0.1)
    bad = build_transcription([SegmentStats(" Thanks for watching!", -1.2, 0.7, 5)], "en", 3.0)
    assert bad.text == "" and bad.is_hallucination
    none = build_transcription([], "en", 1.0)
    assert none.text == "" and none.is_hallucination


def test_normalize_text():
    assert normalize_text("And so, my fellow Americans!") == "and so my fellow americans"


# -- sentences ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How are you?", ["Hello there.", "How are you?"]),
        ("It costs $49.99. Want it?", ["It costs $49.99.", "Want it?"]),
        ("Mr. Smith likes it. So do I!", ["Mr. Smith likes it.", "So do I!"]),
        ("Try a color, e.g. Red or blue. Done.", ["Try a color, e.g. Red or blue.", "Done."]),
        ("Wait... what? Yes!", ["Wait... what?", "Yes!"]),
        ("First line\nSecond line", ["First line", "Second line"]),
        ("No end punctuation", ["No end punctuation"]),
        ("  ", []),
        ('He said "Buy it." Then left.', ['He said "Buy it."', "Then left."]),
    ],
)
def test_split_sentences(text: str, expected: list[str]):
    assert split_sentences(text) == expected


def test_long_clause_splits_at_comma():
    clause = "this hoodie is soft and warm and comes in black grey and navy in every size from small to xxl"
    text = f"{clause}, {clause}, {clause}."
    parts = split_sentences(text)
    assert len(parts) >= 2
    assert all(len(p) <= 190 for p in parts)
    assert parts[0].endswith(",")
    assert " ".join(parts) == text


def test_sentence_buffer_streaming():
    reply = "Sure! I found three black hoodies. The first costs $49.99, e.g. less than the others. Want it?"
    buffer = SentenceBuffer()
    emitted: list[tuple[int, str]] = []
    for i in range(0, len(reply), 3):  # token-sized deltas
        emitted += [(i, s) for s in buffer.feed(reply[i : i + 3])]
    rest = buffer.flush()
    sentences = [s for _, s in emitted] + rest
    assert sentences == [
        "Sure!",
        "I found three black hoodies.",
        "The first costs $49.99, e.g. less than the others.",
        "Want it?",
    ]
    # Each sentence comes out as soon as the next one starts, not at the end.
    assert emitted[0][0] < 10
    assert buffer.flush() == []


def test_normalize_for_speech():
    assert normalize_for_speech("**Great** pick, e.g. the `Nike` one & more") == (
        "Great pick, for example the Nike one and more"
    )
    assert normalize_for_speech("Only $49.99!") == "Only $49.99!"


@pytest.mark.parametrize(("text", "expected"), [
    ("Do you have any purple tank tops in a small? Do you have any purple tank tops in a small?",
     "Do you have any purple tank tops in a small?"),
    ("Gray sweatshirt size, Large, Gray sweatshirt size, Large,", "Gray sweatshirt size, Large"),
    ("Red jacket. Red jacket. Red", "Red jacket."),
    ("one two one two", "one two one two"),  # may be an order number
    ("very very warm", "very very warm"),
    ("order one two one two", "order one two one two"),
    ("show me hoodies", "show me hoodies"),
    ("something comfy comfy comfy comfy comfy comfy", "something comfy"),
    ("one one one one", "one one one one"),
])
def test_collapse_repeat(text: str, expected: str) -> None:
    assert collapse_repeat(text) == expected


def test_a_looped_decode_is_one_copy_in_the_transcription() -> None:
    loop = "Black hoodies, black hoodies, black hoodies,"
    result = build_transcription([SegmentStats(loop, -0.3, 0.01, 12)], "en", 2.0)
    assert result.text == "Black hoodies" and not result.is_hallucination
