"""``ImageTextEncoder``: one wrapper over any open_clip model, with batching, device handling and caching."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch import nn

from vision.augment import pad_to_square, phone_style, tta_crops
from vision.cache import EmbeddingCache
from vision.towers import LITE0_BODY_CHANNELS, lite0_top

log = logging.getLogger(__name__)

INDEX_VIEW_SEED = 7_001  # catalog index views; align trains on other seeds, the bench queries on others again
_IO_WORKERS = min(4, os.cpu_count() or 1)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (the cache key of its content)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def view_seed(sha: str, view: int, salt: int) -> list[int]:
    """Seed of augmented view ``view`` of the image with content hash ``sha`` (``salt`` keeps uses disjoint)."""
    return [salt, int(sha[:15], 16), view]


class PhotoEncoder(Protocol):
    """What photo search encodes with: `ImageTextEncoder`, or a stand-in in tests.

    ``aligned``: text and image vectors are comparable (text→image search); ``model_key``: name plus checkpoint
    hash, part of every cache key.
    """

    name: str
    dim: int
    aligned: bool
    model_key: str

    def encode_image(self, images: Sequence[Image.Image], normalize: bool = True, batch_size: int = 16,
                     query_tta: bool = False) -> np.ndarray: ...

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> np.ndarray: ...

    def encode_image_files(self, paths: Sequence[Path], cache: EmbeddingCache | None = None,
                           batch_size: int = 16) -> np.ndarray: ...


class ImageTextEncoder:
    """Encode images and texts into one normalised embedding space.

    Attributes:
        name: registry name of the model.
        dim: embedding size.
        aligned: whether text and image embeddings are comparable.  False for the offline model before ``align``
            has trained its heads: then text→image scores are meaningless and callers skip them.
        device: the torch device the model runs on.
        model_key: name plus checkpoint hash; part of every cache key.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        tokenizer: Callable[..., torch.Tensor],
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        device: torch.device,
        aligned: bool,
        model_key: str,
        pad_square: bool = True,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.model: Any = model  # an open_clip CLIP / CustomTextCLIP (typed loosely: torch's __getattr__)
        self.tokenizer = tokenizer
        self.transform = transform
        self.device = device
        self.aligned = aligned
        self.model_key = model_key
        self.pad_square = pad_square
        self.config = dict(config or {})
        self.dim = int(self._probe_dim())
        if device.type == "cuda":
            self.model.to(device)
            self.model.visual.to(memory_format=torch.channels_last)

    def _probe_dim(self) -> int:
        dim = getattr(self.model, "embed_dim", None) or getattr(getattr(self.model, "text", None), "output_dim", None)
        if dim is None:
            proj = getattr(self.model, "text_projection", None)
            dim = proj.shape[-1] if proj is not None else None
        if dim is None:
            raise ValueError("cannot tell the embedding size of this model")
        return int(dim)

    # ---- preprocessing -------------------------------------------------------------------------------------
    def preprocess(self, img: Image.Image) -> torch.Tensor:
        """PIL image → normalised [3, H, W] tensor; pads to a white square first (beat centre-cropping)."""
        img = img.convert("RGB")
        if self.pad_square:
            img = pad_to_square(img)
        return self.transform(img)

    # ---- device helpers -------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @staticmethod
    def _batches(n: int, size: int) -> Iterator[slice]:
        for i in range(0, n, size):
            yield slice(i, min(n, i + size))

    # ---- encoding ------------------------------------------------------------------------------------------
    def encode_pixels(self, pixels: torch.Tensor, normalize: bool = True, batch_size: int = 16) -> np.ndarray:
        """Encode already-preprocessed images [n, 3, H, W] → float32 [n, dim]."""
        out = []
        with torch.inference_mode(), self._autocast():
            for sl in self._batches(len(pixels), batch_size):
                z = self.model.encode_image(self._to_device(pixels[sl])).float()
                out.append(nn.functional.normalize(z, dim=-1) if normalize else z)
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, self.dim), np.float32)

    def encode_image(
        self,
        images: Sequence[Image.Image],
        normalize: bool = True,
        batch_size: int = 16,
        query_tta: bool = False,
    ) -> np.ndarray:
        """Encode PIL images → float32 [n, dim] (unit rows when ``normalize``).

        With ``query_tta`` (for shopper photos, never catalog photos) each image is encoded as the whole photo plus
        its centre and four corner crops at 90% (``tta_crops``); the normalised embeddings are averaged, then
        re-normalised when ``normalize``.  Six tower passes per photo.
        """
        if not images:
            return np.zeros((0, self.dim), np.float32)
        if query_tta:
            views = [tta_crops(im) for im in images]
            k = len(views[0])
            flat = self.encode_image([v for vs in views for v in vs], normalize=True, batch_size=batch_size)
            mean = flat.reshape(len(images), k, -1).mean(1)
            if normalize:
                mean /= np.linalg.norm(mean, axis=1, keepdims=True).clip(1e-12)
            return mean.astype(np.float32)
        pixels = torch.stack([self.preprocess(im) for im in images])
        return self.encode_pixels(pixels, normalize=normalize, batch_size=batch_size)

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> np.ndarray:
        """Encode texts → float32 [n, dim]."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = []
        with torch.inference_mode(), self._autocast():
            for sl in self._batches(len(texts), 64):
                tokens = self.tokenizer(list(texts[sl])).to(self.device)
                z = self.model.encode_text(tokens).float()
                out.append(nn.functional.normalize(z, dim=-1) if normalize else z)
        return torch.cat(out).cpu().numpy()

    def _load_pixels(self, paths: Sequence[Path]) -> list[torch.Tensor]:
        def load(p: Path) -> torch.Tensor:
            with Image.open(p) as im:
                return self.preprocess(im)

        with ThreadPoolExecutor(_IO_WORKERS) as pool:
            return list(pool.map(load, paths))

    def _cache_key(self, sha: str, view: str = "main") -> str:
        return f"{self.model_key}|{view}|{sha}"

    def encode_image_files(
        self, paths: Sequence[Path], cache: EmbeddingCache | None = None, batch_size: int = 16
    ) -> np.ndarray:
        """Encode image files → float32 [n, dim], normalised; decoding runs in a small thread pool.

        With ``cache``, vectors are keyed by the sha256 of the file bytes and this model's name/checkpoint hash.
        """
        paths = [Path(p) for p in paths]
        if not paths:
            return np.zeros((0, self.dim), np.float32)
        with ThreadPoolExecutor(_IO_WORKERS) as pool:
            keys = [self._cache_key(sha) for sha in pool.map(file_sha256, paths)]
        found = cache.get_many(keys) if cache is not None else {}
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            pixels = torch.stack(self._load_pixels([paths[i] for i in todo]))
            vecs = self.encode_pixels(pixels, batch_size=batch_size)
            new = {keys[i]: v for i, v in zip(todo, vecs, strict=True)}
            if cache is not None:
                cache.put_many(new)
            found.update(new)
        return np.stack([found[k] for k in keys]).astype(np.float32)

    def encode_catalog_views(
        self, path: Path, n_views: int, cache: EmbeddingCache | None = None
    ) -> np.ndarray:
        """Several index vectors for one catalog photo: view 0 is the photo, the others phone-style views of it.

        A multi-view index: store all rows for the product and score a query by the best row.  The views are
        drawn from the photo's content hash, so re-indexing gives the same vectors.

        Returns:
            float32 [n_views, dim], unit rows.
        """
        sha = file_sha256(path)
        keys = [self._cache_key(sha, f"view{v}") for v in range(n_views)]
        found = cache.get_many(keys) if cache is not None else {}
        todo = [v for v in range(n_views) if keys[v] not in found]
        if todo:
            with Image.open(path) as im:
                img = im.convert("RGB")
            views = [
                img if v == 0 else phone_style(img, np.random.default_rng(view_seed(sha, v, INDEX_VIEW_SEED)))
                for v in todo
            ]
            vecs = self.encode_image(views)
            new = {keys[v]: vec for v, vec in zip(todo, vecs, strict=True)}
            if cache is not None:
                cache.put_many(new)
            found.update(new)
        return np.stack([found[k] for k in keys]).astype(np.float32)

    # ---- tower internals (the offline LiT model only; used by ``align`` and the bench) ---------------------
    @property
    def is_lit(self) -> bool:
        """Whether this is the offline Lite0+MiniLM model (whose towers ``align`` can cache)."""
        return bool(self.config.get("lit"))

    def _require_lit(self) -> None:
        if not self.is_lit:
            raise ValueError(f"{self.name} is not a Lite0+MiniLM LiT model")

    @property
    def colour_bins(self) -> int:
        """Levels per channel of the colour branch's cell histograms (0: the model has no colour branch)."""
        return int(self.config.get("colour_bins", 0)) if self.is_lit else 0

    def image_body(self, pixels: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Frozen features [n, 320 (+ bins³ colour cells), 7, 7] (float32, CPU): stem+blocks, then the colour cells."""
        self._require_lit()
        visual = self.model.visual
        out = []
        with torch.inference_mode(), self._autocast():
            for sl in self._batches(len(pixels), batch_size):
                out.append(visual.features(self._to_device(pixels[sl])).float().cpu())
        return torch.cat(out)

    def image_from_body(self, body: torch.Tensor) -> torch.Tensor:
        """Embedding (unnormalised) from ``image_body`` features; differentiable w.r.t. the trainable parameters."""
        out: torch.Tensor = self.model.visual.from_features(body)
        return out

    def pooled_from_body(self, body: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d trunk features (no projection, no colour) from ``image_body`` features."""
        return lite0_top(self.model.visual.trunk, body[:, :LITE0_BODY_CHANNELS])

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Frozen MiniLM mean-pooled features [n, 384] before the projection head."""
        self._require_lit()
        text = self.model.text
        out = []
        with torch.inference_mode(), self._autocast():
            for sl in self._batches(len(texts), 64):
                x = self.tokenizer(list(texts[sl])).to(self.device)
                mask = (x != text.config.pad_token_id).long()
                out.append(text.pooler(text.transformer(input_ids=x, attention_mask=mask), mask).float().cpu())
        return torch.cat(out)

    def text_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Text embedding (unnormalised) from MiniLM features."""
        out: torch.Tensor = self.model.text.proj(feats)
        return out
