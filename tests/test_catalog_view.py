"""The served catalog's one shared view: derived objects built once per catalog, a reload swapping all at once."""

from __future__ import annotations

import threading

from assistant.catalog.model import Catalog
from assistant.catalog.view import CatalogView
from assistant.conversation.dialogue import Dialogue
from assistant.conversation.intent import IntentRecognizer
from assistant.runtime.turn import Brain
from tests.fakes import KeywordSearcher, make_products


def _catalog(kind: str, n: int = 3) -> Catalog:
    return Catalog(make_products()[:1] + [
        p.__class__.from_dict({**p.to_dict(), "id": f"{kind}-{i}", "title": f"Harbor {kind.title()} {i}",
                               "category": f"Women/{kind.title()}", "categories": [f"Women/{kind.title()}"]})
        for i, p in enumerate(make_products()[:n])])


def test_derived_objects_are_built_once_per_catalog_and_dropped_by_a_swap() -> None:
    first, second = _catalog("jackets"), _catalog("scarves")
    view = CatalogView(first)
    built: list[Catalog] = []

    def build(catalog: Catalog) -> int:
        built.append(catalog)
        return len(built)

    assert view.derived("n", build) == 1 and view.derived("n", build) == 1 and built == [first]
    view.swap(second)
    assert view.catalog is second and view.derived("n", build) == 2 and built == [first, second]


def test_a_value_built_across_a_swap_is_not_kept_for_the_new_catalog() -> None:
    first, second = _catalog("jackets"), _catalog("scarves")
    view = CatalogView(first)
    started, release = threading.Event(), threading.Event()

    def slow(catalog: Catalog) -> str:
        started.set()
        assert release.wait(5)
        return catalog.get("jackets-0") is not None and "old" or "new"

    out: list[str] = []
    worker = threading.Thread(target=lambda: out.append(view.derived("kind", slow)))
    worker.start()
    assert started.wait(5)
    swapper = threading.Thread(target=view.swap, args=(second,))
    swapper.start()  # waits for the build in progress (the view's lock), then swaps
    release.set()
    worker.join(5)
    swapper.join(5)
    assert out == ["old"]  # the reader that asked before the swap got the catalog it asked about
    assert view.derived("kind", lambda c: "new" if c is second else "stale") == "new"


def test_the_dialogue_and_the_turn_follow_one_swap() -> None:
    first, second = _catalog("jackets"), _catalog("scarves")
    view = CatalogView(first)
    dialogue = Dialogue(IntentRecognizer(mode="rules"), view=view)
    brain = Brain(KeywordSearcher(), tts=None, dialogue=dialogue, view=view)
    assert "jackets" in dialogue.categories and brain.vocabulary is dialogue.vocabulary
    assert [h.product.id for h in dialogue.named("the harbor jackets 1", _state())] == ["jackets-1"]
    view.swap(second)
    assert dialogue.catalog is second and "scarves" in dialogue.categories and "jackets" not in dialogue.categories
    assert brain.vocabulary is dialogue.vocabulary and brain.vocabulary is not None
    assert "scarves" in " ".join(brain.vocabulary.kinds)
    named = [h.product.id for h in dialogue.named("the harbor jackets 1", _state())]
    assert named and all(pid.startswith("scarves-") for pid in named)  # the old catalog's products are gone


def _state():  # type: ignore[no-untyped-def]
    from assistant.conversation.dialogue import DialogueState

    return DialogueState()
