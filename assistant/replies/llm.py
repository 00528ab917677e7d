"""Replies written by SmolLM2-135M-Instruct from the retrieved facts only, checked sentence by sentence.

A search reply is three parts, streamed as text deltas:

1. the template's opening ("I found three black hoodies under $50."), yielded at once, so speech starts before the
   model has produced a token;
2. one or two sentences the model writes about the top pick, from a prompt that holds nothing but that product's
   facts (spoken name, price, colour, sizes, two attributes), the shopper's words and their constraints. Each
   sentence is released only once it is complete and has passed `assistant.replies.grounding.check_generated` (prices,
   names, colours, sizes, attributes, policy claims, and every other content word checked against the facts), is
   about the top pick and is short enough to say; the first that fails stops the model;
3. the other products by name and price ("I also have ..."), or, when the model said nothing usable, the
   template's own listing in its place.

Decoding is greedy, batch 1, with a KV cache; the fixed system prompt and examples are encoded once and their
cache is reused by every reply (cropped back after each), so a reply only pays for its own ~60 prompt tokens.
fp32 on CPU, bf16 on CUDA. The model runs in a worker thread; one reply at a time per loaded model.

`LLMReplyWriter.write_answer` does the same for a question answered from knowledge-base passages: the model's
sentences are checked against the passages (policy claims and amounts included), with the passage quoted when none
passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import logging
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from assistant.replies.grounding import GENERIC_WORDS, ProductFact, check_generated, format_price
from assistant.replies.templates import MAX_NAMED, compose_reply, reply_facts
from assistant.replies.writer import ReplyWriter, TemplateReplyWriter
from assistant.search.query import ProductHit, SearchQuery, canonical_color, canonical_size
from speech.tts import SentenceBuffer

log = logging.getLogger(__name__)

Message = dict[str, str]

MAX_SENTENCE_WORDS = 26  # about 8 s of speech: longer is hard to follow by ear
MAX_REPLY_WORDS = 45  # about 15 s at 3 words/s: the "I also have" sentence names fewer products to stay under it
MAX_ATTRIBUTES = 2
MAX_CACHED_PREFIXES = 4  # distinct system prompts + examples kept encoded (replies, answers ...)
STOP_TEXT = "\n"  # the model starting a new line is starting to invent the next prompt
SYSTEM_PROMPT = (
    "You are a voice shopping assistant. In one short sentence, tell the shopper about the top pick using only its "
    "facts: name, price, colour, material, style and sizes. Do not add any other words or claims."
)
# Examples in the exact format of real prompts, with invented products that share no name with any catalog. The
# 135M model copies from them, so each answer uses its own facts' words and nothing else.
EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        'Shopper said: "red running shoes"\nWants: red\n'
        "Top pick: Alder Road Runner | $64 | red | material: engineered mesh; style: cushioned | sizes 7 to 12",
        "The Alder Road Runner is a cushioned red shoe in engineered mesh, at $64, in sizes 7 to 12.",
    ),
    (
        'Shopper said: "a backpack for my laptop under forty dollars"\nWants: under $40\n'
        "Top pick: Moss Day Pack | $35 | grey | material: canvas; style: laptop sleeve",
        "The Moss Day Pack is a grey canvas bag with a laptop sleeve, at $35.",
    ),
    (
        'Shopper said: "womens green sweater in medium"\nWants: green, size M, for women\n'
        "Top pick: Fern Knit Sweater | $48 | green | material: merino wool; style: crew neck | sizes 2 to 14",
        "The Fern Knit Sweater is a green crew neck sweater in merino wool, at $48, and it comes in size M.",
    ),
)


ANSWER_SYSTEM_PROMPT = (
    "You are a shop's voice assistant. Answer the shopper's question in one or two short sentences, using only "
    "the passage. Do not add anything the passage does not say."
)
ANSWER_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        'Passage: "Gift cards never expire. They can be used online and in our stores, but not to buy other gift '
        'cards."\nQuestion: "do gift cards run out"',
        "No, gift cards never expire, and they can be used online and in our stores.",
    ),
)
MAX_PASSAGES = 2
MAX_ANSWER_SENTENCES = 2
NO_ANSWER = "I don't know that one — let me connect you with someone who does."


# --- the model ---------------------------------------------------------------------------------------------------


class TextGenerator(Protocol):
    """Streams the assistant's next message for a chat, as text deltas (a generator: closing it stops it)."""

    def __call__(self, messages: Sequence[Message], max_new_tokens: int) -> Iterator[str]: ...


@dataclass
class GenerationStats:
    """Timings of one generation (``SmolLMGenerator.last_stats``)."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    new_tokens: int = 0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        """Decoding speed (tokens after the first, which the prefill produces)."""
        return 1000 * (self.new_tokens - 1) / self.decode_ms if self.new_tokens > 1 and self.decode_ms else 0.0


class _Detokenizer:
    """The text of the tokens generated so far, handed out as deltas.

    It holds back a multi-byte character until it is whole, and stops at `STOP_TEXT` (a new line once something
    was said).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.said = ""
        self.stopped = False

    def push(self, token: int) -> str:
        """Add one generated token; the new text it completes ("" while a character is incomplete)."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            return ""
        delta, self.said = text[len(self.said):], text
        cut = delta.find(STOP_TEXT) if self.said.strip() else -1
        if cut >= 0:
            self.stopped = True
            return delta[:cut]
        return delta


class SmolLMGenerator:
    """Greedy, KV-cached streaming generation with a causal LM folder (SmolLM2 prepared by ``ranking.llm``).

    Args:
        model: A ``*ForCausalLM`` in eval mode.
        tokenizer: Its tokenizer (with a chat template).
        device: Where the model is.
    """

    def __init__(self, model: Any, tokenizer: Any, device: str = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.last_stats = GenerationStats()
        self._lock = threading.Lock()
        self._prefixes: OrderedDict[tuple[tuple[str, str], ...], tuple[Any, int]] = OrderedDict()
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        eos = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")}
        self._stop_ids = {int(i) for i in eos if isinstance(i, int) and i >= 0}

    @classmethod
    def load(cls, model_dir: Path, device: str = "auto") -> SmolLMGenerator:
        """Load a safetensors causal-LM folder: fp32 on CPU, bf16 on CUDA."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ranking.text_encoder import resolve_device

        device = resolve_device(device)
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        start = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
        model = model.to(device).eval()
        log.info("loaded %s on %s (%s) in %.1f s", model_dir, device, dtype, time.perf_counter() - start)
        return cls(model, tokenizer, device)

    def _ids(self, text: str) -> Any:
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.device)

    def _forward(self, ids: Any, cache: Any) -> Any:
        return self.model(input_ids=ids, use_cache=True, **{self._cache_arg: cache})

    def _prefix_cache(self, messages: Sequence[Message]) -> tuple[Any, int, str]:
        """The KV cache of every message but the last, computed once per distinct prefix, and that prefix's text."""
        from transformers import DynamicCache

        key = tuple((m["role"], m["content"]) for m in messages[:-1])
        text = self.tokenizer.apply_chat_template(list(messages[:-1]), tokenize=False)
        if key not in self._prefixes:
            cache = DynamicCache(config=self.model.config)
            ids = self._ids(text)
            self._forward(ids, cache)
            self._prefixes[key] = (cache, int(ids.shape[1]))
            while len(self._prefixes) > MAX_CACHED_PREFIXES:
                self._prefixes.popitem(last=False)
        self._prefixes.move_to_end(key)
        cache, length = self._prefixes[key]
        extra = cache.get_seq_length() - length
        if extra > 0:
            cache.crop(-extra)  # drop the previous reply's tokens (a negative count means the same in every version)
        return cache, length, text

    def __call__(self, messages: Sequence[Message], max_new_tokens: int) -> Iterator[str]:
        """Stream the reply to `messages` greedily; stops at end of turn, a new line or `max_new_tokens`."""
        import torch

        with self._lock, torch.inference_mode():
            stats = self.last_stats = GenerationStats()
            start = time.perf_counter()
            full = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            cache, cached, prefix = self._prefix_cache(messages)
            if not full.startswith(prefix):  # a template that rewrites earlier turns: no reuse
                from transformers import DynamicCache

                cache, cached, prefix = DynamicCache(config=self.model.config), 0, ""
            ids = self._ids(full[len(prefix):])
            stats.prompt_tokens, stats.cached_tokens = cached + int(ids.shape[1]), cached
            logits = self._forward(ids, cache).logits  # [1, T, vocab]
            stats.prefill_ms = 1000 * (time.perf_counter() - start)
            text = _Detokenizer(self.tokenizer)
            decode_start = time.perf_counter()
            for _ in range(max_new_tokens):
                token = int(logits[0, -1].argmax())
                if token in self._stop_ids:
                    break
                delta = text.push(token)
                stats.new_tokens = len(text.ids)
                if delta:
                    yield delta
                if text.stopped:
                    break
                stats.decode_ms = 1000 * (time.perf_counter() - decode_start)
                logits = self._forward(torch.tensor([[token]], device=self.device), cache).logits
            stats.decode_ms = 1000 * (time.perf_counter() - decode_start)


class Ct2Generator:
    """The same greedy streaming generation on CTranslate2: faster than transformers on a CPU (1.4x per reply).

    The chat's earlier messages are a static prompt whose model state CTranslate2 caches, as `SmolLMGenerator` keeps
    a KV cache per prefix.

    Args:
        generator: A ``ctranslate2.Generator``.
        tokenizer: The model's tokenizer (with a chat template).
    """

    def __init__(self, generator: Any, tokenizer: Any) -> None:
        self.generator = generator
        self.tokenizer = tokenizer
        self.last_stats = GenerationStats()
        self._lock = threading.Lock()
        eos = {tokenizer.eos_token, "<|endoftext|>", "<|im_end|>"}
        self._end_tokens = sorted(t for t in eos if isinstance(t, str) and tokenizer.convert_tokens_to_ids(t) is not None)

    @classmethod
    def load(cls, model_dir: Path, ct2_dir: Path | None = None, device: str = "auto", threads: int = 0,
             quantization: str | None = None) -> Ct2Generator:
        """Convert `model_dir` (a prepared safetensors folder) to CTranslate2 once into `ct2_dir`, and load it.

        ``device="auto"`` is CUDA (float16) when CTranslate2 sees a GPU, else the CPU (float32, the same replies as
        transformers; ``quantization="int8"`` is faster again but changes most replies: ``shoptalk bench
        llm-runtime``). ``threads``: CPU threads (0: CTranslate2's default).
        """
        import ctranslate2
        from transformers import AutoTokenizer

        from ranking.llm import convert_ct2

        cuda = device.startswith("cuda") or (device == "auto" and ctranslate2.get_cuda_device_count() > 0)
        ct2_dir = ct2_dir or model_dir.with_name(model_dir.name + "-ct2")
        start = time.perf_counter()
        convert_ct2(ct2_dir, model_dir, **({"quantization": quantization} if quantization else {}))
        compute = "float16" if cuda else "float32"
        if quantization is not None and quantization.startswith("int8"):  # run quantized weights as such
            compute = "int8_float16" if cuda else "int8"
        generator = ctranslate2.Generator(str(ct2_dir), device="cuda" if cuda else "cpu", compute_type=compute,
                                          intra_threads=threads)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        log.info("loaded %s with CTranslate2 on %s in %.1f s", ct2_dir, "cuda" if cuda else "cpu",
                 time.perf_counter() - start)
        return cls(generator, tokenizer)

    def _tokens(self, text: str) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens(self.tokenizer.encode(text, add_special_tokens=False)))

    def __call__(self, messages: Sequence[Message], max_new_tokens: int) -> Iterator[str]:
        """Stream the reply to `messages` greedily; stops at end of turn, a new line or `max_new_tokens`."""
        with self._lock:
            stats = self.last_stats = GenerationStats()
            start = time.perf_counter()
            full = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            prefix = self.tokenizer.apply_chat_template(list(messages[:-1]), tokenize=False) if len(messages) > 1 \
                else ""
            if not full.startswith(prefix):
                prefix = ""
            static, rest = self._tokens(prefix), self._tokens(full[len(prefix):])
            stats.prompt_tokens, stats.cached_tokens = len(static) + len(rest), len(static)
            steps = self.generator.generate_tokens(
                rest, max_length=max_new_tokens, sampling_topk=1, end_token=self._end_tokens,
                static_prompt=static or None, cache_static_prompt=bool(static))
            text = _Detokenizer(self.tokenizer)
            decode_start = start
            try:
                for step in steps:
                    if not text.ids:
                        stats.prefill_ms = 1000 * (time.perf_counter() - start)
                        decode_start = time.perf_counter()
                    delta = text.push(int(step.token_id))
                    stats.new_tokens = len(text.ids)
                    if delta:
                        yield delta
                    if text.stopped:
                        break
                    stats.decode_ms = 1000 * (time.perf_counter() - decode_start)
            finally:
                steps.close()  # a generator: closing it stops the decoding when the caller stops reading
            stats.decode_ms = 1000 * (time.perf_counter() - decode_start)


def load_generator(model_dir: Path, device: str = "auto", runtime: str = "auto") -> TextGenerator:
    """SmolLM2's generator on the fastest runtime available.

    ``runtime``: ``ct2`` (CTranslate2), ``torch`` (transformers) or ``auto`` (CTranslate2 when it is installed, as it
    is with faster-whisper).
    """
    if runtime not in ("auto", "ct2", "torch"):
        raise ValueError(f"unknown LLM runtime {runtime!r}; valid: auto, ct2, torch")
    if runtime == "ct2" or (runtime == "auto" and importlib.util.find_spec("ctranslate2") is not None):
        return Ct2Generator.load(model_dir, device=device)
    return SmolLMGenerator.load(model_dir, device)


# --- prompts -----------------------------------------------------------------------------------------------------


def _size_range(sizes: Sequence[str]) -> str:
    if not sizes or any(" " in s for s in sizes):  # "ONE SIZE" is not worth saying
        return ""
    if len(sizes) <= 3:
        return "sizes " + ", ".join(canonical_size(s) for s in sizes)
    return f"sizes {canonical_size(sizes[0])} to {canonical_size(sizes[-1])}"


def fact_line(fact: ProductFact) -> str:
    """One product as the prompt shows it: ``Name | $27 | black | material: ...; style: ... | sizes XS to XXL``."""
    parts = [fact.name or fact.title, format_price(fact.price, fact.currency)]
    if fact.color:
        parts.append(canonical_color(fact.color))
    attrs = [f"{k.replace('_', ' ')}: {v}" for k, v in fact.attributes if k != "gender"][:MAX_ATTRIBUTES]
    if attrs:
        parts.append("; ".join(attrs))
    sizes = _size_range(fact.sizes)
    if sizes:
        parts.append(sizes)
    return " | ".join(parts)


def constraints(query: SearchQuery) -> str:
    """The shopper's hard constraints in words ("black, size M, under $50"), or ""."""
    out = [canonical_color(query.color)] if query.color else []
    if query.size:
        out.append(f"size {canonical_size(query.size)}")
    if query.min_price is not None and query.max_price is not None:
        out.append(f"between {format_price(query.min_price)} and {format_price(query.max_price)}")
    elif query.max_price is not None:
        out.append(f"under {format_price(query.max_price)}")
    elif query.min_price is not None:
        out.append(f"over {format_price(query.min_price)}")
    if query.gender:
        out.append(f"for {query.gender}")
    return ", ".join(out)


def build_messages(text: str, query: SearchQuery, top: ProductFact) -> list[Message]:
    """The chat for one reply: system prompt, the fixed examples, then this shopper's words and top pick."""
    messages: list[Message] = [{"role": "system", "content": SYSTEM_PROMPT}]
    for user, assistant in EXAMPLES:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    wants = constraints(query)
    said = " ".join((text or query.text).split()).replace('"', "'")
    lines = [f'Shopper said: "{said}"'] + ([f"Wants: {wants}"] if wants else []) + [f"Top pick: {fact_line(top)}"]
    messages.append({"role": "user", "content": "\n".join(lines)})
    return messages


_TEMPLATE_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _split(text: str) -> list[str]:
    """The template's sentences ("... in size L. There's ..." is two: `SentenceBuffer` would keep "L." as an initial)."""
    return [s for s in _TEMPLATE_SENTENCE_END.split(text.strip()) if s]


def build_answer_messages(question: str, passages: Sequence[str]) -> list[Message]:
    """The chat for a question answered from knowledge-base passages."""
    messages: list[Message] = [{"role": "system", "content": ANSWER_SYSTEM_PROMPT}]
    for user, assistant in ANSWER_EXAMPLES:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    quoted = "\n".join(f'Passage: "{" ".join(p.split())}"' for p in passages)
    messages.append({"role": "user", "content": f'{quoted}\nQuestion: "{" ".join(question.split())}"'})
    return messages


def speakability(sentence: str, names: Sequence[str] = ()) -> list[str]:
    """Why a sentence is bad to say aloud: too long, or looping on a word (empty: fine)."""
    out = []
    if len(sentence.split()) > MAX_SENTENCE_WORDS:
        out.append(f"too long to speak ({len(sentence.split())} words)")
    repeated = repeated_words(sentence, names) + repeated_phrases(sentence)
    if repeated:
        out.append(f"repeats itself: {', '.join(repeated)}")
    return out


def repeated_phrases(sentence: str, n: int = 3) -> list[str]:
    """Runs of `n` words said twice ("in size XS to L ... in size XS to L")."""
    words = re.findall(r"[a-z0-9$.]+", sentence.lower().replace(",", " "))
    grams = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return [g for g, c in grams.items() if c > 1]


def repeated_words(sentence: str, names: Sequence[str] = ()) -> list[str]:
    """Content words said twice outside product names ("a lightweight, lightweight jacket"): a looping model."""
    text = sentence.lower()
    for name in sorted((n.lower() for n in names), key=len, reverse=True):
        text = text.replace(name, " ")
    counts = Counter(w for w in re.findall(r"[a-z][a-z'-]{3,}", text) if w not in GENERIC_WORDS)
    return [w for w, c in counts.items() if c > 1]


def also_sentence(facts: Sequence[ProductFact]) -> str:
    """The products after the top pick, by name and price: "I also have the X at $44 and the Y at $47.50."."""
    items = [f"the {f.name or f.title} at {format_price(f.price, f.currency)}" for f in facts]
    text = items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" and {items[-1]}"
    return f"I also have {text}."


# --- the writer ----------------------------------------------------------------------------------------------------


@dataclass
class ReplyStats:
    """What happened while writing one reply (for benchmarks and logs)."""

    first_sentence_ms: float | None = None
    llm_first_sentence_ms: float | None = None
    total_ms: float = 0.0
    llm_text: str = ""  # everything the model generated, before any check
    accepted: list[str] = field(default_factory=list)
    rejected: list[tuple[str, list[str]]] = field(default_factory=list)  # (sentence, violations)
    used_template: bool = False
    error: str | None = None
    generation: GenerationStats | None = None


class LLMReplyWriter:
    """A `ReplyWriter` whose middle sentence SmolLM2 writes from the facts; see the module docstring.

    Args:
        model_dir: A prepared SmolLM2 folder (``ranking.llm.prepare_smollm2``); loaded on first use.
        max_new_tokens: Token budget of the model's part.
        max_sentences: Model sentences kept at most.
        device: ``auto``, ``cpu`` or ``cuda``.
        fallback: Writes the whole reply when there are no hits or the model fails.
        generate: A `TextGenerator` to use instead of loading `model_dir` (tests, other backends).
        runtime: How `model_dir` is run (`load_generator`): ``auto`` (CTranslate2 when installed), ``ct2``, ``torch``.

    Every delta is one whole, checked sentence (``sentence_deltas``): a consumer may speak each as it comes rather
    than wait for the next delta to learn that a sentence ended.
    """

    sentence_deltas = True

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        max_new_tokens: int = 48,
        max_sentences: int = 2,
        device: str = "auto",
        fallback: ReplyWriter | None = None,
        generate: TextGenerator | None = None,
        runtime: str = "auto",
    ) -> None:
        if model_dir is None and generate is None:
            raise ValueError("LLMReplyWriter needs a model_dir or a generate callable")
        self.model_dir = model_dir
        self.max_new_tokens = max_new_tokens
        self.max_sentences = max_sentences
        self.device = device
        self.runtime = runtime  # `load_generator`: CTranslate2 when installed, else transformers
        self.fallback: ReplyWriter = fallback or TemplateReplyWriter()
        self._generate = generate
        self._load_lock = threading.Lock()

    @property
    def generator(self) -> TextGenerator:
        """The model, loaded on first use (blocking: call from a worker thread)."""
        with self._load_lock:
            if self._generate is None:
                assert self.model_dir is not None
                self._generate = load_generator(self.model_dir, self.device, self.runtime)
            return self._generate

    @classmethod
    def from_cache(cls, cache_dir: Path, **options: Any) -> LLMReplyWriter:
        """A writer over ``cache_dir / "smollm2-135m-instruct"``, prepared there first if missing.

        Preparing dequantizes the packaged GGUF once (~40 s; `ranking.llm.prepare_smollm2`).
        """
        from ranking.llm import prepare_smollm2
        from ranking.registry import SMOLLM2_FOLDER

        return cls(prepare_smollm2(Path(cache_dir) / SMOLLM2_FOLDER), **options)

    def warm_up(self) -> None:
        """Load the model and encode the fixed prompt prefixes now (blocking), so the first reply is not slower."""
        generator = self.generator
        dummy = ProductFact("warm-up", "Warm Up Tee", 1.0, "USD", name="Warm Up Tee")
        for messages in (build_messages("tee", SearchQuery("tee"), dummy), build_answer_messages("hi", ["Hello."])):
            for _ in generator(messages, 1):
                pass

    def write(self, text: str, query: SearchQuery, hits: Sequence[ProductHit]) -> AsyncIterator[str]:
        """The reply as text deltas, one checked sentence each (`ReplyWriter`)."""
        return self.stream(text, query, hits)

    async def stream(
        self, text: str, query: SearchQuery, hits: Sequence[ProductHit], stats: ReplyStats | None = None
    ) -> AsyncIterator[str]:
        """`write`, filling `stats` as it goes."""
        stats = stats if stats is not None else ReplyStats()
        start = time.perf_counter()

        def mark_first() -> None:
            if stats.first_sentence_ms is None:
                stats.first_sentence_ms = 1000 * (time.perf_counter() - start)

        # Near misses (close alternatives that miss the asked colour, size or price) get the template's careful
        # wording: the query's own colour and limits may be repeated back, so a generated "in blue" after them
        # would pass the grounding check while being false of the product.
        if not hits or any(h.near_miss for h in hits):
            stats.used_template = True
            async for delta in self.fallback.write(text, query, hits):
                mark_first()
                yield delta
            stats.total_ms = 1000 * (time.perf_counter() - start)
            return
        opening, *listing = _split(compose_reply(query, list(hits)))
        mark_first()
        yield opening
        facts = reply_facts(hits)
        async for sentence in self._model_sentences(text, query, facts, stats):
            if stats.llm_first_sentence_ms is None:
                stats.llm_first_sentence_ms = 1000 * (time.perf_counter() - start)
            yield " " + sentence
        if not stats.accepted:
            stats.used_template = True
            for sentence in listing:
                yield " " + sentence
        else:
            said = " ".join([opening, *stats.accepted])
            rest = [f for f in facts[1:MAX_NAMED] if (f.name or f.title).lower() not in said.lower()]
            while rest and len(said.split()) + len(also_sentence(rest).split()) > MAX_REPLY_WORDS:
                rest.pop()
            if rest:
                yield " " + also_sentence(rest)
        stats.total_ms = 1000 * (time.perf_counter() - start)

    def review(self, sentence: str, query: SearchQuery, facts: Sequence[ProductFact], support: str,
               first: bool) -> list[str]:
        """Why a model sentence about `facts` may not be said (empty: it may)."""
        violations = check_generated(sentence, facts, query=query, support=support)
        top = (facts[0].name or facts[0].title).lower()
        if first and top not in sentence.lower():
            violations.append(f"off topic: does not name the top pick {facts[0].name!r}")
        return violations + speakability(sentence, [f.name or f.title for f in facts])

    async def write_answer(
        self, question: str, passages: Sequence[str], stats: ReplyStats | None = None
    ) -> AsyncIterator[str]:
        """Answer a question from knowledge-base passages in the model's words, checked like a product reply.

        Every sentence must pass `check_generated` with `passages` as its only source (policy claims and amounts
        included); when none does, the answer is the first passage's first sentences, quoted.

        Args:
            question: The shopper's question.
            passages: Passage texts that answer it, best first (empty: `NO_ANSWER`).
            stats: Filled as the answer is written.
        """
        stats = stats if stats is not None else ReplyStats()
        start = time.perf_counter()
        if not passages:
            stats.used_template = True
            yield NO_ANSWER
            stats.first_sentence_ms = stats.total_ms = 1000 * (time.perf_counter() - start)
            return
        sources = list(passages[:MAX_PASSAGES])

        def review(sentence: str, first: bool) -> list[str]:
            return check_generated(sentence, [], support=question, passages=sources) + speakability(sentence)

        async for sentence in self._checked_sentences(build_answer_messages(question, sources), review, stats):
            if stats.first_sentence_ms is None:
                stats.first_sentence_ms = stats.llm_first_sentence_ms = 1000 * (time.perf_counter() - start)
            yield sentence if len(stats.accepted) == 1 else " " + sentence
        if not stats.accepted:
            stats.used_template = True
            for i, sentence in enumerate(_split(sources[0])[:MAX_ANSWER_SENTENCES]):
                if stats.first_sentence_ms is None:
                    stats.first_sentence_ms = 1000 * (time.perf_counter() - start)
                yield sentence if i == 0 else " " + sentence
        stats.total_ms = 1000 * (time.perf_counter() - start)

    async def _model_sentences(
        self, text: str, query: SearchQuery, facts: Sequence[ProductFact], stats: ReplyStats
    ) -> AsyncIterator[str]:
        """The model's sentences about the top pick that pass `review`."""
        top = facts[:1]  # the model saw only the top pick: everything it says must be that product's

        def review(sentence: str, first: bool) -> list[str]:
            return self.review(sentence, query, top, text, first)  # the shopper's own words may be repeated back

        async for sentence in self._checked_sentences(build_messages(text, query, facts[0]), review, stats):
            yield sentence

    async def _checked_sentences(
        self, messages: list[Message], review: Callable[[str, bool], list[str]], stats: ReplyStats
    ) -> AsyncIterator[str]:
        """Complete sentences of the model's answer that `review` passes; the first that fails stops the model."""
        buffer = SentenceBuffer()
        stop = threading.Event()

        def accept(sentence: str) -> bool:
            violations = review(sentence, not stats.accepted)
            if violations:
                log.info("dropped a generated sentence (%s): %r", "; ".join(violations), sentence)
                stats.rejected.append((sentence, violations))
                return False
            stats.accepted.append(sentence)
            return True

        try:
            async with contextlib.aclosing(self._deltas(messages, stop, stats)) as deltas:
                async for delta in deltas:
                    stats.llm_text += delta
                    for sentence in buffer.feed(delta):
                        if not accept(sentence):
                            return
                        yield sentence
                        if len(stats.accepted) >= self.max_sentences:
                            return
            for sentence in buffer.flush():
                if not accept(sentence):
                    return
                yield sentence
                if len(stats.accepted) >= self.max_sentences:
                    return
        except Exception as err:  # the template covers for a failing model; cancellation passes through
            log.warning("reply model failed, using the template: %s", err)
            stats.error = f"{type(err).__name__}: {err}"
        finally:
            stop.set()

    async def _deltas(
        self, messages: list[Message], stop: threading.Event, stats: ReplyStats
    ) -> AsyncGenerator[str, None]:
        """The generator's deltas, produced in a worker thread; setting `stop` ends it after the current token."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

        def put(item: str | BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                generator = self.generator
                deltas = generator(messages, self.max_new_tokens)
                try:
                    for delta in deltas:
                        put(delta)
                        if stop.is_set():
                            break
                finally:
                    close = getattr(deltas, "close", None)
                    if close is not None:
                        close()
                    stats.generation = getattr(generator, "last_stats", None)
            except Exception as err:
                put(err)
            finally:
                put(None)

        task = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await task
