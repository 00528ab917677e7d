"""Uploaded shopper photos: validated once, normalised, stored under the data dir, referenced by ``image_id``.

Every upload is checked before it is decoded: byte cap, an allowlist of formats (JPEG, PNG, WebP) read from the
header, and a pixel cap read from the header (a decompression bomb is refused without allocating its pixels).
Then it is fully decoded (a truncated file is refused), turned upright by its EXIF orientation, converted to RGB,
downscaled to at most ``MAX_SIDE`` and stored as JPEG.  The store is bounded: oldest photos go first.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import uuid
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from assistant.core.errors import InvalidInputError

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a phone photo is 2-6 MB
MAX_PIXELS = 50_000_000  # 50 MP: above every phone camera, far below a bomb's billions
MAX_SIDE = 1024  # what the encoder needs is 224-260 px; keep some margin for crops
ALLOWED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_ID = re.compile(r"^img_[0-9a-f]{32}$")


class ImageRejected(InvalidInputError):
    """An upload that is not an acceptable photo; ``status`` is the HTTP status to answer with."""

    code = "invalid_image"

    def __init__(self, message: str, *, status: int = 400, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class ImageNotFound(InvalidInputError):
    code = "image_not_found"


def decode_upload(data: bytes) -> Image.Image:
    """Validate and decode an uploaded photo; raises ``ImageRejected`` with a clear message."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageRejected(f"image is {len(data)} bytes; the limit is {MAX_UPLOAD_BYTES}", status=413,
                            code="image_too_large")
    if not data:
        raise ImageRejected("empty upload")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))  # lazy: reads the header only
            if image.format not in ALLOWED_FORMATS:
                raise ImageRejected(f"unsupported image format {image.format}; send JPEG, PNG or WebP",
                                    status=415, code="unsupported_image_format")
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageRejected(f"image is {width}x{height} pixels; the limit is {MAX_PIXELS // 1_000_000} MP",
                                    status=413, code="image_too_large")
            if min(width, height) < 16:
                raise ImageRejected(f"image is {width}x{height} pixels; too small to search with")
            image.load()  # full decode: a truncated file fails here
            image = ImageOps.exif_transpose(image)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageRejected(f"image refused as a decompression bomb: {err}", status=413,
                            code="image_too_large") from err
    except UnidentifiedImageError as err:
        raise ImageRejected("not an image (JPEG, PNG or WebP expected)", status=415,
                            code="unsupported_image_format") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageRejected(f"image could not be decoded (truncated or corrupt): {err}") from err
    rgb = image.convert("RGB")
    rgb.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
    return rgb


class ImageStore:
    """Validated photos on disk, at most ``max_items`` of them (oldest evicted first)."""

    def __init__(self, root: Path, *, max_items: int = 2000) -> None:
        self.root = root
        self.max_items = max_items
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def put(self, data: bytes) -> str:
        image = decode_upload(data)
        image_id = "img_" + uuid.uuid4().hex
        tmp = self.root / f".{image_id}.tmp"
        image.save(tmp, format="JPEG", quality=92)
        tmp.replace(self.path(image_id))
        self._evict()
        return image_id

    def put_image(self, image: Image.Image) -> str:
        """Store an already-decoded image (from a trusted caller, e.g. the CLI)."""
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        return self.put(buf.getvalue())

    def path(self, image_id: str) -> Path:
        if not _ID.match(image_id):
            raise ImageNotFound(f"image {image_id!r} not found", param="image_id")
        return self.root / f"{image_id}.jpg"

    def get(self, image_id: str) -> Image.Image:
        path = self.path(image_id)
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except FileNotFoundError as err:
            raise ImageNotFound(f"image {image_id!r} not found (upload it with POST /v1/images)",
                                param="image_id") from err

    def exists(self, image_id: str) -> bool:
        try:
            return self.path(image_id).exists()
        except ImageNotFound:
            return False

    def _evict(self) -> None:
        with self._lock:
            files = sorted(self.root.glob("img_*.jpg"), key=lambda p: p.stat().st_mtime)
            for old in files[: max(0, len(files) - self.max_items)]:
                old.unlink(missing_ok=True)
                log.debug("evicted %s", old.name)
