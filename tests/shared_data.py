"""Where the shared real data lives (never copied into the project): ``$SHOPTALK_SHARED_DATA``, else
``../shared/data`` beside the checkout, else ``/work/shared/data``.  Tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path


def _find() -> Path:
    env = os.environ.get("SHOPTALK_SHARED_DATA")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    if beside.is_dir():
        return beside
    return Path("/work/shared/data")


SHARED_DATA = _find()
SPEECH_DIR = SHARED_DATA / "speech"
LUMA_DIR = SHARED_DATA / "luma-dev"
