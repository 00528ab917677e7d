"""Headless Chromium (Debian's ``chromium``) driven by Playwright, for the browser client's end-to-end tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"

# No background traffic (this machine's network is closed), no GPU, no sandbox (tests run as root in CI).
BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("SHOPTALK_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _missing(why: str) -> NoReturn:
    # CI sets SHOPTALK_REQUIRE_BROWSER=1: there a missing browser is a failed install step, not a skip.
    if os.environ.get("SHOPTALK_REQUIRE_BROWSER") == "1":
        pytest.fail(why)
    pytest.skip(why)


def require_browser() -> str:
    path = chromium_path()
    if path is None:
        _missing("Chromium is not installed (apt-get install chromium chromium-driver)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright (Python) is not installed")
    return path


class PageErrors:
    """Collects uncaught page errors and console errors so a test can fail on them."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def attach(self, page: Any) -> None:
        page.on("pageerror", lambda err: self.errors.append(f"pageerror: {err}"))
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"))


@contextmanager
def chromium(*, fake_mic: Path | None = None, allow_mic: bool = True) -> Iterator[Any]:
    """A headless Chromium; ``fake_mic`` is a WAV the fake microphone plays once (then silence)."""
    executable = require_browser()
    from playwright.sync_api import sync_playwright

    args = list(BASE_ARGS)
    # A fake microphone is present either way; without ``allow_mic`` the shopper says no to the permission prompt.
    args += ["--use-fake-device-for-media-stream",
             "--use-fake-ui-for-media-stream" if allow_mic else "--deny-permission-prompts"]
    if fake_mic is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_mic}%noloop")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=args, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
