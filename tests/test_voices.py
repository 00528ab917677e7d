"""The benchmark's test voices and acoustic conditions (bench/voices.py)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

from bench import voices as V

SENTENCE = "Show me black hoodies under fifty dollars."


def require_espeak() -> None:
    # CI sets SHOPTALK_REQUIRE_ESPEAK=1 (`make test` installs espeak-ng): there a missing one is a failure.
    if V.espeak_available():
        return
    why = "espeak-ng is not installed (apt-get install espeak-ng): the eSpeak test voices cannot speak"
    if os.environ.get("SHOPTALK_REQUIRE_ESPEAK") == "1":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


def require_engine(voice: V.Voice) -> None:
    if voice.engine == "espeak":
        require_espeak()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """SENTENCE in every voice whose engine is installed."""
    cache = tmp_path_factory.mktemp("voices")
    return {name: V.synthesize(SENTENCE, voice, cache_dir=cache)
            for name, voice in V.VOICES.items() if voice.engine != "espeak" or V.espeak_available()}


@pytest.fixture(scope="module")
def clip(clips: dict[str, np.ndarray]) -> np.ndarray:
    """One clean clip to degrade: hibari (always installed), so the condition tests never need espeak-ng."""
    return clips["hibari-fast-low"]


def median_f0(audio: np.ndarray, sr: int = V.SAMPLE_RATE) -> float:
    """Median pitch (Hz) of the loud 40 ms frames, from the autocorrelation peak between 60 and 400 Hz."""
    frame, hop = 640, 320
    starts = range(0, audio.size - frame, hop)
    energy = np.array([np.mean(audio[i : i + frame] ** 2) for i in starts])
    pitches = []
    for i, e in zip(starts, energy, strict=True):
        if e < 0.1 * energy.max():
            continue
        x = audio[i : i + frame] - audio[i : i + frame].mean()
        ac = np.correlate(x, x, "full")[frame - 1 :]
        lo, hi = sr // 400, sr // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            pitches.append(sr / lag)
    return float(np.median(pitches))


def ltas_db(audio: np.ndarray) -> np.ndarray:
    """Long-term average spectrum in 18 log-spaced bands, 100 Hz - 7 kHz, level removed."""
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / V.SAMPLE_RATE)
    edges = np.geomspace(100, 7000, 19)
    bands = np.array([10 * np.log10(spectrum[(freqs >= lo) & (freqs < hi)].mean() + 1e-20)
                      for lo, hi in itertools.pairwise(edges)])
    return bands - bands.mean()


def band_share_db(audio: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / V.SAMPLE_RATE)
    return float(10 * np.log10(spectrum[(freqs >= lo) & (freqs < hi)].sum() / spectrum.sum() + 1e-30))


def last_loud_s(audio: np.ndarray, top_db: float = 40.0) -> float:
    """End (s) of the last 10 ms frame within ``top_db`` of the loudest."""
    frames = audio[: audio.size // 160 * 160].reshape(-1, 160)
    energy = (frames.astype(np.float64) ** 2).mean(axis=1)
    return (int(np.flatnonzero(energy >= energy.max() * 10 ** (-top_db / 10))[-1]) + 1) * 0.01


# ----------------------------------------------------------------------------------------------- voices


def test_registry() -> None:
    assert len(V.VOICES) >= 6
    assert {v.engine for v in V.VOICES.values()} == {"espeak", "hibari"}
    assert all(name == v.name for name, v in V.VOICES.items())
    assert len(V.BENCH_VOICES) == 4 and set(V.BENCH_VOICES) <= set(V.VOICES)
    assert sorted(V.VOICES[n].engine for n in V.BENCH_VOICES) == ["espeak", "espeak", "hibari", "hibari"]
    # None of them is the voice the product replies with (hibari "heart", speed 1.0, no pitch shift).
    assert not any(v.is_product_voice() for v in V.VOICES.values())
    assert V.Voice("x", "hibari", {"voice": "heart", "speed": 1.0, "semitones": 0.0}).is_product_voice()
    voice = V.VOICES["espeak-us-m"]
    hash(voice)  # usable as a key
    with pytest.raises(TypeError):
        voice.params["rate"] = 1  # type: ignore[index]
    with pytest.raises(ValueError, match="espeak-us-m"):
        V.synthesize("hello", "no-such-voice")


@pytest.mark.parametrize("name", list(V.VOICES))
def test_every_voice_speaks(name: str, clips: dict[str, np.ndarray]) -> None:
    require_engine(V.VOICES[name])
    audio = clips[name]
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.3 < audio.size / V.SAMPLE_RATE < 4.5  # eight words
    assert abs(float(np.abs(audio).max()) - 10 ** (-3 / 20)) < 0.01  # peak at -3 dBFS
    lead = int(V.LEAD_SILENCE_S * V.SAMPLE_RATE)
    assert not np.any(audio[:lead]) and np.sqrt(np.mean(audio[lead:] ** 2)) > 0.03
    assert np.abs(audio[lead : lead + 800]).max() > 1e-3  # speech starts right after the 150 ms lead


def test_voices_differ(clips: dict[str, np.ndarray]) -> None:
    if len(clips) < len(V.VOICES):
        require_espeak()
    spectra = {name: ltas_db(audio) for name, audio in clips.items()}
    for a, b in itertools.combinations(clips, 2):
        spectral = float(np.sqrt(np.mean((spectra[a] - spectra[b]) ** 2)))
        tempo = abs(float(np.log(clips[a].size / clips[b].size)))
        assert spectral > 2.0 or tempo > np.log(1.1), (a, b, spectral, tempo)


def test_pitches(clips: dict[str, np.ndarray]) -> None:
    """Female variants really are female (espeak-ng silently ignores a variant it cannot apply), and the
    hibari variants sit about 3 semitones either side of the product's own voice."""
    product_voice = V.Voice("product", "hibari", {"voice": "heart", "speed": 1.0, "seed": 0})
    product = V.synthesize(SENTENCE, product_voice)
    f0 = median_f0(product)
    assert 170 < f0 < 240, f0
    assert median_f0(clips["hibari-fast-low"]) < f0 * 2 ** (-1.5 / 12)
    assert median_f0(clips["hibari-slow-high"]) > f0 * 2 ** (1.5 / 12)
    assert clips["hibari-fast-low"].size < product.size < clips["hibari-slow-high"].size
    require_espeak()
    for name in ("espeak-gb-f", "espeak-carib-f"):
        assert median_f0(clips[name]) > 170, name
    for name in ("espeak-us-m", "espeak-us-slow", "espeak-scot"):
        assert median_f0(clips[name]) < 140, name


def test_time_stretch_keeps_pitch() -> None:
    t = np.arange(V.SAMPLE_RATE) / V.SAMPLE_RATE
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    for rate in (0.8, 1.25):
        out = V.time_stretch(tone, rate)
        assert out.size == round(tone.size / rate)
        assert abs(median_f0(out) - 200) < 5
        level = float(np.sqrt(np.mean(out[800:-800] ** 2)))
        assert abs(level - np.sqrt(0.5)) < 0.05  # no dips between frames


@pytest.mark.parametrize("name", ["espeak-us-m", "hibari-slow-high"])
def test_cache(name: str, tmp_path: Path) -> None:
    require_engine(V.VOICES[name])
    first = V.synthesize("Do you have this in blue?", name, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and name in files[0].name
    np.testing.assert_array_equal(np.load(files[0]), first)
    again = V.synthesize("Do you have this in blue?", name, cache_dir=tmp_path)
    np.testing.assert_array_equal(again, first)
    assert again.dtype == np.float32
    # Read back from disk, not made again: a doctored cache file is what comes back.
    np.save(files[0], first * 0.5)
    doctored = V.synthesize("Do you have this in blue?", name, cache_dir=tmp_path)
    np.testing.assert_array_equal(doctored, first * 0.5)
    # Other text, another file; and the uncached path gives the same audio.
    V.synthesize("Do you have this in red?", name, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2
    np.testing.assert_array_equal(V.synthesize("Do you have this in blue?", name), first)


# ----------------------------------------------------------------------------------------------- conditions


def test_clean_is_a_copy(clip: np.ndarray) -> None:
    out = V.degrade(clip, "clean", seed=5)
    np.testing.assert_array_equal(out, clip)
    assert out is not clip and out.dtype == np.float32


def test_noise10_snr(clip: np.ndarray, tmp_path: Path) -> None:
    for seed in range(3):
        noisy = V.degrade(clip, "noise10", seed=seed, cache_dir=tmp_path)
        assert noisy.shape == clip.shape and noisy.dtype == np.float32
        assert abs(V.snr_db(clip, noisy) - 10.0) < 1.0
        assert np.abs(noisy).max() <= 1.0
        lead = int(V.LEAD_SILENCE_S * V.SAMPLE_RATE)
        assert np.sqrt(np.mean(noisy[:lead] ** 2)) > 0.005  # the room is noisy before the first word too
    assert list(tmp_path.glob("babble-*.npy"))  # the background talkers were made once and cached


def test_noise_is_speech_like(clip: np.ndarray) -> None:
    """The babble makes the noise fluctuate as talkers do; stationary pink noise alone would not."""
    noise = V.degrade(clip, "noise10", seed=1).astype(np.float64) - clip
    pink = V.pink_noise(noise.size, np.random.default_rng(0))
    if not V._babble_bank(None):
        pytest.skip("no TTS engine for the babble")

    def fluctuation(x: np.ndarray) -> float:
        energy = (x[: x.size // 800 * 800].reshape(-1, 800) ** 2).mean(axis=1)  # 50 ms frames
        return float(np.std(10 * np.log10(energy + 1e-12)))

    assert fluctuation(noise) > fluctuation(pink) + 0.5


def test_snr_helper() -> None:
    rng = np.random.default_rng(0)
    clean = rng.standard_normal(16000)
    noise = rng.standard_normal(16000) * 10 ** (-20 / 20)
    assert abs(V.snr_db(clean, clean + noise) - 20.0) < 0.3
    assert abs(V.snr_db(clean, 0.5 * (clean + noise)) - 20.0) < 0.3  # independent of the level
    assert V.snr_db(clean, clean) == float("inf")


def test_phone_band(clip: np.ndarray) -> None:
    phone = V.degrade(clip, "phone", seed=0)
    assert phone.shape == clip.shape and phone.dtype == np.float32
    assert band_share_db(phone, 4000, 8000) < band_share_db(clip, 4000, 8000) - 40
    assert band_share_db(phone, 4000, 8000) < -60
    assert band_share_db(phone, 0, 200) < band_share_db(clip, 0, 200) - 20
    assert band_share_db(phone, 300, 3400) > -0.5  # nearly all of it inside the telephone band
    assert abs(float(np.abs(phone).max()) - 10 ** (-3 / 20)) < 0.01


def test_mu_law() -> None:
    x = np.linspace(-1, 1, 10001)
    y = V.mu_law_roundtrip(x)
    assert len(np.unique(np.round(y, 9))) <= 256
    assert np.max(np.abs(y - x)) < 0.025  # coarse steps near full scale, fine ones near 0
    assert abs(V.mu_law_roundtrip(np.array([0.001]))[0] - 0.001) < 2e-4


def test_reverb_decays_longer(clip: np.ndarray) -> None:
    for seed in range(3):
        wet = V.degrade(clip, "reverb", seed=seed)
        assert wet.dtype == np.float32
        assert clip.size < wet.size <= clip.size + int(0.3 * V.SAMPLE_RATE)
        # The room keeps ringing after the last word: 60 dB down from the peak comes >= 80 ms later.
        assert last_loud_s(wet, 60) > last_loud_s(clip, 60) + 0.08
        assert abs(float(np.abs(wet).max()) - 10 ** (-3 / 20)) < 0.01
        _, rt60 = V.room_impulse_response(np.random.default_rng(seed))
        assert 0.3 <= rt60 <= 0.7


def test_room_impulse_response_rt60() -> None:
    rir, rt60 = V.room_impulse_response(np.random.default_rng(4), rt60=0.5)
    assert rt60 == 0.5 and rir[0] == 1.0
    remaining = np.cumsum((rir**2)[::-1])[::-1]  # Schroeder's energy decay curve
    edc = 10 * np.log10(remaining / remaining[0])
    t5, t25 = np.argmax(edc < -5) / V.SAMPLE_RATE, np.argmax(edc < -25) / V.SAMPLE_RATE
    assert 0.4 < 3 * (t25 - t5) < 0.6  # T20 extrapolated to 60 dB


@pytest.mark.parametrize("condition", ["noise10", "reverb", "phone"])
def test_degrade_is_deterministic(condition: str, clip: np.ndarray) -> None:
    one = V.degrade(clip, condition, seed=3)
    np.testing.assert_array_equal(one, V.degrade(clip, condition, seed=3))
    other = V.degrade(clip, condition, seed=4)
    assert one.shape != other.shape or not np.allclose(one, other, atol=1e-4)
    assert np.all(np.isfinite(one))


def test_unknown_condition(clip: np.ndarray) -> None:
    with pytest.raises(ValueError, match="clean, noise10, reverb, phone"):
        V.degrade(clip, "underwater")


def test_speak(clip: np.ndarray) -> None:
    np.testing.assert_array_equal(V.speak(SENTENCE, "hibari-fast-low"), clip)
    np.testing.assert_array_equal(V.speak(SENTENCE, "hibari-fast-low", "phone", seed=2),
                                  V.degrade(clip, "phone", seed=2))


# ----------------------------------------------------------------------------------------------- real model


@pytest.mark.real_model
def test_whisper_hears_an_espeak_voice(tmp_path_factory: pytest.TempPathFactory) -> None:
    require_espeak()
    from speech.registry import create_stt

    # The speech tests' model folder, so tiny.en is prepared once per run.
    env = os.environ.get("SHOPTALK_TEST_CACHE")
    cache = Path(env) if env else tmp_path_factory.getbasetemp() / "speech-models"
    stt = create_stt("faster-whisper:tiny.en", cache_dir=cache, device="cpu")
    result = stt.transcribe(V.synthesize("show me black hoodies", "espeak-us-m"))
    assert "black" in result.text.lower(), result.text
