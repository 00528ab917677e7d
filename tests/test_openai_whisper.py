"""openai-whisper's CUDA precision path, checked on CPU with a tiny random model."""

from __future__ import annotations

import pytest


def test_fp16_path_keeps_layer_norms_in_float32() -> None:
    """The CUDA path's weights: fp16 except whisper's float32 layer norms (``model.half()`` fails on a GPU)."""
    import torch
    import whisper
    from whisper.model import ModelDimensions, Whisper

    from speech.openai_whisper_stt import half_except_norms

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                           n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)
    torch.manual_seed(0)
    broken = Whisper(dims).half()
    with pytest.raises(RuntimeError):
        broken.embed_audio(torch.randn(1, 80, 3000).half())
    model = half_except_norms(Whisper(dims))
    assert all(p.dtype == torch.float32 for m in model.modules() if isinstance(m, torch.nn.LayerNorm)
               for p in m.parameters())
    result = whisper.decode(model, torch.randn(80, 3000), whisper.DecodingOptions(fp16=True, sample_len=4, language="en",
                                                                                  without_timestamps=True))
    assert isinstance(result.text, str)
