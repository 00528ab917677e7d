"""What every ``shoptalk`` command shares: the ``--data-dir`` option and the settings built from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from server.settings import Settings, default_data_dir

DataDir = Annotated[Path, typer.Option("--data-dir", help="Data dir (default: $SHOPTALK_DATA_DIR or ~/.shoptalk).",
                                       default_factory=default_data_dir, show_default=False)]


def cli_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a command: ``data_dir`` plus the options given (None: the environment's or the default)."""
    if not os.environ.get("SHOPTALK_ONLINE"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # packaged weights only; no hub round-trips
    return Settings(data_dir=data_dir, **{k: v for k, v in overrides.items() if v is not None})
