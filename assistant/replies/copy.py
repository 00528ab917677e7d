"""Merchant copy: a product description or an ad line written from the product's own attributes.

SmolLM2 (``assistant.replies.llm.SmolLMGenerator``) drafts it from a fact sheet of the product; ``check_claims``
then rejects a draft that claims anything the product lacks:

* a term of the catalog's attribute vocabulary (every colour, material, style, gender and category word some
  product has) that is not in this product's own title, category or attributes ("organic cotton" on a polyester
  hoodie, "black" on a red one);
* a marketing claim from ``RISKY_CLAIMS`` ("waterproof", "free shipping", "lifetime warranty") the product's own
  text does not contain;
* any number or price other than the product's own (its price, its sizes).

A rejected draft is replaced by a template built only from the attributes, so the endpoint always answers with
copy that passes the same check.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from assistant.catalog.model import Product
from assistant.replies.grounding import format_price, spoken_name

log = logging.getLogger(__name__)

Kind = Literal["description", "ad"]
RISKY_CLAIMS = (
    "waterproof", "water-resistant", "water resistant", "windproof", "breathable", "organic", "recycled", "vegan",
    "handmade", "hand-made", "sustainable", "eco-friendly", "eco friendly", "lifetime", "warranty", "guarantee",
    "free shipping", "free returns", "sale", "discount", "off", "limited edition", "best-selling", "bestseller",
    "award", "certified", "hypoallergenic", "antibacterial", "uv", "spf", "machine washable", "wrinkle-free",
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_WORD = re.compile(r"[a-z][a-z\-']+")


def _values(product: Product) -> list[str]:
    out: list[str] = []
    for value in product.attributes.values():
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list | tuple):
            out.extend(str(v) for v in value)
    return out


def product_text(product: Product) -> str:
    """Everything the product says about itself, lower-cased (title, category, brand, attributes, description)."""
    parts = [product.title, product.category, product.brand or "", product.description, *_values(product)]
    return " ".join(parts).lower()


def attribute_vocabulary(products: Iterable[Product]) -> set[str]:
    """Words and phrases that name an attribute value or category somewhere in the catalog."""
    vocab: set[str] = set()
    for p in products:
        for value in [*_values(p), *p.category.split("/")]:
            v = value.strip().lower()
            if v and not v.replace(".", "").isdigit() and len(v) > 2:
                vocab.add(v)
                vocab.update(w for w in _WORD.findall(v) if len(w) > 3)
    return vocab


def check_claims(text: str, product: Product, vocabulary: set[str]) -> list[str]:
    """What ``text`` claims that ``product`` does not support; empty when the copy is grounded."""
    own = product_text(product)
    own_words = set(_WORD.findall(own))
    lowered = text.lower()
    bad: list[str] = []
    for term in sorted(vocabulary, key=len, reverse=True):
        if re.search(rf"\b{re.escape(term)}\b", lowered) and term not in own and not (
                set(_WORD.findall(term)) <= own_words):
            bad.append(f"claims {term!r}, which the product does not have")
    for claim in RISKY_CLAIMS:
        if re.search(rf"\b{re.escape(claim)}\b", lowered) and claim not in own:
            bad.append(f"claims {claim!r} without support")
    allowed = {f"{product.price:g}", f"{product.price:.2f}", *(_NUMBER.findall(own))}
    for number in _NUMBER.findall(text):
        if number.replace(",", "") not in {a.replace(",", "") for a in allowed}:
            bad.append(f"number {number!r} is not the product's")
    return bad


def fact_sheet(product: Product) -> str:
    attrs = "; ".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list | tuple) else v}"
                      for k, v in product.attributes.items() if v)
    return (f"Product: {spoken_name(product.title)}\nCategory: {product.category}\nBrand: {product.brand or '-'}\n"
            f"Price: {format_price(product.price, product.currency)}\nAttributes: {attrs or '-'}")


def template_copy(product: Product, kind: Kind) -> str:
    """Copy built only from the attributes (the fallback; always passes ``check_claims``)."""
    name = spoken_name(product.title)
    a = product.attributes
    material = a.get("material")
    style = a.get("style")
    colours = product.colors()
    bits = []
    if style:
        bits.append(str(style))
    if material:
        bits.append(f"made of {material}")
    leaf = product.leaf_category.lower()
    if kind == "ad":
        return f"The {name}{' in ' + colours[0].lower() if len(colours) == 1 else ''}: {', '.join(bits) or leaf}, " \
               f"{format_price(product.price, product.currency)}."
    colour_part = f" It comes in {', '.join(c.lower() for c in colours)}." if colours else ""
    sizes = product.sizes()
    size_part = f" Sizes {sizes[0]} to {sizes[-1]}." if len(sizes) > 1 else ""
    return (f"The {name} is a {' '.join(bits[:1]) + ' ' if style else ''}{leaf[:-1] if leaf.endswith('s') else leaf}"
            f"{' made of ' + str(material) if material else ''}.{colour_part}{size_part}")


@dataclass
class CopyResult:
    text: str
    source: str  # "llm" or "template"
    rejected: list[str] = field(default_factory=list)  # why the LLM draft was not used

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "source": self.source, "rejected": self.rejected}


class CopyWriter:
    """Writes merchant copy with an LLM, checked against the product; falls back to the template.

    Args:
        generator: ``assistant.replies.llm.TextGenerator`` (``messages, max_new_tokens -> text pieces``); None:
            templates only.
        vocabulary: ``attribute_vocabulary`` of the catalog.
    """

    def __init__(self, generator: Any | None, vocabulary: set[str]) -> None:
        self.generator = generator
        self.vocabulary = vocabulary
        self.catalog_version: int | None = None  # which catalog the vocabulary was built from (the server's)

    def messages(self, product: Product, kind: Kind) -> Sequence[dict[str, str]]:
        ask = ("Write a two-sentence product description" if kind == "description"
               else "Write one short ad line (under 15 words)")
        return [
            {"role": "system", "content": "You write product copy for an online shop. Use only the facts given. "
                                          "Do not invent materials, features, discounts or numbers."},
            {"role": "user", "content": f"{fact_sheet(product)}\n\n{ask} for this product."},
        ]

    def write(self, product: Product, kind: Kind = "description") -> CopyResult:
        if self.generator is None:
            return CopyResult(template_copy(product, kind), "template")
        max_tokens = 70 if kind == "description" else 28
        draft = "".join(self.generator(self.messages(product, kind), max_tokens)).strip().strip('"')
        draft = re.sub(r"\s+", " ", draft)
        if kind == "description":  # two sentences at most; an unfinished one is cut
            sentences = re.findall(r"[^.!?]+[.!?]", draft)
            draft = " ".join(s.strip() for s in sentences[:2]) if sentences else ""
        problems = check_claims(draft, product, self.vocabulary) if draft else ["empty draft"]
        if problems:
            log.info("copy draft for %s rejected: %s", product.id, "; ".join(problems))
            return CopyResult(template_copy(product, kind), "template", problems)
        return CopyResult(draft, "llm")
