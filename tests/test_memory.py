"""Conversation memory: the SQLite engine and the Redis engine (a real redis-server) behind one interface."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.core.errors import InvalidInputError
from assistant.memory.factory import create_memory
from assistant.memory.store import Friend, MemoryConfig, MemoryStore, SQLiteMemory
from bench.common import free_port, wait_for_port


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    pytest.importorskip("redis")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(5)


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore]:
    if request.param == "sqlite":
        mem: MemoryStore = SQLiteMemory(tmp_path / "memory.sqlite")
    else:
        url = request.getfixturevalue("redis_url")
        mem = create_memory(url, tmp_path)
        mem.r.flushdb()  # type: ignore[attr-defined]
    yield mem
    mem.close()


def test_turns_shown_cart_and_preferences_round_trip(store: MemoryStore) -> None:
    s = store.open_session("u1")
    s.add_turn("user", "black hoodies under fifty")
    s.add_turn("assistant", "Here are three hoodies.")
    s.set_shown(["P1", "P2", "P3"])
    s.add_to_cart("P2", "P2-M", 1)
    s.add_to_cart("P2", "P2-M", 2)
    s.set_preference("size", "M")
    assert [t.role for t in s.turns()] == ["user", "assistant"]
    assert s.shown()[1] == "P2"
    assert [(c.product_id, c.variant_id, c.quantity) for c in s.cart()] == [("P2", "P2-M", 3)]
    assert s.preferences() == {"size": "M"}
    assert [(c.product_id, c.quantity) for c in s.remove_from_cart("P2", "P2-M")] == []


def test_resume_token_reopens_the_same_memory_and_only_that(store: MemoryStore) -> None:
    a = store.open_session("alice")
    b = store.open_session("bob")
    a.add_turn("user", "red dress")
    b.add_turn("user", "blue jeans")
    again = store.resume(a.resume_token)
    assert again is not None and again.session_id == a.session_id
    assert [t.text for t in again.turns()] == ["red dress"]
    assert store.resume("not-a-token") is None
    assert store.resume("") is None
    assert store.resume(a.resume_token, user_id="bob") is None  # a token presented by another user


def test_pii_is_redacted_before_it_is_stored(store: MemoryStore) -> None:
    s = store.open_session()
    s.add_turn("user", "email me at jane.doe@example.com or call 415-555-0132, card 4111 1111 1111 1111")
    text = s.turns()[0].text
    assert "jane.doe@example.com" not in text and "555-0132" not in text and "4111 1111" not in text
    s.set_preference("note", "ship to jane.doe@example.com")
    assert "jane.doe" not in json.dumps(s.preferences())


def test_feedback_events_shift_signals_and_are_exported(store: MemoryStore, tmp_path: Path) -> None:
    s = store.open_session()
    s.add_turn("user", "running shoes")
    s.record_event("P1", "click")
    s.record_event("P2", "like")
    s.record_event("P2", "dislike")
    s.record_event("P3", "purchase")
    sig = s.signals()
    assert sig.viewed == {"P1"} and sig.bought == {"P3"}
    assert "P2" in sig.disliked and "P2" not in sig.liked
    assert all(0.99 < v <= 1.0 for v in sig.recency.values())
    n = store.export_feedback(tmp_path / "fb.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "fb.jsonl").read_text().splitlines()]
    assert n == 4 and {x["kind"] for x in lines} == {"click", "like", "dislike", "purchase"}
    assert all(x["query"] == "running shoes" for x in lines)


def test_history_across_sessions_needs_consent(store: MemoryStore) -> None:
    first = store.open_session("carol")
    first.record_event("P9", "purchase", query="a yoga mat")
    later = store.open_session("carol")
    assert later.signals().bought == set()  # no consent: nothing carried over
    store.set_consent("carol", True)
    first.record_event("P7", "purchase", query="a water bottle")
    assert store.open_session("carol").signals().bought == {"P7"}
    store.set_consent("carol", False)  # opting out forgets
    assert store.open_session("carol").signals().bought == set()


def test_friends_purchases_become_social_signals_with_names(store: MemoryStore) -> None:
    store.set_friends("dave", [Friend("ana", "Ana"), Friend("ben", "Ben")])
    store.record_user_event("ana", "P5", "purchase")
    store.record_user_event("ben", "P5", "purchase")
    store.record_user_event("ben", "P6", "like")
    store.record_user_event("zoe", "P8", "purchase")  # not a friend
    social = store.social("dave")
    assert social.bought == {"P5": ["Ana", "Ben"]} and social.liked == {"P6": ["Ben"]}
    sig = store.open_session("dave").signals()
    assert sig.friends_bought == {"P5": 2} and sig.friends_liked == {"P6": 1}
    assert [f.name for f in store.friends("dave")] == ["Ana", "Ben"]
    with pytest.raises(InvalidInputError):
        store.set_friends("dave", [Friend("dave", "me")])


def test_duplicate_friend_ids_are_refused_and_nothing_is_stored(store: MemoryStore) -> None:
    store.set_friends("dave", [Friend("ana", "Ana")])
    with pytest.raises(InvalidInputError) as caught:
        store.set_friends("dave", [Friend("ben", "Ben"), Friend("ana", "Ana"), Friend("ben", "Benny")])
    assert caught.value.code == "duplicate_friend" and caught.value.param == "friends.id"
    assert "'ben'" in caught.value.message and "more than once" in caught.value.message
    assert store.friends("dave") == [Friend("ana", "Ana")]  # the old list stays as it was


def test_bad_input_is_rejected_and_nothing_is_stored(store: MemoryStore) -> None:
    s = store.open_session()
    for call in (lambda: s.record_event("P1", "steal"), lambda: s.record_event("", "click"),
                 lambda: s.record_event("P1\x00", "click"), lambda: s.record_event("P" * 300, "click"),
                 lambda: s.add_to_cart("P1", quantity=0),
                 lambda: s.add_turn("system", "x"), lambda: store.open_session("bad user id")):
        with pytest.raises(InvalidInputError):
            call()
    assert s.events() == [] and s.cart() == [] and s.turns() == []


def test_free_text_catalog_ids_are_stored_as_they_are(store: MemoryStore) -> None:
    s = store.open_session()
    odd = "SKU 12/B|x'; DROP TABLE events; --"
    s.set_shown([odd, "P2"])
    s.add_to_cart(odd, "var|1", 2)
    s.record_event(odd, "like")
    assert s.shown()[0] == odd and [(c.product_id, c.variant_id) for c in s.cart()] == [(odd, "var|1")]
    assert odd in s.signals().liked


def test_sqlite_sessions_expire_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "memory.sqlite"
    mem = SQLiteMemory(path, MemoryConfig(session_ttl_s=60, event_ttl_s=3600))
    s = mem.open_session("erin")
    s.add_turn("user", "hello")
    s.record_event("P1", "click")
    mem.close()
    reopened = SQLiteMemory(path, MemoryConfig(session_ttl_s=60, event_ttl_s=3600))
    back = reopened.resume(s.resume_token)
    assert back is not None and [t.text for t in back.turns()] == ["hello"]
    assert reopened.purge_expired(now=time.time() + 120) == 1
    assert reopened.resume(s.resume_token) is None
    assert len(list(reopened._all_events(0))) == 1  # events outlive the session until event_ttl_s
    reopened.purge_expired(now=time.time() + 7200)
    assert list(reopened._all_events(0)) == []


def test_turns_are_bounded(tmp_path: Path) -> None:
    mem = SQLiteMemory(tmp_path / "m.sqlite", MemoryConfig(max_turns=5))
    s = mem.open_session()
    for i in range(12):
        s.add_turn("user", f"turn {i}")
    assert [t.text for t in s.turns(100)] == [f"turn {i}" for i in range(7, 12)]


def test_unknown_engine_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="unknown memory engine"):
        create_memory("mongodb://x", tmp_path)


async def test_resume_and_sign_in_read_the_store_off_the_event_loop(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A session's memory reads and writes block (SQLite, Redis): resume and sign-in run them in worker threads."""
    import threading

    from assistant.memory.store import SessionMemory
    from assistant.runtime.session import ConversationSession, Engines
    from assistant.runtime.turn import Brain
    from tests.fakes import EnergyVAD, FakeSTT, KeywordSearcher

    store = SQLiteMemory(tmp_path / "memory.sqlite")
    earlier = store.open_session()
    earlier.set_shown(["p1"])
    threads: set[int] = set()
    for cls, name in ((SQLiteMemory, "resume"), (SessionMemory, "attach_user"), (SessionMemory, "signals")):
        original = getattr(cls, name)

        def watched(self: object, *args: object, _original: object = original, **kwargs: object) -> object:
            threads.add(threading.get_ident())
            return _original(self, *args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(cls, name, watched)

    async def emit(frame: object) -> None:
        return None

    session = ConversationSession(Engines(stt=FakeSTT(), brain=Brain(KeywordSearcher(), None), vad_factory=EnergyVAD,
                                          memory=store), emit)
    assert await session.resume(earlier.resume_token) and session.id == earlier.session_id
    await session.sign_in("ada")
    assert session.memory is not None and session.memory.user_id == "ada"
    assert threads and threading.get_ident() not in threads, threads
    assert not await session.resume("no-such-token")
