"""Model registry: ``list_models()`` and ``create_encoder(name)``.

Two kinds of entry:

* ``"open_clip"``: a real CLIP checkpoint by open_clip architecture and pretrained tag (e.g. ViT-B-32 on
  LAION-2B).  ``open_clip.create_model_and_transforms`` downloads the weights, so these work only on machines with
  internet (or a warm ``cache_dir``).
* ``"lit"``: the offline default, ``lite0-minilm-lit``: packaged EfficientNet-Lite0 + packaged all-MiniLM-L6-v2,
  joined by projection heads that ``vision.align`` trains (LiT: towers frozen).  Without a checkpoint its heads are
  random and ``aligned`` is False.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import transforms

from vision.encoder import ImageTextEncoder, resolve_device
from vision.towers import LitConfig, build_lit_model, lit_trainable

log = logging.getLogger(__name__)

DEFAULT_MODEL = "lite0-minilm-lit"
CHECKPOINT_FORMAT = "shoptalk-vision-lit/2"  # /2 added the colour branch (LitConfig.colour_bins and friends)
# older formats: the LitConfig fields they predate, with the values that reproduce them
_LEGACY_FORMATS = {"shoptalk-vision-lit/1": {"colour_bins": 0, "attn_pool": False, "colour_gain": 1.0}}
LITE0_MEAN_STD = (0.5, 0.5, 0.5)  # TF EfficientNet-Lite scales inputs to [-1, 1]
SHIPPED_DIR = Path(__file__).parent / "checkpoints"


class UnknownModelError(KeyError):
    """The requested model name is not in the registry; the message lists the valid names."""

    def __init__(self, name: str, valid: list[str]) -> None:
        super().__init__(f"unknown vision model {name!r}; valid names: {', '.join(valid)}")
        self.name = name
        self.valid = valid

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    Attributes:
        name: registry name.
        kind: ``"open_clip"`` (real CLIP weights by tag) or ``"lit"`` (the offline model).
        arch: open_clip architecture name (``kind="open_clip"``).
        pretrained: open_clip pretrained tag or weights file; None builds random weights (tests).
        description: one line for ``list_models`` users.
    """

    name: str
    kind: str
    arch: str = ""
    pretrained: str | None = None
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> None:
    """Add (or replace) a registry entry."""
    if spec.kind not in ("open_clip", "lit"):
        raise ValueError(f"kind must be 'open_clip' or 'lit', not {spec.kind!r}")
    _REGISTRY[spec.name] = spec


for _spec in (
    ModelSpec(DEFAULT_MODEL, "lit", description="offline: EfficientNet-Lite0 + all-MiniLM-L6-v2, LiT heads"),
    ModelSpec("ViT-B-32/laion2b_s34b_b79k", "open_clip", "ViT-B-32", "laion2b_s34b_b79k", "CLIP ViT-B/32, LAION-2B"),
    ModelSpec("ViT-B-16/laion2b_s34b_b88k", "open_clip", "ViT-B-16", "laion2b_s34b_b88k", "CLIP ViT-B/16, LAION-2B"),
    ModelSpec("ViT-L-14/laion2b_s32b_b82k", "open_clip", "ViT-L-14", "laion2b_s32b_b82k", "CLIP ViT-L/14, LAION-2B"),
    ModelSpec("ViT-B-32/openai", "open_clip", "ViT-B-32", "openai", "OpenAI CLIP ViT-B/32"),
):
    register_model(_spec)


def list_models() -> list[str]:
    """Names accepted by ``create_encoder``."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name`` (raises ``UnknownModelError``)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name, list_models()) from None


def lit_transform(image_size: int = 224) -> transforms.Compose:
    """PIL (already padded square) → [3, 224, 224] in [-1, 1], bicubic."""
    return transforms.Compose(
        [
            transforms.Resize((image_size, image_size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(LITE0_MEAN_STD, LITE0_MEAN_STD),
        ]
    )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read an ``align`` checkpoint (plain tensors, lists and dicts only); older formats are upgraded in memory."""
    ckpt: dict[str, Any] = torch.load(Path(path), map_location="cpu", weights_only=True)
    fmt = ckpt.get("format")
    if fmt in _LEGACY_FORMATS:
        ckpt["model_config"] = {**_LEGACY_FORMATS[fmt], **ckpt["model_config"]}
    elif fmt != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (format {fmt!r})")
    return ckpt


def shipped_heads(name: str) -> Path | None:
    """The heads of ``name`` aligned on the demo catalog, shipped in ``vision/checkpoints``, or None.

    ``make vision-heads`` rebuilds them; with them a fresh data dir serves the demo without aligning.
    """
    path = SHIPPED_DIR / f"{name.replace('/', '_')}-demo.pt"
    return path if path.is_file() else None


def checkpoint_labels(path: Path) -> frozenset[str]:
    """The pair labels an ``align`` checkpoint was trained on (empty for checkpoints that predate the record)."""
    stat = Path(path).stat()
    return _labels(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _labels(path: str, mtime_ns: int, size: int) -> frozenset[str]:  # keyed by the file's version
    return frozenset(load_checkpoint(Path(path)).get("labels", ()))


def _file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def create_encoder(
    name: str,
    *,
    cache_dir: Path | None = None,
    checkpoint: Path | None = None,
    device: str = "auto",
) -> ImageTextEncoder:
    """Build an encoder by registry name.

    Args:
        name: one of ``list_models()``.
        cache_dir: where open_clip keeps downloaded weights (``kind="open_clip"``).
        checkpoint: an ``align`` checkpoint (offline model) or an open_clip weights file; sets ``aligned=True``.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

    Raises:
        UnknownModelError: ``name`` is not registered.
    """
    spec = get_spec(name)
    dev = resolve_device(device)
    if spec.kind == "lit":
        return _create_lit(spec, checkpoint, dev)
    return _create_open_clip(spec, cache_dir, checkpoint, dev)


def _create_open_clip(
    spec: ModelSpec, cache_dir: Path | None, checkpoint: Path | None, dev: torch.device
) -> ImageTextEncoder:
    import open_clip

    pretrained = str(checkpoint) if checkpoint is not None else spec.pretrained
    model, _, transform = open_clip.create_model_and_transforms(
        spec.arch, pretrained=pretrained, cache_dir=str(cache_dir) if cache_dir else None
    )
    model.eval()
    key = spec.name if checkpoint is None else f"{spec.name}@{_file_hash(checkpoint)}"
    return ImageTextEncoder(
        spec.name,
        model,
        open_clip.get_tokenizer(spec.arch),
        _as_tensor_transform(transform),
        device=dev,
        aligned=pretrained is not None,
        model_key=key,
        config={"lit": False, "arch": spec.arch, "pretrained": pretrained},
    )


def _as_tensor_transform(transform: Any) -> Any:
    def apply(img: Image.Image) -> torch.Tensor:
        out: torch.Tensor = transform(img)
        return out

    return apply


def _create_lit(spec: ModelSpec, checkpoint: Path | None, dev: torch.device) -> ImageTextEncoder:
    ckpt = load_checkpoint(checkpoint) if checkpoint is not None else None
    cfg = LitConfig(**ckpt["model_config"]) if ckpt else LitConfig()
    model = build_lit_model(spec.name, cfg)
    if ckpt:
        unlock = bool(ckpt["align_config"].get("unlock_conv_head", False))
        expected = set(lit_trainable(model, unlock_conv_head=unlock))
        state = ckpt["state_dict"]
        if set(state) != expected:
            raise ValueError(f"checkpoint {checkpoint} holds {sorted(state)}, expected {sorted(expected)}")
        missing_ok = model.load_state_dict(state, strict=False)
        assert not missing_ok.unexpected_keys, missing_ok.unexpected_keys
    key = spec.name if checkpoint is None else f"{spec.name}@{_file_hash(checkpoint)}"
    import open_clip

    tokenizer = open_clip.get_tokenizer(f"{spec.name}-{cfg.embed_dim}-{cfg.context_length}")
    return ImageTextEncoder(
        spec.name,
        model,
        tokenizer,
        lit_transform(),
        device=dev,
        aligned=ckpt is not None,
        model_key=key,
        config={"lit": True, **asdict(cfg)},
    )
