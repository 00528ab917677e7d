"""The speech engines by name: `create_stt` and `create_tts` (the engines' modules import their base, not this)."""

from __future__ import annotations

from pathlib import Path

from speech.errors import ModelNotFoundError
from speech.stt import STT_BACKENDS, STT_SIZES, STTEngine
from speech.tts import COQUI_EXAMPLE_MODELS, COQUI_PREFIX, TTSEngine


def available_stt_models() -> list[str]:
    """Names accepted by :func:`create_stt`, ``"<backend>:<size>"``."""
    return [f"{backend}:{size}" for backend in STT_BACKENDS for size in STT_SIZES]


def create_stt(
    name: str, *, cache_dir: Path, device: str = "auto", cpu_threads: int = 0, workers: int = 1
) -> STTEngine:
    """Build a speech-to-text engine by registry name.

    Args:
        name: One of :func:`available_stt_models`.
        cache_dir: Folder for prepared weights (joined/converted once).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        cpu_threads: CPU threads for inference; 0 means ``os.cpu_count()``. With ``workers`` > 1 on CPU, this is
            the total, split between the workers (faster-whisper).
        workers: Concurrent model calls (CTranslate2 ``num_workers``; faster-whisper only, openai-whisper runs one).

    Returns:
        A loaded engine.

    Raises:
        ModelNotFoundError: If ``name`` is unknown; the message lists valid names.
    """
    if name not in available_stt_models():
        raise ModelNotFoundError(name, available_stt_models(), kind="STT model")
    backend, size = name.split(":", 1)
    if backend == "faster-whisper":
        from speech.faster_whisper_stt import FasterWhisperSTT

        return FasterWhisperSTT(size, cache_dir=cache_dir, device=device, cpu_threads=cpu_threads, workers=workers)
    from speech.openai_whisper_stt import OpenAIWhisperSTT

    return OpenAIWhisperSTT(size, cache_dir=cache_dir, device=device, cpu_threads=cpu_threads)


def available_tts() -> list[str]:
    """Names accepted by :func:`create_tts`; ``"coqui:<model>"`` takes any Coqui model name."""
    return ["hibari", *(COQUI_PREFIX + m for m in COQUI_EXAMPLE_MODELS)]


def create_tts(name: str, *, cache_dir: Path | None = None, device: str = "auto") -> TTSEngine:
    """Build a text-to-speech engine by registry name.

    Args:
        name: ``"hibari"`` (offline, packaged) or ``"coqui:<model name>"`` (downloads at first use).
        cache_dir: Folder for downloaded voices (Coqui: sets ``TTS_HOME`` when given).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (hibari always runs on CPU).

    Returns:
        A loaded engine.

    Raises:
        ModelNotFoundError: If ``name`` is unknown; the message lists valid names.
        TextToSpeechError: If the engine cannot be loaded.
    """
    if name == "hibari":
        from speech.hibari_tts import HibariTTS

        return HibariTTS()
    if name.startswith(COQUI_PREFIX) and len(name) > len(COQUI_PREFIX):
        from speech.coqui_tts import CoquiTTS

        return CoquiTTS(name[len(COQUI_PREFIX) :], cache_dir=cache_dir, device=device)
    raise ModelNotFoundError(name, [*available_tts(), "coqui:<model name>"], kind="TTS engine")
