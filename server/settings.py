"""Deployment settings (environment variables prefixed ``SHOPTALK_``), validated once at start-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

RAY_ROLES = ("stt", "tts", "encoder", "ranker")  # the model workers that may run on a Ray cluster


def default_data_dir() -> Path:
    return Path(os.environ.get("SHOPTALK_DATA_DIR", Path.home() / ".shoptalk")).expanduser()


class Settings(BaseSettings):
    """Everything a deployment may change; architecture lives in model configs, per-call options in dataclasses."""

    model_config = SettingsConfigDict(env_prefix="SHOPTALK_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    catalog: Path | None = None  # products.jsonl; default: what is ingested in data_dir, else the demo catalog
    stt_model: str = "faster-whisper:tiny.en"
    tts_model: str = "hibari"
    vision_model: str = "lite0-minilm-lit"
    vision_checkpoint: Path | None = None  # default: the aligned heads `shoptalk vision align` wrote, if any
    # Work that only improves quality runs after the server answers, in a background worker with its progress in
    # GET /healthz: aligning the image-text heads on a catalog they were not trained on (photo lookup uses the raw
    # tower meanwhile), retraining the intent model on a new catalog's words. False: never (`shoptalk vision align`).
    background: bool = True
    align_epochs: int = Field(10, ge=1, le=200)  # epochs of a background align (AlignConfig's default: 30)
    # How often (seconds) the server looks for catalog changes made by another process (`shoptalk catalog ingest`
    # while it runs) and reloads; 0: only changes made through its own API
    catalog_poll_s: float = Field(5.0, ge=0.0)
    ranker: str = "smollm2-lora"  # the second-stage ranker `shoptalk ranker train/eval` works on
    # Serve it (the default): it adds personalisation (likes, dislikes, friends' purchases) for ~15-30 ms per
    # search, and its order is fused with the retrieval's (ranker_retrieval_weight), so that where it was not trained
    # (another catalog, requests by use or for complements) the retrieval's order holds: with the shipped checkpoint,
    # on luma-dev, 1.01x hybrid+near-misses on generated queries, 1.00x on the hand-judged ones, 1.02x on use-case
    # requests (`shoptalk bench ranking`). The one-time ~40 s SmolLM2 preparation runs in the background (retrieval
    # alone answers until the ranker is ready). False: retrieval alone.
    serve_ranker: bool = True
    # How SmolLM2 generates (the opt-in reply writer, merchant copy): CTranslate2 when installed (it is, with
    # faster-whisper; 1.4x faster per reply on 2 cores, the same replies: `shoptalk bench llm-runtime`), or transformers.
    llm_runtime: Literal["auto", "ct2", "torch"] = "auto"
    ranker_retrieval_weight: float = Field(1.0, ge=0.0, le=10.0)
    ranker_checkpoint: Path | None = None  # default: cache_dir/ranker/<ranker>.pt (`shoptalk ranker train`)
    # When fewer products than asked meet a query's colour, size or price, offer close alternatives after them,
    # each marked with what it misses and said as such ("none in blue; the closest is ... in grey").
    near_misses: bool = True
    device: str = "auto"
    fetch_image_urls: bool = False  # let catalog admin calls make the server fetch http(s) images (SSRF risk)
    cpu_threads: int = 0  # 0: all cores
    # Concurrent STT decodes (CTranslate2 workers, cpu_threads split between them): 2 on 2 cores lets two sessions'
    # finals decode in parallel at no cost to one session (tiny.en decodes as fast on 1 thread as on 2).
    stt_workers: int = Field(2, ge=1, le=16)
    # Catalog-aware recognition (#8): finals are decoded with a prompt built from the served catalog's vocabulary
    # (categories and their spoken forms, product lines, brands, colours), rebuilt when the catalog changes ...
    asr_bias: bool = True
    # ... and product words a transcript gets wrong ("black hold") are repaired to the closest catalog term
    # (Whisper's beam alternatives, then a phonetic / edit-distance match), shown as "Showing hoodies".
    asr_repair: bool = True
    # Beam width of final transcripts (partials stay greedy); 1: greedy finals, as before #8
    stt_beam_size: int = Field(5, ge=1, le=10)
    # Micro-batching across sessions (assistant.runtime.scheduling): query encodes (MiniLM, the ranker's) run in shared batches
    # of at most batch_max, and TTS serves every reply's first sentence first. batch_wait_ms > 0 holds a batch open
    # for company (0: take what queued while the previous batch ran; no added latency when idle).
    micro_batching: bool = True
    batch_max: int = Field(16, ge=1, le=256)
    # Batches run at once. 1 (torch on cpu_threads) by default: in whole voice turns (`bench load`) 2 workers of 1
    # thread each, beside the 2 STT workers, starved the event loop (16 sessions: p95 4.4 s against 1.1-1.6 s).
    batch_workers: int = Field(1, ge=1, le=16)
    batch_wait_ms: float = Field(0.0, ge=0.0, le=100.0)
    host: str = "127.0.0.1"
    port: int = 8000
    search_k: int = 5
    vad_threshold: float = 0.5
    vad_silence_ms: int = 500
    partial_interval_ms: int = 700
    max_sessions: int = 64
    dialogue: bool = True  # intents, references, policy and order answers; False: every turn is a product search
    # "template": grounded template replies (instant); "llm": SmolLM2 writes the follow-up sentence (checked,
    # dropped on any violation) -- about 6 s per sentence on 2 busy CPU cores, so opt-in unless a GPU serves it
    reply_writer: str = "template"
    copy_llm: bool = True  # POST /v1/copy drafts with SmolLM2 (checked); False: attribute templates only
    kb_dir: Path | None = None  # the merchant's policy documents (markdown); default: the demo policies
    memory_url: str | None = None  # None/"sqlite": data_dir/memory.sqlite; "redis://host:6379/0" for several servers
    # None/"faiss": FAISS files under data_dir/index; "qdrant-local:[PATH]"; "http(s)://qdrant:6333" for several
    vector_url: str | None = None
    # None: the models run in this process; "auto" (this machine's Ray node) or "head:6379": the roles in ray_workers
    # run as Ray Serve deployments (`shoptalk workers deploy`) and this server calls them
    ray_address: str | None = None
    ray_workers: str = ",".join(RAY_ROLES)  # comma-separated subset of RAY_ROLES
    memory_ttl_days: float = 30.0  # an idle session's memory is forgotten after this
    outbound_queue: int = 512  # events buffered per client before it counts as not reading
    log_level: str = "info"
    # --- who may connect (server/auth.py) -----------------------------------------------------------------------
    # "auto": tokens required unless the server listens on loopback only (a developer's laptop); "on"; "off".
    auth: Literal["auto", "on", "off"] = "auto"
    auth_secret: SecretStr | None = None  # signs session tokens; share it between servers (default: data_dir)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)  # merchant keys, comma-separated
    token_ttl_s: float = Field(600.0, gt=0, le=86400)
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)  # browser origins besides ours
    page_tokens: bool = True  # the served page may get anonymous shopper tokens for itself (same origin only)
    # --- limits (per client; "N/second|minute|hour" as the `limits` package parses them) -----------------------
    rate_limit_storage: str = "memory://"  # "redis://host:6379" to share the counters between servers
    rate_limit_http: str = "240/minute"
    rate_limit_uploads: str = "30/minute"
    rate_limit_turns: str = "40/minute"
    rate_limit_events: str = "100/second"
    rate_limit_connections: str = "60/minute"
    max_audio_speed: float = Field(2.0, ge=1.0)  # audio may arrive at most this much faster than real time ...
    audio_burst_s: float = Field(20.0, gt=0)  # ... after a burst of this many seconds (a client catching up)
    shutdown_grace_s: float = Field(10.0, ge=0)  # on shutdown, in-flight replies get this long to finish

    @field_validator("api_keys", "allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand(cls, value: object) -> object:
        return Path(str(value)).expanduser() if value is not None else value

    @field_validator("reply_writer")
    @classmethod
    def _writer(cls, value: str) -> str:
        if value not in ("template", "llm"):
            raise ValueError("reply_writer must be 'template' or 'llm'")
        return value

    @field_validator("ray_workers")
    @classmethod
    def _ray_roles(cls, value: str) -> str:
        roles = [part.strip() for part in value.split(",") if part.strip()]
        unknown = [role for role in roles if role not in RAY_ROLES]
        if unknown:
            raise ValueError(f"unknown ray_workers role(s) {', '.join(unknown)}; valid: {', '.join(RAY_ROLES)}")
        return ",".join(roles)

    @field_validator("vad_threshold")
    @classmethod
    def _threshold(cls, value: float) -> float:
        if not 0.05 <= value <= 0.95:
            raise ValueError("vad_threshold must be within [0.05, 0.95]")
        return value

    @property
    def auth_required(self) -> bool:
        from server.auth import is_loopback

        return self.auth == "on" or (self.auth == "auto" and not is_loopback(self.host))

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def ranker_enabled(self) -> bool:
        return self.serve_ranker and bool(self.ranker) and self.ranker != "none"

    @property
    def ranker_checkpoint_path(self) -> Path:
        """Where ``shoptalk ranker train`` writes (and the server looks for) the trained ranker."""
        if self.ranker_checkpoint is not None:
            return self.ranker_checkpoint
        return self.cache_dir / "ranker" / f"{self.ranker.replace('/', '_')}.pt"

    @property
    def aligned_checkpoint(self) -> Path:
        """Where ``shoptalk vision align`` writes (and the server looks for) the aligned heads."""
        if self.vision_checkpoint is not None:
            return self.vision_checkpoint
        return self.cache_dir / "vision" / f"{self.vision_model.replace('/', '_')}-aligned.pt"
