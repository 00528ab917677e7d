"""``shoptalk chat``: a text conversation with the same brain the voice turn uses (no server needed)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable

from assistant.frames import ProductResults, ReplyTextDelta, ResponseDone, UserTurn
from assistant.pipeline import Brain, BrainOptions
from server.engines import build_search
from server.serialize import product_json
from server.settings import Settings


async def _turns(settings: Settings, lines: Iterable[str], as_json: bool) -> None:
    _, searcher, _ = await asyncio.to_thread(build_search, settings, vision=False)
    brain = Brain(searcher, tts=None, options=BrainOptions(k=settings.search_k))
    for n, line in enumerate(lines):
        text = line.strip()
        if not text:
            continue
        turn = UserTurn(item_id=f"item_{n}", text=text, wants_audio=False)
        products: list[dict[str, object]] = []
        reply = ""
        async for frame in brain.respond(turn, f"resp_{n}"):
            if isinstance(frame, ProductResults):
                products = [product_json(h) for h in frame.hits]
            elif isinstance(frame, ReplyTextDelta):
                reply += frame.delta
            elif isinstance(frame, ResponseDone):
                reply = frame.text or reply
        if as_json:
            print(json.dumps({"user": text, "reply": reply, "products": products}), flush=True)
        else:
            print(f"shoptalk: {reply}")
            for i, p in enumerate(products, 1):
                print(f"  {i}. {p['title']} — {p['price']:.2f} {p['currency']}")


def run_chat(settings: Settings, *, messages: list[str] | None, as_json: bool) -> None:
    lines: Iterable[str] = messages if messages else sys.stdin
    asyncio.run(_turns(settings, lines, as_json))
