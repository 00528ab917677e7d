"""Conversation memory: per session, per (consenting) user, and the social graph.

One interface, two engines: ``SQLiteMemory`` (the embedded default, a WAL database under the data dir) and
``RedisMemory`` (``assistant.memory.redis_store``) for deployments that run several server processes.  Both implement
the primitive methods of ``MemoryStore``; everything a caller does goes through the two handle types built on
them:

* ``SessionMemory``: one session's turns, the products it was shown (for "the second one"), its cart, its
  preferences and its feedback events.  The only ways to get one are ``MemoryStore.open_session`` (a new
  session, with its resume token) and ``MemoryStore.resume(token)``, so no session can name another's id and read
  its memory.
* the user/social methods of ``MemoryStore``: consent, friends (with display names) and a user's own events.

Everything a shopper says is passed through ``assistant.safety.pii.redact_pii`` before it is stored.  A user's history
across sessions is kept only after they opt in (``set_consent``); without consent their events are stored without
the user id (they still train the ranker, anonymously).  Sessions expire after ``MemoryConfig.session_ttl_s`` of
inactivity.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from assistant.core.errors import InvalidInputError
from assistant.core.signals import SessionSignals
from assistant.safety.pii import redact_pii

ACTIONS = ("click", "like", "add_to_cart", "purchase", "dislike")
MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 4000
MAX_FRIENDS = 500
_ID = re.compile(r"^[A-Za-z0-9_.:@\-]{1,128}$")


@dataclass(frozen=True)
class MemoryConfig:
    """Retention and size limits.

    Attributes:
        session_ttl_s: a session (turns, shown products, cart, preferences) is forgotten after this much inactivity.
        event_ttl_s: feedback events older than this are deleted (after they had a chance to train the ranker).
        max_turns: turns kept per session (oldest dropped first).
        recency_half_life_s: how fast a past interaction's weight in ``SessionSignals.recency`` decays.
    """

    session_ttl_s: float = 30 * 86400
    event_ttl_s: float = 180 * 86400
    max_turns: int = 200
    recency_half_life_s: float = 7 * 86400


@dataclass(frozen=True)
class Turn:
    role: str
    text: str
    ts: float


@dataclass(frozen=True)
class CartLine:
    product_id: str
    variant_id: str
    quantity: int


@dataclass(frozen=True)
class Friend:
    id: str
    name: str = ""


@dataclass(frozen=True)
class Event:
    """A feedback event: what a shopper did with a product, and the words they had just said."""

    product_id: str
    action: str
    ts: float
    session_id: str | None = None
    user_id: str | None = None
    query: str = ""


@dataclass
class SocialSignals:
    """What a user's friends bought or liked: product id -> friend display names."""

    bought: dict[str, list[str]] = field(default_factory=dict)
    liked: dict[str, list[str]] = field(default_factory=dict)


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidInputError(f"{what} must be 1-{MAX_ID_CHARS} characters of letters, digits and _.:@-",
                                param=what)
    return value


def check_product_id(value: str, what: str = "product_id") -> str:
    """Catalog ids are free text (SKUs like "AB/12 3"): any 1-256 characters without control characters."""
    if not isinstance(value, str) or not 0 < len(value) <= 256 or any(ord(c) < 32 for c in value):
        raise InvalidInputError(f"{what} must be 1-256 printable characters", param=what)
    return value


def check_action(action: str) -> str:
    if action not in ACTIONS:
        raise InvalidInputError(f"unknown feedback action {action!r}; one of {', '.join(ACTIONS)}", param="action")
    return action


def clean_text(text: str) -> str:
    """What may be stored of a shopper's words: bounded and with PII redacted."""
    redacted, _ = redact_pii(str(text)[:MAX_TEXT_CHARS])
    return redacted


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class MemoryStore(ABC):
    """The engine-independent part of memory; engines implement the ``_``-prefixed primitives."""

    def __init__(self, config: MemoryConfig | None = None) -> None:
        self.config = config or MemoryConfig()

    # --- sessions: the only ways in ------------------------------------------------------------------------
    def open_session(self, user_id: str | None = None, *, session_id: str | None = None) -> SessionMemory:
        """A new session; its ``resume_token`` (shown once, stored hashed) lets the client come back to it."""
        if user_id is not None:
            check_id(user_id, "user_id")
        sid = check_id(session_id, "session_id") if session_id else "sess_" + secrets.token_hex(8)
        token = secrets.token_urlsafe(24)
        self._create_session(sid, user_id, token_hash(token), time.time())
        return SessionMemory(self, sid, user_id, token)

    def resume(self, token: str, user_id: str | None = None) -> SessionMemory | None:
        """The session a resume token belongs to, if it has not expired (and belongs to ``user_id`` when given)."""
        if not token or len(token) > 256:
            return None
        found = self._session_by_token(token_hash(token), time.time())
        if found is None:
            return None
        sid, owner = found
        if user_id is not None and owner is not None and owner != user_id:
            return None  # a token stolen by another signed-in user does not open the session
        self._touch(sid, time.time())
        return SessionMemory(self, sid, owner, token)

    # --- users and the social graph -----------------------------------------------------------------------
    def set_consent(self, user_id: str, consent: bool) -> None:
        """Opt a user in to (or out of) memory across sessions; opting out forgets their history."""
        self._set_consent(check_id(user_id, "user_id"), bool(consent), time.time())

    def has_consent(self, user_id: str) -> bool:
        return self._consent(check_id(user_id, "user_id"))

    def set_friends(self, user_id: str, friends: Sequence[Friend]) -> None:
        check_id(user_id, "user_id")
        if len(friends) > MAX_FRIENDS:
            raise InvalidInputError(f"at most {MAX_FRIENDS} friends", param="friends")
        clean = []
        seen: set[str] = set()
        for f in friends:
            check_id(f.id, "friends.id")
            if f.id == user_id:
                raise InvalidInputError("a user cannot be their own friend", code="own_friend", param="friends.id")
            if f.id in seen:
                raise InvalidInputError(f"friend {f.id!r} is listed more than once; list each friend once",
                                        code="duplicate_friend", param="friends.id")
            seen.add(f.id)
            clean.append(Friend(f.id, clean_text(f.name)[:64]))
        self._set_friends(user_id, clean)

    def friends(self, user_id: str) -> list[Friend]:
        return self._friends(check_id(user_id, "user_id"))

    def record_user_event(self, user_id: str, product_id: str, action: str, *, ts: float | None = None) -> None:
        """A user's own event outside a conversation (e.g. an order from the shop): it feeds their friends' signals."""
        check_id(user_id, "user_id")
        self._add_event(Event(check_product_id(product_id), check_action(action), ts or time.time(),
                              None, user_id))

    def social(self, user_id: str) -> SocialSignals:
        """What this user's friends bought and liked (friends' own events; display names for replies)."""
        out = SocialSignals()
        friends = self._friends(check_id(user_id, "user_id"))
        names = {f.id: f.name or f.id for f in friends}
        if not names:
            return out
        for ev in self._events_of_users(list(names)):
            target = out.bought if ev.action == "purchase" else out.liked if ev.action in ("like", "add_to_cart") \
                else None
            if target is not None and ev.user_id is not None:
                who = target.setdefault(ev.product_id, [])
                if names[ev.user_id] not in who:
                    who.append(names[ev.user_id])
        return out

    def user_history(self, user_id: str) -> list[Event]:
        """A consenting user's events across sessions, oldest first (empty without consent)."""
        if not self.has_consent(user_id):
            return []
        return self._events_of_users([user_id])

    # --- training data and retention ----------------------------------------------------------------------
    def all_events(self, since: float = 0.0) -> Iterable[Event]:
        """Every stored event since `since`, oldest first (user ids only of consenting users, as stored)."""
        return self._all_events(since)

    def export_feedback(self, path: Path, *, since: float = 0.0) -> int:
        """Write feedback events as JSONL ``{"query", "product_id", "kind", "ts"}`` for ``shoptalk ranker train``."""
        n = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with tmp.open("w") as f:
            for ev in self._all_events(since):
                if ev.query:
                    f.write(json.dumps({"query": ev.query, "product_id": ev.product_id, "kind": ev.action,
                                        "ts": round(ev.ts, 3)}) + "\n")
                    n += 1
        tmp.replace(path)
        return n

    def purge_expired(self, now: float | None = None) -> int:
        """Forget expired sessions and old events; returns how many sessions went."""
        now = time.time() if now is None else now
        return self._purge(now - self.config.session_ttl_s, now - self.config.event_ttl_s)

    def close(self) -> None:  # noqa: B027 - engines without resources need nothing
        """Release the engine's connections."""

    # --- primitives -----------------------------------------------------------------------------------------
    @abstractmethod
    def _create_session(self, sid: str, user_id: str | None, token_hash: str, now: float) -> None: ...

    @abstractmethod
    def _session_by_token(self, token_hash: str, now: float) -> tuple[str, str | None] | None: ...

    @abstractmethod
    def _touch(self, sid: str, now: float) -> None: ...

    @abstractmethod
    def _set_user(self, sid: str, user_id: str) -> None: ...

    @abstractmethod
    def _append_turn(self, sid: str, turn: Turn) -> None: ...

    @abstractmethod
    def _turns(self, sid: str, limit: int) -> list[Turn]: ...

    @abstractmethod
    def _set_shown(self, sid: str, product_ids: Sequence[str]) -> None: ...

    @abstractmethod
    def _shown(self, sid: str) -> list[str]: ...

    @abstractmethod
    def _cart_set(self, sid: str, product_id: str, variant_id: str, quantity: int) -> None: ...

    @abstractmethod
    def _cart(self, sid: str) -> list[CartLine]: ...

    @abstractmethod
    def _set_pref(self, sid: str, key: str, value: str) -> None: ...

    @abstractmethod
    def _prefs(self, sid: str) -> dict[str, str]: ...

    @abstractmethod
    def _add_event(self, event: Event) -> None: ...

    @abstractmethod
    def _session_events(self, sid: str) -> list[Event]: ...

    @abstractmethod
    def _events_of_users(self, user_ids: Sequence[str]) -> list[Event]: ...

    @abstractmethod
    def _all_events(self, since: float) -> Iterable[Event]: ...

    @abstractmethod
    def _set_consent(self, user_id: str, consent: bool, now: float) -> None: ...

    @abstractmethod
    def _consent(self, user_id: str) -> bool: ...

    @abstractmethod
    def _set_friends(self, user_id: str, friends: Sequence[Friend]) -> None: ...

    @abstractmethod
    def _friends(self, user_id: str) -> list[Friend]: ...

    @abstractmethod
    def _purge(self, session_cutoff: float, event_cutoff: float) -> int: ...


class SessionMemory:
    """One session's memory.  Obtained from ``MemoryStore.open_session`` or ``MemoryStore.resume`` only."""

    def __init__(self, store: MemoryStore, session_id: str, user_id: str | None, resume_token: str) -> None:
        self._store = store
        self.session_id = session_id
        self.user_id = user_id
        self.resume_token = resume_token

    def attach_user(self, user_id: str) -> None:
        """Sign the session in as ``user_id`` (once: a session never changes hands)."""
        check_id(user_id, "user_id")
        if self.user_id == user_id:
            return
        if self.user_id is not None:
            raise InvalidInputError("this session already belongs to another user", code="session_user_mismatch",
                                    param="user_id")
        self._store._set_user(self.session_id, user_id)
        self.user_id = user_id

    # turns and results
    def add_turn(self, role: str, text: str) -> None:
        if role not in ("user", "assistant"):
            raise InvalidInputError(f"unknown role {role!r}", param="role")
        self._store._append_turn(self.session_id, Turn(role, clean_text(text), time.time()))

    def turns(self, limit: int = 40) -> list[Turn]:
        return self._store._turns(self.session_id, limit)

    def last_user_text(self) -> str:
        return next((t.text for t in reversed(self.turns(10)) if t.role == "user"), "")

    def set_shown(self, product_ids: Sequence[str]) -> None:
        """The products of the last result list, in the order shown ("the second one" indexes it)."""
        self._store._set_shown(self.session_id, [check_product_id(p) for p in product_ids][:50])

    def shown(self) -> list[str]:
        return self._store._shown(self.session_id)

    # cart and preferences
    def add_to_cart(self, product_id: str, variant_id: str = "", quantity: int = 1) -> list[CartLine]:
        check_product_id(product_id)
        if variant_id:
            check_product_id(variant_id, "variant_id")
        if not 1 <= int(quantity) <= 99:
            raise InvalidInputError("quantity must be 1-99", param="quantity")
        current = {(c.product_id, c.variant_id): c.quantity for c in self.cart()}
        total = min(99, current.get((product_id, variant_id), 0) + int(quantity))
        self._store._cart_set(self.session_id, product_id, variant_id, total)
        return self.cart()

    def remove_from_cart(self, product_id: str, variant_id: str = "") -> list[CartLine]:
        self._store._cart_set(self.session_id, check_product_id(product_id), variant_id, 0)
        return self.cart()

    def cart(self) -> list[CartLine]:
        return self._store._cart(self.session_id)

    def set_preference(self, key: str, value: Any) -> None:
        check_id(key, "preference")
        self._store._set_pref(self.session_id, key, clean_text(json.dumps(value))[:1000])

    def preferences(self) -> dict[str, Any]:
        out = {}
        for k, v in self._store._prefs(self.session_id).items():
            try:
                out[k] = json.loads(v)
            except json.JSONDecodeError:
                out[k] = v
        return out

    # feedback and signals
    def record_event(self, product_id: str, action: str, *, query: str | None = None) -> Event:
        """A feedback event; durable before this returns.  The user id is kept only with the user's consent."""
        check_product_id(product_id)
        check_action(action)
        user = self.user_id if self.user_id and self._store.has_consent(self.user_id) else None
        text = clean_text(query) if query is not None else self.last_user_text()
        event = Event(product_id, action, time.time(), self.session_id, user, text)
        self._store._add_event(event)
        return event

    def events(self) -> list[Event]:
        return self._store._session_events(self.session_id)

    def signals(self, now: float | None = None) -> SessionSignals:
        """Ranking signals: this session's events, the user's history (with consent) and friends' activity."""
        now = time.time() if now is None else now
        events = list(self.events())
        if self.user_id:
            seen = {(e.ts, e.product_id, e.action) for e in events}
            events += [e for e in self._store.user_history(self.user_id) if (e.ts, e.product_id, e.action) not in seen]
        out = SessionSignals()
        half = self._store.config.recency_half_life_s
        for ev in sorted(events, key=lambda e: e.ts):
            pid = ev.product_id
            if ev.action == "dislike":
                out.liked.discard(pid)
                out.disliked.add(pid)
            else:
                out.disliked.discard(pid)
                {"click": out.viewed, "like": out.liked, "add_to_cart": out.liked,
                 "purchase": out.bought}[ev.action].add(pid)
            out.recency[pid] = math.exp(-math.log(2) * max(0.0, now - ev.ts) / half)
        if self.user_id:
            social = self._store.social(self.user_id)
            out.friends_bought = {p: len(names) for p, names in social.bought.items()}
            out.friends_liked = {p: len(names) for p, names in social.liked.items()}
        return out

    def snapshot(self) -> dict[str, Any]:
        """Everything this session remembers, as plain data (for the resume and debugging endpoints)."""
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "turns": [asdict(t) for t in self.turns()],
            "shown": self.shown(),
            "cart": [asdict(c) for c in self.cart()],
            "preferences": self.preferences(),
            "events": [asdict(e) for e in self.events()],
        }


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, user_id TEXT, token_hash TEXT UNIQUE NOT NULL, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, seq INTEGER PRIMARY KEY AUTOINCREMENT,
    role TEXT NOT NULL, text TEXT NOT NULL, ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_session ON turns(session_id, seq);
CREATE TABLE IF NOT EXISTS shown (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, position INTEGER NOT NULL,
    product_id TEXT NOT NULL, PRIMARY KEY (session_id, position)
);
CREATE TABLE IF NOT EXISTS cart (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, product_id TEXT NOT NULL,
    variant_id TEXT NOT NULL DEFAULT '', quantity INTEGER NOT NULL, PRIMARY KEY (session_id, product_id, variant_id)
);
CREATE TABLE IF NOT EXISTS prefs (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (session_id, key)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT, user_id TEXT, product_id TEXT NOT NULL,
    action TEXT NOT NULL, query TEXT NOT NULL DEFAULT '', ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_session ON events(session_id);
CREATE INDEX IF NOT EXISTS events_user ON events(user_id);
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, consent INTEGER NOT NULL DEFAULT 0, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS friends (
    user_id TEXT NOT NULL, friend_id TEXT NOT NULL, name TEXT NOT NULL DEFAULT '', PRIMARY KEY (user_id, friend_id)
);
"""


class SQLiteMemory(MemoryStore):
    """The embedded engine: one SQLite file (WAL, one transaction per write, foreign keys on)."""

    def __init__(self, path: Path | str, config: MemoryConfig | None = None) -> None:
        super().__init__(config)
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process crash
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # sessions
    def _create_session(self, sid: str, user_id: str | None, token_hash: str, now: float) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO sessions(id, user_id, token_hash, created, updated) VALUES (?,?,?,?,?)",
                       (sid, user_id, token_hash, now, now))

    def _session_by_token(self, token_hash: str, now: float) -> tuple[str, str | None] | None:
        rows = self._rows("SELECT id, user_id FROM sessions WHERE token_hash=? AND updated>=?",
                          (token_hash, now - self.config.session_ttl_s))
        return (rows[0][0], rows[0][1]) if rows else None

    def _touch(self, sid: str, now: float) -> None:
        with self._tx() as db:
            db.execute("UPDATE sessions SET updated=? WHERE id=?", (now, sid))

    def _set_user(self, sid: str, user_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE sessions SET user_id=? WHERE id=? AND user_id IS NULL", (user_id, sid))

    def _append_turn(self, sid: str, turn: Turn) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO turns(session_id, role, text, ts) VALUES (?,?,?,?)",
                       (sid, turn.role, turn.text, turn.ts))
            db.execute("DELETE FROM turns WHERE session_id=? AND seq NOT IN "
                       "(SELECT seq FROM turns WHERE session_id=? ORDER BY seq DESC LIMIT ?)",
                       (sid, sid, self.config.max_turns))
            db.execute("UPDATE sessions SET updated=? WHERE id=?", (turn.ts, sid))

    def _turns(self, sid: str, limit: int) -> list[Turn]:
        rows = self._rows("SELECT role, text, ts FROM turns WHERE session_id=? ORDER BY seq DESC LIMIT ?",
                          (sid, limit))
        return [Turn(*r) for r in reversed(rows)]

    def _set_shown(self, sid: str, product_ids: Sequence[str]) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM shown WHERE session_id=?", (sid,))
            db.executemany("INSERT INTO shown(session_id, position, product_id) VALUES (?,?,?)",
                           [(sid, i, p) for i, p in enumerate(product_ids)])

    def _shown(self, sid: str) -> list[str]:
        return [r[0] for r in self._rows("SELECT product_id FROM shown WHERE session_id=? ORDER BY position", (sid,))]

    def _cart_set(self, sid: str, product_id: str, variant_id: str, quantity: int) -> None:
        with self._tx() as db:
            if quantity <= 0:
                db.execute("DELETE FROM cart WHERE session_id=? AND product_id=? AND variant_id=?",
                           (sid, product_id, variant_id))
            else:
                db.execute("INSERT INTO cart VALUES (?,?,?,?) ON CONFLICT(session_id, product_id, variant_id) "
                           "DO UPDATE SET quantity=excluded.quantity", (sid, product_id, variant_id, quantity))

    def _cart(self, sid: str) -> list[CartLine]:
        rows = self._rows("SELECT product_id, variant_id, quantity FROM cart WHERE session_id=? ORDER BY rowid", (sid,))
        return [CartLine(*r) for r in rows]

    def _set_pref(self, sid: str, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO prefs VALUES (?,?,?) ON CONFLICT(session_id, key) DO UPDATE SET value=excluded.value",
                       (sid, key, value))

    def _prefs(self, sid: str) -> dict[str, str]:
        return dict(self._rows("SELECT key, value FROM prefs WHERE session_id=?", (sid,)))

    # events
    def _add_event(self, event: Event) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO events(session_id, user_id, product_id, action, query, ts) VALUES (?,?,?,?,?,?)",
                       (event.session_id, event.user_id, event.product_id, event.action, event.query, event.ts))

    _EVENT_COLS = "product_id, action, ts, session_id, user_id, query"

    def _session_events(self, sid: str) -> list[Event]:
        return [Event(*r) for r in self._rows(f"SELECT {self._EVENT_COLS} FROM events WHERE session_id=? ORDER BY id",
                                              (sid,))]

    def _events_of_users(self, user_ids: Sequence[str]) -> list[Event]:
        marks = ",".join("?" * len(user_ids))
        return [Event(*r) for r in self._rows(
            f"SELECT {self._EVENT_COLS} FROM events WHERE user_id IN ({marks}) ORDER BY id", list(user_ids))]

    def _all_events(self, since: float) -> Iterable[Event]:
        return [Event(*r) for r in self._rows(f"SELECT {self._EVENT_COLS} FROM events WHERE ts>=? ORDER BY id",
                                              (since,))]

    # users
    def _set_consent(self, user_id: str, consent: bool, now: float) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO users(id, consent, updated) VALUES (?,?,?) ON CONFLICT(id) "
                       "DO UPDATE SET consent=excluded.consent, updated=excluded.updated", (user_id, int(consent), now))
            if not consent:  # opting out forgets the history: events keep no user id
                db.execute("UPDATE events SET user_id=NULL WHERE user_id=? AND session_id IS NOT NULL", (user_id,))

    def _consent(self, user_id: str) -> bool:
        rows = self._rows("SELECT consent FROM users WHERE id=?", (user_id,))
        return bool(rows and rows[0][0])

    def _set_friends(self, user_id: str, friends: Sequence[Friend]) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM friends WHERE user_id=?", (user_id,))
            db.executemany("INSERT INTO friends VALUES (?,?,?)", [(user_id, f.id, f.name) for f in friends])

    def _friends(self, user_id: str) -> list[Friend]:
        return [Friend(*r) for r in self._rows("SELECT friend_id, name FROM friends WHERE user_id=? ORDER BY rowid",
                                               (user_id,))]

    def _purge(self, session_cutoff: float, event_cutoff: float) -> int:
        with self._tx() as db:
            n = db.execute("DELETE FROM sessions WHERE updated<?", (session_cutoff,)).rowcount
            db.execute("DELETE FROM events WHERE ts<?", (event_cutoff,))
        return int(n)
