"""Per-shopper and per-session memory: the interface, SQLite and `create_memory` (`store`), Redis (`redis_store`)."""
