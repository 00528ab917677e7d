"""Per-shopper and per-session memory.

`store`: the interface and SQLite; `factory`: `create_memory`; `redis_store`: Redis, for several servers.
"""
