"""``shoptalk chat``: a text conversation with the same brain the voice turn uses (no server needed).

The conversation has the server's dialogue (intents, references, policy and order answers) and memory: it prints
its resume token at the start (JSON: a ``{"session": ...}`` line), and ``--resume TOKEN`` continues it later.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable

from assistant.catalog.view import CatalogView
from assistant.conversation.dialogue import DialogueState
from assistant.core.errors import AssistantError
from assistant.core.frames import ProductResults, ReplyTextDelta, ResponseDone, UserTurn
from assistant.memory.bought_together import BoughtTogether
from assistant.runtime.turn import Brain, BrainOptions
from server.engines import build_dialogue, build_memory, build_search, listens_with_vocabulary
from server.serialize import product_json
from server.settings import Settings


async def _turns(settings: Settings, lines: Iterable[str], as_json: bool, *, resume: str | None,
                 user_id: str | None) -> int:
    catalog, searcher, _ = await asyncio.to_thread(build_search, settings, vision=False)
    memory = build_memory(settings)
    searcher.co_purchases = BoughtTogether(memory)
    view = CatalogView(catalog)  # one vocabulary build: the dialogue's names and the repair
    dialogue = await asyncio.to_thread(build_dialogue, settings, view, searcher, memory) if settings.dialogue else None
    brain = Brain(searcher, tts=None, options=BrainOptions(k=settings.search_k), dialogue=dialogue,
                  view=view if listens_with_vocabulary(settings) else None, repair=settings.asr_repair)
    session = memory.resume(resume, user_id=user_id) if resume else memory.open_session(user_id)
    if session is None:
        print(json.dumps({"error": {"code": "invalid_resume_token", "message": "unknown or expired resume token"}})
              if as_json else "shoptalk: unknown or expired resume token", file=sys.stderr)
        return 2
    if user_id and session.user_id is None:
        session.attach_user(user_id)
    state = DialogueState.restore(session, catalog)
    if as_json:
        print(json.dumps({"session": {"id": session.session_id, "resume_token": session.resume_token}}), flush=True)
    for n, line in enumerate(lines):
        text = line.strip()
        if not text:
            continue
        session.add_turn("user", text)
        turn = UserTurn(item_id=f"item_{n}", text=text, wants_audio=False)
        products: list[dict[str, object]] = []
        reply, intent, handoff = "", None, False
        try:
            async for frame in brain.respond(turn, f"resp_{n}", signals=session.signals(), state=state):
                if isinstance(frame, ProductResults):
                    products = [product_json(h) for h in frame.hits]
                    session.set_shown([h.product.id for h in frame.hits])
                elif isinstance(frame, ReplyTextDelta):
                    reply += frame.delta
                elif isinstance(frame, ResponseDone):
                    reply, intent, handoff = frame.text or reply, frame.intent, frame.handoff
        except AssistantError as err:
            out = {"user": text, "error": {"code": err.code, "message": err.message}}
            print(json.dumps(out) if as_json else f"shoptalk: error: {err.message}", flush=True)
            continue
        session.add_turn("assistant", reply)
        state.save()
        if as_json:
            print(json.dumps({"user": text, "intent": intent, "reply": reply, "products": products,
                              "handoff": handoff}), flush=True)
        else:
            print(f"shoptalk: {reply}")
            for i, p in enumerate(products, 1):
                print(f"  {i}. {p['title']} — {p['price']:.2f} {p['currency']}")
    memory.close()
    return 0


def run_chat(settings: Settings, *, messages: list[str] | None, as_json: bool, resume: str | None = None,
             user_id: str | None = None) -> int:
    lines: Iterable[str] = messages if messages else sys.stdin
    return asyncio.run(_turns(settings, lines, as_json, resume=resume, user_id=user_id))
