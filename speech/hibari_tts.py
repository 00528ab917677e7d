"""hibari text-to-speech: the packaged US-English "heart" voice, 24 kHz, numpy + onnxruntime on CPU."""

from __future__ import annotations

import logging
import time

import numpy as np

from speech.errors import TextToSpeechError
from speech.tts import TTSEngine, normalize_for_speech

log = logging.getLogger(__name__)


class HibariTTS(TTSEngine):
    """Offline TTS with hibari (about 100x realtime on one core).

    Args:
        voice: hibari voice; only ``"heart"`` is inside the wheel (others download on first use).
        speed: Speaking rate, 1.0 is natural (0.5 .. 2.0).
        threads: onnxruntime intra-op threads.
        seed: Fixes the noise component so the same text gives the same audio; None varies it.
    """

    def __init__(self, voice: str = "heart", *, speed: float = 1.0, threads: int = 1, seed: int | None = 0) -> None:
        super().__init__()
        try:
            from hibari import Hibari
        except ImportError as err:
            raise TextToSpeechError("hibari is not installed (pip install hibari-tts)") from err
        self.name = "hibari" if voice == "heart" else f"hibari:{voice}"
        self.speed = speed
        self.seed = seed
        start = time.perf_counter()
        try:
            self._tts = Hibari(voice=voice, threads=threads)
            self._tts.phonemize("Warm up.")  # loads the G2P lexicon now rather than on the first reply
        except (OSError, RuntimeError, KeyError, ValueError) as err:
            raise TextToSpeechError(f"cannot load hibari voice {voice!r}: {err}") from err
        self.sample_rate = int(self._tts.sample_rate)
        log.info("loaded %s in %.2f s", self.name, time.perf_counter() - start)

    def synthesize(self, text: str) -> np.ndarray:
        """Synthesize text as float32 mono audio at 24 kHz; see :meth:`TTSEngine.synthesize`."""
        spoken = normalize_for_speech(text)
        if not spoken:
            return np.zeros(0, np.float32)
        with self._lock:
            try:
                audio = self._tts(spoken, speed=self.speed, seed=self.seed)
            except (RuntimeError, ValueError, KeyError) as err:
                raise TextToSpeechError(f"hibari failed on {spoken[:60]!r}: {err}") from err
        return np.asarray(audio, dtype=np.float32)
