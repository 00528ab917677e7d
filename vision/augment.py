"""Image preprocessing helpers and seeded phone-style augmentations of catalog photos.

``phone_style`` turns a studio photo (product on white) into something like a shopper's phone snapshot: the product
is cut out of its white background, rotated, scaled and pasted on a random background, then cropped, colour-jittered,
blurred and JPEG-compressed.  Everything draws from the ``numpy.random.Generator`` passed in, so training, index views
and benchmark queries use disjoint, reproducible draws simply by using different seeds.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

WHITE = (255, 255, 255)
WORK_SIZE = 320  # augment at this size: the encoder sees 224 px, so larger costs time for nothing


def pad_to_square(img: Image.Image, fill: tuple[int, int, int] = WHITE) -> Image.Image:
    """Pad to a square with ``fill`` (white for catalog photos), keeping the whole product in frame."""
    img = img.convert("RGB")
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new("RGB", (side, side), fill)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def tta_crops(img: Image.Image, scale: float = 0.9) -> list[Image.Image]:
    """Test-time views of a shopper photo: the whole photo, its centre crop and its four corner crops at ``scale``.

    Averaging the normalised embeddings of these views makes a query less sensitive to framing (off-centre product,
    busy margins).  Only for queries: catalog photos are indexed as a single view.
    """
    img = img.convert("RGB")
    w, h = img.size
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    boxes = [((w - cw) // 2, (h - ch) // 2)] + [(x, y) for x in (0, w - cw) for y in (0, h - ch)]
    return [img] + [img.crop((x, y, x + cw, y + ch)) for x, y in boxes]


def shrink(img: Image.Image, size: int = WORK_SIZE) -> Image.Image:
    """Downscale so the longer side is ``size`` (never upscale)."""
    img = img.convert("RGB")
    scale = size / max(img.size)
    if scale >= 1.0:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BICUBIC)


def foreground_mask(img: Image.Image, threshold: int = 236, grid: int = 96) -> Image.Image:
    """Mask (L, 255 = product) of everything not connected to the border through near-white pixels.

    The flood fill runs as repeated 4-neighbour dilation on a ``grid``-pixel thumbnail (numpy, a few ms), then the
    mask is scaled back up.
    """
    small = img.convert("RGB").resize((grid, grid), Image.Resampling.BOX)
    white = np.asarray(small).min(axis=2) >= threshold
    reached = np.zeros_like(white)
    reached[0, :], reached[-1, :], reached[:, 0], reached[:, -1] = white[0, :], white[-1, :], white[:, 0], white[:, -1]
    while True:
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= white
        if np.array_equal(grown, reached):
            break
        reached = grown
    # bilinear upscaling of the coarse mask also feathers its edge
    return Image.fromarray((~reached).astype(np.uint8) * 255, "L").resize(img.size, Image.Resampling.BILINEAR)


def _rand_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = rng.integers(0, 256, size=3)
    return int(r), int(g), int(b)


def random_background(size: int, rng: np.random.Generator) -> Image.Image:
    """A busy random background: solid, gradient, blobs or blurred noise texture."""
    kind = int(rng.integers(0, 4))
    if kind == 0:
        bg = Image.new("RGB", (size, size), _rand_colour(rng))
    elif kind == 1:
        a, b = np.array(_rand_colour(rng), float), np.array(_rand_colour(rng), float)
        t = np.linspace(0.0, 1.0, size)[:, None, None]
        grad = (a * (1 - t) + b * t).astype(np.uint8)
        bg = Image.fromarray(np.repeat(grad, size, axis=1), "RGB")
        bg = bg.rotate(float(rng.uniform(0, 360)), resample=Image.Resampling.BILINEAR, expand=False, fillcolor=_rand_colour(rng))
    elif kind == 2:
        bg = Image.new("RGB", (size, size), _rand_colour(rng))
        draw = ImageDraw.Draw(bg)
        for _ in range(int(rng.integers(4, 14))):
            x0, y0 = (int(v) for v in rng.integers(-size // 4, size, size=2))
            w, h = (int(v) for v in rng.integers(size // 8, size // 2, size=2))
            box = (x0, y0, x0 + w, y0 + h)
            if rng.random() < 0.5:
                draw.ellipse(box, fill=_rand_colour(rng))
            else:
                draw.rectangle(box, fill=_rand_colour(rng))
    else:
        cells = int(rng.integers(4, 24))
        noise = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
        bg = Image.fromarray(noise, "RGB").resize((size, size), Image.Resampling.BICUBIC)
    return bg.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 3))))


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """Round-trip through JPEG at ``quality``."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def phone_style(img: Image.Image, rng: np.random.Generator, *, background_p: float = 0.8) -> Image.Image:
    """A phone-style snapshot of a catalog photo: pasted on a background, rotated, cropped, jittered, blurred, JPEG.

    Args:
        img: catalog photo, product on white.
        rng: source of every random choice.
        background_p: probability of pasting on a random background (else the white studio background stays).
    """
    prod = pad_to_square(shrink(img))
    side = prod.width
    canvas_side = WORK_SIZE
    if rng.random() < background_p:
        canvas = random_background(canvas_side, rng)
        mask = foreground_mask(prod)
    else:
        canvas = Image.new("RGB", (canvas_side, canvas_side), WHITE)
        mask = Image.new("L", prod.size, 255)
    # rotate product and mask together, then scale to 55-95 % of the canvas and paste at a random spot
    angle = float(rng.uniform(-25, 25))
    prod = prod.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=WHITE)
    mask = mask.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=0)
    target = int(canvas_side * rng.uniform(0.55, 0.95) * prod.width / (side * math.sqrt(2)) * 1.2)
    target = max(16, min(target, canvas_side))
    prod = prod.resize((target, target), Image.Resampling.BICUBIC)
    mask = mask.resize((target, target), Image.Resampling.BILINEAR)
    ox = int(rng.integers(-(target // 8), max(1, canvas_side - target + target // 8)))
    oy = int(rng.integers(-(target // 8), max(1, canvas_side - target + target // 8)))
    canvas.paste(prod, (ox, oy), mask)
    # random crop (60-100 % of the area, aspect 3:4..4:3) back to a square-ish frame
    area = rng.uniform(0.6, 1.0) * canvas_side * canvas_side
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw = int(min(canvas_side, math.sqrt(area * aspect)))
    ch = int(min(canvas_side, math.sqrt(area / aspect)))
    cx = int(rng.integers(0, canvas_side - cw + 1))
    cy = int(rng.integers(0, canvas_side - ch + 1))
    out = canvas.crop((cx, cy, cx + cw, cy + ch))
    # colour jitter
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.7, 1.3)))
    out = ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.7, 1.3)))
    out = ImageEnhance.Color(out).enhance(float(rng.uniform(0.7, 1.3)))
    if rng.random() < 0.5:
        hsv = np.asarray(out.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(-8, 9))) % 256
        out = Image.fromarray(hsv, "HSV").convert("RGB")
    out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.6))))
    return jpeg(out, int(rng.integers(30, 60)))
