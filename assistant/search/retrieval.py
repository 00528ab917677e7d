"""Hybrid product retrieval: hard filters first, then lexical, text and image rankings fused by reciprocal rank.

Stages of `HybridRetriever.search`:

1. Filters. Every hard constraint of the `SearchQuery` (price range, colour, size, category, brand, gender) picks
   the candidate products, and for variant catalogs the cheapest variant that satisfies them. Nothing outside this
   set can be returned, so "under $50" never yields a $70 item.
2. Sources, each ranking only the candidates: ``lexical`` (BM25 over title, category, attributes, description),
   ``text`` (MiniLM query vs product text, FAISS) and ``image`` (an aligned image-text encoder's query text vs
   product photos). `HybridRetriever.search_image` adds ``photo`` (a shopper's photo vs product photos).
3. Fusion by reciprocal rank (`ranking.fusion`), then one hit per model first (colourways of one model do not crowd
   out the others), each with the variant chosen in step 1 and a reason naming the sources and filters.

Indexes are cached under ``cache_dir``: product text vectors keyed by a hash of the text (so an update re-encodes
only changed products), and the FAISS/BM25 indexes keyed by the catalog's content hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from assistant.catalog.model import Catalog, Product
from assistant.core.signals import SessionSignals
from assistant.search.complements import BOUGHT_WITH, GOES_WITH, Complement, Complements, CoPurchases
from assistant.search.passages import PassageIndex, catalog_passages
from assistant.search.query import (
    COLOR_ALTERNATION,
    ProductHit,
    QueryVocab,
    SearchQuery,
    canonical_color,
    canonical_gender,
    canonical_size,
    constraint_tests,
    parse_query,
    relaxed_query,
    without_constraints,
)
from ranking.fusion import FusedHit, reciprocal_rank_fusion
from ranking.index import FaissIndex, VectorIndex
from ranking.lexical import BM25Index
from ranking.stores import create_vector_index, load_vector_index, parse_vector_url
from ranking.text_encoder import SentenceEncoder

if TYPE_CHECKING:
    from vision.cache import EmbeddingCache
    from vision.encoder import PhotoEncoder

log = logging.getLogger(__name__)

SOURCES = ("lexical", "text", "passage", "image")
"""Sources for worded queries; `HybridRetriever.search_image` adds ``photo``."""
DEFAULT_WEIGHTS: dict[str, float] = {"lexical": 1.0, "text": 1.0, "passage": 1.0, "image": 0.5, "photo": 2.0,
                                     "goes_with": 1.0, "kind": 1.0, "bought_with": 1.0}
TEXT_COLLECTION = "shoptalk-text"  # Qdrant collection names (with `vector_url`)
IMAGE_COLLECTION = "shoptalk-image"
DIVERSITY_POOL = 4  # candidates fetched per wanted hit, so colourways of one model do not crowd out others
# MiniLM cosine: "red running shoes" vs a red running shoe 0.63, hiking boots 0.36, a coffee maker -0.01.
DEFAULT_MIN_SCORE = 0.2
MAX_ANCHORS = 1024  # what recent requests for complements named, kept per retriever
# A product's best passage (one sentence or attribute phrase) must be at least this close to the query to list it.
PASSAGE_MIN_SCORE = 0.25
# A BM25 hit must share at least half of the query's words (one stray word in a description is noise).
LEXICAL_MIN_COVERAGE = 0.5
_PHOTO_FILLER_RE = re.compile(
    r"\b(?:like|similar|same|such|as|to|this|these|that|those|one|ones|but|in|just|something|kind|of|looks?|"
    r"with|it|a|an|the|please|show|me|find|more)\b"
)
_LAYER_RE = re.compile(r"\b(?:under|over|beneath|underneath|layer|layering)\b")
_COLOR_WORDS_RE = re.compile(r"\b(?:" + COLOR_ALTERNATION + r")\b")
_SOURCE_WORDS = {"lexical": "words", "text": "meaning", "passage": "description", "image": "picture", "photo": "photo"}


# --- filters -------------------------------------------------------------------------------------------------------


def product_genders(product: Product) -> frozenset[str]:
    """Departments a product is for (``men``/``women``/``kids``); empty means unisex or unknown (matches all)."""
    values = [str(v) for v in _as_list(product.attributes.get("gender"))]
    if any(v.strip().lower() == "unisex" for v in values):
        return frozenset()
    genders = {g for v in values if (g := canonical_gender(v))}
    for path in product.categories or (product.category,):
        if g := canonical_gender(path.split("/", 1)[0]):
            genders.add(g)
    return frozenset(genders)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


@dataclass
class _Entry:
    """A shoppable product with what the filters look at, precomputed."""

    product: Product
    colors: frozenset[str]
    sizes: frozenset[str]
    genders: frozenset[str]
    paths: frozenset[str]
    variants: list[tuple[Product, frozenset[str], frozenset[str]]] = field(default_factory=list)
    fingerprint: str = ""


def _colors_of(p: Product) -> frozenset[str]:
    return frozenset(canonical_color(c) for c in p.colors())


def _sizes_of(p: Product) -> frozenset[str]:
    return frozenset(canonical_size(s) for s in p.sizes())


def _make_entry(catalog: Catalog, product: Product) -> _Entry:
    variants = catalog.variants_of(product.id)
    record = json.dumps([product.to_dict(), *(v.to_dict() for v in variants)], sort_keys=True)
    return _Entry(
        product,
        _colors_of(product),
        _sizes_of(product),
        product_genders(product),
        frozenset(product.categories) | {product.category},
        [(v, _colors_of(v), _sizes_of(v)) for v in variants],
        hashlib.sha256(record.encode("utf-8")).hexdigest(),
    )


def match_filters(
    entry: _Entry, query: SearchQuery, categories: set[str] | None
) -> tuple[bool, Product | None]:
    """Whether a product passes every filter of `query`, and the variant that does (cheapest, for variant parents).

    Args:
        entry: The product.
        query: The query.
        categories: Category paths the query allows (None: any).
    """
    if categories is not None and not entry.paths & categories:
        return False, None
    if query.brand is not None and (entry.product.brand or "").casefold() != query.brand.casefold():
        return False, None
    if query.gender is not None and entry.genders and query.gender not in entry.genders:
        return False, None
    color = canonical_color(query.color) if query.color else None
    size = canonical_size(query.size) if query.size else None

    def price_ok(price: float) -> bool:
        return (query.max_price is None or price <= query.max_price + 1e-9) and (
            query.min_price is None or price >= query.min_price - 1e-9
        )

    if not entry.variants:
        ok = (
            (color is None or color in entry.colors)
            and (size is None or size in entry.sizes)
            and price_ok(entry.product.price)
        )
        return ok, None
    if color is None and size is None and price_ok(entry.product.price):
        return True, None
    eligible = [
        v
        for v, vc, vs in entry.variants
        if (color is None or color in vc) and (size is None or size in vs) and price_ok(v.price)
    ]
    if not eligible:
        return False, None
    return True, min(eligible, key=lambda v: (v.price, v.id))


def model_key(product: Product) -> str:
    """Products that differ only by a " — colour" title suffix are colourways of one model."""
    return re.split(r"\s+[—–]\s+", product.title, maxsplit=1)[0].strip().lower()


_UNITS = r"(?:cm|mm|m|in|inch|inches|ft|foot|feet|kg|g|lb|lbs|oz|l|ml|\")"
_MEASURE_RE = re.compile(rf"\s+\d+(?:[.,]\d+)?\s*{_UNITS}?$")
_SIZE_MEASURE_RE = re.compile(rf"\d+(?:[.,]\d+)?\s*{_UNITS}", re.IGNORECASE)  # "55 cm", "6 foot": not a fit


def _worn_sizes(product: Product) -> bool:
    """Whether `product` comes in sizes one wears (S/M/L, 28, 8.5), not only in measures (a 55 cm ball)."""
    return any(not _SIZE_MEASURE_RE.fullmatch(s.strip()) for s in product.sizes())


def _line_key(product: Product) -> str:
    """`model_key` without a trailing measure: the 55 cm and 65 cm balls are one product line."""
    return _MEASURE_RE.sub("", model_key(product))


def diversify(ranked: list[tuple[str, float]], k: int, key: Callable[[str], str]) -> list[tuple[str, float]]:
    """The best `k` of `ranked`, taking one per model first, then filling with the rest in score order."""
    seen: set[str] = set()
    first: list[tuple[str, float]] = []
    rest: list[tuple[str, float]] = []
    for pid, score in ranked:
        (rest if key(pid) in seen else first).append((pid, score))
        seen.add(key(pid))
    picked = first[:k]
    picked += rest[: k - len(picked)]
    return sorted(picked, key=lambda item: -item[1])


def _money(value: float) -> str:
    return f"${value:,.0f}" if float(value).is_integer() else f"${value:,.2f}"


def explain(
    query: SearchQuery, price: float, sources: Iterable[str] = ("text",), *, photo: bool = False
) -> str:
    """A hit's reason in words: what it matched (and through which sources), then each filter it satisfies."""
    words = [_SOURCE_WORDS.get(s, s) for s in sources if s != "photo"]
    parts = []
    if photo:
        parts.append("looks like your photo")
    shown = photo_words(query) if photo else query.text.strip()
    if shown and words:
        parts.append(f"matches '{shown}' by {' and '.join(words)}")
    if query.brand:
        parts.append(f"by {query.brand}")
    if query.gender:
        parts.append(f"for {query.gender}")
    if query.color:
        parts.append(canonical_color(query.color))
    if query.size:
        parts.append(f"size {canonical_size(query.size)} available")
    if query.max_price is not None and query.min_price is not None:
        parts.append(f"{_money(price)} within your {_money(query.min_price)}–{_money(query.max_price)} range")
    elif query.max_price is not None:
        parts.append(f"{_money(price)} under your {_money(query.max_price)} limit")
    elif query.min_price is not None:
        parts.append(f"{_money(price)} over your {_money(query.min_price)} minimum")
    else:
        parts.append(_money(price))
    return "; ".join(parts)


def photo_words(query: SearchQuery) -> str:
    """What the words add to a photo.

    The words that only point at the photo ("like this but in") go, and so does the colour when it is already a
    filter: "like this but in blue" adds nothing beyond the filter, so the photo alone ranks the blue items.
    """
    text = _PHOTO_FILLER_RE.sub(" ", query.text.lower())
    if query.color is not None:
        text = _COLOR_WORDS_RE.sub(" ", text)
    return " ".join(text.split())


def lexical_text(product: Product) -> str:
    """Text BM25 indexes: title, brand, category path, attribute values and the full description."""
    parts = [product.title, product.brand or "", product.category.replace("/", " ")]
    for key, value in product.attributes.items():
        if key in ("associated_sku", "bundle_options"):
            continue
        parts.extend(str(v) for v in _as_list(value))
    parts.append(product.description)
    return " ".join(p for p in parts if p)


# --- caches --------------------------------------------------------------------------------------------------------


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class _VectorCache:
    """Text-hash -> vector store in one ``.npz`` (rewritten atomically), so unchanged texts are never re-encoded."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._vectors: dict[str, np.ndarray] = {}
        self._dirty = False
        if path is not None and path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    self._vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
            except (OSError, ValueError, KeyError) as err:
                log.warning("ignoring unreadable vector cache %s: %s", path, err)

    def encode(self, texts: Sequence[str], encode: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
        keys = [_text_key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._vectors))
        if missing:
            text_of = dict(zip(keys, texts, strict=True))
            vectors = encode([text_of[k] for k in missing])
            self._vectors.update(zip(missing, np.asarray(vectors, dtype=np.float32), strict=True))
            self._dirty = True
        return np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as fh:
                np.savez(
                    fh,
                    keys=np.array(list(self._vectors), dtype=str),
                    vectors=np.stack(list(self._vectors.values())),
                )
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self._dirty = False


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-80:] or "model"


# --- the retriever -------------------------------------------------------------------------------------------------


class HybridRetriever:
    """Product search over lexical, text and image sources with hard filters (a `ProductSearcher`).

    The indexes cover the shoppable products (`Catalog.parents`); for variant catalogs a hit carries the cheapest
    variant that matches the requested colour/size/price.

    Args:
        catalog: The catalog.
        text_encoder: Sentence encoder for product text and queries (``text`` source).
        image_encoder: Image(-text) encoder with ``name``, ``dim``, ``aligned``, ``encode_text``,
            ``encode_image_files``; enables `search_image`, and the ``image`` source when ``aligned``.
        cache_dir: Where vectors and indexes are cached (None: nothing is written).
        weights: Source name to RRF weight (defaults `DEFAULT_WEIGHTS`).
        sources: The worded-query sources to use (default: all that are available).
        min_score: ``text`` hits less similar than this are dropped (MiniLM cosine).
        passage_min_score: ``passage`` hits (a product's best description sentence or attribute phrase,
            `assistant.search.passages`) less similar than this are dropped.
        image_min_score: ``image`` hits at least this similar may add candidates no word source found; below it,
            or when None, the ``image`` source only re-ranks what the words found.
        index_kind: `FaissIndex` kind for the vector indexes.
        complements_table: The merchant's table of what goes with what (`assistant.search.complements`; None: the
            catalog's own tree decides).
        co_purchases: What shoppers bought together (`CoPurchases`); in a request for complements those bought
            with the product it names rank first, "often bought with" it.  None: not used.
        vector_url: Where the vector indexes live (`ranking.stores.create_vector_index`): None (or ``faiss``) for
            in-process FAISS saved under ``cache_dir``; ``qdrant-local:[PATH]`` (default ``cache_dir/qdrant``),
            ``qdrant::memory:`` or ``http(s)://host:6333`` for Qdrant collections `TEXT_COLLECTION` and
            `IMAGE_COLLECTION`, whose manifest is saved where the FAISS text index would be.

    Raises:
        ValueError: Unknown sources, or an unknown `vector_url` scheme.
    """

    ranked = False  # no learned ranker: ``use_ranker`` and ``signals`` change nothing

    def __init__(
        self,
        catalog: Catalog,
        text_encoder: SentenceEncoder,
        *,
        image_encoder: PhotoEncoder | None = None,
        cache_dir: Path | None = None,
        weights: Mapping[str, float] | None = None,
        sources: Sequence[str] | None = None,
        min_score: float = DEFAULT_MIN_SCORE,
        passage_min_score: float = PASSAGE_MIN_SCORE,
        image_min_score: float | None = None,
        index_kind: str = "auto",
        vector_url: str | None = None,
        complements_table: Mapping[str, Sequence[str]] | None = None,
        co_purchases: CoPurchases | None = None,
    ) -> None:
        unknown = set(sources or ()) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown sources {sorted(unknown)}; expected some of {', '.join(SOURCES)}")
        self.catalog = catalog
        self.encoder = text_encoder
        self.image_encoder = image_encoder
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.min_score = min_score
        self.passage_min_score = passage_min_score
        self.image_min_score = image_min_score
        self.index_kind = index_kind
        self.vector_url = vector_url
        parse_vector_url(vector_url, self.cache_dir)  # an unknown scheme fails here, before anything is built
        self._wanted = tuple(sources) if sources is not None else SOURCES
        self.sources = self._sources_for(image_encoder)
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self.vocab = QueryVocab({}, {})
        self.lexical = BM25Index()
        self._tokens: dict[str, frozenset[str]] = {}
        self._text_cache = _VectorCache(self._cache_path(f"text-vectors-{self._encoder_name}.npz"))
        self.text_index: VectorIndex = FaissIndex(text_encoder.dim, kind=index_kind)  # replaced by _build
        self.passages = PassageIndex(text_encoder.dim)
        self.complements_table = complements_table
        self.co_purchases = co_purchases
        self.complements = Complements({})
        self._anchors: dict[str, Product | None] = {}  # what a request for complements names, per its words
        self._sized_kinds: frozenset[str] = frozenset()  # categories whose products come in sizes (clothes)
        self.image_index: VectorIndex | None = None
        self._build(catalog, use_cached_index=True)

    # -- building --

    def _sources_for(self, image_encoder: PhotoEncoder | None) -> tuple[str, ...]:
        """The wanted sources that `image_encoder` can serve (text→image needs aligned heads)."""
        aligned = image_encoder is not None and image_encoder.aligned
        return tuple(s for s in self._wanted if s != "image" or aligned)

    @property
    def _encoder_name(self) -> str:
        return _safe_name(self.encoder.name or self.encoder.model_path)

    @property
    def index(self) -> VectorIndex:
        """The product text index (``text`` source)."""
        return self.text_index

    def _cache_path(self, name: str) -> Path | None:
        return self.cache_dir / name if self.cache_dir is not None else None

    def _text_index_path(self, catalog_hash: str) -> Path | None:
        return self._cache_path(f"text-index-{catalog_hash}.npz")

    def _build(self, catalog: Catalog, *, use_cached_index: bool) -> None:
        start = time.perf_counter()
        self.catalog = catalog
        self._entries = {p.id: _make_entry(catalog, p) for p in catalog.parents()}
        self._rebuild_lexical()
        ids = list(self._entries)
        path = self._text_index_path(catalog.content_hash())
        loaded = self._load_index(path, ids) if use_cached_index else None
        if loaded is None:
            loaded = self._new_index(self.encoder.dim, TEXT_COLLECTION, metadata=self._text_meta())
            loaded.add(ids, self._encode_products(ids))
            self._save_text_index(loaded, path)
        self.text_index = loaded
        self._rebuild_passages()
        if self.image_encoder is not None:
            self.image_index = self._new_index(int(self.image_encoder.dim), IMAGE_COLLECTION)
            self._add_images(ids)
        log.info("built retrieval indexes for %d products in %.2f s", len(ids), time.perf_counter() - start)

    def _new_index(self, dim: int, name: str, metadata: dict[str, str] | None = None) -> VectorIndex:
        """An empty vector index in the store `vector_url` names (FAISS when None)."""
        return create_vector_index(
            self.vector_url, dim, name=name, kind=self.index_kind, metadata=metadata, data_dir=self.cache_dir
        )

    def _text_meta(self) -> dict[str, str]:
        return {"encoder": str(self.encoder.model_path)}

    def _load_index(self, path: Path | None, ids: list[str]) -> VectorIndex | None:
        if path is None or not path.is_file():
            return None
        try:
            index = load_vector_index(path, self.vector_url, data_dir=self.cache_dir)
        except ValueError as err:
            log.warning("ignoring unreadable text index %s: %s", path, err)
            return None
        if index.metadata != self._text_meta() or set(index.ids) != set(ids):
            log.info("text index %s is stale; rebuilding", path)
            return None
        log.info("loaded text index of %d products from %s", len(index), path)
        return index

    def _save_text_index(self, index: VectorIndex, path: Path | None) -> None:
        self._text_cache.save()
        if path is None:
            return
        index.save(path)
        for old in path.parent.glob("text-index-*.npz"):  # indexes of earlier catalog versions
            if old != path:
                old.unlink(missing_ok=True)

    def _encode_products(self, ids: Sequence[str]) -> np.ndarray:
        texts = [self._entries[i].product.search_text() for i in ids]
        if not texts:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return self._text_cache.encode(texts, self.encoder.encode)

    def _rebuild_passages(self) -> None:
        """Embed every product's description sentences and attribute phrases (`assistant.search.passages`).

        Vectors are cached by text, so an update encodes only new sentences.
        """
        if "passage" not in self.sources:
            return
        products = [e.product for e in self._entries.values()]
        self.passages.build(catalog_passages(self.catalog, products), lambda texts: self._text_cache.encode(
            texts, self.encoder.encode))
        self._text_cache.save()

    def _rebuild_lexical(self) -> None:
        self.complements = Complements(Counter(e.product.category for e in self._entries.values()),
                                       self.complements_table)
        self._anchors = {}
        # sizes one wears, not measures: balls of 55 and 65 cm do not make fitness gear a kind of clothes
        self._sized_kinds = frozenset(e.product.category for e in self._entries.values()
                                      if _worn_sizes(e.product) or any(_worn_sizes(v) for v, _, _ in e.variants))
        ids = list(self._entries)
        texts = [lexical_text(self._entries[i].product) for i in ids]
        self.lexical = BM25Index()
        # BM25 statistics are global, so it is rebuilt whole: milliseconds per thousand products.
        self.lexical.build(ids, texts)
        self._tokens = {i: frozenset(self.lexical.tokenizer(t)) for i, t in zip(ids, texts, strict=True)}
        self.vocab = QueryVocab.from_products(e.product for e in self._entries.values())

    def _image_files(self, pid: str) -> list[Path]:
        """Photos of a product and of its variants (several views search as one product)."""
        entry = self._entries[pid]
        root = self.catalog.image_root
        files: dict[Path, None] = {}
        for p in [entry.product, *(v for v, _, _ in entry.variants)]:
            for name in p.images:
                if root is None:
                    continue
                for candidate in (root / name, root / "images" / name):
                    if candidate.is_file():
                        files.setdefault(candidate, None)
                        break
        if not files and (fallback := self.catalog.image_path(entry.product)) is not None:
            files[fallback] = None
        return list(files)

    def _image_store(self, encoder: PhotoEncoder) -> EmbeddingCache | None:
        if self.cache_dir is None:
            return None
        try:
            from vision.cache import EmbeddingCache
        except ImportError:
            return None
        return EmbeddingCache(self.cache_dir / f"image-vectors-{_safe_name(str(encoder.name))}.sqlite")

    def _add_images(self, ids: Iterable[str]) -> None:
        if self.image_encoder is None or self.image_index is None:
            return
        self._index_photos(ids, self.image_encoder, self.image_index)

    def _index_photos(self, ids: Iterable[str], encoder: PhotoEncoder, index: VectorIndex) -> None:
        """Encode the photos of products `ids` with `encoder` into `index`."""
        owners: list[str] = []
        paths: list[Path] = []
        for pid in ids:
            for path in self._image_files(pid):
                owners.append(pid)
                paths.append(path)
        if not paths:
            return
        start = time.perf_counter()
        vectors = np.asarray(encoder.encode_image_files(paths, self._image_store(encoder)), dtype=np.float32)
        index.add(owners, vectors)
        log.info("indexed %d product photos in %.2f s", len(paths), time.perf_counter() - start)

    def set_image_encoder(self, encoder: PhotoEncoder) -> None:
        """Serve photo lookup (and text→image, when aligned) with another image encoder, e.g. newly aligned heads.

        The catalog's photos are encoded with it first, while searches go on with the current one; then the
        encoder, its index and the sources switch at once, so no search mixes the two.
        """
        with self._lock:
            ids = set(self._entries)
        key = encoder.model_key
        name = f"{IMAGE_COLLECTION}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
        index = self._new_index(int(encoder.dim), name)
        self._index_photos(sorted(ids), encoder, index)
        with self._lock:  # products added or changed while the photos were encoded
            now = set(self._entries)
            index.remove(sorted(ids - now))
            self._index_photos(sorted(now - ids), encoder, index)
            self.image_encoder, self.image_index = encoder, index
            self.sources = self._sources_for(encoder)
        log.info("photo lookup now uses %s (sources: %s)", key, ", ".join(self.sources))

    def rebuild(self) -> None:
        """Rebuild every index from the current catalog (cached text vectors are reused)."""
        with self._lock:
            self._build(self.catalog, use_cached_index=False)

    def update(self, catalog: Catalog) -> dict[str, int]:
        """Bring the indexes up to date with a new snapshot of the catalog, re-encoding only what changed.

        A product counts as changed when its record or any of its variants' records changed. BM25 is rebuilt
        (its statistics are global, and it takes milliseconds); the vector indexes are updated in place.

        Args:
            catalog: The whole catalog as it is now.

        Returns:
            Counts of ``added``, ``changed`` and ``removed`` products.
        """
        with self._lock:
            old = self._entries
            new = {p.id: _make_entry(catalog, p) for p in catalog.parents()}
            added = [pid for pid in new if pid not in old]
            changed = [pid for pid in new if pid in old and old[pid].fingerprint != new[pid].fingerprint]
            removed = [pid for pid in old if pid not in new]
            self.catalog = catalog
            self._entries = new
            stale = changed + removed
            fresh = added + changed
            self.text_index.remove(stale)
            self.text_index.add(fresh, self._encode_products(fresh))
            if self.image_index is not None:
                self.image_index.remove(stale)
                self._add_images(fresh)
            if stale or fresh:
                self._rebuild_lexical()
                self._rebuild_passages()
                self._save_text_index(self.text_index, self._text_index_path(catalog.content_hash()))
            counts = {"added": len(added), "changed": len(changed), "removed": len(removed)}
            log.info("catalog update: %s", counts)
            return counts

    # -- searching --

    def candidates(self, query: SearchQuery) -> dict[str, Product | None]:
        """Products passing every hard filter of `query`, each with its matching variant (None for simple ones).

        For a request for complements (``query.goes_with``) the kinds are those that go with what it names
        (`complements_of`), unless the request names a kind itself; the product it names is never among them.
        """
        if query.goes_with is not None:
            return self._complement_candidates(query)
        if query.category is not None:
            categories = self.vocab.categories_for(query.category)
            if categories is None:  # a category this catalog does not have: nothing can match
                return {}
        else:
            categories = self.vocab.categories_for(query.text)
        return self._filtered(query, categories)

    def _filtered(self, query: SearchQuery, categories: set[str] | None) -> dict[str, Product | None]:
        out: dict[str, Product | None] = {}
        for pid, entry in self._entries.items():
            ok, variant = match_filters(entry, query, categories)
            if ok:
                out[pid] = variant
        return out

    def anchor(self, words: str) -> Product | None:
        """The product a shopper's words name or describe ("the nona tank", "a grey hoodie"): their best hit."""
        with self._lock:
            if words in self._anchors:
                return self._anchors[words]
            hits = self.search(replace(parse_query(words, self.vocab), k=1))
            found = hits[0].product if hits else None
            if len(self._anchors) >= MAX_ANCHORS:  # bounded: the oldest request's goes first
                self._anchors.pop(next(iter(self._anchors)))
            self._anchors[words] = found
            return found

    def complements_of(self, query: SearchQuery) -> tuple[Product | None, list[Complement]]:
        """What a request for complements names (its best hit), and the kinds that go with it, best first.

        "Under", "over" or "layer" in the request put the layers first ("what can I wear under the jacket").
        """
        assert query.goes_with is not None
        anchor = self.anchor(query.goes_with)
        if anchor is not None:
            kinds = self.complements.for_category(anchor.category)
        else:
            own = self.vocab.categories_for(query.goes_with) or set()  # no product: the kind its words name
            kinds = [c for path in sorted(own) for c in self.complements.for_category(path) if c.path not in own]
        if _LAYER_RE.search(query.text.lower()):
            kinds = self.complements.layered_first(kinds)
        return anchor, kinds

    def _complement_candidates(self, query: SearchQuery) -> dict[str, Product | None]:
        """What may go with the anchor: any product but the anchor's own line.

        When the anchor's kind comes in sizes (clothes: a hoodie does not go with a hoodie), its own kind is left
        out too. The kinds that go with it rank first (`_complement_rankings`).
        """
        anchor, _ = self.complements_of(query)
        base = replace(query, goes_with=None)
        if query.category is not None:  # "shorts to go with this tank": the kind asked for
            out = self.candidates(base)
        else:
            out = self._filtered(base, None)
            own = anchor.category if anchor is not None else None
            if own is not None and own in self._sized_kinds:
                out = {pid: v for pid, v in out.items() if self._entries[pid].product.category != own}
        if anchor is not None:
            same = _line_key(anchor)
            out = {pid: v for pid, v in out.items() if _line_key(self._entries[pid].product) != same}
            entry = self._entries.get(anchor.id)
            if query.gender is None and entry is not None and entry.genders:
                # a men's hoodie goes with men's or unisex things, not a dress: the department it is in
                out = {pid: v for pid, v in out.items()
                       if not self._entries[pid].genders or self._entries[pid].genders & entry.genders}
        return out

    def _complement_rankings(self, query: SearchQuery, allowed: set[str], n: int
                             ) -> dict[str, list[tuple[str, float]]]:
        """More rankings for a request for complements.

        By likeness to what it goes with (a shared collection, activity or colour shows in the text vectors), by
        how well the kind goes with it, and by how often shoppers bought them together (`bought_with`).
        """
        anchor, kinds = self.complements_of(query)
        rankings: dict[str, list[tuple[str, float]]] = {}
        if anchor is not None:
            vector = self._text_cache.encode([anchor.search_text()], self.encoder.encode)[0]
            rankings["goes_with"] = self.text_index.search(vector, n, allowed=allowed)
            if together := self.bought_with(anchor, allowed):
                rankings["bought_with"] = together[:n]
        order = {c.path: i for i, c in enumerate(kinds)}
        ranked = sorted(allowed, key=lambda pid: (order.get(self._entries[pid].product.category, len(order)), pid))
        rankings["kind"] = [(pid, 1.0 / (1 + order.get(self._entries[pid].product.category, len(order))))
                            for pid in ranked[:n]]
        return rankings

    def bought_with(self, anchor: Product, allowed: set[str]) -> list[tuple[str, float]]:
        """The `allowed` products shoppers bought together with `anchor` (or its variants), most baskets first."""
        if self.co_purchases is None:
            return []
        counts: Counter[str] = Counter()
        entry = self._entries.get(anchor.id)
        for pid in [anchor.id, *(v.id for v, _, _ in entry.variants)] if entry is not None else [anchor.id]:
            for other, n in self.co_purchases.bought_with(pid).items():
                found = self.catalog.get(other)
                owner = (found.parent_id or found.id) if found is not None else other
                if owner in allowed and owner != anchor.id:
                    counts[owner] += n
        return [(pid, float(n)) for pid, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    def _word_rankings(self, text: str, allowed: set[str], n: int) -> dict[str, list[tuple[str, float]]]:
        """Each worded source's ranking of the allowed products for `text`."""
        rankings: dict[str, list[tuple[str, float]]] = {}
        if not text.strip():
            return rankings
        if "lexical" in self.sources:
            q_tokens = set(self.lexical.tokenizer(text))
            need = LEXICAL_MIN_COVERAGE * len(q_tokens)
            rankings["lexical"] = [
                (pid, s)
                for pid, s in self.lexical.search(text, n, allowed=allowed)
                if len(q_tokens & self._tokens[pid]) >= need
            ]
        if "text" in self.sources or "passage" in self.sources:
            qvec = self.encoder.encode_query(text)
            if "text" in self.sources:
                hits = self.text_index.search(qvec, n, allowed=allowed)
                rankings["text"] = [(pid, s) for pid, s in hits if s >= self.min_score]
            if "passage" in self.sources:
                hits = self.passages.search(qvec, n, allowed=allowed)
                rankings["passage"] = [(pid, s) for pid, s in hits if s >= self.passage_min_score]
        if "image" in self.sources and self.image_index is not None and self.image_encoder is not None:
            qvec = np.asarray(self.image_encoder.encode_text([text]), dtype=np.float32)[0]
            rankings["image"] = self.image_index.search(qvec, n, allowed=allowed)
        return rankings

    def _gate(self, rankings: dict[str, list[tuple[str, float]]]) -> set[str]:
        """Ids relevant enough to return: listed by a word source or the photo, or a confident picture match."""
        keep = {pid for src in ("lexical", "text", "passage", "photo", "goes_with", "bought_with")
                for pid, _ in rankings.get(src, ())}
        if "image" in rankings and self.image_min_score is not None:
            keep |= {pid for pid, s in rankings["image"] if s >= self.image_min_score}
        return keep

    def _hits(
        self,
        query: SearchQuery,
        rankings: dict[str, list[tuple[str, float]]],
        variants: Mapping[str, Product | None],
        *,
        photo: bool = False,
    ) -> list[ProductHit]:
        keep = self._gate(rankings)
        fused: list[FusedHit] = [
            h for h in reciprocal_rank_fusion(rankings, weights=self.weights) if h.id in keep
        ]
        active = [s for s, r in rankings.items() if r]
        single = active[0] if len(active) == 1 else None
        by_id = {h.id: h for h in fused}
        ranked = [(h.id, h.scores[single] if single else h.score) for h in fused]
        picked = diversify(ranked, query.k, key=lambda pid: model_key(self._entries[pid].product))
        goes_with: tuple[dict[str, str], str] | None = None  # (each kind's reason, what it goes with), once
        if query.goes_with is not None:
            anchor, kinds = self.complements_of(query)
            goes_with = ({c.path: c.reason for c in reversed(kinds)},  # the first reason of a kind wins
                         f"the {anchor.title}" if anchor is not None else query.goes_with)
        hits = []
        for pid, score in picked:
            product = self._entries[pid].product
            variant = variants[pid]
            price = variant.price if variant is not None else product.price
            sources = [s for s in SOURCES if s in by_id[pid].ranks]
            reason = explain(query, price, sources, photo=photo and "photo" in by_id[pid].ranks)
            if goes_with is not None:  # "goes with the Mona Pullover Hoodlie; matches ..."
                why = BOUGHT_WITH if "bought_with" in by_id[pid].ranks else goes_with[0].get(product.category, GOES_WITH)
                reason = f"{why} {goes_with[1]}; {reason}"
            hits.append(ProductHit(product, float(score), reason, variant))
        return hits

    def search(self, query: SearchQuery, *, use_ranker: bool = True,
               signals: SessionSignals | None = None) -> list[ProductHit]:
        """Rank the products that pass every filter of `query` by the fused word sources.

        Args:
            query: The query; `SearchQuery.k` bounds the number of hits.
            use_ranker: Unused (`ProductSearcher`: there is no second stage here).
            signals: Unused (the order does not depend on the shopper).

        Returns:
            Hits, best first; every hit satisfies every filter. Scores are fused RRF scores (with one source,
            that source's own score, e.g. the MiniLM cosine).
        """
        if query.k <= 0:
            return []
        with self._lock:
            variants = self.candidates(query)
            if not variants:
                return []
            rankings = self._word_rankings(query.asked_text, set(variants), query.k * DIVERSITY_POOL)
            if query.goes_with is not None:
                rankings.update(self._complement_rankings(query, set(variants), query.k * DIVERSITY_POOL))
            return self._hits(query, rankings, variants)

    def search_photo(self, image: Any, query: SearchQuery | None = None) -> list[ProductHit]:
        """`search_image` of a shopper's photo (a PIL image), encoded by the image encoder serving now."""
        with self._lock:
            encoder, index = self.image_encoder, self.image_index
        if encoder is None or index is None:
            raise ValueError("image search needs an image encoder: HybridRetriever(..., image_encoder=...)")
        vector = encoder.encode_image([image])[0]  # outside the lock: a photo encode does not hold up searches
        return self.search_image(vector, query, index=index)

    def search_image(self, image_vector: np.ndarray, query: SearchQuery | None = None, *,
                     index: VectorIndex | None = None) -> list[ProductHit]:
        """Products that look like a photo, optionally constrained and steered by words.

        "like this but in blue, under $40" returns only blue items at most $40, ranked by how much they look like
        the photo (``photo`` source, weighted highest) fused with the word sources for what the words add.

        Args:
            image_vector: The photo's embedding from the same image encoder, [dim] (or [n, dim] for several views).
            query: The spoken/typed words (parsed), whose filters apply hard; None for the photo alone.
            index: The photo index `image_vector` was encoded for (default: the one serving now).

        Returns:
            Hits, best first.

        Raises:
            ValueError: The retriever has no image encoder.
        """
        index = index or self.image_index
        if index is None:
            raise ValueError("image search needs an image encoder: HybridRetriever(..., image_encoder=...)")
        query = query or SearchQuery(text="")
        if query.k <= 0:
            return []
        with self._lock:
            words = photo_words(query)
            variants = self.candidates(replace(query, text=words))  # a category the words name still applies
            if not variants:
                return []
            n = query.k * DIVERSITY_POOL
            rankings = {"photo": index.search(image_vector, n, allowed=set(variants))}
            rankings.update(self._word_rankings(words, set(variants), n))
            return self._hits(query, rankings, variants, photo=True)


class EmbeddingSearcher(HybridRetriever):
    """Text-only search: MiniLM embeddings of `Product.search_text` with hard filters (the ``text`` source alone).

    Args:
        catalog: The catalog.
        encoder: Text encoder for products and queries.
        cache_dir: If given, the index is saved to / loaded from ``cache_dir/text-index-<catalog hash>.npz``.
        min_score: Hits less similar than this are dropped (MiniLM cosine: unrelated products score below ~0.2).
    """

    def __init__(
        self,
        catalog: Catalog,
        encoder: SentenceEncoder,
        cache_dir: Path | None = None,
        *,
        min_score: float = DEFAULT_MIN_SCORE,
    ) -> None:
        super().__init__(catalog, encoder, cache_dir=cache_dir, sources=("text",), min_score=min_score)

    def categories_for(self, text: str) -> set[str] | None:
        """Category paths the query names, or None for no restriction."""
        return self.vocab.categories_for(text)


def mark_near_misses(
    retriever: HybridRetriever, query: SearchQuery, hits: list[ProductHit], strict: Mapping[str, Product | None]
) -> list[ProductHit]:
    """`hits` with ``near_miss`` set on those outside `strict` (the products meeting all of `query`).

    Each relaxable constraint of `query` is tested alone (`constraint_tests`) against ``retriever.candidates``.
    A near miss shows its variant that meets every constraint it does not miss (the black one when only the price
    is over), not just any variant.
    """
    tests = {name: set(retriever.candidates(q)) for name, q in constraint_tests(query).items()}
    kept: dict[tuple[str, ...], Mapping[str, Product | None]] = {}  # missed -> candidates of what is left
    out = []
    for hit in hits:
        if hit.product.id in strict:
            out.append(hit)
            continue
        # Meeting each constraint alone but not all in one variant (blue, but not in blue in M) misses them all.
        missed = tuple(name for name, ok in tests.items() if hit.product.id not in ok) or tuple(tests)
        if missed not in kept:
            kept[missed] = retriever.candidates(without_constraints(query, missed))
        variant = kept[missed].get(hit.product.id, hit.variant)
        out.append(replace(hit, near_miss=missed, variant=variant))
    return out


def with_near_misses(retriever: HybridRetriever, query: SearchQuery, hits: list[ProductHit]) -> list[ProductHit]:
    """Retrieval alone, with close alternatives.

    `hits` (the retriever's for `query`), then, when fewer than ``query.k``, the retriever's own hits for the
    relaxed query (`relaxed_query`) that miss a constraint.
    """
    relaxed = relaxed_query(query)
    if relaxed is None or len(hits) >= query.k:
        return hits
    strict = retriever.candidates(query)
    extra = [h for h in retriever.search(replace(relaxed, k=query.k)) if h.product.id not in strict]
    return hits + mark_near_misses(retriever, query, extra, strict)[: query.k - len(hits)]


class NearMissSearcher:
    """Retrieval alone, with close alternatives (`with_near_misses`) when few products meet a query.

    The `ProductSearcher` the server runs when the ranker is not served (`RankedSearcher` does the same in the
    ranker's order).
    """

    ranked = False

    def __init__(self, retriever: HybridRetriever) -> None:
        self.retriever = retriever

    @property
    def catalog(self) -> Catalog:
        return self.retriever.catalog

    @property
    def vocab(self) -> QueryVocab:
        return self.retriever.vocab

    def search(self, query: SearchQuery, *, use_ranker: bool = True,
               signals: SessionSignals | None = None) -> list[ProductHit]:
        """The retriever's hits for `query`, then its near misses up to ``query.k``."""
        return with_near_misses(self.retriever, query, list(self.retriever.search(query)))

    def update(self, catalog: Catalog) -> dict[str, int]:
        return self.retriever.update(catalog)
