"""``shoptalk intent`` (registered on the app in `server.cli`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from server.cli.common import DataDir, cli_settings


def intent(
    text: Annotated[str, typer.Argument(help="What the shopper said.")],
    data_dir: DataDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print {\"intent\", \"slots\", ...} as JSON.")] = False,
    products_shown: Annotated[int, typer.Option(help="Products on screen from the previous reply.")] = 0,
    photo: Annotated[bool, typer.Option("--photo", help="A photo is attached to this turn.")] = False,
    rules: Annotated[bool, typer.Option("--rules", help="Keyword rules only (no model).")] = False,
) -> None:
    """Recognise the intent and slots of one utterance (against the served catalog's vocabulary)."""
    from assistant.conversation.intent import DialogueContext, IntentRecognizer
    from assistant.search.query import QueryVocab
    from server.engines import configure_threads, load_catalog

    settings = cli_settings(data_dir)
    configure_threads(settings)
    vocab = QueryVocab.from_catalog(load_catalog(settings))
    recognizer = IntentRecognizer(vocab, mode="rules" if rules else "model", cache_dir=settings.cache_dir / "intent")
    result = recognizer.recognize(text, DialogueContext(products_shown=products_shown, has_photo=photo))
    if as_json:
        print(json.dumps(result.to_dict()))
        return
    slots = ", ".join(f"{k}={v}" for k, v in result.slots.items()) or "none"
    ref = f"; refers to product {result.reference}" if result.reference is not None else ""
    print(f"{result.name} ({result.confidence:.2f}, {result.source}); slots: {slots}{ref}")
