"""A ShopTalk server with fake speech engines and real SQLite memory, run as its own process.

The fault tests start it, kill it (SIGTERM, or SIGKILL mid-turn) and start it again on the same data dir:
``python -m tests.fake_server --port P --data-dir D [--tts-delay S]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from assistant.catalog.view import CatalogView
from assistant.memory.factory import create_memory
from assistant.memory.store import SQLiteMemory
from assistant.runtime.session import Engines
from assistant.runtime.turn import Brain
from assistant.runtime.uploads import ImageStore
from server.app import GracefulServer, create_app
from server.engines import App
from server.settings import Settings
from tests.fakes import EnergyVAD, FakeSTT, FakeTTS, KeywordSearcher


def build(data_dir: Path, *, tts_delay: float = 0.0, memory_url: str | None = None, **settings: object) -> App:
    stt, tts, searcher = FakeSTT(), FakeTTS(delay_s=tts_delay), KeywordSearcher()
    images = ImageStore(data_dir / "uploads")
    memory = create_memory(memory_url, data_dir) if memory_url else SQLiteMemory(data_dir / "memory.sqlite")
    engines = Engines(stt=stt, brain=Brain(searcher, tts, images=images), vad_factory=EnergyVAD, memory=memory)
    return App(settings=Settings(data_dir=data_dir, **settings), engines=engines,  # type: ignore[arg-type]
               view=CatalogView(searcher.catalog), searcher=searcher, tts=tts, images=images)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--tts-delay", type=float, default=0.0)
    parser.add_argument("--grace", type=float, default=10.0)
    args = parser.parse_args()
    web = create_app(state=build(args.data_dir, tts_delay=args.tts_delay, shutdown_grace_s=args.grace))
    config = uvicorn.Config(web, host="127.0.0.1", port=args.port, log_level="warning")
    GracefulServer(config, web, grace_s=args.grace).run()


if __name__ == "__main__":
    main()
