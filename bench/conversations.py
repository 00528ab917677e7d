"""Multi-turn conversations over the real Luma catalog: is each checked turn answered right?

Data (``bench/data``, described in ``CONVERSATIONS.md``):

* ``luma_conversations.jsonl`` (dev) and ``luma_conversations_heldout.jsonl`` (held out: never read while tuning),
  one conversation per line: ``{"cid": "lc-001", "turns": [{"user": "...", "checks": {...}}, ...]}``;
* ``luma_not_carried.jsonl``: single requests for things the catalog does not carry, each with a ``split``.

Every conversation runs through the server's own brain (`assistant.runtime.turn.Brain` with the dialogue, the searcher
the server builds by default, template replies) over ``luma-dev/products.jsonl`` ingested into a cached data dir,
with a fresh session and `DialogueState` per conversation. A checked turn is *right* when all its checks pass
(`CHECKS`); a not-carried request is *honest* when the reply says plainly that the catalog lacks it and nothing is
shown or announced as a match.

Run: ``python -m bench.conversations [--split dev|heldout|all] [--spoken VOICE] [--out PATH]``; results go to
``bench/results/conversations.json`` by default. With ``--spoken VOICE`` each user turn is synthesised with
``bench.voices`` and transcribed by the server's STT engine first; the transcript is what the brain gets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import machine, shared_data_dir, write_results

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent / "data"
SPLIT_FILES: dict[str, Path] = {
    "dev": DATA / "luma_conversations.jsonl",
    "heldout": DATA / "luma_conversations_heldout.jsonl",
}
NOT_CARRIED = DATA / "luma_not_carried.jsonl"
SPLITS = ("dev", "heldout")
DEFAULT_OUT = Path("bench/results/conversations.json")
DEFAULT_DATA_DIR = Path(".data/bench-luma")
STT_MODEL = "faster-whisper:tiny.en"
TABLE_FAILURES = 12  # dev failures listed in the markdown table at most
REPLY_CHARS = 220  # reply text shown per failure in the table

# --- product facts the checks need -------------------------------------------------------------------------------

_MARKS = re.compile(r"[™®©]")
# First words of titles that are ordinary words: never a product's name on their own ("Set of ...", "Push It ...").
COMMON_WORDS = frozenset({
    "a", "the", "of", "set", "it", "push", "aim", "affirm", "overnight", "autumn", "yoga", "advanced", "beginner's",
    "dual", "luma", "solo", "go", "for", "life", "and", "with", "new",
})


def norm_text(text: str) -> str:
    """Lower case, trade marks dropped, whitespace collapsed (names and replies are compared in this form)."""
    return " ".join(_MARKS.sub("", text).lower().split())


def mentions(text: str, name: str) -> bool:
    """Whether `name` occurs in `text` as whole words (both normalised by `norm_text`)."""
    needle = norm_text(name)
    if not needle:
        return False
    return re.search(r"(?<![a-z0-9])" + re.escape(needle) + r"(?![a-z0-9])", norm_text(text)) is not None


_COLOUR_ALIASES = {"grey": "gray", "navy": "blue", "navy blue": "blue"}


def colour_key(name: str) -> str:
    """A colour compared loosely: lower case, ``grey`` as ``gray``."""
    key = " ".join(name.lower().split())
    return _COLOUR_ALIASES.get(key, key)


class CatalogView:
    """What the checks need to know about the catalog: parents, variants, prices, categories and names.

    Args:
        catalog: An `assistant.catalog.model.Catalog` (the one the brain serves).
    """

    def __init__(self, catalog: Any) -> None:
        self.catalog = catalog
        self._parents = list(catalog.parents())
        titles = {p.id: norm_text(p.title) for p in self._parents}
        self._names: dict[str, tuple[str, ...]] = {}
        for p in self._parents:
            self._names[p.id] = self._distinctive(p.id, titles)

    @staticmethod
    def _distinctive(pid: str, titles: Mapping[str, str]) -> tuple[str, ...]:
        """The full title and its shortest leading words that no other product's title contains."""
        own = titles[pid]
        words = own.split()
        others = [t for i, t in titles.items() if i != pid and t != own]
        names = [own]
        for k in range(1, len(words)):
            prefix = " ".join(words[:k])
            if all(w in COMMON_WORDS for w in words[:k]):
                continue
            if not any(mentions(t, prefix) for t in others):
                names.append(prefix)
                break
        return tuple(dict.fromkeys(names))

    def product(self, pid: str) -> Any | None:
        """The product with this id (a variant id gives the variant)."""
        return self.catalog.get(pid)

    def parent_id(self, pid: str) -> str:
        """The shoppable product's id: a variant's parent, else the id itself."""
        product = self.catalog.get(pid)
        if product is not None and product.parent_id and product.parent_id in self.catalog:
            return str(product.parent_id)
        return pid

    def variants(self, pid: str) -> list[Any]:
        """The variants of a parent, or the product itself when it has none."""
        parent = self.catalog.get(self.parent_id(pid))
        if parent is None:
            return []
        return list(self.catalog.variants_of(parent.id)) or [parent]

    def names(self, pid: str) -> tuple[str, ...]:
        """Ways a reply may name the product: its title, and its distinctive product-line words ("Hera")."""
        return self._names.get(self.parent_id(pid), ())

    def named_in(self, text: str, pid: str) -> bool:
        """Whether `text` names the product."""
        return any(mentions(text, n) for n in self.names(pid))

    def same_name(self, a: str, b: str) -> bool:
        """Two products with the same title (the Sprite Stasis Ball colours): a reply cannot tell them apart."""
        pa, pb = self.catalog.get(self.parent_id(a)), self.catalog.get(self.parent_id(b))
        return pa is not None and pb is not None and norm_text(pa.title) == norm_text(pb.title)

    def __contains__(self, pid: object) -> bool:
        return pid in self.catalog


# --- turn results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """One product shown in a turn (`assistant.search.query.ProductHit` reduced to what the checks use).

    Attributes:
        id: The shoppable product's id (a configurable's parent id).
        title: Its title.
        price: The price shown (the matched variant's, if any).
        near_miss: The constraints it misses: non-empty for an alternative, empty for a product shown as a match.
        variant_id: The matched variant, if any.
    """

    id: str
    title: str
    price: float
    near_miss: tuple[str, ...] = ()
    variant_id: str | None = None

    @property
    def is_match(self) -> bool:
        return not self.near_miss


@dataclass
class TurnResult:
    """What the assistant did in one turn.

    Attributes:
        user: The turn as written in the data.
        text: What the brain was given (the transcript in a spoken run).
        intent: The dialogue's intent (`ResponseDone.intent`), None without one.
        shown: Products shown this turn (a ``ProductResults`` frame), in order; empty when none.
        on_screen: The list on screen before this turn (the last products shown in an earlier turn).
        reply: The reply text.
        transcript: The STT transcript in a spoken run, else None.
        understood: The words the brain understood after its repair of misheard product words, where it has one
            and they differ from ``text``.
        error: The error that ended the turn, if any.
        ms: Time for the turn (brain only).
    """

    user: str
    text: str
    intent: str | None = None
    shown: list[Shown] = field(default_factory=list)
    on_screen: list[Shown] = field(default_factory=list)
    reply: str = ""
    transcript: str | None = None
    understood: str | None = None
    error: str | None = None
    ms: float = 0.0

    @property
    def matches(self) -> list[Shown]:
        """Products shown this turn as matches (no near miss)."""
        return [s for s in self.shown if s.is_match]


@dataclass(frozen=True)
class CheckOutcome:
    """One check of one turn."""

    name: str
    passed: bool
    detail: str = ""


# --- checks ------------------------------------------------------------------------------------------------------

ANNOUNCES_MATCHES: tuple[str, ...] = (
    r"\bi(?:'ve| have)? (?:also )?found (?!no\b|nothing\b|none\b|zero\b)",
    r"\bhere(?: are|'s| is)\b",
    r"\bi(?:'ve| have) got\b",
    r"\bwe(?:'ve| have) got\b",
    r"\b(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|several|a few|some) (?:great |good )?"
    r"(?:matches|match|options|results)\b",
    r"\btop (?:one|two|three|\d+) (?:is|are)\b",
    r"\bthere(?:'s| is| are) the\b",
)
"""Regexes of a reply that presents products as matches (case-insensitive; negated forms are excluded)."""

NOT_CARRIED_PHRASES: tuple[str, ...] = (
    r"\b(?:don't|do not|doesn't|does not|didn't|did not|can't|cannot) (?:currently )?(?:carry|have|sell|stock|offer)",
    r"\bnot (?:something )?(?:that )?we (?:currently )?(?:carry|sell|stock|have|offer)",
    r"\b(?:isn't|aren't|is not|are not) (?:something|anything|among the things) (?:that )?we",
    r"\bno\b.{0,60}\b(?:in|from|on) (?:our|the|this) (?:catalog|catalogue|store|shop|range)",
    r"\b(?:couldn't|could not|can't|cannot|didn't|did not) find\b",
    r"\bwe only (?:carry|sell|have|stock)\b",
    r"\bnone (?:in|from) (?:our|the) (?:catalog|catalogue|store|shop)",
)
"""Regexes of a reply that says plainly the catalog does not have what was asked."""

NOT_CARRIED_SENTENCES = 2  # says_not_carried looks at the reply's first two sentences
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def first_sentences(text: str, n: int = NOT_CARRIED_SENTENCES) -> str:
    """The first `n` sentences of `text`."""
    return " ".join(_SENTENCE.split(text.strip())[:n])


def announces_matches(reply: str) -> str | None:
    """The phrase by which `reply` presents products as matches, or None."""
    for pattern in ANNOUNCES_MATCHES:
        m = re.search(pattern, reply, re.IGNORECASE)
        if m is not None:
            return m.group(0)
    return None


def says_not_carried(reply: str) -> str | None:
    """The phrase in the reply's first sentences saying the catalog lacks it, or None."""
    head = first_sentences(reply)
    for pattern in NOT_CARRIED_PHRASES:
        m = re.search(pattern, head, re.IGNORECASE)
        if m is not None:
            return m.group(0)
    return None


CheckFn = Callable[[Any, TurnResult, CatalogView], CheckOutcome]


def check_intent(expected: Any, turn: TurnResult, view: CatalogView) -> CheckOutcome:
    """The dialogue's intent is `expected` (a label, or a list of acceptable labels)."""
    allowed = [expected] if isinstance(expected, str) else list(expected)
    return CheckOutcome("intent", turn.intent in allowed, f"intent {turn.intent!r}, expected {allowed}")


def check_top3_any(expected: Sequence[str], turn: TurnResult, view: CatalogView) -> CheckOutcome:
    """At least one of the ids is among the first three products shown this turn."""
    wanted = {view.parent_id(pid) for pid in expected}
    top = [view.parent_id(s.id) for s in turn.shown[:3]]
    return CheckOutcome("top3_any", bool(wanted & set(top)), f"top 3 {top}, wanted one of {sorted(wanted)}")


def _variant_fits(variant: Any, colour: str | None, size: str | None) -> bool:
    if colour is not None and colour_key(colour) not in {colour_key(c) for c in variant.colors()}:
        return False
    return size is None or size.strip().upper() in {s.strip().upper() for s in variant.sizes()}


def product_satisfies(spec: Mapping[str, Any], shown: Shown, view: CatalogView) -> list[str]:
    """What a product shown as a match misses of `spec` (``category``, ``max_price``, ``min_price``, ``color``,
    ``size``, ``title_contains``); empty when it satisfies all of it."""
    missing: list[str] = []
    parent = view.product(view.parent_id(shown.id))
    if parent is None:
        return [f"unknown product {shown.id}"]
    variants = view.variants(parent.id)
    if "category" in spec:
        wanted = [spec["category"]] if isinstance(spec["category"], str) else list(spec["category"])
        paths = [c.lower() for c in parent.categories]
        if not any(w.lower() in p for w in wanted for p in paths):
            missing.append(f"category not {wanted}")
    prices = [shown.price, *(v.price for v in variants)]
    if "max_price" in spec and not any(p <= float(spec["max_price"]) + 0.005 for p in prices):
        missing.append(f"price {shown.price} over {spec['max_price']}")
    if "min_price" in spec and not any(p >= float(spec["min_price"]) - 0.005 for p in prices):
        missing.append(f"price {shown.price} under {spec['min_price']}")
    colour, size = spec.get("color"), spec.get("size")
    if (colour is not None or size is not None) and not any(_variant_fits(v, colour, size) for v in variants):
        missing.append(f"no variant in {' '.join(str(x) for x in (colour, size) if x)}")
    if "title_contains" in spec:
        wanted = [spec["title_contains"]] if isinstance(spec["title_contains"], str) else list(spec["title_contains"])
        if not any(norm_text(w) in norm_text(parent.title) for w in wanted):
            missing.append(f"title lacks {wanted}")
    return missing


def check_products_all(expected: Mapping[str, Any], turn: TurnResult, view: CatalogView) -> CheckOutcome:
    """Every product shown as a match satisfies `expected`, and at least one is shown as a match."""
    matches = turn.matches
    if not matches:
        return CheckOutcome("products_all", False, "no product shown as a match")
    bad = {s.id: miss for s in matches if (miss := product_satisfies(expected, s, view))}
    detail = "; ".join(f"{pid}: {', '.join(m)}" for pid, m in bad.items()) or f"{len(matches)} matches fit"
    return CheckOutcome("products_all", not bad, detail)


def check_no_match_claimed(expected: bool, turn: TurnResult, view: CatalogView) -> CheckOutcome:
    """No product is shown as a match and the reply announces none (``expected`` true), or the opposite (false)."""
    claim = announces_matches(turn.reply)
    shown = [s.id for s in turn.matches]
    honest = not shown and claim is None
    detail = f"shown as matches {shown}" if shown else f"reply announces matches: {claim!r}" if claim else "none"
    return CheckOutcome("no_match_claimed", honest == bool(expected), detail)


def check_says_not_carried(expected: bool, turn: TurnResult, view: CatalogView) -> CheckOutcome:
    """The reply's first sentences say plainly the catalog does not have it (``expected`` true), or do not."""
    said = says_not_carried(turn.reply)
    return CheckOutcome("says_not_carried", (said is not None) == bool(expected),
                        f"said {said!r}" if said else "no 'we don't carry that' in the first sentences")


def _others(turn: TurnResult, view: CatalogView, targets: Iterable[str]) -> list[str]:
    targets = [view.parent_id(t) for t in targets]
    ids = dict.fromkeys(view.parent_id(s.id) for s in [*turn.on_screen, *turn.shown])
    return [pid for pid in ids if pid not in targets and not any(view.same_name(pid, t) for t in targets)]


def resolve_target(expected: str, turn: TurnResult) -> str | None:
    """A product id, or ``"@N"``: the N-th product of the list on screen before the turn (None: no such one)."""
    if not expected.startswith("@"):
        return expected
    n = int(expected[1:])
    return turn.on_screen[n - 1].id if 1 <= n <= len(turn.on_screen) else None


def check_about(expected: str, turn: TurnResult, view: CatalogView) -> CheckOutcome:
    """The reply names product `expected` (an id or ``"@N"``) and no other product on screen or shown this turn."""
    target = resolve_target(expected, turn)
    if target is None:
        return CheckOutcome("about", False, f"nothing at {expected} on screen")
    if target != expected:
        expected = target
    if not view.named_in(turn.reply, expected):
        return CheckOutcome("about", False, f"reply does not name {expected} ({' / '.join(view.names(expected))})")
    wrong = [pid for pid in _others(turn, view, [expected]) if view.named_in(turn.reply, pid)]
    return CheckOutcome("about", not wrong, f"also names {wrong}" if wrong else f"names {expected} only")


def check_about_all(expected: Sequence[str], turn: TurnResult, view: CatalogView) -> CheckOutcome:
    """The reply names every product in `expected` (ids or ``"@N"`` positions on screen)."""
    targets = [resolve_target(pid, turn) or pid for pid in expected]
    missing = [pid for pid in targets if pid.startswith("@") or not view.named_in(turn.reply, pid)]
    return CheckOutcome("about_all", not missing, f"does not name {missing}" if missing else "names all")


def check_reply_any(expected: Sequence[str], turn: TurnResult, view: CatalogView) -> CheckOutcome:
    """The reply matches at least one of the regexes (case-insensitive)."""
    hit = next((p for p in expected if re.search(p, turn.reply, re.IGNORECASE)), None)
    return CheckOutcome("reply_any", hit is not None, f"matched {hit!r}" if hit else f"matches none of {expected}")


def check_reply_none(expected: Sequence[str], turn: TurnResult, view: CatalogView) -> CheckOutcome:
    """The reply matches none of the regexes (case-insensitive)."""
    hit = next((p for p in expected if re.search(p, turn.reply, re.IGNORECASE)), None)
    return CheckOutcome("reply_none", hit is None, f"matched {hit!r}" if hit else "matches none")


def check_products_none_of(expected: Sequence[str], turn: TurnResult, view: CatalogView) -> CheckOutcome:
    """None of the ids is shown as a match this turn."""
    banned = {view.parent_id(pid) for pid in expected}
    shown = [view.parent_id(s.id) for s in turn.matches if view.parent_id(s.id) in banned]
    return CheckOutcome("products_none_of", not shown, f"shown as matches {shown}" if shown else "none shown")


CHECKS: dict[str, CheckFn] = {
    "intent": check_intent,
    "top3_any": check_top3_any,
    "products_all": check_products_all,
    "no_match_claimed": check_no_match_claimed,
    "says_not_carried": check_says_not_carried,
    "about": check_about,
    "about_all": check_about_all,
    "reply_any": check_reply_any,
    "reply_none": check_reply_none,
    "products_none_of": check_products_none_of,
}
"""Check name (the key in a turn's ``checks``) -> function(expected, turn, view)."""


def evaluate_turn(checks: Mapping[str, Any], turn: TurnResult, view: CatalogView) -> list[CheckOutcome]:
    """Every check of one turn; a turn that ended in an error fails them all."""
    unknown = [name for name in checks if name not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; valid: {', '.join(CHECKS)}")
    if turn.error is not None:
        return [CheckOutcome(name, False, f"error: {turn.error}") for name in checks]
    return [CHECKS[name](expected, turn, view) for name, expected in checks.items()]


def honest(turn: TurnResult, view: CatalogView) -> tuple[bool, list[CheckOutcome]]:
    """A not-carried request answered honestly: it says so, and nothing is shown or announced as a match."""
    outcomes = evaluate_turn({"says_not_carried": True, "no_match_claimed": True}, turn, view)
    return all(o.passed for o in outcomes), outcomes


# --- data --------------------------------------------------------------------------------------------------------


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object per non-empty line."""
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_conversations(split: str) -> list[dict[str, Any]]:
    """The conversations of a split (``dev`` or ``heldout``)."""
    return load_jsonl(SPLIT_FILES[split])


def load_not_carried(split: str | None = None, path: Path = NOT_CARRIED) -> list[dict[str, Any]]:
    """The not-carried requests, of one split or all."""
    return [r for r in load_jsonl(path) if split is None or r["split"] == split]


# --- driving the brain -------------------------------------------------------------------------------------------


def luma_catalog_path() -> Path:
    """``luma-dev/products.jsonl`` in the shared data."""
    return shared_data_dir() / "luma-dev" / "products.jsonl"


def ensure_ingested(data_dir: Path, catalog: Path) -> dict[str, Any]:
    """Ingest `catalog` into `data_dir`'s store (only changed products are written; a no-op when up to date)."""
    from assistant.catalog.ingest import ingest_file
    from assistant.catalog.store import default_store

    data_dir.mkdir(parents=True, exist_ok=True)
    with default_store(data_dir) as store:
        report = ingest_file(catalog, store, fetch_urls=False, delete_missing=True)
        return {"products": store.count(), "changed": report.changed, "skipped": report.skipped}


class Speaker:
    """Speaks a turn with `bench.voices` and transcribes it as the server's voice path does.

    The STT engine is the server's (``STT_MODEL``); the decoding options are the voice path's finals
    (``assistant.runtime.voice.transcribe_options`` with the catalog's biasing prompt where the code has them, else the
    plain ``TranscribeOptions(language="en")`` of ``VoiceInput``).

    Args:
        voice: A `bench.voices` voice name.
        cache_dir: The data dir's model cache (STT weights; synthesized clips under ``voices/``).
        condition: A `bench.voices` acoustic condition (``clean``, ``noise10``, ``reverb``, ``phone``).
        prompt: The catalog's Whisper prompt (None: no biasing).
        beam_size: The finals' beam width where the voice path has one.
    """

    def __init__(self, voice: str, cache_dir: Path, *, condition: str = "clean", prompt: str | None = None,
                 beam_size: int | None = None) -> None:
        from speech.registry import create_stt

        self.voice = voice
        self.condition = condition
        self.cache_dir = cache_dir
        self.stt = create_stt(STT_MODEL, cache_dir=cache_dir)
        self.options = voice_transcribe_options(prompt, beam_size)

    def transcribe(self, text: str) -> Any:
        """The `speech.stt.Transcription` of `text` spoken in this voice."""
        from bench import voices

        audio = voices.speak(text, self.voice, self.condition, cache_dir=self.cache_dir / "voices")
        return self.stt.transcribe(audio, self.options)


def voice_transcribe_options(prompt: str | None, beam_size: int | None) -> Any:
    """The options the server's voice input decodes a final with."""
    import assistant.runtime.voice as voice

    made = getattr(voice, "transcribe_options", None)
    if made is None:  # the voice path without catalog prompts or beam finals
        from speech.stt import TranscribeOptions

        return TranscribeOptions(language="en")
    kwargs = {} if beam_size is None else {"beam_size": beam_size}
    return made("en", prompt, final=True, **kwargs)


def spoken_turn_fields(result: Any) -> dict[str, Any]:
    """The `UserTurn` fields a spoken turn carries besides its text (confidence, alternatives), where it has them."""
    import dataclasses

    from assistant.core.frames import UserTurn

    names = {f.name for f in dataclasses.fields(UserTurn)}
    out: dict[str, Any] = {}
    if "avg_logprob" in names:
        out["avg_logprob"] = getattr(result, "avg_logprob", None)
    if "alternatives" in names:
        out["alternatives"] = tuple(getattr(result, "alternatives", ()) or ())
    return out


class ConversationRunner:
    """The server's text brain over an ingested catalog, driven one conversation at a time.

    Args:
        data_dir: The data dir holding the ingested catalog (and the model caches).
        speaker: Speaks and transcribes each user turn first (None: text turns).
    """

    def __init__(self, data_dir: Path, *, spoken: str | None = None, condition: str = "clean") -> None:
        import inspect

        import server.engines as engines
        from assistant.memory.store import SQLiteMemory
        from assistant.runtime.turn import Brain, BrainOptions
        from server.settings import Settings

        self.settings = Settings(data_dir=data_dir, catalog=None)
        self.catalog, retriever, _ = engines.build_search(self.settings, vision=False)
        searcher = engines.build_ranked(self.settings, self.catalog, retriever)  # what the server serves
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-conv-")
        self.memory = SQLiteMemory(Path(self._tmp.name) / "memory.sqlite")
        extra: dict[str, Any] = {}
        vocabulary = None
        if hasattr(engines, "listens_with_vocabulary"):  # the served catalog's view, as the server builds it
            from assistant.catalog.view import CatalogView as ServedView

            served = ServedView(self.catalog)
            dialogue = engines.build_dialogue(self.settings, served, retriever, self.memory)
            if engines.listens_with_vocabulary(self.settings):
                vocabulary = dialogue.vocabulary
                extra = {"view": served, "repair": bool(self.settings.asr_repair)}
        else:  # an older commit (a baseline run)
            dialogue = engines.build_dialogue(self.settings, self.catalog, retriever, self.memory)
            if hasattr(engines, "build_vocabulary") and "vocabulary" in inspect.signature(Brain).parameters:
                # the catalog's spoken vocabulary and the repair of misheard product words, as the server built them
                vocabulary = engines.build_vocabulary(self.settings, self.catalog)
                extra = {"vocabulary": vocabulary, "repair": bool(getattr(self.settings, "asr_repair", True))}
        self.brain = Brain(searcher, tts=None, options=BrainOptions(k=self.settings.search_k), dialogue=dialogue,
                           **extra)
        self.view = CatalogView(self.catalog)
        self.speaker: Speaker | None = None
        if spoken:
            prompt = vocabulary.prompt if vocabulary is not None and getattr(self.settings, "asr_bias", False) \
                else None
            self.speaker = Speaker(spoken, self.settings.cache_dir, condition=condition, prompt=prompt,
                                   beam_size=getattr(self.settings, "stt_beam_size", None))

    def close(self) -> None:
        self.memory.close()
        self._tmp.cleanup()

    async def run(self, users: Sequence[str]) -> list[TurnResult]:
        """Run one conversation's user turns in a fresh session; one `TurnResult` per turn."""
        from assistant.conversation.dialogue import DialogueState
        from assistant.core.frames import ProductResults, ReplyTextDelta, ResponseDone, UserTurn

        session = self.memory.open_session()
        state = DialogueState(memory=session)
        results: list[TurnResult] = []
        on_screen: list[Shown] = []
        for n, user in enumerate(users):
            spoken: dict[str, Any] = {}
            transcript: str | None = None
            if self.speaker is not None:
                heard = await asyncio.to_thread(self.speaker.transcribe, user)
                transcript = "" if heard.is_hallucination else heard.text.strip()
                spoken = spoken_turn_fields(heard) if transcript else {}
            text = transcript if transcript is not None else user
            result = TurnResult(user=user, text=text, transcript=transcript, on_screen=list(on_screen))
            t0 = time.perf_counter()
            if not text.strip():
                result.error = "empty transcript"
                results.append(result)
                continue
            session.add_turn("user", text)
            parts: list[str] = []
            try:
                turn = UserTurn(item_id=f"item_{n}", text=text, wants_audio=False, **spoken)
                understand = getattr(self.brain, "understand", None)
                if understand is not None and (said := understand(turn).text) != text:
                    result.understood = said
                async for frame in self.brain.respond(turn, f"resp_{n}", signals=session.signals(), state=state):
                    if isinstance(frame, ProductResults):
                        result.shown = [Shown(h.product.id, h.product.title, round(float(h.price), 2),
                                              tuple(h.near_miss), h.variant.id if h.variant is not None else None)
                                        for h in frame.hits]
                        session.set_shown([h.product.id for h in frame.hits])
                    elif isinstance(frame, ReplyTextDelta):
                        parts.append(frame.delta)
                    elif isinstance(frame, ResponseDone):
                        result.reply = frame.text or "".join(parts)
                        result.intent = frame.intent
            except Exception as err:  # a failed turn fails its checks; the conversation goes on
                result.error = f"{type(err).__name__}: {err}"
                result.reply = "".join(parts)
            result.ms = round(1000 * (time.perf_counter() - t0), 1)
            session.add_turn("assistant", result.reply)
            state.save()
            if result.shown:
                on_screen = list(result.shown)
            results.append(result)
        return results


# --- scoring -----------------------------------------------------------------------------------------------------


def _turn_json(turn: TurnResult) -> dict[str, Any]:
    out = asdict(turn)
    out.pop("on_screen")
    out["shown"] = [{"id": s.id, "title": s.title, "price": s.price, "near_miss": list(s.near_miss)}
                    for s in turn.shown]
    return out


def score_conversations(convs: Sequence[Mapping[str, Any]], runs: Sequence[Sequence[TurnResult]],
                        view: CatalogView) -> dict[str, Any]:
    """Share of checked turns right, pass rate per check, per conversation, and every failed turn."""
    per_check: dict[str, list[int]] = {}
    per_conv: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    checked = right = 0
    for conv, run in zip(convs, runs, strict=True):
        conv_checked = conv_right = 0
        for i, (spec, result) in enumerate(zip(conv["turns"], run, strict=True)):
            record = {"cid": conv["cid"], "turn": i, **_turn_json(result)}
            checks = spec.get("checks")
            if checks:
                outcomes = evaluate_turn(checks, result, view)
                ok = all(o.passed for o in outcomes)
                for o in outcomes:
                    per_check.setdefault(o.name, [0, 0])
                    per_check[o.name][0] += 1
                    per_check[o.name][1] += o.passed
                checked += 1
                right += ok
                conv_checked += 1
                conv_right += ok
                record["right"] = ok
                record["checks"] = [asdict(o) for o in outcomes]
                if not ok:
                    failures.append({
                        "cid": conv["cid"], "turn": i, "user": result.user, "transcript": result.transcript,
                        "understood": result.understood, "intent": result.intent, "reply": result.reply, "error": result.error,
                        "shown": record["shown"],
                        "failed": [{"check": o.name, "expected": checks[o.name], "detail": o.detail}
                                   for o in outcomes if not o.passed],
                    })
            turns.append(record)
        per_conv.append({"cid": conv["cid"], "checked": conv_checked, "right": conv_right,
                         "all_right": conv_right == conv_checked})
    return {
        "conversations": len(convs),
        "turns": sum(len(c["turns"]) for c in convs),
        "checked_turns": checked,
        "right_turns": right,
        "share_right": round(right / checked, 4) if checked else 0.0,
        "conversations_all_right": round(sum(c["all_right"] for c in per_conv) / len(per_conv), 4) if per_conv
        else 0.0,
        "per_check": {name: {"n": n, "passed": p, "rate": round(p / n, 4)} for name, (n, p) in
                      sorted(per_check.items())},
        "per_conversation": per_conv,
        "failures": failures,
        "transcript": turns,
    }


def score_not_carried(rows: Sequence[Mapping[str, Any]], results: Sequence[TurnResult],
                      view: CatalogView) -> dict[str, Any]:
    """Honesty rate (says so and claims no match), its two parts, by kind of absence, and every dishonest reply."""
    by_kind: dict[str, list[int]] = {}
    said = unclaimed = ok_total = 0
    failures: list[dict[str, Any]] = []
    for row, result in zip(rows, results, strict=True):
        ok, outcomes = honest(result, view)
        said += outcomes[0].passed
        unclaimed += outcomes[1].passed
        ok_total += ok
        by_kind.setdefault(row["kind_of_absence"], [0, 0])
        by_kind[row["kind_of_absence"]][0] += 1
        by_kind[row["kind_of_absence"]][1] += ok
        if not ok:
            failures.append({"nid": row["nid"], "text": row["text"], "transcript": result.transcript,
                             "understood": result.understood, "intent": result.intent, "reply": result.reply, "error": result.error,
                             "shown": _turn_json(result)["shown"],
                             "failed": [asdict(o) for o in outcomes if not o.passed]})
    n = len(rows)
    return {
        "n": n,
        "honest": ok_total,
        "honesty_rate": round(ok_total / n, 4) if n else 0.0,
        "says_not_carried_rate": round(said / n, 4) if n else 0.0,
        "no_match_claimed_rate": round(unclaimed / n, 4) if n else 0.0,
        "by_kind": {k: {"n": a, "honest": b, "rate": round(b / a, 4)} for k, (a, b) in sorted(by_kind.items())},
        "failures": failures,
    }


def redact(scored: Mapping[str, Any]) -> dict[str, Any]:
    """A split's scores without what the shopper said, what the assistant replied or what a check expected.

    What stays: every rate, and per turn its ids (``cid``/``nid``, turn), intent, whether it was right and the
    names of the checks that failed, enough to count failures by kind and batch without reading a held-out text.
    """
    def turn_ids(failure: Mapping[str, Any]) -> dict[str, Any]:
        ids = {k: failure[k] for k in ("cid", "nid", "turn", "intent", "right") if k in failure}
        failed = failure.get("failed") or [c for c in failure.get("checks", []) if not c["passed"]]
        ids["failed"] = sorted({f.get("check") or f["name"] for f in failed})
        return ids

    convs = dict(scored["conversations"])
    convs["failures"] = [turn_ids(f) for f in convs["failures"]]
    convs["transcript"] = [turn_ids(t) for t in convs["transcript"] if "right" in t]
    honesty = dict(scored["not_carried"])
    honesty["failures"] = [turn_ids(f) for f in honesty["failures"]]
    return {**scored, "conversations": convs, "not_carried": honesty, "redacted": True}


async def _run_all(runner: ConversationRunner, convs: Sequence[Mapping[str, Any]],
                   requests: Sequence[Mapping[str, Any]]) -> tuple[list[list[TurnResult]], list[TurnResult]]:
    runs = [await runner.run([t["user"] for t in conv["turns"]]) for conv in convs]
    singles = [(await runner.run([r["text"]]))[0] for r in requests]
    return runs, singles


def run(
    splits: Sequence[str] = SPLITS,
    *,
    out: Path | None = DEFAULT_OUT,
    data_dir: Path = DEFAULT_DATA_DIR,
    catalog: Path | None = None,
    spoken: str | None = None,
    condition: str = "clean",
    conversations: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    not_carried: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    heldout_texts: bool = False,
) -> dict[str, Any]:
    """Run the benchmark on `splits` and write the results to `out` (None: not written).

    Args:
        splits: ``dev`` and/or ``heldout``.
        out: Results JSON.
        data_dir: Where luma-dev is ingested (once; reused) and the models are cached.
        catalog: The catalog file (default: ``luma-dev/products.jsonl`` in the shared data).
        spoken: A `bench.voices` voice: speak and transcribe every user turn first.
        condition: The acoustic condition of the spoken turns (`bench.voices.CONDITIONS`).
        conversations: Conversations per split instead of the data files (tests).
        not_carried: Not-carried requests per split instead of the data file (tests).
        heldout_texts: Keep the held-out split's texts, replies and check details in the results (an audit after
            the tuning is over); by default they are dropped (`redact`) so that nobody tuning reads them by accident.

    Returns:
        The results: per split ``conversations`` (scores) and ``not_carried`` (honesty).
    """
    import torch

    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    catalog = catalog or luma_catalog_path()
    if not catalog.is_file():
        raise FileNotFoundError(f"no catalog at {catalog} (set SHOPTALK_SHARED_DATA)")
    start = time.perf_counter()
    ingest = ensure_ingested(data_dir, catalog)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    runner = ConversationRunner(data_dir, spoken=spoken, condition=condition)
    build_s = time.perf_counter() - start
    results: dict[str, Any] = {
        "machine": machine(),
        "catalog": str(catalog),
        "catalog_products": ingest["products"],
        "spoken": spoken,
        "condition": condition if spoken else None,
        "stt_model": STT_MODEL if spoken else None,
        "build_s": round(build_s, 1),
        "splits": {},
    }
    try:
        for split in splits:
            convs = list(conversations[split]) if conversations is not None else load_conversations(split)
            requests = list(not_carried[split]) if not_carried is not None else load_not_carried(split)
            t0 = time.perf_counter()
            runs, singles = asyncio.run(_run_all(runner, convs, requests))
            scored = {
                "conversations": score_conversations(convs, runs, runner.view),
                "not_carried": score_not_carried(requests, singles, runner.view),
                "run_s": round(time.perf_counter() - t0, 1),
            }
            results["splits"][split] = scored if split != "heldout" or heldout_texts else redact(scored)
    finally:
        runner.close()
    results["elapsed_s"] = round(time.perf_counter() - start, 1)
    if out is not None:
        write_results(out, results)
    return results


# --- report ------------------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def failure_patterns(failures: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """The failed checks counted by (check, intent): the commonest ways turns go wrong."""
    counts = Counter(f"{f['check']} (intent {fail['intent']})" for fail in failures for f in fail["failed"])
    return counts.most_common()


def table(results: Mapping[str, Any]) -> str:
    """Markdown: per split share of checked turns right and not-carried honesty; per-check pass rates; the dev
    failures with their replies (held-out failures stay in the JSON only)."""
    splits: Mapping[str, Any] = results["splits"]
    mode = (f"spoken ({results['spoken']}, {results.get('condition') or 'clean'}, {results.get('stt_model')})"
            if results.get("spoken") else "text")
    lines = [
        f"Conversations over luma-dev ({mode}):",
        "",
        "| split | conversations | checked turns | turns right | conversations all right | not-carried honest "
        "(says so / claims none) |",
        "|---|---|---|---|---|---|",
    ]
    for name, sec in splits.items():
        c, nc = sec["conversations"], sec["not_carried"]
        lines.append(
            f"| {name} | {c['conversations']} | {c['checked_turns']} | {c['share_right']:.3f} "
            f"({c['right_turns']}/{c['checked_turns']}) | {c['conversations_all_right']:.3f} | "
            f"{nc['honesty_rate']:.3f} ({nc['honest']}/{nc['n']}; {nc['says_not_carried_rate']:.2f} / "
            f"{nc['no_match_claimed_rate']:.2f}) |")
    names = sorted({k for sec in splits.values() for k in sec["conversations"]["per_check"]})
    lines += ["", "| check | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for check in names:
        cells = []
        for sec in splits.values():
            m = sec["conversations"]["per_check"].get(check)
            cells.append(f"{m['rate']:.3f} ({m['passed']}/{m['n']})" if m else "–")
        lines.append(f"| {check} | " + " | ".join(cells) + " |")
    dev = splits.get("dev")
    if dev is not None:
        fails = dev["conversations"]["failures"]
        lines += ["", f"Dev failures ({len(fails)} turns; the first {min(len(fails), TABLE_FAILURES)}):", "",
                  "| turn | user | intent | failed checks | reply |", "|---|---|---|---|---|"]
        for f in fails[:TABLE_FAILURES]:
            said = f["user"] if not f.get("transcript") else f"{f['user']} → \"{f['transcript']}\""
            checks = "; ".join(f"{x['check']}: {x['detail']}" for x in f["failed"])
            reply = f["reply"] if len(f["reply"]) <= REPLY_CHARS else f["reply"][:REPLY_CHARS] + "…"
            lines.append(f"| {f['cid']}#{f['turn']} | {_cell(said)} | {f['intent']} | {_cell(checks)} | "
                         f"{_cell(reply or f.get('error') or '')} |")
        patterns = failure_patterns(fails)
        if patterns:
            lines += ["", "Commonest failed checks on dev (check, the intent the turn got): " + ", ".join(
                f"{name} ×{n}" for name, n in patterns[:8])]
        nc_fails = dev["not_carried"]["failures"]
        if nc_fails:
            lines += ["", f"Dev not-carried requests answered dishonestly ({len(nc_fails)}):", "",
                      "| request | reply |", "|---|---|"]
            for f in nc_fails:
                reply = f["reply"] if len(f["reply"]) <= REPLY_CHARS else f["reply"][:REPLY_CHARS] + "…"
                lines.append(f"| {f['nid']}: {_cell(f['text'])} | {_cell(reply)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: run, write the JSON, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.conversations", description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=(*SPLITS, "all"), default="all")
    parser.add_argument("--spoken", metavar="VOICE", default=None, help="speak and transcribe each user turn")
    parser.add_argument("--condition", default="clean", help="acoustic condition of the spoken turns")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="luma-dev ingested here (cached)")
    parser.add_argument("--catalog", type=Path, default=None, help="default: luma-dev/products.jsonl")
    parser.add_argument("--heldout-texts", action="store_true",
                        help="keep the held-out texts and replies in the JSON (an audit once tuning is over)")
    args = parser.parse_args(argv)
    splits = SPLITS if args.split == "all" else (args.split,)
    results = run(splits, out=args.out, data_dir=args.data_dir, catalog=args.catalog, spoken=args.spoken,
                  condition=args.condition, heldout_texts=args.heldout_texts)
    print(table(results))
    print(f"\nresults written to {args.out}")
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
