"""Fuzzing the photo upload path: ``ImageStore.put`` in process, and ``POST /v1/images`` through the app.

Mutations of valid JPEG/PNG/WebP bytes (truncation, bit flips, wrong magic, appended garbage, huge declared sizes),
unusual but valid encodings (animated, CMYK, 16-bit, palette, LA, EXIF orientation garbage): every result is a
stored ``image_id`` or a coded 4xx refusal with a clear message, never a 5xx or another exception, and
decompression-bomb headers are refused without allocating their pixels.
"""

from __future__ import annotations

import io
import random
import struct
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from assistant.core.errors import AssistantError
from assistant.runtime.uploads import MAX_PIXELS, ImageRejected, ImageStore
from server.app import create_app
from tests.test_fuzz_protocol import make_state

FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, print_blob=True)


def encode(image: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(mode: str = "RGB", size: tuple[int, int] = (48, 40)) -> Image.Image:
    img = Image.new("RGB", size)
    img.putdata([((x * 5) % 256, (y * 7) % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])])
    return img.convert(mode) if mode != "RGB" else img


def _exif_garbage(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation: valid are 1..8
    return encode(_gradient(), "JPEG", exif=exif.tobytes())


def _animated(fmt: str) -> bytes:
    frames = [_gradient().rotate(a) for a in (0, 90, 180)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)


SEEDS: dict[str, bytes] = {
    "jpeg": encode(_gradient(), "JPEG", quality=85),
    "jpeg-progressive": encode(_gradient(), "JPEG", progressive=True),
    "jpeg-cmyk": encode(_gradient("CMYK"), "JPEG"),
    "jpeg-gray": encode(_gradient("L"), "JPEG"),
    "png": encode(_gradient(), "PNG"),
    "png-rgba": encode(_gradient("RGBA"), "PNG"),
    "png-palette": encode(_gradient("P"), "PNG"),
    "png-la": encode(_gradient("LA"), "PNG"),
    "png-16bit": encode(_gradient("L").convert("I;16"), "PNG"),
    "png-animated": _animated("PNG"),
    "webp": encode(_gradient(), "WEBP"),
    "webp-lossless": encode(_gradient("RGBA"), "WEBP", lossless=True),
    "webp-animated": _animated("WEBP"),
    **{f"exif-orientation-{o}": _exif_garbage(o) for o in (0, 3, 6, 8, 9, 255, 65535)},
}


def png_with_size(width: int, height: int, *, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` but whose data is a few bytes (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def jpeg_with_size(width: int, height: int) -> bytes:
    """The seed JPEG with its SOF0 frame header rewritten to declare another size."""
    data = bytearray(SEEDS["jpeg"])
    at = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    out = bytearray(data)
    if kind == "truncate":
        return bytes(out[: rng.randrange(0, len(out))])
    if kind == "bitflip":
        for _ in range(rng.randint(1, 12)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == "header-bitflip":  # the first 64 bytes hold the magic and the size fields
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(min(64, len(out)))
            out[i] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == "magic":
        out[: rng.randint(1, 8)] = bytes(rng.randrange(256) for _ in range(8))[: rng.randint(1, 8)]
        return bytes(out)
    if kind == "append":
        return bytes(out) + bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))
    if kind == "splice":
        i, j = sorted(rng.randrange(len(out)) for _ in range(2))
        return bytes(out[:i] + out[j:] + out[i:j])
    if kind == "zero-run":
        i = rng.randrange(len(out))
        out[i : i + rng.randint(1, 256)] = b"\x00" * len(out[i : i + 256])
        return bytes(out)
    raise AssertionError(kind)


MUTATIONS = ["truncate", "bitflip", "header-bitflip", "magic", "append", "splice", "zero-run", "none"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    return ImageStore(tmp_path_factory.mktemp("img-fuzz"), max_items=50)


def put_or_refusal(store: ImageStore, data: bytes) -> str | ImageRejected:
    try:
        image_id = store.put(data)
    except ImageRejected as err:
        assert 400 <= err.status < 500, err
        assert err.code and err.message and len(err.message) < 500, err
        return err
    except Exception as err:  # noqa: BLE001 - anything else is the bug this fuzzer looks for
        raise AssertionError(f"uncoded {type(err).__name__}: {err}") from err
    assert store.exists(image_id)
    with Image.open(store.path(image_id)) as stored:
        assert stored.format == "JPEG" and stored.mode == "RGB" and max(stored.size) <= 1024
    return image_id


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_valid_seeds_are_stored(store: ImageStore, name: str) -> None:
    result = put_or_refusal(store, SEEDS[name])
    assert isinstance(result, str), f"{name}: {result}"


@settings(FUZZ, max_examples=400)
@given(st.sampled_from(sorted(SEEDS)), st.sampled_from(MUTATIONS), st.randoms(use_true_random=False))
def test_mutated_uploads(store: ImageStore, seed: str, kind: str, rng: random.Random) -> None:
    data = SEEDS[seed] if kind == "none" else mutate(SEEDS[seed], kind, rng)
    put_or_refusal(store, data)


@settings(FUZZ, max_examples=60)
@given(st.binary(max_size=2048))
def test_random_bytes(store: ImageStore, data: bytes) -> None:
    result = put_or_refusal(store, data)
    assert isinstance(result, ImageRejected)


BOMBS = [
    ("png-65535-square", png_with_size(65535, 65535)),
    ("png-2^31-wide", png_with_size(2**31 - 1, 1)),
    ("png-just-over-cap", png_with_size(10_000, MAX_PIXELS // 10_000 + 1)),
    ("png-16bit-rgba", png_with_size(40_000, 40_000, bit_depth=16, color_type=6)),
    ("jpeg-65535-square", jpeg_with_size(65535, 65535)),
    ("jpeg-zero-size", jpeg_with_size(0, 0)),
    ("png-zero-size", png_with_size(0, 0)),
]


@pytest.mark.parametrize(("name", "data"), BOMBS, ids=[b[0] for b in BOMBS])
def test_decompression_bomb_headers_are_refused_cheaply(store: ImageStore, name: str, data: bytes) -> None:
    tracemalloc.start()
    try:
        result = put_or_refusal(store, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, ImageRejected), name
    assert peak < 16 * 1024 * 1024, f"{name}: {peak / 2**20:.1f} MiB traced while refusing"
    if "zero" not in name:
        assert result.status == 413 and result.code == "image_too_large", result


def test_oversized_upload_is_413(store: ImageStore) -> None:
    data = SEEDS["jpeg"] + b"\x00" * (10 * 1024 * 1024)
    result = put_or_refusal(store, data)
    assert isinstance(result, ImageRejected) and result.status == 413


# --- the same through POST /v1/images ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Any:
    app = create_app(state=make_state(tmp_path_factory.mktemp("img-http")))
    with TestClient(app) as client:
        yield client


def check_http(client: TestClient, data: bytes, filename: str = "photo.bin") -> int:
    res = client.post("/v1/images", files={"file": (filename, data, "application/octet-stream")})
    assert res.status_code < 500, res.text
    if res.status_code == 201:
        assert res.json()["image_id"].startswith("img_")
    else:
        assert 400 <= res.status_code < 500, res.status_code
        detail = res.json()["detail"]
        message = detail["message"] if isinstance(detail, dict) else detail
        assert isinstance(message, str) and message, res.text
    return res.status_code


@settings(FUZZ, max_examples=120)
@given(st.sampled_from(sorted(SEEDS)), st.sampled_from(MUTATIONS), st.randoms(use_true_random=False))
def test_mutated_uploads_over_http(http: TestClient, seed: str, kind: str, rng: random.Random) -> None:
    data = SEEDS[seed] if kind == "none" else mutate(SEEDS[seed], kind, rng)
    check_http(http, data)


@pytest.mark.parametrize(("name", "data"), BOMBS + [("empty", b"")], ids=[b[0] for b in BOMBS] + ["empty"])
def test_bombs_and_empty_over_http(http: TestClient, name: str, data: bytes) -> None:
    assert check_http(http, data) in (400, 413, 415), name


def test_multipart_without_file_field(http: TestClient) -> None:
    res = http.post("/v1/images", data={"not_file": "x"})
    assert 400 <= res.status_code < 500 and res.json()["detail"]


def test_seed_files_exist(tmp_path: Path) -> None:
    """Sanity: the seeds really are the formats they claim (so the mutations start from valid files)."""
    for name, data in SEEDS.items():
        with Image.open(io.BytesIO(data)) as img:
            assert img.format in ("JPEG", "PNG", "WEBP"), name
    assert isinstance(AssistantError("x"), Exception)
