"""Fast vision tests: registry, the open_clip loading path on a tiny random config, the embedding cache."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from vision import (
    DEFAULT_MODEL,
    EmbeddingCache,
    ImageTextEncoder,
    ModelSpec,
    UnknownModelError,
    create_encoder,
    list_models,
    register_model,
)

TINY = "shoptalk-tiny-test"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_registry_lists_default_and_real_clip():
    names = list_models()
    assert DEFAULT_MODEL == "lite0-minilm-lit" and DEFAULT_MODEL in names
    assert "ViT-B-32/laion2b_s34b_b79k" in names


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError) as info:
        create_encoder("no-such-model")
    assert isinstance(info.value, KeyError)
    assert "no-such-model" in str(info.value)
    for name in list_models():
        assert name in str(info.value)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> ImageTextEncoder:
    import open_clip

    folder = tmp_path_factory.mktemp("oc")
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder)
    # the same code path as "ViT-B-32/laion2b_s34b_b79k", with pretrained=None instead of a download
    register_model(ModelSpec("tiny/random", "open_clip", TINY, None, "test only"))
    return create_encoder("tiny/random", device="cpu")


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 30 + i, 3), dtype=np.uint8)) for i in range(n)]


def test_tiny_open_clip_shapes_and_normalization(tiny):
    assert tiny.dim == 32 and not tiny.aligned and tiny.device.type == "cpu"
    img = tiny.encode_image(_images(5), batch_size=2)
    assert img.shape == (5, 32) and img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    txt = tiny.encode_text(["a red shoe", "a blue hat"])
    assert txt.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    raw = tiny.encode_image(_images(2), normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    assert tiny.encode_image([]).shape == (0, 32)


def test_preprocess_pads_to_white_square(tiny):
    x = tiny.preprocess(Image.new("RGB", (60, 20), (0, 0, 0)))
    assert x.shape == (3, 32, 32)
    assert x[:, 0, :].mean() > x[:, 16, :].mean()  # the top rows are the white padding


def test_encode_image_files_uses_cache(tiny, tmp_path, monkeypatch):
    paths = []
    for i, im in enumerate(_images(3)):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    calls = []
    real = tiny.encode_pixels
    monkeypatch.setattr(tiny, "encode_pixels", lambda px, **kw: calls.append(len(px)) or real(px, **kw))
    first = tiny.encode_image_files(paths, cache=cache)
    assert calls == [3] and len(cache) == 3
    second = tiny.encode_image_files(paths[::-1], cache=cache)
    assert calls == [3]  # all hits
    np.testing.assert_allclose(second, first[::-1], atol=1e-6)
    # same bytes under another name: a hit (content hash); new content: a miss
    (tmp_path / "copy.png").write_bytes(paths[0].read_bytes())
    _images(4)[3].save(tmp_path / "new.png")
    tiny.encode_image_files([tmp_path / "copy.png", tmp_path / "new.png"], cache=cache)
    assert calls == [3, 1]


def test_embedding_cache_roundtrip_and_concurrent_readers(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    vecs = {f"k{i}": np.arange(6, dtype=np.float16).reshape(2, 3) + i for i in range(700)}
    cache.put_many(vecs)
    got = cache.get_many(["k1", "missing", "k699"])
    assert set(got) == {"k1", "k699"}
    assert got["k1"].dtype == np.float16 and got["k1"].shape == (2, 3)
    np.testing.assert_array_equal(got["k699"], vecs["k699"])
    errors: list[Exception] = []

    def reader() -> None:
        try:
            for _ in range(5):
                assert len(cache.get_many(list(vecs))) == 700
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    def writer() -> None:
        for i in range(5):
            cache.put_many({f"w{i}": np.ones(4, np.float32)})

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(EmbeddingCache(tmp_path / "c.sqlite")) == 705  # another instance sees committed data
