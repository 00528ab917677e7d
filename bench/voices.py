"""Test voices and acoustic conditions for speech-recognition robustness benchmarks.

The product replies with hibari's packaged "heart" voice at speed 1.0; a benchmark that only ever speaks
requests in that voice measures nothing about real callers. This module speaks test requests with *other*
voices (several eSpeak NG accents and variants, and hibari shifted in speed and pitch) and degrades them as
real rooms and phone lines do:

* ``clean``: the synthetic clip as is.
* ``noise10``: pink noise mixed with a babble of unrelated synthetic talkers, at 10 dB SNR.
* ``reverb``: convolved with a synthetic room impulse response (RT60 0.3-0.7 s).
* ``phone``: a narrow-band telephone line (8 kHz, 300-3400 Hz, 8-bit mu-law, a little line hiss).

Example:
    >>> audio = speak("show me black hoodies", "espeak-gb-f", "reverb", seed=3, cache_dir=Path("voices"))
    >>> audio.dtype, audio.ndim
    (dtype('float32'), 1)

All audio is float32 mono at :data:`SAMPLE_RATE`. Everything is deterministic: synthesis uses fixed engine
seeds and every random draw in :func:`degrade` comes from its ``seed``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import wave
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import soxr
from scipy import signal

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
VERSION = "1"  # part of every cache key: bump it when synthesis or post-processing changes
PEAK_DBFS = -3.0
LEAD_SILENCE_S = 0.15
TRIM_TOP_DB = 40.0  # trimming keeps everything within this many dB of the loudest 10 ms frame
ENGINES = ("espeak", "hibari")
CONDITIONS: tuple[str, ...] = ("clean", "noise10", "reverb", "phone")

_PEAK = float(10.0 ** (PEAK_DBFS / 20.0))
_FRAME = SAMPLE_RATE // 100  # 10 ms
_ACTIVE_TOP_DB = 35.0  # frames within this many dB of the loudest count as active speech


class VoiceUnavailableError(RuntimeError):
    """The engine behind a voice is not installed (eSpeak NG binary or the hibari package)."""


@dataclass(frozen=True)
class Voice:
    """A named way of speaking text.

    Attributes:
        name: Registry name, e.g. ``"espeak-gb-f"``.
        engine: ``"espeak"`` or ``"hibari"``.
        params: Engine settings (read-only). eSpeak NG: ``voice`` (``-v``, e.g. ``"en-us+m3"``), ``rate``
            (``-s``, words per minute), ``pitch`` (``-p``, 0-99). hibari: ``voice`` (packaged ``"heart"``),
            ``speed`` (final speaking rate, 1.0 natural), ``semitones`` (pitch shift) and ``seed``.
    """

    name: str
    engine: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; valid: {', '.join(ENGINES)}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def is_product_voice(self) -> bool:
        """Whether this is the voice the product replies with (hibari "heart", speed 1.0, no pitch shift)."""
        p = self.params
        return (self.engine == "hibari" and p.get("voice", "heart") == "heart"
                and float(p.get("speed", 1.0)) == 1.0 and float(p.get("semitones", 0.0)) == 0.0)


def _espeak(name: str, voice: str, rate: int, pitch: int) -> Voice:
    return Voice(name, "espeak", {"voice": voice, "rate": rate, "pitch": pitch})


def _hibari(name: str, speed: float, semitones: float, seed: int = 1) -> Voice:
    return Voice(name, "hibari", {"voice": "heart", "speed": speed, "semitones": semitones, "seed": seed})


VOICES: dict[str, Voice] = {
    v.name: v
    for v in (
        _espeak("espeak-us-m", "en-us", 165, 45),
        _espeak("espeak-gb-f", "en+f3", 160, 65),  # "en" is British; "en-gb+f3" ignores the +f3
        _espeak("espeak-us-slow", "en-us+m3", 125, 35),
        _espeak("espeak-scot", "en-gb-scotland+m7", 185, 30),
        _espeak("espeak-carib-f", "en-029+f4", 150, 70),
        _hibari("hibari-fast-low", 1.15, -3.0),
        _hibari("hibari-slow-high", 0.85, 3.0),
    )
}
BENCH_VOICES: tuple[str, ...] = ("espeak-us-m", "espeak-gb-f", "hibari-fast-low", "hibari-slow-high")

# The background talkers of "noise10": voices and sentences that no benchmark request uses.
_BABBLE_VOICES = (
    _espeak("babble-us-m2", "en-us+m2", 175, 40),
    _espeak("babble-gb-f2", "en+f2", 165, 60),
    _espeak("babble-rp-m4", "en-gb-x-rp+m4", 155, 50),
    _hibari("babble-hibari", 1.05, 1.5, seed=7),
)
_BABBLE_SENTENCES = (
    "The weather was lovely by the lake this morning.",
    "Did you remember to call your sister about dinner?",
    "The train to the city leaves at half past nine.",
    "I think the meeting got moved to next Thursday.",
    "We planted tomatoes and beans in the garden last spring.",
    "Could you pass me the newspaper on the table?",
    "My neighbour's dog barked all night long again.",
    "They are painting the old bridge near the station.",
)
_BABBLE_TALKERS = 4
_BABBLE_SHARE = 0.6  # of the noise power; pink noise has the rest


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` program is on ``PATH``."""
    return shutil.which("espeak-ng") is not None


def get_voice(voice: str | Voice) -> Voice:
    """Look a voice up by name (a :class:`Voice` is returned as is).

    Raises:
        ValueError: If the name is not in :data:`VOICES`; the message lists the valid ones.
    """
    if isinstance(voice, Voice):
        return voice
    try:
        return VOICES[voice]
    except KeyError:
        raise ValueError(f"unknown voice {voice!r}; valid: {', '.join(VOICES)}") from None


# ----------------------------------------------------------------------------------------------- synthesis


@functools.cache
def _engine_version(engine: str) -> str:
    """The installed engine's version, so a cache never outlives an engine upgrade."""
    if engine == "espeak":
        exe = shutil.which("espeak-ng")
        if exe is None:
            return "missing"
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
        return out.split("Data at")[0].strip()
    try:
        return importlib.metadata.version("hibari-tts")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _cache_key(voice: Voice, text: str) -> str:
    payload = {"version": VERSION, "engine": voice.engine, "engine_version": _engine_version(voice.engine),
               "params": dict(voice.params), "text": text, "rate": SAMPLE_RATE}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = pcm.astype(np.float32) / 32768.0
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    return audio, rate


def _espeak_raw(text: str, params: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise VoiceUnavailableError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory(prefix="shoptalk-espeak-") as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = [exe, "-v", str(params["voice"]), "-s", str(int(params["rate"])),
               "-p", str(int(params["pitch"])), "-w", str(wav), "--", text]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"espeak-ng failed ({done.returncode}): {done.stderr.strip()[:200]}")
        return _read_wav(wav)


_hibari_lock = threading.Lock()


@functools.cache
def _hibari_engine(voice: str) -> Any:
    """The project's hibari engine for ``voice``, loaded once (speed and seed are set per call)."""
    from speech.errors import TextToSpeechError
    from speech.hibari_tts import HibariTTS

    try:
        return HibariTTS(voice)
    except TextToSpeechError as err:
        raise VoiceUnavailableError(str(err)) from err


def time_stretch(audio: np.ndarray, rate: float, *, frame: int = 640, tolerance: int = 160) -> np.ndarray:
    """Change the duration of speech by ``1 / rate`` without changing its pitch (WSOLA).

    Waveform-similarity overlap-add: 40 ms Hann frames are laid down every 20 ms of output, each taken from
    near where the time scale puts it, shifted by up to ``tolerance`` samples to line up with the natural
    continuation of the previous frame. Unlike a phase vocoder (``librosa.effects.time_stretch``) it leaves
    speech free of "phasiness", which would otherwise test the recogniser on artefacts rather than on a voice.

    Args:
        audio: Mono audio.
        rate: Above 1 shortens (speeds up), below 1 lengthens.
        frame: Frame length in samples (even).
        tolerance: Largest shift, in samples, when searching for the best-matching frame.

    Returns:
        Float32 audio of ``round(len(audio) / rate)`` samples.
    """
    if rate <= 0.0:
        raise ValueError(f"rate must be positive, got {rate}")
    x = np.asarray(audio, np.float64)
    hop = frame // 2
    n_out = int(round(x.size / rate))
    if x.size == 0 or n_out == 0:
        return np.zeros(n_out, np.float32)
    window = np.hanning(frame + 1)[:frame]  # periodic: overlapping by half, the windows sum to 1
    pad = np.concatenate([np.zeros(tolerance), x, np.zeros(2 * frame + 2 * tolerance + int(hop * rate) + 2)])
    out = np.zeros(n_out + frame)
    prev = 0  # input position of the frame laid down last
    for k in range(-(-n_out // hop)):
        ideal = int(round(k * hop * rate))
        pos = ideal
        if k > 0:
            target = pad[tolerance + prev + hop : tolerance + prev + hop + frame]
            region = pad[ideal : ideal + frame + 2 * tolerance]  # input positions ideal - tolerance ..
            pos = ideal - tolerance + int(np.argmax(np.correlate(region, target, mode="valid")))
        out[k * hop : k * hop + frame] += window * pad[tolerance + pos : tolerance + pos + frame]
        prev = pos
    return out[:n_out].astype(np.float32)


def _hibari_16k(text: str, params: Mapping[str, Any]) -> np.ndarray:
    """hibari at ``speed`` with the pitch moved ``semitones``, at 16 kHz.

    hibari speaks at ``speed`` itself (its prosody follows the rate, so the pitch is shifted from that of the
    same voice at the same speed). The shift is a change of playback rate, as on a tape played faster or
    slower: formants move with the pitch, as with a shorter or longer vocal tract, i.e. another speaker. WSOLA
    (:func:`time_stretch`) then restores the duration.
    """
    factor = float(2.0 ** (float(params.get("semitones", 0.0)) / 12.0))
    with _hibari_lock:  # one engine serves every speed and seed: set both and speak without a gap
        engine = _hibari_engine(str(params.get("voice", "heart")))
        engine.speed, engine.seed = float(params.get("speed", 1.0)), int(params.get("seed", 0))
        audio = engine.synthesize(text)
    if audio.size == 0:
        return audio
    # Read as if sampled at rate*factor and resampled to 16 kHz: pitch x factor, duration / factor.
    audio = np.asarray(soxr.resample(audio, engine.sample_rate * factor, SAMPLE_RATE, quality="HQ"),
                       np.float32)
    return audio if factor == 1.0 else time_stretch(audio, 1.0 / factor)


def _frame_energy(audio: np.ndarray, frame: int = _FRAME) -> np.ndarray:
    """Mean square of consecutive frames (the last partial frame included)."""
    n = -(-audio.size // frame) * frame
    padded = np.zeros(n, np.float64)
    padded[: audio.size] = audio
    counts = np.full(n // frame, frame, np.float64)
    if audio.size % frame:
        counts[-1] = audio.size % frame
    return (padded.reshape(-1, frame) ** 2).sum(axis=1) / counts


def trim_silence(audio: np.ndarray, top_db: float = TRIM_TOP_DB, margin_s: float = 0.02) -> np.ndarray:
    """Cut leading and trailing parts quieter than ``top_db`` below the loudest 10 ms frame.

    A ``margin_s`` around the kept part keeps soft word onsets and endings.
    """
    if audio.size == 0:
        return audio
    energy = _frame_energy(audio)
    peak = float(energy.max())
    if peak <= 0.0:
        return audio[:0]
    loud = np.flatnonzero(energy >= peak * 10.0 ** (-top_db / 10.0))
    margin = int(margin_s * SAMPLE_RATE)
    start = max(0, int(loud[0]) * _FRAME - margin)
    end = min(audio.size, (int(loud[-1]) + 1) * _FRAME + margin)
    return audio[start:end]


def normalize_peak(audio: np.ndarray, peak_dbfs: float = PEAK_DBFS) -> np.ndarray:
    """Scale so the largest sample is at ``peak_dbfs`` (silence stays silence)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 0.0:
        return audio.astype(np.float32, copy=True)
    return (audio * (10.0 ** (peak_dbfs / 20.0) / peak)).astype(np.float32)


def _render(text: str, voice: Voice) -> np.ndarray:
    if voice.engine == "espeak":
        raw, rate = _espeak_raw(text, voice.params)
        audio = np.asarray(soxr.resample(raw, rate, SAMPLE_RATE, quality="HQ"), np.float32)
    else:
        audio = _hibari_16k(text, voice.params)
    audio = trim_silence(audio)
    if audio.size == 0:
        raise RuntimeError(f"{voice.name} produced no audio for {text[:60]!r}")
    lead = np.zeros(int(LEAD_SILENCE_S * SAMPLE_RATE), np.float32)
    return np.concatenate([lead, normalize_peak(audio)])


def synthesize(text: str, voice: str | Voice, *, cache_dir: Path | None = None) -> np.ndarray:
    """Speak ``text`` with a test voice.

    Args:
        text: What to say.
        voice: A name from :data:`VOICES` or a :class:`Voice`.
        cache_dir: When given, results are kept there as ``.npy`` files keyed by a hash of the voice, its
            engine's version, the text and :data:`VERSION`, and read back on later calls.

    Returns:
        Float32 mono audio at 16 kHz: silence trimmed, peak at -3 dBFS, then 150 ms of silence in front (a
        microphone never starts exactly on the first word).

    Raises:
        ValueError: If the voice is unknown or the text is empty.
        VoiceUnavailableError: If the voice's engine is not installed.
    """
    v = get_voice(voice)
    if not text.strip():
        raise ValueError("nothing to say: empty text")
    path: Path | None = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{v.name}-{_cache_key(v, text)}.npy"
        if path.is_file():
            try:
                return np.load(path).astype(np.float32, copy=False)
            except (OSError, ValueError) as err:
                log.warning("unreadable voice cache %s (%s); synthesizing again", path, err)
    audio = _render(text, v)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.save(f, audio)
        os.replace(tmp, path)
    return audio


# ----------------------------------------------------------------------------------------------- conditions


def active_power(audio: np.ndarray, top_db: float = _ACTIVE_TOP_DB) -> float:
    """Mean power over the active 10 ms frames (within ``top_db`` of the loudest), as speech meters do."""
    energy = _frame_energy(np.asarray(audio, np.float64))
    if energy.size == 0 or energy.max() <= 0.0:
        return 0.0
    return float(energy[energy >= energy.max() * 10.0 ** (-top_db / 10.0)].mean())


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Signal-to-noise ratio of ``noisy`` against the ``clean`` clip it was made from, in dB.

    Speech power is measured over the active part of ``clean`` (see :func:`active_power`); noise is what is
    left of ``noisy`` once the best-fitting multiple of ``clean`` is taken away, and its power is measured
    over the whole clip. Fitting the gain makes the figure independent of any overall level change.
    """
    c = np.asarray(clean, np.float64)
    n = np.asarray(noisy, np.float64)
    if c.shape != n.shape:
        raise ValueError(f"clips differ in length: {c.shape} vs {n.shape}")
    gain = float(np.dot(n, c) / max(np.dot(c, c), 1e-20))
    residual = n - gain * c
    noise_power = float(np.mean(residual**2))
    speech_power = gain**2 * active_power(c)
    if noise_power <= 0.0:
        return float("inf")
    return float(10.0 * np.log10(max(speech_power, 1e-20) / noise_power))


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) noise of unit mean power."""
    if n <= 0:
        return np.zeros(0, np.float64)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum *= 1.0 / np.sqrt(np.maximum(freqs, 20.0))  # flat below 20 Hz: no DC drift
    noise = np.fft.irfft(spectrum, n)
    noise -= noise.mean()
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


_babble_lock = threading.Lock()
_babble_banks: dict[str, tuple[np.ndarray, ...]] = {}


def _babble_bank(cache_dir: Path | None) -> tuple[np.ndarray, ...]:
    """Utterances for background talkers: unrelated sentences by voices no request uses (made once)."""
    key = str(cache_dir)
    with _babble_lock:
        if key not in _babble_banks:
            bank: list[np.ndarray] = []
            for i, sentence in enumerate(_BABBLE_SENTENCES):
                for k in range(len(_BABBLE_VOICES)):  # the sentence's own voice, else the next one that works
                    try:
                        bank.append(synthesize(sentence, _BABBLE_VOICES[(i + k) % len(_BABBLE_VOICES)],
                                               cache_dir=cache_dir))
                        break
                    except VoiceUnavailableError:
                        continue
            if not bank:
                log.warning("no TTS engine for the babble noise: noise10 uses pink noise only")
            _babble_banks[key] = tuple(bank)
        return _babble_banks[key]


def babble_noise(n: int, rng: np.random.Generator, *, cache_dir: Path | None = None) -> np.ndarray | None:
    """Several synthetic background talkers, each starting at a random point of its stream; unit mean power.

    Returns None when no TTS engine is available to make talkers.
    """
    bank = _babble_bank(cache_dir)
    if not bank or n <= 0:
        return None
    mix = np.zeros(n, np.float64)
    for _ in range(_BABBLE_TALKERS):
        pieces: list[np.ndarray] = []
        for idx in rng.permutation(len(bank)):
            pieces.append(bank[idx][int(LEAD_SILENCE_S * SAMPLE_RATE) :])
            pieces.append(np.zeros(int(rng.uniform(0.05, 0.4) * SAMPLE_RATE), np.float32))
        stream = np.concatenate(pieces)
        offset = int(rng.integers(stream.size))
        reps = -(-(offset + n) // stream.size)
        mix += rng.uniform(0.5, 1.0) * np.tile(stream, reps)[offset : offset + n]
    power = float(np.mean(mix**2))
    return mix / np.sqrt(power) if power > 0.0 else None


def add_noise(
    audio: np.ndarray, snr: float, rng: np.random.Generator, *, cache_dir: Path | None = None
) -> np.ndarray:
    """Add pink noise plus babble ``snr`` dB below the clip's active speech power, across the whole clip."""
    x = np.asarray(audio, np.float64)
    pink = pink_noise(x.size, rng)
    babble = babble_noise(x.size, rng, cache_dir=cache_dir)
    if babble is None:
        noise = pink
    else:
        noise = np.sqrt(_BABBLE_SHARE) * babble + np.sqrt(1.0 - _BABBLE_SHARE) * pink
    noise *= np.sqrt(active_power(x) / 10.0 ** (snr / 10.0) / max(float(np.mean(noise**2)), 1e-20))
    out = x + noise
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.99:  # keep within full scale by turning the whole mix down (the SNR does not change)
        out *= 0.99 / peak
    return out.astype(np.float32)


def room_impulse_response(rng: np.random.Generator, rt60: float | None = None) -> tuple[np.ndarray, float]:
    """A synthetic room impulse response at 16 kHz.

    A direct path at t=0, 6-10 early reflections in the first 3-40 ms (random signs, weaker the later they
    come), and a diffuse tail of noise that decays by 60 dB in ``rt60`` seconds (drawn from 0.3-0.7 s when not
    given), gently low-passed as walls and air absorb treble. The reverberant part carries about as much
    energy as the direct sound (direct-to-reverberant ratio -2 to +4 dB, a talker 1-2 m from the microphone).

    Returns:
        The impulse response (unit direct path) and its RT60.
    """
    rt60 = float(rng.uniform(0.3, 0.7)) if rt60 is None else float(rt60)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    envelope = np.exp(-np.log(1000.0) * t / rt60)  # amplitude 1/1000 (-60 dB) at rt60
    tail = rng.standard_normal(n) * envelope
    tail = signal.lfilter([0.6], [1.0, -0.4], tail)  # one-pole low-pass
    onset = int(0.005 * SAMPLE_RATE)
    tail[:onset] = 0.0
    tail[onset : 2 * onset] *= np.linspace(0.0, 1.0, onset)
    early = np.zeros(n)
    for _ in range(int(rng.integers(6, 11))):
        delay = float(rng.uniform(0.003, 0.040))
        gain = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.6) * np.exp(-delay / 0.05)
        early[int(delay * SAMPLE_RATE)] += gain
    drr_db = float(rng.uniform(-2.0, 4.0))
    reverberant = early + tail
    reverberant *= np.sqrt(10.0 ** (-drr_db / 10.0) / max(float(np.sum(reverberant**2)), 1e-20))
    rir = reverberant
    rir[0] = 1.0
    return rir, rt60


def add_reverb(audio: np.ndarray, rng: np.random.Generator, *, tail_s: float = 0.3) -> np.ndarray:
    """Convolve with :func:`room_impulse_response`; keep the clip plus up to ``tail_s`` of the room's tail."""
    rir, _ = room_impulse_response(rng)
    wet = signal.fftconvolve(np.asarray(audio, np.float64), rir)
    keep = audio.size + min(int(tail_s * SAMPLE_RATE), rir.size - 1)
    return normalize_peak(wet[:keep])


def mu_law_roundtrip(audio: np.ndarray, mu: int = 255) -> np.ndarray:
    """G.711-style 8-bit mu-law: compress, quantise to 256 levels, expand."""
    x = np.clip(audio, -1.0, 1.0)
    compressed = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    codes = np.round((compressed + 1.0) / 2.0 * mu)  # 0 .. 255
    y = codes / mu * 2.0 - 1.0
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu


def telephone(audio: np.ndarray, rng: np.random.Generator, *, noise_db: float = -45.0) -> np.ndarray:
    """A narrow-band phone call: 8 kHz, 300-3400 Hz, hiss ``noise_db`` below speech, mu-law, back to 16 kHz.

    The band-pass runs on both sides of the codec (the handset's send filter and the receiving line card), so
    the codec's quantisation noise is band-limited too.
    """
    narrow = np.asarray(soxr.resample(np.asarray(audio, np.float64), SAMPLE_RATE, 8000, quality="HQ"))
    sos = signal.butter(4, [300.0, 3400.0], btype="bandpass", fs=8000, output="sos")
    sent = signal.sosfilt(sos, narrow)
    sent = sent * (_PEAK / max(float(np.max(np.abs(sent))), 1e-12))  # the handset's automatic gain
    hiss = rng.standard_normal(sent.size) * np.sqrt(active_power(sent) * 10.0 ** (noise_db / 10.0))
    received = signal.sosfilt(sos, mu_law_roundtrip(sent + hiss))
    wide = np.asarray(soxr.resample(received, 8000, SAMPLE_RATE, quality="HQ"))
    out = np.zeros(audio.size)
    out[: min(audio.size, wide.size)] = wide[: audio.size]
    return normalize_peak(out)


def degrade(audio: np.ndarray, condition: str, *, seed: int = 0, cache_dir: Path | None = None) -> np.ndarray:
    """Put a 16 kHz clip through an acoustic condition.

    Args:
        audio: Float mono audio at 16 kHz (as :func:`synthesize` returns).
        condition: One of :data:`CONDITIONS`: ``"clean"`` (a copy), ``"noise10"`` (pink noise + babble at
            10 dB SNR), ``"reverb"`` (a synthetic room) or ``"phone"`` (a narrow-band mu-law phone line).
        seed: Fixes every random draw (a non-negative int): the same clip, condition and seed give the same
            output.
        cache_dir: Where the babble talkers of ``noise10`` are cached (see :func:`synthesize`).

    Returns:
        Float32 mono audio at 16 kHz; as long as the input (``reverb`` adds up to 0.3 s of room tail).

    Raises:
        ValueError: If the condition is unknown; the message lists the valid ones.
    """
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; valid: {', '.join(CONDITIONS)}")
    x = np.asarray(audio, np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono 1-D audio, got shape {x.shape}")
    # Each condition draws from its own stream, so e.g. noise10 and phone with one seed are not correlated.
    rng = np.random.default_rng([seed, CONDITIONS.index(condition)])
    if condition == "clean" or x.size == 0:
        return x.copy()
    if condition == "noise10":
        return add_noise(x, 10.0, rng, cache_dir=cache_dir)
    if condition == "reverb":
        return add_reverb(x, rng)
    return telephone(x, rng)


def speak(
    text: str, voice: str | Voice, condition: str = "clean", *, seed: int = 0, cache_dir: Path | None = None
) -> np.ndarray:
    """:func:`synthesize` then :func:`degrade`: ``text`` as ``voice`` says it under ``condition``."""
    return degrade(synthesize(text, voice, cache_dir=cache_dir), condition, seed=seed, cache_dir=cache_dir)
