"""Merchant copy: the claim check, the template fallback, SmolLM2 drafts, and the HTTP routes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from assistant.replies.copy import CopyWriter, attribute_vocabulary, check_claims, template_copy
from tests.fakes import make_products


def _catalog() -> list[Any]:
    from assistant.catalog.model import Product

    extra = Product.from_dict({
        "id": "p9", "parent_id": None, "type": "simple", "title": "Cloud Wool Sweater", "description": "Soft.",
        "category": "Women/Tops/Sweaters", "categories": [], "brand": "Acme", "price": 79.0, "currency": "USD",
        "attributes": {"color": "Cream", "material": "merino wool", "size": ["S", "M"]}, "images": []})
    return [*make_products(), extra]


class ScriptedLLM:
    def __init__(self, text: str) -> None:
        self.text = text
        self.calls: list[Sequence[dict[str, str]]] = []

    def __call__(self, messages: Sequence[dict[str, str]], max_new_tokens: int) -> Iterator[str]:
        self.calls.append(messages)
        for i, word in enumerate(self.text.split(" ")):  # streamed in pieces, as a tokenizer would
            yield word if i == 0 else " " + word


def test_claim_check_catches_attributes_the_product_lacks() -> None:
    products = _catalog()
    vocab = attribute_vocabulary(products)
    hoodie = products[0]  # black, no material
    assert check_claims("A cozy black hoodie for every day.", hoodie, vocab) == []
    assert any("merino wool" in v or "wool" in v for v in check_claims("A merino wool hoodie.", hoodie, vocab))
    assert any("cream" in v for v in check_claims("Now in cream.", hoodie, vocab))
    assert any("waterproof" in v for v in check_claims("Fully waterproof.", hoodie, vocab))
    assert any("25" in v for v in check_claims("Only $25 today.", hoodie, vocab))
    assert check_claims("Only $39.99.", hoodie, vocab) == []


def test_templates_pass_their_own_check() -> None:
    products = _catalog()
    vocab = attribute_vocabulary(products)
    for p in products:
        for kind in ("description", "ad"):
            text = template_copy(p, kind)  # type: ignore[arg-type]
            assert text and check_claims(text, p, vocab) == [], (p.id, kind, text)


def test_llm_draft_used_when_grounded_and_replaced_when_not() -> None:
    products = _catalog()
    sweater = products[-1]
    good = CopyWriter(ScriptedLLM("A soft merino wool sweater in cream. Made for cool days."),
                      attribute_vocabulary(products)).write(sweater)
    assert good.source == "llm" and "merino wool" in good.text
    bad = CopyWriter(ScriptedLLM("An organic cotton sweater, now 20% off!"), attribute_vocabulary(products)) \
        .write(sweater)
    assert bad.source == "template" and bad.rejected and "organic" not in bad.text


def test_real_smollm2_copy_is_checked(smollm2_dir: Path) -> None:
    from assistant.replies.llm import SmolLMGenerator

    products = _catalog()
    writer = CopyWriter(SmolLMGenerator.load(smollm2_dir, "cpu"), attribute_vocabulary(products))
    result = writer.write(products[-1], "ad")
    assert result.text and check_claims(result.text, products[-1], writer.vocabulary) == []


async def test_copy_and_review_routes(tmp_path: Path, live_server_factory: Any) -> None:
    from server.app import create_app
    from tests.test_realtime_protocol import make_state

    state = make_state(tmp_path)
    state.settings.copy_llm = False  # templates: no model in this test
    server = live_server_factory(create_app(state=state))
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
        r = await http.post("/v1/copy", json={"product_id": "p3", "kind": "ad"})
        assert r.status_code == 200 and r.json()["source"] == "template" and "$129" in r.json()["text"]
        assert (await http.post("/v1/copy", json={"product_id": "nope"})).status_code == 404
        assert (await http.post("/v1/copy", json={"product_id": "p3", "kind": "poem"})).status_code == 422
        ok = (await http.post("/v1/reviews/screen", json={"text": "Great hoodie, fits well."})).json()
        assert ok["publishable"] is True
        bad = (await http.post("/v1/reviews/screen", json={"text": "Call me at 415-555-0132, you idiots"})).json()
        assert bad["publishable"] is False and "[PHONE]" in bad["masked_text"]
        assert (await http.post("/v1/reviews/screen", json={"text": ""})).status_code == 422
