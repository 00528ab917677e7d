"""``MemoryStore`` on Redis, for deployments where several server processes share sessions.

Keys (prefix ``st:``; ``{sid}`` is a session id, ``{uid}`` a user id):

* ``sess:{sid}`` hash (user_id, created), ``tok:{hash}`` -> sid; both expire after the session TTL, refreshed on
  every write, so Redis itself forgets idle sessions;
* ``turns:{sid}`` list (trimmed to ``max_turns``), ``shown:{sid}`` list, ``cart:{sid}`` hash ``[pid, vid]`` (JSON) ->
  quantity, ``prefs:{sid}`` hash, ``ev:sess:{sid}`` list of events — all with the session's TTL;
* ``ev:user:{uid}`` list and ``ev:all`` sorted set (score = time) of events, trimmed by ``event_ttl_s``;
* ``user:{uid}`` hash (consent), ``friends:{uid}`` list of friends (id, name) in the order given.

Multi-key writes go through a MULTI/EXEC pipeline, so a crash never leaves half an event.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from assistant.core.errors import MemoryUnavailable
from assistant.memory.store import CartLine, Event, Friend, MemoryConfig, MemoryStore, Turn

_P = "st:"
_F = TypeVar("_F", bound=Callable[..., Any])


def _unavailable_on_redis_errors(cls: type) -> type:
    """Turn Redis failures of the engine's primitive operations (``_name``) into ``MemoryUnavailable``.

    Only what the client's retries could not ride out arrives here; it becomes a coded error event, not a crashed
    session.
    """
    import redis

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except redis.RedisError as err:
                raise MemoryUnavailable(f"session memory is unavailable ({type(err).__name__}); "
                                        "this turn was answered but may not be remembered") from err

        return guarded  # type: ignore[return-value]

    for name, fn in list(vars(cls).items()):
        if name.startswith("_") and not name.startswith("__") and callable(fn):
            setattr(cls, name, wrap(fn))
    return cls


def redis_client(url: str) -> Any:
    """A client that rides out a Redis restart: reconnects with exponential backoff for up to ~3 s per call."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5, health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=8),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError])


@_unavailable_on_redis_errors
class RedisMemory(MemoryStore):
    def __init__(self, url: str, config: MemoryConfig | None = None, *, client: Any | None = None) -> None:
        super().__init__(config)
        if client is None:
            client = redis_client(url)
        self.r: Any = client  # redis.Redis(decode_responses=True): str in, str out
        self._ttl = max(1, int(self.config.session_ttl_s))

    def close(self) -> None:
        self.r.close()

    def _session_keys(self, sid: str) -> list[str]:
        return [f"{_P}{k}:{sid}" for k in ("sess", "turns", "shown", "cart", "prefs", "ev:sess")]

    def _refresh(self, pipe: Any, sid: str) -> None:
        for key in self._session_keys(sid):
            pipe.expire(key, self._ttl)
        token = self.r.hget(f"{_P}sess:{sid}", "token_hash")
        if token:
            pipe.expire(f"{_P}tok:{token}", self._ttl)

    # sessions
    def _create_session(self, sid: str, user_id: str | None, token_hash: str, now: float) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(f"{_P}sess:{sid}", mapping={"user_id": user_id or "", "created": now, "token_hash": token_hash})
        pipe.expire(f"{_P}sess:{sid}", self._ttl)
        pipe.set(f"{_P}tok:{token_hash}", sid, ex=self._ttl)
        pipe.execute()

    def _session_by_token(self, token_hash: str, now: float) -> tuple[str, str | None] | None:
        sid = self.r.get(f"{_P}tok:{token_hash}")
        if not sid:
            return None
        user = self.r.hget(f"{_P}sess:{sid}", "user_id")
        if user is None:  # the session hash expired first
            return None
        return sid, (user or None)

    def _touch(self, sid: str, now: float) -> None:
        pipe = self.r.pipeline(transaction=True)
        self._refresh(pipe, sid)
        pipe.execute()

    def _set_user(self, sid: str, user_id: str) -> None:
        self.r.hsetnx(f"{_P}sess:{sid}", "owner", user_id)
        if self.r.hget(f"{_P}sess:{sid}", "user_id") == "":
            self.r.hset(f"{_P}sess:{sid}", "user_id", self.r.hget(f"{_P}sess:{sid}", "owner"))

    def _append_turn(self, sid: str, turn: Turn) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.rpush(f"{_P}turns:{sid}", json.dumps(asdict(turn)))
        pipe.ltrim(f"{_P}turns:{sid}", -self.config.max_turns, -1)
        self._refresh(pipe, sid)
        pipe.execute()

    def _turns(self, sid: str, limit: int) -> list[Turn]:
        return [Turn(**json.loads(x)) for x in self.r.lrange(f"{_P}turns:{sid}", -limit, -1)]

    def _set_shown(self, sid: str, product_ids: Sequence[str]) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(f"{_P}shown:{sid}")
        if product_ids:
            pipe.rpush(f"{_P}shown:{sid}", *product_ids)
        self._refresh(pipe, sid)
        pipe.execute()

    def _shown(self, sid: str) -> list[str]:
        return list(self.r.lrange(f"{_P}shown:{sid}", 0, -1))

    def _cart_set(self, sid: str, product_id: str, variant_id: str, quantity: int) -> None:
        pipe = self.r.pipeline(transaction=True)
        field = json.dumps([product_id, variant_id])  # ids are free text: no separator is safe
        if quantity <= 0:
            pipe.hdel(f"{_P}cart:{sid}", field)
        else:
            pipe.hset(f"{_P}cart:{sid}", field, quantity)
        self._refresh(pipe, sid)
        pipe.execute()

    def _cart(self, sid: str) -> list[CartLine]:
        out = []
        for field, qty in self.r.hgetall(f"{_P}cart:{sid}").items():
            pid, vid = json.loads(field)
            out.append(CartLine(pid, vid, int(qty)))
        return sorted(out, key=lambda c: (c.product_id, c.variant_id))

    def _set_pref(self, sid: str, key: str, value: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(f"{_P}prefs:{sid}", key, value)
        self._refresh(pipe, sid)
        pipe.execute()

    def _prefs(self, sid: str) -> dict[str, str]:
        return dict(self.r.hgetall(f"{_P}prefs:{sid}"))

    # events
    def _add_event(self, event: Event) -> None:
        data = json.dumps(asdict(event))
        pipe = self.r.pipeline(transaction=True)
        if event.session_id:
            pipe.rpush(f"{_P}ev:sess:{event.session_id}", data)
            self._refresh(pipe, event.session_id)
        if event.user_id:
            pipe.rpush(f"{_P}ev:user:{event.user_id}", data)
        pipe.zadd(f"{_P}ev:all", {data: event.ts})
        pipe.execute()

    def _session_events(self, sid: str) -> list[Event]:
        return [Event(**json.loads(x)) for x in self.r.lrange(f"{_P}ev:sess:{sid}", 0, -1)]

    def _events_of_users(self, user_ids: Sequence[str]) -> list[Event]:
        events = [Event(**json.loads(x)) for uid in user_ids for x in self.r.lrange(f"{_P}ev:user:{uid}", 0, -1)]
        return sorted(events, key=lambda e: e.ts)

    def _all_events(self, since: float) -> Iterable[Event]:
        return [Event(**json.loads(x)) for x in self.r.zrangebyscore(f"{_P}ev:all", since, "+inf")]

    # users
    def _set_consent(self, user_id: str, consent: bool, now: float) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(f"{_P}user:{user_id}", mapping={"consent": int(consent), "updated": now})
        if not consent:  # forget the history: events of conversations lose the user id
            for raw in self.r.lrange(f"{_P}ev:user:{user_id}", 0, -1):
                ev = json.loads(raw)
                if ev.get("session_id"):
                    pipe.lrem(f"{_P}ev:user:{user_id}", 0, raw)
        pipe.execute()

    def _consent(self, user_id: str) -> bool:
        return self.r.hget(f"{_P}user:{user_id}", "consent") == "1"

    def _set_friends(self, user_id: str, friends: Sequence[Friend]) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(f"{_P}friends:{user_id}")
        for f in friends:
            pipe.rpush(f"{_P}friends:{user_id}", json.dumps(asdict(f)))
        pipe.execute()

    def _friends(self, user_id: str) -> list[Friend]:
        return [Friend(**json.loads(x)) for x in self.r.lrange(f"{_P}friends:{user_id}", 0, -1)]

    def _purge(self, session_cutoff: float, event_cutoff: float) -> int:
        # Sessions expire by themselves (key TTLs); old events leave the global log and the user lists.
        old = self.r.zrangebyscore(f"{_P}ev:all", "-inf", f"({event_cutoff}")
        pipe = self.r.pipeline(transaction=True)
        pipe.zremrangebyscore(f"{_P}ev:all", "-inf", f"({event_cutoff}")
        for raw in old:
            uid = json.loads(raw).get("user_id")
            if uid:
                pipe.lrem(f"{_P}ev:user:{uid}", 0, raw)
        pipe.execute()
        return 0
