"""openai-whisper (PyTorch) speech-to-text from the converted packaged checkpoint: fp16 on CUDA, fp32 on CPU."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from speech.audio import SAMPLE_RATE
from speech.errors import SpeechToTextError
from speech.models import openai_whisper_checkpoint
from speech.stt import (
    SegmentStats,
    STTEngine,
    TranscribeOptions,
    Transcription,
    build_transcription,
    check_audio,
    is_silent,
    silent_transcription,
)

log = logging.getLogger(__name__)


def resolve_torch_device(device: str) -> str:
    """Map ``"auto"`` to ``"cuda"`` when torch sees a GPU, else ``"cpu"``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"



def half_except_norms(model: Any) -> Any:
    """fp16 weights for everything but the layer norms, in place.

    openai-whisper's ``LayerNorm`` computes in float32 (``x.float()``) and needs float32 weights, while its
    ``Linear``/``Conv1d`` cast their weights to the input's dtype; ``model.half()`` breaks the former (seen on a GPU:
    "expected scalar type Float but found Half").
    """
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            continue
        for param in module.parameters(recurse=False):
            param.data = param.data.half()
        for name, buf in module.named_buffers(recurse=False):
            if buf.is_floating_point():
                setattr(module, name, buf.half())
    return model

class OpenAIWhisperSTT(STTEngine):
    """Whisper through the reference openai-whisper package.

    Audio is always passed as a 16 kHz float32 array (a file path would shell out to ffmpeg).

    Args:
        size: ``"tiny.en"`` or ``"base"``.
        cache_dir: Folder where the checkpoint is converted once.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        cpu_threads: torch CPU threads; 0 leaves torch's setting alone.
    """

    def __init__(self, size: str, *, cache_dir: Path, device: str = "auto", cpu_threads: int = 0) -> None:
        super().__init__()
        import torch
        import whisper

        self.name = f"openai-whisper:{size}"
        self.device = resolve_torch_device(device)
        self.fp16 = self.device.startswith("cuda")
        if cpu_threads > 0:
            torch.set_num_threads(cpu_threads)
        checkpoint = openai_whisper_checkpoint(size, cache_dir)
        start = time.perf_counter()
        try:
            self.model = whisper.load_model(str(checkpoint), device=self.device)
        except (RuntimeError, ValueError, OSError) as err:
            raise SpeechToTextError(f"cannot load {self.name} from {checkpoint}: {err}") from err
        if self.fp16:
            half_except_norms(self.model)
        log.info("loaded %s (%s) in %.2f s", self.name, self.device, time.perf_counter() - start)

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions | None = None) -> Transcription:
        """Transcribe float32 mono 16 kHz audio (blocking); see :meth:`STTEngine.transcribe`."""
        import whisper

        opts = options or TranscribeOptions()
        samples = check_audio(audio)
        duration_s = samples.size / SAMPLE_RATE
        if is_silent(samples):
            return silent_transcription(opts.language, duration_s)
        decode: dict[str, Any] = {
            "language": opts.language if self.model.is_multilingual else "en",
            "fp16": self.fp16,
            "without_timestamps": opts.without_timestamps,
        }
        if opts.beam_size > 1:  # beam_size=None is greedy decoding
            decode["beam_size"] = opts.beam_size
        with self._lock:
            try:
                result = whisper.transcribe(
                    self.model,
                    samples,
                    temperature=opts.temperature,
                    initial_prompt=opts.initial_prompt,
                    condition_on_previous_text=False,
                    no_speech_threshold=None,
                    logprob_threshold=None,
                    compression_ratio_threshold=None,
                    verbose=None,
                    **decode,
                )
            except (RuntimeError, ValueError) as err:
                raise SpeechToTextError(f"{self.name} failed: {err}") from err
        stats = [
            SegmentStats(s["text"], s["avg_logprob"], s["no_speech_prob"], len(s["tokens"]))
            for s in result["segments"]
        ]
        return build_transcription(stats, str(result.get("language") or decode["language"] or "en"), duration_s)
