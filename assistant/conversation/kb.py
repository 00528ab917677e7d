"""A merchant knowledge base: policy documents in markdown, hybrid retrieval, extractive answers with citations.

Documents are markdown files (``returns.md``, ``shipping.md`` ...). Each is split into passages, one per paragraph
or list under its heading, each with a stable id ``<doc>#<section-slug>-<n>`` (``returns#refunds-1``), and stored
with its MiniLM embedding in ``<data_dir>/kb/kb.sqlite``. Re-ingesting a folder only re-embeds documents whose
content hash changed and removes documents whose file is gone.

Retrieval scores every passage by ``COSINE_WEIGHT * cosine + (1 - COSINE_WEIGHT) * bm25 / (bm25 + BM25_HALF)``:
exact cosine over a small corpus (a numpy matrix product) and BM25 (`ranking.lexical`) squashed into [0, 1), so the
score is comparable across questions and one threshold decides whether the knowledge base knows the answer.
`KnowledgeBase.answer_policy` quotes the best passage's most relevant sentences (never generated text) and cites it;
below `SUPPORT_THRESHOLD` it declines with `UNSUPPORTED_TEXT`.

Passages that look like prompt injection (`assistant.safety.moderation.looks_like_injection`) are stored but never
retrieved, so a planted "ignore previous instructions" in a merchant file cannot reach a reply.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from assistant.safety.moderation import looks_like_injection
from assistant.safety.pii import find_pii
from ranking.lexical import BM25Index

log = logging.getLogger(__name__)

STORE_DIRNAME = "kb"
DB_NAME = "kb.sqlite"
DEMO_KB_DIR = Path(__file__).with_name("demo_kb")
SPLITTER_VERSION = "1"  # part of the content hash: a splitter change re-ingests every document
COSINE_WEIGHT = 0.7
BM25_HALF = (
    3.0  # the BM25 score that maps to 0.5: about a question sharing one or two rare words with a passage
)
# Calibrated on the "calibration" split of bench/data/kb_questions.jsonl (bench/kb_moderation.py --calibrate): the
# midpoint between the weakest supported question and the strongest unsupported one.
SUPPORT_THRESHOLD = 0.39
MAX_ANSWER_SENTENCES = 2
OVERLAP_BONUS = 0.3  # sentence choice: cosine + this x share of the question's words the sentence contains
MIN_PASSAGE_CHARS = 60  # a shorter paragraph joins the one before it in the same section
UNSUPPORTED_TEXT = "I don't know that one — let me connect you with someone who does."

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    model TEXT NOT NULL,
    ingested_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS passages (
    id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    section TEXT NOT NULL,
    text TEXT NOT NULL,
    suspicious INTEGER NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS passages_doc ON passages(doc_id);
"""


class SentenceEncoder(Protocol):
    """What the knowledge base needs from a text encoder (`ranking.text_encoder.TextEncoder` fits)."""

    @property
    def name(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_query(self, text: str) -> np.ndarray: ...


@dataclass(frozen=True)
class Passage:
    """One retrievable piece of a policy document.

    Attributes:
        id: Stable id, ``<doc_id>#<section slug>-<n>``.
        doc_id: The document's id (its file name without ``.md``).
        doc_title: The document's ``#`` title.
        section: The heading the passage sits under (the title for text before the first heading).
        text: Plain text (markdown emphasis, links and list markers removed).
        suspicious: Whether it looks like prompt injection (then it is never retrieved).
    """

    id: str
    doc_id: str
    doc_title: str
    section: str
    text: str
    suspicious: bool = False

    @property
    def context(self) -> str:
        """The text that is indexed: title, heading and passage."""
        return f"{self.doc_title}. {self.section}. {self.text}"


@dataclass(frozen=True)
class KBHit:
    """A retrieved passage: hybrid `score` with its parts (cosine in [-1, 1], raw BM25 >= 0)."""

    passage: Passage
    score: float
    cosine: float
    bm25: float


@dataclass(frozen=True)
class Citation:
    passage_id: str
    doc_title: str
    section: str

    def to_dict(self) -> dict[str, str]:
        return {"passage_id": self.passage_id, "doc_title": self.doc_title, "section": self.section}


@dataclass(frozen=True)
class PolicyAnswer:
    """An answer to a policy question.

    Attributes:
        text: Sentences quoted from the cited passage, or `UNSUPPORTED_TEXT`.
        citations: Where the text comes from (empty when unsupported).
        supported: Whether the knowledge base was confident enough to answer.
        score: The best passage's hybrid score (what `SUPPORT_THRESHOLD` was compared with).
    """

    text: str
    citations: tuple[Citation, ...]
    supported: bool
    score: float

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "citations": [c.to_dict() for c in self.citations],
            "supported": self.supported,
            "score": round(self.score, 4),
        }


@dataclass(frozen=True)
class IngestStats:
    """What one `KnowledgeBase.ingest_dir` changed (counts of documents)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
        }


# --- markdown -> passages ----------------------------------------------------------------------------------------

_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LIST_RE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_LINK_RE = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS_RE = re.compile(r"(\*\*|__|\*|_|`)(\S(?:.*?\S)?)\1")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _plain(line: str) -> str:
    """One markdown line as plain text."""
    line = _LINK_RE.sub(r"\1", line)
    line = _EMPHASIS_RE.sub(r"\2", line)
    return line.strip()


def split_markdown(text: str, doc_id: str) -> list[Passage]:
    """Split a markdown document into passages: one per paragraph or list, under the nearest heading.

    The first level-1 heading is the document title (else the id, title-cased). List items of one list form one
    passage. A paragraph shorter than `MIN_PASSAGE_CHARS` joins the previous passage of its section.

    Args:
        text: The markdown.
        doc_id: The document's id (used in passage ids).

    Returns:
        Passages in document order.
    """
    title = ""
    section = ""
    blocks: list[tuple[str, str]] = []  # (section, paragraph)
    current: list[str] = []
    in_list = False

    def flush() -> None:
        nonlocal current, in_list
        if current:
            blocks.append((section, " ".join(current)))
        current, in_list = [], False

    for raw in text.splitlines():
        heading = _HEADING_RE.match(raw)
        if heading:
            flush()
            if len(heading.group(1)) == 1 and not title:
                title = _plain(heading.group(2))
            else:
                section = _plain(heading.group(2))
            continue
        if not raw.strip():
            if not in_list:
                flush()
            continue
        item = _LIST_RE.match(raw)
        if item:
            in_list = True
            piece = _plain(raw[item.end() :])
            current.append(piece if piece.endswith((".", "!", "?", ":")) else piece + ";")
        else:
            if in_list and not raw.startswith((" ", "\t")):
                flush()
            current.append(_plain(raw))
    flush()
    title = title or doc_id.replace("-", " ").replace("_", " ").title()

    merged: list[tuple[str, str]] = []
    for sec, para in blocks:
        para = re.sub(r"\s+", " ", para).strip().rstrip(";")
        if merged and merged[-1][0] == sec and len(para) < MIN_PASSAGE_CHARS:
            merged[-1] = (sec, f"{merged[-1][1]} {para}")
        else:
            merged.append((sec, para))
    passages: list[Passage] = []
    counts: dict[str, int] = {}
    for sec, para in merged:
        sec = sec or title
        slug = _slug(sec)
        counts[slug] = counts.get(slug, 0) + 1
        pid = f"{doc_id}#{slug}-{counts[slug]}"
        passages.append(Passage(pid, doc_id, title, sec, para, looks_like_injection(para)))
    return passages


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage (split after ``.``/``!``/``?`` before a capital or digit)."""
    return [s.strip() for s in _SENTENCE_RE.split(text) if s.strip()]


def content_hash(text: str) -> str:
    return hashlib.sha256(f"{SPLITTER_VERSION}\n{text}".encode()).hexdigest()


# --- the store ---------------------------------------------------------------------------------------------------


class KnowledgeBase:
    """Policy passages in SQLite with hybrid retrieval; safe to share between threads.

    Args:
        db_path: The SQLite file (created with its folder if missing).
        encoder: Sentence encoder for passages and questions (share the search's `TextEncoder`).
        threshold: Minimum best-passage score to answer (see `SUPPORT_THRESHOLD`).
    """

    def __init__(
        self, db_path: Path, encoder: SentenceEncoder, *, threshold: float = SUPPORT_THRESHOLD
    ) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.encoder = encoder
        self.threshold = threshold
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.db_path, check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._lock, self._conn:
            self._conn.executescript(_SCHEMA)
        self._passages: list[Passage] = []
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._bm25 = BM25Index()
        self._contacts: frozenset[str] = frozenset()
        self._stale = True

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- ingest ---------------------------------------------------------------------------------------------------

    def ingest_text(self, doc_id: str, text: str, *, source: str = "") -> str:
        """Add or replace one document unless its content is unchanged.

        Args:
            doc_id: Document id (becomes the passage id prefix).
            text: Markdown.
            source: Where it came from (a path), for the record.

        Returns:
            ``added``, ``updated`` or ``unchanged``.
        """
        digest = content_hash(text)
        with self._lock:
            row = self._conn.execute(
                "SELECT content_hash, model FROM documents WHERE doc_id = ?", (doc_id,)
            ).fetchone()
            if row is not None and row[0] == digest and row[1] == self.encoder.name:
                return "unchanged"
            passages = split_markdown(text, doc_id)
            vectors = self.encoder.encode([p.context for p in passages])
            for p in passages:
                if p.suspicious:
                    log.warning("knowledge base passage %s looks like prompt injection; not served", p.id)
            title = passages[0].doc_title if passages else doc_id
            with self._conn:
                self._conn.execute("DELETE FROM passages WHERE doc_id = ?", (doc_id,))
                self._conn.execute(
                    "INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                    (doc_id, source, title, digest, self.encoder.name, time.time()),
                )
                self._conn.executemany(
                    "INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            p.id,
                            doc_id,
                            i,
                            p.section,
                            p.text,
                            int(p.suspicious),
                            vectors[i].astype(np.float32).tobytes(),
                        )
                        for i, p in enumerate(passages)
                    ],
                )
            self._stale = True
        return "added" if row is None else "updated"

    def remove(self, doc_id: str) -> bool:
        """Delete a document and its passages; returns whether it existed."""
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM passages WHERE doc_id = ?", (doc_id,))
            gone = self._conn.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,)).rowcount > 0
            self._stale = True
        return gone

    def ingest_dir(self, directory: Path, *, prune: bool = True) -> IngestStats:
        """Ingest every ``*.md`` file of a folder (not recursive); the file name without ``.md`` is the doc id.

        Args:
            directory: The folder.
            prune: Remove stored documents that have no file in the folder any more.

        Returns:
            Counts of added, updated, unchanged and removed documents.

        Raises:
            FileNotFoundError: The folder does not exist.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"no knowledge base folder at {directory}")
        counts = {"added": 0, "updated": 0, "unchanged": 0, "removed": 0}
        seen: set[str] = set()
        for path in sorted(directory.glob("*.md")):
            seen.add(path.stem)
            counts[self.ingest_text(path.stem, path.read_text(encoding="utf-8"), source=str(path))] += 1
        if prune:
            for doc_id in set(self.document_ids()) - seen:
                counts["removed"] += int(self.remove(doc_id))
        stats = IngestStats(**counts)
        log.info("knowledge base %s: %s", self.db_path, stats.to_dict())
        return stats

    def document_ids(self) -> list[str]:
        """Ids of the stored documents."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT doc_id FROM documents ORDER BY doc_id")]

    def passages(self, *, include_suspicious: bool = False) -> list[Passage]:
        """Stored passages in document order."""
        self._refresh()
        if include_suspicious:
            return [p for p, _ in self._load()]
        return list(self._passages)

    def published_contacts(self) -> frozenset[str]:
        """Emails and phone numbers the policies publish (for `screen_output(allow=...)`: replies may quote them)."""
        self._refresh()
        return self._contacts

    # --- retrieval ------------------------------------------------------------------------------------------------

    def _load(self) -> list[tuple[Passage, np.ndarray]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT p.id, p.doc_id, d.title, p.section, p.text, p.suspicious, p.embedding "
                "FROM passages p JOIN documents d USING (doc_id) ORDER BY p.doc_id, p.position"
            ).fetchall()
        return [
            (Passage(r[0], r[1], r[2], r[3], r[4], bool(r[5])), np.frombuffer(r[6], dtype=np.float32))
            for r in rows
        ]

    def _refresh(self) -> None:
        with self._lock:
            if not self._stale:
                return
            served = [(p, v) for p, v in self._load() if not p.suspicious]
            self._passages = [p for p, _ in served]
            self._matrix = np.stack([v for _, v in served]) if served else np.zeros((0, 0), dtype=np.float32)
            self._bm25 = BM25Index()
            self._bm25.build([p.id for p in self._passages], [p.context for p in self._passages])
            self._contacts = frozenset(s.text for p in self._passages for s in find_pii(p.text, kinds=("email", "phone")))
            self._stale = False

    def search(self, query: str, k: int = 5) -> list[KBHit]:
        """The `k` passages with the highest hybrid score, best first.

        Args:
            query: A shopper's question.
            k: How many at most.

        Returns:
            Hits with their hybrid score and its cosine and BM25 parts.
        """
        self._refresh()
        with self._lock:
            passages, matrix, bm25 = self._passages, self._matrix, self._bm25
        if not passages or k <= 0:
            return []
        cosine = matrix @ self.encoder.encode_query(query)  # [n]
        lexical = bm25.scores(query)  # [n]
        score = COSINE_WEIGHT * cosine + (1.0 - COSINE_WEIGHT) * lexical / (lexical + BM25_HALF)
        order = np.argsort(-score, kind="stable")[:k]
        return [
            KBHit(passages[i], float(score[i]), float(cosine[i]), float(lexical[i])) for i in order.tolist()
        ]

    def answer_policy(self, question: str) -> PolicyAnswer:
        """Answer a policy question by quoting the best passage, or decline.

        The answer is the best passage's `MAX_ANSWER_SENTENCES` sentences most similar to the question (cosine plus
        `OVERLAP_BONUS` times the word overlap), in their original order. When the best passage scores below the
        threshold, the answer is `UNSUPPORTED_TEXT` with ``supported=False`` and no citation.

        Args:
            question: The shopper's question.

        Returns:
            The answer.
        """
        hits = self.search(question, k=1)
        if not hits or hits[0].score < self.threshold:
            return PolicyAnswer(UNSUPPORTED_TEXT, (), False, hits[0].score if hits else 0.0)
        best = hits[0]
        passage = best.passage
        sentences = split_sentences(passage.text)
        if len(sentences) > MAX_ANSWER_SENTENCES:
            q = self.encoder.encode_query(question)
            sims = self.encoder.encode(sentences) @ q  # [n_sentences]
            q_words = set(self._bm25.tokenizer(question))
            overlap = np.array(
                [len(q_words & set(self._bm25.tokenizer(s))) / (len(q_words) or 1) for s in sentences]
            )
            keep = sorted(
                np.argsort(-(sims + OVERLAP_BONUS * overlap), kind="stable")[:MAX_ANSWER_SENTENCES].tolist()
            )
            sentences = [sentences[i] for i in keep]
        citation = Citation(passage.id, passage.doc_title, passage.section)
        return PolicyAnswer(" ".join(sentences), (citation,), True, best.score)


def open_kb(
    data_dir: Path,
    encoder: SentenceEncoder,
    *,
    docs: Path | None = None,
    threshold: float = SUPPORT_THRESHOLD,
) -> KnowledgeBase:
    """Open ``<data_dir>/kb/kb.sqlite`` and bring it up to date with a folder of markdown policies.

    Args:
        data_dir: The application's data folder.
        encoder: Sentence encoder (share the search's).
        docs: The merchant's policy folder; None uses the demo policies shipped in ``assistant/conversation/demo_kb``.
        threshold: See `KnowledgeBase`.

    Returns:
        The open knowledge base, ingested.
    """
    kb = KnowledgeBase(Path(data_dir) / STORE_DIRNAME / DB_NAME, encoder, threshold=threshold)
    kb.ingest_dir(DEMO_KB_DIR if docs is None else Path(docs))
    return kb
