"""`create_memory`: the memory engine a URL names (SQLite by default, Redis for several servers)."""

from __future__ import annotations

from pathlib import Path

from assistant.core.errors import InvalidInputError
from assistant.memory.store import MemoryConfig, MemoryStore, SQLiteMemory


def create_memory(url: str | None, data_dir: Path, config: MemoryConfig | None = None) -> MemoryStore:
    """``None``/``sqlite``: ``data_dir/memory.sqlite``; ``sqlite:///PATH``; ``redis://host:port/db``."""
    if not url or url == "sqlite":
        return SQLiteMemory(Path(data_dir) / "memory.sqlite", config)
    if url.startswith("sqlite:///"):
        return SQLiteMemory(url.removeprefix("sqlite:///"), config)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from assistant.memory.redis_store import RedisMemory

        return RedisMemory(url, config)
    raise InvalidInputError(f"unknown memory engine {url!r}; use sqlite, sqlite:///PATH or redis://HOST:PORT/DB",
                            param="memory_url")
