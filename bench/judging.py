"""Rule-based graded judgments for the spoken-request sets (``bench/data/spoken_requests*.jsonl``).

Each product request in those files carries a small hand-written ``spec`` of what the shopper asked for; this
module turns a spec into graded judgments (0–3) over the Luma catalog's shoppable products, at the level search
returns: configurable parents (their colour/size variants are checked, never judged), and simple, bundle, grouped
and downloadable products as themselves. How the sets were written: ``bench/data/SPOKEN.md``.

Spec keys (all optional except ``kind``):

* ``kind``: target kinds (``KINDS``); a product of none of them is graded by ``related`` only;
* ``related``: neighbouring kinds graded 1 (default ``NEIGHBOURS`` of the target kinds);
* ``line``: a product-line name, or a list of alternatives, that must appear in the title ("mona", "breathe easy");
* ``style``: hard term groups, each matched in the title, style attributes or description ("zip", "v neck");
* ``colour``, ``size``, ``min_price``, ``max_price``: checked together on one variant (one option of a simple
  product; the members of a grouped product);
* ``gender``: ``"women"`` or ``"men"`` (unisex products pass both);
* ``flags``: catalog flags that must be ``Yes`` (``"sale"``, ``"eco_collection"``, ...);
* ``use``: soft term groups (the use case), each matched anywhere in the product's text and attributes;
* ``grade``: hand overrides ``{product id: grade}`` applied last (0 removes a product); ``note`` says why.

A term is a phrase matched on word boundaries after normalisation (lower case, punctuation to spaces); a trailing
``*`` matches any word ending ("zip*" matches "zipper"). A group is a string or a list of alternative terms.

Grades for a product of a target kind: wrong product line, style or gender: 1; a colour/size/price miss: 2 when a
product line was asked and holds (the named product, another option), else 1; otherwise every soft group found (or
none asked): 3, at least half: 2, fewer: 2 when the spec has any hard constraint, else 1.

Run ``python -m bench.judging --check`` (recompute every file's judgments, report differences, exit 1 on any),
``--write`` (rewrite them) or ``--report`` (the grade-3/2 titles of the dev split, for hand checks).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.common import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
DEV_FILE = DATA / "spoken_requests.jsonl"
HELDOUT_FILE = DATA / "spoken_requests_heldout.jsonl"
SPOKEN_FILES = (DEV_FILE, HELDOUT_FILE)
REQUEST_KINDS = ("category", "attribute", "price", "product_line", "usecase", "mixed", "other")
PRODUCT_KINDS = REQUEST_KINDS[:-1]

KINDS = frozenset({
    "top", "bottom", "hoodie", "jacket", "tee", "bra", "tank", "pants", "leggings", "capri", "shorts",
    "bag", "backpack", "duffle", "messenger", "tote", "watch", "equipment", "bottle", "ball", "jump_rope", "band",
    "grips", "brick", "roller", "strap", "kit", "video",
})
NEIGHBOURS: Mapping[str, tuple[str, ...]] = {
    "hoodie": ("jacket",), "jacket": ("hoodie",), "tee": ("tank",), "tank": ("tee", "bra"), "bra": ("tank",),
    "leggings": ("pants",), "capri": ("pants",), "backpack": ("bag",), "duffle": ("bag",), "messenger": ("bag",),
    "tote": ("bag",), "ball": ("kit",), "brick": ("kit",), "roller": ("kit",), "strap": ("kit",),
    "band": ("equipment",), "jump_rope": ("equipment",), "grips": ("equipment",),
}
SPEC_KEYS = frozenset({
    "kind", "related", "line", "style", "colour", "size", "min_price", "max_price", "gender", "flags", "use",
    "grade", "note",
})
_STYLE_ATTRS = ("style_general", "style_bottom", "style_bags", "category_gear", "features_bags", "strap_bags")
_EQUIPMENT_KINDS = (
    ("water bottle", "bottle"), ("ball", "ball"), ("jump rope", "jump_rope"), ("band", "band"),
    ("grips", "grips"), ("brick", "brick"), ("roller", "roller"), ("strap*", "strap"), ("companion kit", "kit"),
)
_BAG_KINDS = (("backpack", "backpack"), ("duffel", "duffle"), ("messenger", "messenger"), ("tote", "tote"))


def catalog_path() -> Path:
    """The Luma sample catalog the judgments are graded over (read-only shared data)."""
    return shared_data_dir() / "luma-dev" / "products.jsonl"


def normalise(text: str) -> str:
    """Lower case, ``¼``/``1/4`` as "quarter", trade marks dropped, punctuation to spaces, spaces collapsed."""
    text = text.lower().replace("¼", " quarter ").replace("1/4", " quarter ")
    text = re.sub(r"[™®]", "", text)
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


@lru_cache(maxsize=4096)
def _term_pattern(term: str) -> re.Pattern[str]:
    words = normalise(term.rstrip("*")).split()
    if not words:
        raise ValueError(f"empty term {term!r}")
    tail = r"\w*" if term.endswith("*") else ""
    return re.compile(r"\b" + r"\s+".join(map(re.escape, words)) + tail + r"\b")


def has_term(text: str, term: str) -> bool:
    """Whether the (normalised) ``text`` holds ``term`` on word boundaries (``*`` at its end: any ending)."""
    return _term_pattern(term).search(text) is not None


def _group(group: str | Sequence[str]) -> tuple[str, ...]:
    return (group,) if isinstance(group, str) else tuple(group)


def has_group(text: str, group: str | Sequence[str]) -> bool:
    """Whether ``text`` holds any alternative of ``group``."""
    return any(has_term(text, term) for term in _group(group))


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _size_key(size: Any) -> str | None:
    return None if size is None else re.sub(r"\s+", "", str(size).lower())


def _colour_key(colour: Any) -> str | None:
    if colour is None:
        return None
    key = str(colour).strip().lower()
    return "gray" if key == "grey" else key


@dataclass(frozen=True)
class Option:
    """One buyable option of a product: a variant's (or the product's own) colour, size and price."""

    colour: str | None
    size: str | None
    price: float | None


@dataclass(frozen=True)
class Item:
    """A shoppable product with what grading looks at, precomputed."""

    id: str
    title: str
    kinds: frozenset[str]
    options: tuple[Option, ...]
    title_text: str
    style_text: str
    full_text: str
    genders: frozenset[str]
    flags: frozenset[str]


def kinds_of(row: Mapping[str, Any]) -> frozenset[str]:
    """The kinds (``KINDS``) a catalog row belongs to, from its category, title and style attributes."""
    category = str(row.get("category") or "")
    attrs = row.get("attributes") or {}
    title = normalise(str(row.get("title") or ""))
    styles = normalise(" ".join(w for key in _STYLE_ATTRS for w in _words(attrs.get(key))))
    both = f"{title} {styles}"
    kinds: set[str] = set()
    if category.startswith("Women/Tops"):
        kinds.add("top")
    if category.startswith("Women/Bottoms"):
        kinds.add("bottom")
    leaf = category.rsplit("/", 1)[-1]
    if leaf == "Hoodies & Sweatshirts":
        kinds.add("hoodie")
    elif leaf == "Jackets":
        kinds.add("jacket")
    elif leaf == "Tees":
        kinds.add("tee")
    elif leaf == "Bras & Tanks":
        kinds.add("bra" if has_term(styles, "bra") else "tank")
    elif leaf == "Pants":
        kinds.add("pants")
        if has_group(both, ("leggings", "tights")):
            kinds.add("leggings")
        if has_term(both, "capri*"):
            kinds.add("capri")
    elif leaf == "Shorts":
        kinds.add("shorts")
    elif category == "Gear/Bags":
        kinds.add("bag")
        kinds.update(kind for term, kind in _BAG_KINDS if has_term(both, term))
    elif category == "Gear/Watches":
        kinds.add("watch")
    elif category == "Gear/Fitness Equipment":
        kinds.add("equipment")
        kinds.update(kind for term, kind in _EQUIPMENT_KINDS if has_term(title, term))
    elif category.startswith("Training/Video"):
        kinds.add("video")
    return frozenset(kinds)


def _own_option(row: Mapping[str, Any]) -> Option:
    attrs = row.get("attributes") or {}
    price = row.get("price")
    return Option(_colour_key(attrs.get("color")), _size_key(attrs.get("size")),
                  None if price is None else float(price))


def load_items(path: Path | None = None) -> list[Item]:
    """The catalog's shoppable products (every row that is not a variant), in catalog order."""
    rows = [json.loads(line) for line in (path or catalog_path()).read_text().splitlines() if line.strip()]
    by_id = {str(r["id"]): r for r in rows}
    variants: dict[str, list[Option]] = {}
    for row in rows:
        if row.get("type") == "variant" and row.get("parent_id"):
            variants.setdefault(str(row["parent_id"]), []).append(_own_option(row))
    items = []
    for row in rows:
        if row.get("type") == "variant":
            continue
        pid = str(row["id"])
        attrs = row.get("attributes") or {}
        if row.get("type") == "configurable":
            options = tuple(variants.get(pid, ()))
        elif row.get("type") == "grouped":
            options = tuple(_own_option(by_id[m]) for m in _words(attrs.get("associated_sku")) if m in by_id)
        else:
            options = (_own_option(row),)
        title = normalise(str(row.get("title") or ""))
        styles = " ".join(w for key in _STYLE_ATTRS for w in _words(attrs.get(key)))
        description = str(row.get("description") or "")
        flags = frozenset(k for k, v in (row.get("flags") or {}).items() if str(v).lower() == "yes")
        attr_words = " ".join(w for key, value in attrs.items() if key not in ("size", "color")
                              for w in _words(value))
        full = " ".join([str(row.get("title") or ""), description, " ".join(_words(row.get("categories"))),
                         attr_words, " ".join(f.replace("_", " ") for f in flags)])
        genders = {g.lower() for g in _words(attrs.get("gender"))}
        if str(row.get("category") or "").startswith("Women/"):
            genders.add("women")
        items.append(Item(
            id=pid, title=str(row.get("title") or "").strip(), kinds=kinds_of(row), options=options,
            title_text=title, style_text=normalise(f"{row.get('title') or ''} {styles} {description}"),
            full_text=normalise(full), genders=frozenset(genders), flags=flags,
        ))
    return items


def validate_spec(spec: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for a spec the grader would misread (unknown keys or kinds, no kind, bad bounds)."""
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(f"unknown spec keys {sorted(unknown)}")
    kinds = _words(spec.get("kind"))
    if not kinds:
        raise ValueError("a spec needs a kind")
    bad = (set(kinds) | set(_words(spec.get("related")))) - KINDS
    if bad:
        raise ValueError(f"unknown kinds {sorted(bad)}")
    if spec.get("gender") not in (None, "women", "men"):
        raise ValueError(f"gender must be women or men, not {spec['gender']!r}")
    low, high = spec.get("min_price"), spec.get("max_price")
    if low is not None and high is not None and float(low) > float(high):
        raise ValueError("min_price above max_price")
    for value in (spec.get("grade") or {}).values():
        if value not in (0, 1, 2, 3):
            raise ValueError(f"override grade {value!r} not in 0-3")


def _option_ok(option: Option, spec: Mapping[str, Any]) -> bool:
    colour, size = _colour_key(spec.get("colour")), _size_key(spec.get("size"))
    if colour is not None and option.colour != colour:
        return False
    if size is not None and option.size != size:
        return False
    low, high = spec.get("min_price"), spec.get("max_price")
    if low is None and high is None:
        return True
    if option.price is None:
        return False
    return (low is None or option.price >= float(low) - 1e-9) and (high is None or option.price <= float(high) + 1e-9)


def _has_option_constraint(spec: Mapping[str, Any]) -> bool:
    return any(spec.get(key) is not None for key in ("colour", "size", "min_price", "max_price"))


def _hard_asked(spec: Mapping[str, Any]) -> bool:
    return _has_option_constraint(spec) or any(spec.get(k) for k in ("line", "style", "gender", "flags"))


def grade(spec: Mapping[str, Any], item: Item) -> int:
    """The rule-based grade (0–3) of one shoppable product for one spec, before hand overrides."""
    targets = set(_words(spec.get("kind")))
    if not targets & item.kinds:
        related = spec.get("related")
        neighbours = set(_words(related)) if related is not None else {
            n for kind in targets for n in NEIGHBOURS.get(kind, ())
        }
        return 1 if neighbours & item.kinds else 0
    line = spec.get("line")
    if line and not has_group(item.title_text, _words(line)):
        return 1
    if not all(has_group(item.style_text, g) for g in spec.get("style") or ()):
        return 1
    gender = spec.get("gender")
    if gender and item.genders and not ({gender, "unisex"} & item.genders):
        return 1
    if not set(_words(spec.get("flags"))) <= item.flags:
        return 1
    if _has_option_constraint(spec) and not any(_option_ok(o, spec) for o in item.options):
        return 2 if line else 1
    groups = spec.get("use") or ()
    if not groups:
        return 3
    found = sum(has_group(item.full_text, g) for g in groups)
    if found == len(groups):
        return 3
    if 2 * found >= len(groups):
        return 2
    return 2 if _hard_asked(spec) else 1


def judge(spec: Mapping[str, Any], items: Iterable[Item]) -> dict[str, int]:
    """Graded judgments ``{id: grade > 0}`` of every shoppable product, overrides applied, best first."""
    validate_spec(spec)
    items = list(items)
    known = {item.id for item in items}
    overrides = {str(k): int(v) for k, v in (spec.get("grade") or {}).items()}
    missing = set(overrides) - known
    if missing:
        raise ValueError(f"overrides name products that are not shoppable: {sorted(missing)}")
    order = {item.id: i for i, item in enumerate(items)}
    grades = {item.id: overrides.get(item.id, grade(spec, item)) for item in items}
    kept = [(pid, g) for pid, g in grades.items() if g > 0]
    kept.sort(key=lambda pg: (-pg[1], order[pg[0]]))
    return dict(kept)


def load_requests(path: Path) -> list[dict[str, Any]]:
    """One file's requests, in file order."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def recompute(request: Mapping[str, Any], items: Sequence[Item]) -> dict[str, int]:
    """The judgments a request should carry: ``{}`` for ``other`` utterances, else ``judge(spec)``."""
    if request.get("kind") == "other" or request.get("spec") is None:
        return {}
    return judge(request["spec"], items)


def differences(path: Path, items: Sequence[Item]) -> list[str]:
    """One line per request of ``path`` whose stored judgments differ from the recomputed ones."""
    out = []
    for request in load_requests(path):
        stored = {str(k): int(v) for k, v in (request.get("judgments") or {}).items()}
        fresh = recompute(request, items)
        if stored != fresh:
            changed = sorted(set(stored) | set(fresh), key=str)
            detail = ", ".join(f"{pid}: {stored.get(pid, 0)}->{fresh.get(pid, 0)}" for pid in changed
                               if stored.get(pid, 0) != fresh.get(pid, 0))
            out.append(f"{path.name} {request.get('qid')}: {detail}")
    return out


def write(path: Path, items: Sequence[Item]) -> int:
    """Rewrite ``path`` with recomputed judgments (key order qid, text, kind, spec, judgments); lines changed."""
    requests = load_requests(path)
    changed = 0
    lines = []
    for request in requests:
        fresh = recompute(request, items)
        changed += int(fresh != request.get("judgments"))
        row = {"qid": request["qid"], "text": request["text"], "kind": request["kind"],
               "spec": request.get("spec"), "judgments": fresh}
        lines.append(json.dumps(row, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n")
    return changed


def report(path: Path, items: Sequence[Item]) -> str:
    """Each request's grade-3 and grade-2 product titles, for hand checks."""
    titles = {item.id: item.title for item in items}
    out = []
    for request in load_requests(path):
        if request.get("kind") == "other":
            continue
        judged = recompute(request, items)
        out.append(f"{request['qid']} [{request['kind']}] {request['text']}")
        for level in (3, 2):
            names = [f"{titles[p]} ({p})" for p, g in judged.items() if g == level]
            out.append(f"    {level}: " + ("; ".join(names) if names else "-"))
        out.append(f"    1: {sum(g == 1 for g in judged.values())} products")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="recompute every file's judgments, report differences")
    mode.add_argument("--write", action="store_true", help="rewrite every file's judgments")
    mode.add_argument("--report", action="store_true", help="print the dev split's grade-3/2 titles")
    parser.add_argument("--catalog", type=Path, default=None, help="products.jsonl (default: the shared Luma one)")
    parser.add_argument("--heldout", action="store_true", help="with --report: the held-out split instead")
    args = parser.parse_args(argv)
    path = args.catalog or catalog_path()
    if not path.is_file():
        print(f"catalog not found: {path}", file=sys.stderr)
        return 2
    items = load_items(path)
    if args.report:
        print(report(HELDOUT_FILE if args.heldout else DEV_FILE, items))
        return 0
    if args.write:
        for file in SPOKEN_FILES:
            print(f"{file.name}: {write(file, items)} requests changed")
        return 0
    problems = [line for file in SPOKEN_FILES for line in differences(file, items)]
    for line in problems:
        print(line)
    total = sum(len(load_requests(f)) for f in SPOKEN_FILES)
    print(f"{total} requests in {len(SPOKEN_FILES)} files: {len(problems)} differ")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
