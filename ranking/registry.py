"""Named ranker configurations and the factory that builds them.

``list_rankers()`` names what ``create_ranker(name, ...)`` builds; an unknown name raises a ``KeyError`` that
lists the valid ones. ``smollm2-lora`` is the production model (SmolLM2-135M-Instruct, first 4 decoder layers (the 40 ms CPU budget; raise num_layers on a GPU),
LoRA on q/v); ``tiny-random`` is a 2-layer random Llama with a hashing tokenizer, for tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ranking.ranker import HashTokenizer, Ranker, RankerConfig, _HFTokenizer

SMOLLM2_FOLDER = "smollm2-135m-instruct"  # under cache_dir: the dequantized backbone (see ranking.llm)
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"  # default checkpoints committed with the code

_TINY_LLAMA: dict[str, Any] = {
    "vocab_size": 4096,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
}

_CONFIGS: dict[str, RankerConfig] = {
    "smollm2-lora": RankerConfig(name="smollm2-lora", backbone="smollm2", num_layers=4),
    "tiny-random": RankerConfig(
        name="tiny-random",
        backbone="tiny-random",
        num_layers=2,
        embed_dim=32,
        image_dim=16,
        head_hidden=32,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        max_query_tokens=32,
        max_product_tokens=48,
        tiny_llama=dict(_TINY_LLAMA),
    ),
}


def list_rankers() -> list[str]:
    """Names `create_ranker` accepts."""
    return sorted(_CONFIGS)


def shipped_checkpoint(name: str) -> Path | None:
    """The default checkpoint of ranker `name` shipped in ``ranking/checkpoints``, or None when there is none.

    It holds the LoRA adapter and heads, trained by ``shoptalk ranker train`` on the demo catalog.
    """
    path = SHIPPED_DIR / f"{name.replace('/', '_')}.pt"
    return path if path.is_file() else None


def get_config(name: str) -> RankerConfig:
    """A copy of the named configuration.

    Raises:
        KeyError: Unknown name (the message lists the valid ones).
    """
    if name not in _CONFIGS:
        raise KeyError(f"unknown ranker {name!r}; available: {', '.join(list_rankers())}")
    return dataclasses.replace(_CONFIGS[name], tiny_llama=dict(_CONFIGS[name].tiny_llama))


def create_ranker(
    name: str, *, cache_dir: Path, checkpoint: Path | None = None, device: str = "auto", **overrides: Any
) -> Ranker:
    """Build a ranker by name, optionally loading a trained checkpoint.

    Args:
        name: One of `list_rankers()`.
        cache_dir: Model cache root; the ``smollm2`` backbone is dequantized into
            ``cache_dir / "smollm2-135m-instruct"`` on first use (~40 s once, ~1 s after).
        checkpoint: A file written by `Ranker.save`; its stored config wins over ``name``'s.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        **overrides: `RankerConfig` fields to change (e.g. ``num_layers=12``); ignored with a checkpoint.
    """
    if checkpoint is not None:
        return load_ranker(checkpoint, cache_dir=cache_dir, device=device)
    config = dataclasses.replace(get_config(name), **overrides)
    return build_ranker(config, cache_dir=cache_dir, device=device)


def load_ranker(path: Path, *, cache_dir: Path | None = None, device: str = "auto") -> Ranker:
    """Load a checkpoint written by `Ranker.save`.

    Args:
        path: The checkpoint file.
        cache_dir: Model cache root (where the dequantized SmolLM2 lives, prepared on first use); needed for the
            ``smollm2`` backbone.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    config = RankerConfig.from_dict(checkpoint["config"])
    ranker = build_ranker(config, cache_dir=cache_dir, device=device, backbone_state=checkpoint.get("backbone"))
    ranker.load_trainable_state(checkpoint["state"])
    ranker.to(ranker.device_name)
    ranker.eval()
    return ranker


def build_ranker(
    config: RankerConfig,
    *,
    cache_dir: Path | None,
    device: str = "auto",
    backbone_state: dict[str, torch.Tensor] | None = None,
) -> Ranker:
    """Build an untrained ranker (random LoRA/heads) from a config.

    Args:
        config: Architecture.
        cache_dir: Model cache root (needed for ``smollm2``).
        device: Device name.
        backbone_state: Weights of a ``tiny-random`` backbone (from a checkpoint).
    """
    if config.backbone == "tiny-random":
        from transformers import LlamaConfig, LlamaModel

        llama = LlamaConfig(**config.tiny_llama)
        torch.manual_seed(config.seed)
        backbone = LlamaModel(llama)
        if backbone_state is not None:
            backbone.load_state_dict(backbone_state)
        backbone.eval()
        return Ranker(config, backbone, HashTokenizer(llama.vocab_size), device=device)
    if config.backbone == "smollm2":
        from ranking.llm import load_backbone, prepare_smollm2

        if cache_dir is None:
            raise ValueError("the smollm2 backbone needs cache_dir (where the dequantized model is kept)")
        folder = prepare_smollm2(Path(cache_dir) / SMOLLM2_FOLDER)
        model, tokenizer = load_backbone(folder, config.num_layers)
        return Ranker(config, model, _HFTokenizer(tokenizer), device=device)
    raise ValueError(f"unknown backbone {config.backbone!r} (smollm2, tiny-random)")
