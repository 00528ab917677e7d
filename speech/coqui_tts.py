"""Coqui TTS (the maintained ``coqui-tts`` fork, imported as ``TTS``): many voices, all downloaded at first use.

Never the offline default: without the package or without network access to fetch the model, loading raises
:class:`~speech.errors.TextToSpeechError` with the reason.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from speech.errors import TextToSpeechError
from speech.tts import TTSEngine, normalize_for_speech

log = logging.getLogger(__name__)


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class CoquiTTS(TTSEngine):
    """A Coqui ``TTS.api.TTS`` model.

    Args:
        model_name: Coqui model name, e.g. ``"tts_models/en/ljspeech/vits"``.
        cache_dir: Where Coqui keeps downloaded models (sets ``TTS_HOME``); None keeps Coqui's default.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        speaker: Speaker name for multi-speaker models (e.g. VCTK ``"p225"``, XTTS ``"Ana Florence"``).
        language: Language code for multilingual models (XTTS).
    """

    def __init__(
        self,
        model_name: str,
        *,
        cache_dir: Path | None = None,
        device: str = "auto",
        speaker: str | None = None,
        language: str | None = None,
    ) -> None:
        super().__init__()
        self.name = f"coqui:{model_name}"
        self.speaker = speaker
        self.language = language
        try:
            from TTS.api import TTS
        except ImportError as err:
            raise TextToSpeechError(
                "Coqui TTS is not installed: pip install 'coqui-tts>=0.24' (or shoptalk[coqui])"
            ) from err
        if cache_dir is not None:
            os.environ.setdefault("TTS_HOME", str(cache_dir))
        self.device = _resolve_device(device)
        start = time.perf_counter()
        try:
            self._tts: Any = TTS(model_name, progress_bar=False).to(self.device)
        except Exception as err:  # downloads, config parsing and checkpoint loading all raise their own types
            raise TextToSpeechError(
                f"cannot load Coqui model {model_name!r} (it downloads at first use; offline or unknown name?): "
                f"{err}"
            ) from err
        self.sample_rate = int(self._tts.synthesizer.output_sample_rate)
        log.info("loaded %s on %s in %.2f s", self.name, self.device, time.perf_counter() - start)

    def synthesize(self, text: str) -> np.ndarray:
        """Synthesize text as float32 mono audio at the model's rate; see :meth:`TTSEngine.synthesize`."""
        spoken = normalize_for_speech(text)
        if not spoken:
            return np.zeros(0, np.float32)
        kwargs: dict[str, Any] = {"text": spoken}
        if self.speaker is not None:
            kwargs["speaker"] = self.speaker
        if self.language is not None:
            kwargs["language"] = self.language
        with self._lock:
            try:
                wav = self._tts.tts(**kwargs)
            except Exception as err:  # the model's own errors have no common base class
                raise TextToSpeechError(f"{self.name} failed on {spoken[:60]!r}: {err}") from err
        return np.asarray(wav, dtype=np.float32).reshape(-1)
