"""Photo upload: format/size/pixel limits, EXIF orientation, and photo turns over HTTP and the websocket."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from assistant.runtime.uploads import MAX_UPLOAD_BYTES, ImageRejected, ImageStore, decode_upload
from server.app import create_app
from server.client import TalkClient, TurnResult
from tests.test_realtime_protocol import make_state


def encode(image: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(color: tuple[int, int, int] = (10, 10, 10), size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, color)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_allowed_formats_decode(fmt: str) -> None:
    image = decode_upload(encode(photo(), fmt))
    assert image.mode == "RGB" and image.size == (64, 48)


def test_exif_orientation_is_honoured() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = encode(photo(size=(80, 40)), "JPEG", exif=exif)
    assert decode_upload(data).size == (40, 80)


def test_large_photo_is_downscaled() -> None:
    assert max(decode_upload(encode(photo(size=(3000, 2000)), "JPEG")).size) == 1024


@pytest.mark.parametrize(("data", "code"), [
    (b"hello, not an image", "unsupported_image_format"),
    (b"", "invalid_image"),
])
def test_rejects_non_images(data: bytes, code: str) -> None:
    with pytest.raises(ImageRejected) as err:
        decode_upload(data)
    assert err.value.code == code and err.value.message


def test_rejects_gif() -> None:
    with pytest.raises(ImageRejected) as err:
        decode_upload(encode(photo(), "GIF"))
    assert err.value.status == 415 and "GIF" in err.value.message


def test_rejects_truncated_jpeg() -> None:
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG", quality=95)
    with pytest.raises(ImageRejected) as err:
        decode_upload(data[: len(data) // 2])
    assert err.value.status == 400 and "truncated" in err.value.message


def test_rejects_decompression_bomb_without_decoding() -> None:
    bomb = encode(Image.new("1", (20_000, 20_000)), "PNG")  # 400 MP in a ~50 KB file
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ImageRejected) as err:
            decode_upload(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.status == 413 and "pixels" in err.value.message
    assert peak < 5_000_000  # the 400 MP bitmap was never allocated


def test_store_round_trip_and_unknown_ids(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, max_items=2)
    ids = [store.put(encode(photo((i, i, i)), "PNG")) for i in range(3)]
    assert store.exists(ids[2]) and store.get(ids[2]).size == (64, 48)
    assert not store.exists(ids[0])  # evicted, bounded store
    for bad in ("img_" + "f" * 32, "../../etc/passwd", "img_x"):
        assert not store.exists(bad)


@pytest.fixture
def server(tmp_path: Path, live_server_factory: Any) -> Any:
    return live_server_factory(create_app(state=make_state(tmp_path)))


async def test_http_upload_and_photo_search(server: Any) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
        ok = await http.post("/v1/images", files={"file": ("p.jpg", encode(photo(), "JPEG"), "image/jpeg")})
        assert ok.status_code == 201, ok.text
        image_id = ok.json()["image_id"]
        body = (await http.post("/v1/search", json={"image_id": image_id})).json()
        assert body["products"] and all("Hoodie" in p["title"] or "Parka" in p["title"] for p in body["products"])
        refined = (await http.post("/v1/search", json={"image_id": image_id, "text": "under 50 dollars"})).json()
        assert refined["products"] and all(p["price"] <= 50 for p in refined["products"])
        bad = await http.post("/v1/images", files={"file": ("x.txt", b"not an image", "text/plain")})
        assert bad.status_code == 415 and "JPEG" in bad.text
        missing = await http.post("/v1/images", data={"other": "x"})
        assert missing.status_code == 400
        assert missing.json()["detail"]["code"] == "missing_file" and "'file'" in missing.json()["detail"]["message"]


async def test_http_30_mb_upload_is_refused(server: Any) -> None:
    big = b"\xff\xd8" + b"\x00" * (30 * 1024 * 1024)
    async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as http:
        res = await http.post("/v1/images", files={"file": ("big.jpg", big, "image/jpeg")})
        assert res.status_code == 413 and str(MAX_UPLOAD_BYTES) in res.text

        # Without a Content-Length (chunked), the server stops reading at the cap and keeps memory bounded.
        boundary = "shoptalkboundary"

        async def body() -> AsyncIterator[bytes]:
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
                   "Content-Type: image/jpeg\r\n\r\n").encode()
            chunk = b"\x00" * (1024 * 1024)
            for _ in range(30):
                yield chunk
            yield f"\r\n--{boundary}--\r\n".encode()

        tracemalloc.start()
        try:
            res = await http.post("/v1/images", content=body(),
                                  headers={"content-type": f"multipart/form-data; boundary={boundary}"})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert res.status_code == 413
        assert peak < 25 * 1024 * 1024, peak
        assert (await http.get("/healthz")).status_code == 200


async def test_websocket_photo_turn(server: Any) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        image_id = (await http.post("/v1/images", files={"file": ("p.png", encode(photo(), "PNG"))})).json()["image_id"]
    async with TalkClient(server.ws_url) as client:
        await client.send({"type": "conversation.item.create",
                           "item": {"content": [{"type": "input_image", "image_id": "img_" + "0" * 32}]}})
        event = await client.recv_event()
        assert event["type"] == "error" and event["error"]["code"] == "image_not_found"
        await client.send({"type": "conversation.item.create", "item": {"content": [
            {"type": "input_image", "image_id": image_id}, {"type": "input_text", "text": "like this under 40"}]}})
        created = await client.recv_event()
        assert created["type"] == "conversation.item.created"
        await client.send({"type": "response.create"})
        result = await client.collect_turn(TurnResult(), timeout=20)
    assert result.status == "completed"
    assert result.products and all(p["price"] <= 40 for p in result.products)
