"""The colour branch of the offline image tower: cell histograms, the zero-initialised branch, legacy checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vision.towers import ColourPool, LitConfig, colour_cells


def test_colour_cells_hand_worked():
    # pure red in [-1, 1] scaling is (1, -1, -1) -> levels (1, 0, 0) of [0, 1/3, 2/3, 1], sigma 1/6:
    # a channel at a bin centre keeps 1 / (1 + e^-2 + e^-8 + e^-18) of its mass there (0.8804),
    # so the joint bin (3, 0, 0) = 3*16 + 0*4 + 0 = 48 holds 0.8804³ = 0.682
    red = torch.tensor([1.0, -1.0, -1.0])[None, :, None, None].expand(1, 3, 224, 224)
    cells = colour_cells(red, bins=4)
    assert cells.shape == (1, 64, 7, 7)
    torch.testing.assert_close(cells.sum(1), torch.ones(1, 7, 7))
    own = 1 / (1 + math.exp(-2) + math.exp(-8) + math.exp(-18))
    assert cells[0, :, 3, 3].argmax().item() == 48
    assert cells[0, 48, 3, 3].item() == pytest.approx(own**3, abs=1e-4)


def test_colour_cells_follow_the_layout():
    # left half white, right half black: white cells peak at bin 63, black cells at bin 0
    x = torch.ones(1, 3, 224, 224)
    x[..., 112:] = -1.0
    cells = colour_cells(x, bins=4)
    assert cells[0, :, 3, 0].argmax().item() == 63 and cells[0, :, 3, 6].argmax().item() == 0


def test_colour_pool_starts_at_zero_and_attends():
    pool = ColourPool(body_channels=8, bins=2, embed_dim=5)
    body, cells = torch.randn(3, 8, 7, 7), colour_cells(torch.rand(3, 3, 56, 56) * 2 - 1, bins=2)
    assert torch.equal(pool(body, cells), torch.zeros(3, 5))
    # an attention that prefers one cell pools (almost) only that cell's histogram
    with torch.no_grad():
        pool.attn.weight.zero_()
        pool.attn.weight[0, 0] = 50.0
        pool.proj.weight.copy_(torch.eye(5, 8))
    one = torch.zeros(1, 8, 7, 7)
    one[0, 0, 2, 4] = 1.0
    want = cells[:1, :, 2, 4].sqrt()[:, :5]
    torch.testing.assert_close(pool(one, cells[:1]), want, atol=1e-4, rtol=1e-4)


def test_lit_config_defaults_to_the_colour_branch():
    assert LitConfig().colour_bins == 4


@pytest.mark.real_model
def test_untrained_colour_branch_leaves_raw_embeddings_unchanged(tmp_path):
    from vision import DEFAULT_MODEL, create_encoder
    from vision.registry import load_checkpoint
    from vision.towers import build_lit_model, lit_trainable

    img = Image.new("RGB", (300, 200), (240, 240, 240))
    ImageDraw.Draw(img).ellipse((40, 30, 200, 170), fill=(10, 120, 200))
    with_colour = create_encoder(DEFAULT_MODEL, device="cpu")
    assert with_colour.colour_bins == 4
    plain = build_lit_model(DEFAULT_MODEL, LitConfig(colour_bins=0))
    attn = build_lit_model(DEFAULT_MODEL, LitConfig(attn_pool=True))  # uniform attention at first: plain GeM
    x = with_colour.preprocess(img)[None]
    with torch.no_grad():
        want = torch.nn.functional.normalize(plain.encode_image(x), dim=-1).numpy()
        np.testing.assert_allclose(with_colour.encode_pixels(x), want, atol=1e-5)
        np.testing.assert_allclose(torch.nn.functional.normalize(attn.encode_image(x), dim=-1).numpy(), want,
                                   atol=1e-5)
        feats = with_colour.image_body(x)
    assert feats.shape == (1, 320 + 64, 7, 7)
    # a checkpoint of the format before the colour branch loads without it
    params = lit_trainable(plain, unlock_conv_head=False)
    old = {"format": "shoptalk-vision-lit/1", "base": DEFAULT_MODEL,
           "model_config": {"embed_dim": 512, "context_length": 48, "pool": "gem", "gem_p": 3.0},
           "align_config": {"unlock_conv_head": False}, "metrics": {},
           "state_dict": {n: p.detach().clone() for n, p in params.items()}}
    torch.save(old, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["model_config"]["colour_bins"] == 0
    legacy = create_encoder(DEFAULT_MODEL, checkpoint=tmp_path / "old.pt", device="cpu")
    assert legacy.aligned and legacy.colour_bins == 0 and legacy.image_body(x).shape == (1, 320, 7, 7)
    torch.save({**old, "format": "something-else/9"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="something-else/9"):
        load_checkpoint(tmp_path / "bad.pt")
