"""Audio conversion helpers: PCM16 <-> float32, resampling (one-shot and streaming) and file loading.

Everything inside the speech package works on float32 mono arrays in [-1, 1] at ``SAMPLE_RATE``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soxr

from speech.errors import AudioFormatError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Whisper and Silero VAD both expect 16 kHz
SUPPORTED_INPUT_RATES = (8000, 16000, 24000, 44100, 48000)
PCM16_SCALE = 32768.0  # int16 full scale


def pcm16_to_float32(data: bytes) -> np.ndarray:
    """Convert little-endian signed 16-bit PCM bytes to float32 samples in [-1, 1).

    Args:
        data: Raw PCM16 mono bytes.

    Returns:
        A 1-D float32 array with ``len(data) // 2`` samples.

    Raises:
        AudioFormatError: If the byte count is odd (not whole 16-bit samples).
    """
    if len(data) % 2:
        raise AudioFormatError(f"PCM16 audio needs an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / PCM16_SCALE


def float32_to_pcm16(audio: np.ndarray) -> bytes:
    """Convert float samples to little-endian PCM16 bytes, clipping to [-1, 1].

    Args:
        audio: 1-D float array.

    Returns:
        The PCM16 bytes (two per sample).
    """
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def _as_mono_float32(audio: np.ndarray) -> np.ndarray:
    arr = np.asarray(audio)
    if arr.ndim == 2:
        arr = arr.mean(axis=1)
    elif arr.ndim != 1:
        raise AudioFormatError(f"expected 1-D (or 2-D frames x channels) audio, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a whole mono signal with soxr (high quality).

    Args:
        audio: 1-D float array.
        orig_sr: Sample rate of ``audio``.
        target_sr: Wanted sample rate.

    Returns:
        Float32 array of about ``len(audio) * target_sr / orig_sr`` samples.
    """
    arr = _as_mono_float32(audio)
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioFormatError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return arr
    return np.asarray(soxr.resample(arr, orig_sr, target_sr, quality="HQ"), dtype=np.float32)


class StreamResampler:
    """Resample audio that arrives in chunks, keeping filter state across chunk edges (no clicks).

    Example:
        >>> rs = StreamResampler(48000, 16000)
        >>> out = np.concatenate([rs.process(c) for c in chunks] + [rs.flush()])

    Args:
        orig_sr: Input sample rate.
        target_sr: Output sample rate.
    """

    def __init__(self, orig_sr: int, target_sr: int = SAMPLE_RATE) -> None:
        if orig_sr <= 0 or target_sr <= 0:
            raise AudioFormatError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
        self.orig_sr = orig_sr
        self.target_sr = target_sr
        self._stream: soxr.ResampleStream | None = None
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._stream = (
            None
            if self.orig_sr == self.target_sr
            else soxr.ResampleStream(self.orig_sr, self.target_sr, 1, dtype="float32", quality="HQ")
        )

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Resample the next chunk; the output may lag the input by the filter delay.

        Args:
            chunk: 1-D float array at ``orig_sr``.

        Returns:
            Float32 samples at ``target_sr`` that are ready now.
        """
        arr = _as_mono_float32(chunk)
        if self._stream is None:
            return arr
        return np.asarray(self._stream.resample_chunk(arr), dtype=np.float32)

    def flush(self) -> np.ndarray:
        """Return the samples still held in the filter and start a fresh stream.

        Returns:
            The remaining float32 samples at ``target_sr``.
        """
        if self._stream is None:
            return np.zeros(0, np.float32)
        out = np.asarray(self._stream.resample_chunk(np.zeros(0, np.float32), last=True), dtype=np.float32)
        self._reset_stream()
        return out


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file (wav, flac, ogg, ...) as float32 mono at ``sr``.

    Args:
        path: File to read.
        sr: Target sample rate.

    Returns:
        1-D float32 array.

    Raises:
        AudioFormatError: If the file cannot be decoded.
    """
    import soundfile as sf

    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioFormatError(f"cannot decode audio file {path}: {err}") from err
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    log.debug("loaded %s: %d samples at %d Hz, %d channel(s)", path, len(mono), file_sr, data.shape[1])
    return resample(mono, int(file_sr), sr)
