"""Lexical retrieval: BM25 (bm25s) over product text, with an English tokenizer and optional stemming.

Tokens are lower-cased runs of letters and digits, without English stopwords, Snowball-stemmed when PyStemmer is
installed ("hoodies" and "hoodie" both become "hoodi") and otherwise reduced to a crude singular. Scores are plain
BM25 (Lucene variant); a query whose words the catalog never uses scores nothing and returns no hits.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

log = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(STOPWORDS_EN) | {"s"}  # "men's" splits into "men" and "s"
_FORMAT = "shoptalk-bm25/1"


def _plural_stem(word: str) -> str:
    """Fallback stemmer without PyStemmer: strip a plural ending ("dresses" -> "dress", "shoes" -> "shoe")."""
    if len(word) > 4 and word.endswith(("sses", "shes", "ches", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def default_stemmer() -> tuple[str, Callable[[str], str]]:
    """The best stemmer available without downloads: (name, function)."""
    try:
        import Stemmer  # PyStemmer

        stemmer = Stemmer.Stemmer("english")
        return "snowball-english", stemmer.stemWord
    except ImportError:
        return "plural", _plural_stem


class Tokenizer:
    """Lower-case word tokens without stopwords, stemmed.

    Args:
        stemmer: ``snowball-english`` (needs PyStemmer), ``plural`` or ``none``; None picks the best available.

    Raises:
        ValueError: An unknown or unavailable stemmer.
    """

    def __init__(self, stemmer: str | None = None) -> None:
        if stemmer is None:
            self.stemmer, self._stem = default_stemmer()
        elif stemmer == "snowball-english":
            name, fn = default_stemmer()
            if name != stemmer:
                raise ValueError("stemmer 'snowball-english' needs PyStemmer (pip install PyStemmer)")
            self.stemmer, self._stem = name, fn
        elif stemmer == "plural":
            self.stemmer, self._stem = stemmer, _plural_stem
        elif stemmer == "none":
            self.stemmer, self._stem = stemmer, str
        else:
            raise ValueError(f"unknown stemmer {stemmer!r}; expected snowball-english, plural or none")

    def __call__(self, text: str) -> list[str]:
        """Tokens of `text`."""
        return [self._stem(w) for w in _TOKEN_RE.findall(text.lower()) if w not in _STOPWORDS]


class BM25Index:
    """BM25 over short documents keyed by string ids.

    Args:
        stemmer: See `Tokenizer`.
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        metadata: Free-form string metadata saved with the index.
    """

    def __init__(
        self,
        *,
        stemmer: str | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.tokenizer = Tokenizer(stemmer)
        self.k1 = k1
        self.b = b
        self.metadata: dict[str, str] = dict(metadata or {})
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._bm25: bm25s.BM25 | None = None

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """Document ids in build order."""
        return list(self._ids)

    def build(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """(Re)build the index over these documents (BM25 statistics are global, so there is no partial update).

        Raises:
            ValueError: Lengths differ or an id repeats.
        """
        if len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids but {len(texts)} texts")
        if len(set(ids)) != len(ids):
            raise ValueError("document ids must be unique")
        self._ids = [str(i) for i in ids]
        self._pos = {id_: i for i, id_ in enumerate(self._ids)}
        corpus = [self.tokenizer(t) or ["\u2205"] for t in texts]  # bm25s rejects empty documents
        self._bm25 = bm25s.BM25(k1=self.k1, b=self.b)
        if corpus:
            self._bm25.index(corpus, show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document (in `ids` order) for `query`, float32 [n]."""
        if self._bm25 is None or not self._ids:
            return np.zeros(len(self._ids), dtype=np.float32)
        vocab = self._bm25.vocab_dict
        tokens = [t for t in self.tokenizer(query) if t in vocab]
        if not tokens:
            return np.zeros(len(self._ids), dtype=np.float32)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)

    def search(self, query: str, k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
        """The `k` documents with the highest positive BM25 score, best first (ties by id).

        Args:
            query: Free text.
            k: How many at most.
            allowed: If given, only these ids are candidates.

        Returns:
            ``(id, score)`` pairs; documents sharing no word with the query are never returned.
        """
        if k <= 0 or not self._ids:
            return []
        scores = self.scores(query)
        if allowed is not None:
            mask = np.zeros(len(self._ids), dtype=bool)
            rows = [self._pos[i] for i in allowed if i in self._pos]
            mask[rows] = True
            scores = np.where(mask, scores, 0.0)
        rows_hit = np.flatnonzero(scores > 0)
        if rows_hit.size == 0:
            return []
        if rows_hit.size > k:
            rows_hit = rows_hit[np.argpartition(-scores[rows_hit], k - 1)[:k]]
        ranked = sorted(
            ((self._ids[int(r)], float(scores[r])) for r in rows_hit), key=lambda x: (-x[1], x[0])
        )
        return ranked[:k]

    def save(self, path: Path) -> None:
        """Write the index to the folder `path`, replacing any previous one (written aside, then swapped in)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            if self._bm25 is not None and self._ids:
                self._bm25.save(str(tmp / "bm25"), show_progress=False)
            meta = {
                "format": _FORMAT,
                "stemmer": self.tokenizer.stemmer,
                "k1": self.k1,
                "b": self.b,
                "ids": self._ids,
                "metadata": self.metadata,
            }
            (tmp / "index.json").write_text(json.dumps(meta), encoding="utf-8")
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, path: Path) -> BM25Index:
        """Read an index written by `save`.

        Raises:
            ValueError: Not an index folder, or it was built with a stemmer that is not available here.
        """
        path = Path(path)
        try:
            meta = json.loads((path / "index.json").read_text(encoding="utf-8"))
            if meta.get("format") != _FORMAT:
                raise ValueError(f"unknown format {meta.get('format')!r}")
            index = cls(stemmer=meta["stemmer"], k1=meta["k1"], b=meta["b"], metadata=meta.get("metadata"))
            index._ids = [str(i) for i in meta["ids"]]
            index._pos = {id_: i for i, id_ in enumerate(index._ids)}
            if index._ids:
                index._bm25 = bm25s.BM25.load(str(path / "bm25"), show_progress=False)
        except (OSError, KeyError, json.JSONDecodeError) as err:
            raise ValueError(f"not a BM25 index folder: {path}: {err}") from err
        return index
