"""A deterministic, invented demo catalog with rendered product pictures.

`generate_demo_catalog` writes ``products.jsonl`` (the same format `Catalog.load_jsonl` reads) and one simple PNG
per product: the silhouette of its category (hoodie, shoe, bag, hat ...) filled with the product's colour. Every
model comes in several colours and prices spread over its category's range, so queries like "black hoodie under
fifty dollars" or "red running shoes" always have several answers on both sides of a price limit.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

IMAGE_SIZE = 256
BACKGROUND = (244, 243, 238)
DEMO_DIRNAME = "demo-catalog"

COLORS: dict[str, tuple[int, int, int]] = {
    "Black": (30, 30, 32),
    "White": (250, 250, 250),
    "Navy": (28, 40, 90),
    "Blue": (40, 110, 210),
    "Red": (200, 35, 40),
    "Green": (40, 140, 70),
    "Grey": (135, 135, 140),
    "Beige": (215, 195, 160),
    "Pink": (240, 150, 180),
    "Yellow": (240, 205, 40),
    "Orange": (240, 130, 30),
    "Purple": (120, 60, 160),
    "Brown": (120, 75, 40),
}
BRANDS = (
    "Harbor & Pine",
    "Northvale",
    "Kestrel",
    "Urbanloom",
    "Tidewater",
    "Summit Row",
    "Brightfield",
    "Oakcrest",
)
APPAREL_SIZES = ("XS", "S", "M", "L", "XL", "XXL")
SHOE_SIZES = tuple(str(s) for s in (6, 6.5, 7, 7.5, 8, 8.5, 9, 9.5, 10, 10.5, 11, 12, 13))
WAIST_SIZES = ("28", "30", "32", "34", "36", "38")

Points = list[tuple[float, float]]


# --- silhouettes: each draws on a 256x256 canvas with the given fill and outline ---------------------------------


def _poly(
    draw: ImageDraw.ImageDraw, pts: Points, fill: tuple[int, int, int], line: tuple[int, int, int]
) -> None:
    draw.polygon(pts, fill=fill, outline=line, width=3)


def _draw_hoodie(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    _poly(
        d,
        [
            (78, 70),
            (40, 120),
            (28, 200),
            (58, 206),
            (72, 140),
            (76, 220),
            (180, 220),
            (184, 140),
            (198, 206),
            (228, 200),
            (216, 120),
            (178, 70),
        ],
        c,
        o,
    )
    d.ellipse((92, 34, 164, 96), fill=c, outline=o, width=3)  # hood
    d.ellipse((110, 56, 146, 92), fill=BACKGROUND, outline=o, width=2)  # face opening
    d.rectangle((100, 160, 156, 190), outline=o, width=2)  # pouch pocket


def _draw_tshirt(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    _poly(
        d,
        [
            (84, 50),
            (30, 86),
            (52, 128),
            (78, 114),
            (78, 220),
            (178, 220),
            (178, 114),
            (204, 128),
            (226, 86),
            (172, 50),
            (150, 62),
            (106, 62),
        ],
        c,
        o,
    )
    d.arc((104, 40, 152, 78), 0, 180, fill=o, width=3)


def _draw_jacket(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    _poly(
        d,
        [
            (86, 44),
            (42, 90),
            (30, 214),
            (60, 216),
            (74, 130),
            (74, 222),
            (182, 222),
            (182, 130),
            (196, 216),
            (226, 214),
            (214, 90),
            (170, 44),
            (128, 70),
        ],
        c,
        o,
    )
    d.line((128, 70, 128, 222), fill=o, width=3)  # zipper
    _poly(d, [(86, 44), (128, 70), (108, 104)], c, o)  # collar
    _poly(d, [(170, 44), (128, 70), (148, 104)], c, o)


def _draw_jeans(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    _poly(d, [(78, 36), (178, 36), (190, 226), (140, 226), (128, 100), (116, 226), (66, 226)], c, o)
    d.line((78, 54, 178, 54), fill=o, width=3)  # waistband


def _draw_running_shoe(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    _poly(
        d, [(30, 170), (36, 120), (80, 110), (120, 80), (150, 84), (170, 120), (226, 146), (232, 176)], c, o
    )
    d.rectangle((26, 176, 234, 194), fill=(235, 235, 235), outline=o, width=3)  # sole
    for x in (100, 116, 132):
        d.line((x, 100, x + 14, 114), fill=o, width=2)  # laces
    d.line((60, 150, 200, 160), fill=o, width=2)  # swoosh-ish stripe


def _draw_sneaker(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    _poly(
        d, [(34, 176), (34, 112), (92, 104), (126, 82), (164, 90), (178, 128), (222, 140), (228, 176)], c, o
    )
    d.rectangle((30, 176, 232, 198), fill=(250, 250, 250), outline=o, width=3)
    d.rectangle((36, 112, 60, 176), outline=o, width=2)  # heel tab


def _draw_boot(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    _poly(d, [(70, 40), (140, 40), (144, 140), (214, 160), (222, 196), (60, 196)], c, o)
    d.rectangle((56, 196, 226, 214), fill=(60, 45, 35), outline=o, width=3)
    d.line((70, 60, 140, 60), fill=o, width=2)


def _draw_backpack(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    d.arc((98, 20, 158, 70), 180, 360, fill=o, width=6)  # handle
    d.rounded_rectangle((60, 44, 196, 226), radius=36, fill=c, outline=o, width=3)
    d.rounded_rectangle((84, 130, 172, 206), radius=14, fill=c, outline=o, width=3)  # front pocket
    d.line((84, 150, 172, 150), fill=o, width=2)


def _draw_dress(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    _poly(d, [(104, 30), (152, 30), (160, 96), (148, 110), (214, 230), (42, 230), (108, 110), (96, 96)], c, o)
    d.line((104, 110, 152, 110), fill=o, width=3)  # waist seam


def _draw_hat(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    d.chord((56, 64, 200, 208), 180, 360, fill=c, outline=o, width=3)  # crown
    _poly(d, [(56, 136), (236, 136), (236, 156), (56, 150)], c, o)  # brim
    d.ellipse((120, 58, 136, 72), fill=c, outline=o, width=2)  # button


def _draw_socks(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    for dx in (0, 50):
        _poly(
            d,
            [
                (70 + dx, 30),
                (112 + dx, 30),
                (112 + dx, 170),
                (150 + dx, 196),
                (140 + dx, 226),
                (86 + dx, 214),
                (70 + dx, 180),
            ],
            c,
            o,
        )
        d.line((70 + dx, 50, 112 + dx, 50), fill=o, width=2)


def _draw_headphones(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    d.arc((52, 36, 204, 196), 180, 360, fill=o, width=14)
    d.arc((52, 36, 204, 196), 180, 360, fill=c, width=8)
    d.rounded_rectangle((36, 110, 86, 196), radius=16, fill=c, outline=o, width=3)
    d.rounded_rectangle((170, 110, 220, 196), radius=16, fill=c, outline=o, width=3)


def _draw_bottle(d: ImageDraw.ImageDraw, c: tuple[int, int, int], o: tuple[int, int, int]) -> None:
    d.rounded_rectangle((108, 22, 148, 52), radius=6, fill=(60, 60, 60), outline=o, width=3)  # cap
    _poly(d, [(112, 52), (144, 52), (168, 86), (168, 230), (88, 230), (88, 86)], c, o)
    d.rectangle((88, 130, 168, 170), outline=o, width=2)  # label band


Drawer = Callable[[ImageDraw.ImageDraw, tuple[int, int, int], tuple[int, int, int]], None]


@dataclass(frozen=True)
class _CategorySpec:
    code: str
    noun: str  # singular noun used in titles and descriptions
    paths: tuple[str, ...]  # category paths; models alternate between them
    models: tuple[str, ...]  # model names; title = f"{model} {noun}"
    price_range: tuple[float, float]
    sizes: tuple[str, ...]
    materials: tuple[str, ...]
    styles: tuple[str, ...]
    featured_colors: tuple[str, ...]  # every model comes in these
    draw: Drawer
    use: str  # a phrase for the description


_CATEGORIES: tuple[_CategorySpec, ...] = (
    _CategorySpec(
        "HD",
        "Hoodie",
        ("Men/Tops/Hoodies", "Women/Tops/Hoodies"),
        (
            "Harbor Fleece",
            "Ridge Zip",
            "Cove Pullover",
            "Metro Heavyweight",
            "Drift Cropped",
            "Alder Sherpa-Lined",
        ),
        (20.0, 75.0),
        APPAREL_SIZES,
        ("cotton fleece", "organic cotton", "recycled polyester"),
        ("pullover", "full-zip", "relaxed fit", "oversized"),
        ("Black", "Grey"),
        _draw_hoodie,
        "cool evenings and lazy weekends",
    ),
    _CategorySpec(
        "TS",
        "T-Shirt",
        ("Men/Tops/T-Shirts", "Women/Tops/T-Shirts"),
        ("Everyday Crew", "Pocket", "Slub V-Neck", "Vintage Wash", "Performance"),
        (12.0, 39.0),
        APPAREL_SIZES,
        ("cotton", "cotton-modal blend", "moisture-wicking polyester"),
        ("crew neck", "v-neck", "slim fit", "classic fit"),
        ("Black", "White"),
        _draw_tshirt,
        "everyday wear",
    ),
    _CategorySpec(
        "JK",
        "Jacket",
        ("Men/Outerwear/Jackets", "Women/Outerwear/Jackets"),
        ("Storm Shell Rain", "Alpine Down", "Field Canvas", "Trailhead Softshell", "City Bomber"),
        (59.0, 249.0),
        APPAREL_SIZES,
        ("nylon", "waxed canvas", "recycled polyester", "down fill"),
        ("waterproof", "insulated", "windproof", "lightweight"),
        ("Black", "Navy"),
        _draw_jacket,
        "wet and windy days",
    ),
    _CategorySpec(
        "JN",
        "Jeans",
        ("Men/Bottoms/Jeans", "Women/Bottoms/Jeans"),
        ("Slim Taper", "Straight Leg", "Relaxed", "High-Rise Skinny", "Bootcut"),
        (39.0, 129.0),
        WAIST_SIZES,
        ("stretch denim", "rigid denim", "organic cotton denim"),
        ("slim fit", "straight fit", "relaxed fit", "skinny fit"),
        ("Blue", "Black"),
        _draw_jeans,
        "everyday wear",
    ),
    _CategorySpec(
        "RS",
        "Running Shoes",
        ("Men/Shoes/Running Shoes", "Women/Shoes/Running Shoes"),
        ("Velocity", "Cloudstride", "Tempo Racer", "Trail Blazer", "Pacer Lite", "Marathon Pro"),
        (49.0, 179.0),
        SHOE_SIZES,
        ("engineered mesh", "knit upper", "recycled mesh"),
        ("neutral", "cushioned", "lightweight", "stability"),
        ("Red", "Black"),
        _draw_running_shoe,
        "road runs and race days",
    ),
    _CategorySpec(
        "SN",
        "Sneakers",
        ("Men/Shoes/Sneakers", "Women/Shoes/Sneakers"),
        ("Court Classic", "Low-Top Canvas", "Retro Runner", "Skate"),
        (44.0, 149.0),
        SHOE_SIZES,
        ("leather", "canvas", "suede"),
        ("low-top", "high-top", "slip-on"),
        ("White", "Black"),
        _draw_sneaker,
        "casual days out",
    ),
    _CategorySpec(
        "BT",
        "Boots",
        ("Men/Shoes/Boots", "Women/Shoes/Boots"),
        ("Timberline Hiking", "Chelsea", "Ranger Work", "Summit Waterproof"),
        (79.0, 229.0),
        SHOE_SIZES,
        ("full-grain leather", "suede", "waterproof nubuck"),
        ("ankle", "lace-up", "pull-on"),
        ("Brown", "Black"),
        _draw_boot,
        "trails and rough weather",
    ),
    _CategorySpec(
        "BP",
        "Backpack",
        ("Accessories/Bags/Backpacks",),
        ("Commuter", "Trailhead 28L", "Roll-Top", "Campus", "Weekender Travel"),
        (29.0, 149.0),
        (),
        ("ripstop nylon", "canvas", "recycled polyester"),
        ("laptop sleeve", "water-resistant", "lightweight"),
        ("Black", "Grey"),
        _draw_backpack,
        "commutes, classes and weekend trips",
    ),
    _CategorySpec(
        "DR",
        "Dress",
        ("Women/Dresses",),
        ("Wrap Midi", "Sundress", "Shirt", "Slip", "Knit Sweater", "Maxi"),
        (34.0, 159.0),
        APPAREL_SIZES[:5],
        ("linen", "viscose", "cotton poplin", "merino knit"),
        ("midi", "maxi", "a-line", "wrap"),
        ("Black", "Red"),
        _draw_dress,
        "warm days and dinners out",
    ),
    _CategorySpec(
        "HT",
        "Hat",
        ("Accessories/Hats",),
        ("Baseball Cap", "Wool Beanie", "Bucket", "Trucker"),
        (14.0, 44.0),
        ("One Size",),
        ("cotton twill", "merino wool", "nylon"),
        ("adjustable", "unstructured", "cuffed"),
        ("Black", "Navy"),
        _draw_hat,
        "sun and cold alike",
    ),
    _CategorySpec(
        "SK",
        "Socks",
        ("Accessories/Socks",),
        ("Crew Athletic", "Merino Hiking", "No-Show", "Compression Running"),
        (7.0, 24.0),
        ("S", "M", "L"),
        ("cotton blend", "merino wool", "nylon blend"),
        ("3-pack", "cushioned", "low-cut"),
        ("White", "Black"),
        _draw_socks,
        "all-day comfort",
    ),
    _CategorySpec(
        "HP",
        "Headphones",
        ("Electronics/Audio/Headphones",),
        ("Studio Over-Ear", "Wireless Noise-Cancelling", "Sport On-Ear", "Travel Foldable"),
        (29.0, 299.0),
        (),
        ("aluminium and protein leather", "plastic and memory foam"),
        ("bluetooth", "noise-cancelling", "wired"),
        ("Black", "White"),
        _draw_headphones,
        "music, calls and travel",
    ),
    _CategorySpec(
        "WB",
        "Water Bottle",
        ("Accessories/Water Bottles",),
        ("Insulated Steel", "Trail Flip-Top", "Glass Infuser", "Squeeze Sport"),
        (9.0, 44.0),
        (),
        ("stainless steel", "BPA-free plastic", "borosilicate glass"),
        ("insulated", "leak-proof", "wide mouth"),
        ("Black", "Blue"),
        _draw_bottle,
        "the gym, the office and the trail",
    ),
)

COLORS_PER_MODEL = 4


def _price(rng: random.Random, lo: float, hi: float, slot: float) -> float:
    """A price in [lo, hi] at relative position `slot` (0..1) with a little jitter, ending in .99 or .00."""
    raw = lo + (hi - lo) * min(1.0, max(0.0, slot + rng.uniform(-0.05, 0.05)))
    whole = int(raw)
    return float(whole) if rng.random() < 0.3 else whole + 0.99


def _outline(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    # Dark colours get a mid-grey outline, light ones a dark one, so every silhouette stands out on the background.
    return (90, 90, 90) if sum(rgb) < 200 else (40, 40, 40)


def render_product_image(spec_code: str, color: str, path: Path) -> None:
    """Draw the silhouette of a category (by code, e.g. ``HD``) in a colour and save it as a PNG."""
    spec = next(s for s in _CATEGORIES if s.code == spec_code)
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    rgb = COLORS[color]
    spec.draw(ImageDraw.Draw(img), rgb, _outline(rgb))
    img.save(path, format="PNG", optimize=True)


def _describe(
    rng: random.Random,
    spec: _CategorySpec,
    model: str,
    color: str,
    material: str,
    style: str,
    gender: str,
    sizes: Sequence[str],
) -> str:
    noun = spec.noun.lower()
    first = rng.choice(
        (
            f"The {model} {noun} is a {style} {noun} made from {material} for {spec.use}.",
            f"A {style} {noun} in {material}, built for {spec.use}.",
            f"Our {model} {noun} pairs {material} with a {style} design for {spec.use}.",
        )
    )
    second = f"This colourway is {color.lower()}"
    second += f", made for {gender.lower()}." if gender != "Unisex" else ", and it suits everyone."
    if len(sizes) > 1:
        third = f"Available in sizes {sizes[0]} to {sizes[-1]}."
    elif sizes:
        third = "One size fits most."
    else:
        third = rng.choice(("Backed by a two-year warranty.", "Easy to clean and built to last."))
    return " ".join((first, second, third))


def _products(seed: int) -> list[tuple[dict[str, Any], str, str]]:
    """All product records with (category code, colour) for their pictures."""
    rng = random.Random(seed)
    palette = list(COLORS)
    out: list[tuple[dict[str, Any], str, str]] = []
    for spec in _CATEGORIES:
        n_models = len(spec.models)
        for j, model in enumerate(spec.models):
            path = spec.paths[j % len(spec.paths)]
            gender = path.split("/")[0] if path.split("/")[0] in ("Men", "Women") else "Unisex"
            others = [c for c in palette if c not in spec.featured_colors]
            colors = list(spec.featured_colors) + rng.sample(
                others, COLORS_PER_MODEL - len(spec.featured_colors)
            )
            brand = rng.choice(BRANDS)
            material = rng.choice(spec.materials)
            style = rng.choice(spec.styles)
            base_slot = (j + 0.5) / n_models  # spread models over the price range
            for color in colors:
                pid = f"{spec.code}{j + 1:02d}-{color.upper()}"
                if spec.sizes and len(spec.sizes) > 3:
                    start = rng.randrange(0, 2)
                    sizes = list(spec.sizes[start : len(spec.sizes) - rng.randrange(0, 2)])
                else:
                    sizes = list(spec.sizes)
                attributes: dict[str, Any] = {
                    "color": color,
                    "material": material,
                    "gender": gender,
                    "style": style,
                }
                if sizes:
                    attributes["size"] = sizes
                record = {
                    "id": pid,
                    "parent_id": None,
                    "type": "simple",
                    "title": f"{model} {spec.noun} — {color}",
                    "description": _describe(rng, spec, model, color, material, style, gender, sizes),
                    "category": path,
                    "categories": [path, path.rsplit("/", 1)[0]],
                    "brand": brand,
                    "price": _price(rng, *spec.price_range, base_slot + rng.uniform(-0.08, 0.08)),
                    "currency": "USD",
                    "attributes": attributes,
                    "images": [f"{pid}.png"],
                }
                out.append((record, spec.code, color))
    return out


def demo_records(seed: int = 7) -> list[dict[str, Any]]:
    """The demo catalog's product records (what ``generate_demo_catalog`` writes), without drawing any picture."""
    return [record for record, _, _ in _products(seed)]


def generate_demo_catalog(out_dir: Path, *, seed: int = 7) -> Path:
    """Write the demo catalog: ``out_dir/products.jsonl`` and ``out_dir/images/<id>.png``.

    The output depends only on `seed`; the JSONL file is written atomically, last.

    Args:
        out_dir: Folder to write into (created if missing).
        seed: Random seed for colours, brands, prices and wording.

    Returns:
        Path of the written ``products.jsonl``.
    """
    out_dir = Path(out_dir)
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = _products(seed)
    for record, code, color in rows:
        render_product_image(code, color, images / record["images"][0])
    target = out_dir / "products.jsonl"
    tmp = target.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record, _, _ in rows:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, target)
    log.info("wrote demo catalog: %d products in %s", len(rows), out_dir)
    return target


def ensure_demo_catalog(data_dir: Path) -> Path:
    """Generate the demo catalog into ``data_dir/demo-catalog/`` unless it is already there.

    Args:
        data_dir: The application's data folder.

    Returns:
        Path of ``products.jsonl``.
    """
    target = Path(data_dir) / DEMO_DIRNAME / "products.jsonl"
    if target.is_file():
        return target
    return generate_demo_catalog(target.parent)
