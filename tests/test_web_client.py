"""The browser client's files: served with their security headers, the audio code unit-tested in node and in
Chromium's real AudioWorklet (no models needed)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.app import create_app
from server.routes import web
from tests.browser import chromium
from tests.conftest import LiveServer
from tests.fake_server import build

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def static_app() -> FastAPI:
    app = FastAPI()
    web.mount(app)
    return app


def test_page_and_modules_are_served_with_security_headers(static_app: FastAPI) -> None:
    with TestClient(static_app) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/static/app.js">' in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        for name in ("app.js", "player.js", "pcm.js", "capture-worklet.js"):
            module = client.get(f"/static/{name}")
            assert module.status_code == 200, name
            assert "javascript" in module.headers["content-type"], (name, module.headers["content-type"])
            assert module.headers["content-security-policy"] == csp
        assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
        assert client.head("/").status_code == 200
        assert client.get("/static/missing.js").status_code == 404
        assert client.get("/static/../routes/web.py").status_code == 404


def test_page_uses_no_inline_script_or_remote_resource() -> None:
    html = (web.WEB_DIR / "index.html").read_text()
    assert "<script>" not in html and "onclick" not in html  # CSP forbids inline code
    assert "http://" not in html and "https://" not in html


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_audio_conversion_unit_tests_in_node() -> None:
    """tests/web/pcm.test.mjs: resampling (accuracy, anti-aliasing, chunking), PCM16 conversion and framing."""
    run = subprocess.run(["node", "--test", str(ROOT / "tests" / "web")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass " in run.stdout


@pytest.fixture(scope="module")
def static_server(static_app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(static_app) as live:
        yield live


@pytest.mark.browser
def test_capture_worklet_in_chromium_sends_16khz_pcm16_frames(static_server: LiveServer) -> None:
    """The real worklet in Chromium's audio engine: a 440 Hz tone at 44.1 kHz becomes 40 ms PCM16 frames at 16 kHz
    that hold the same tone, and a flush sends the remainder then says so."""
    with chromium() as browser:
        page = browser.new_page()
        page.goto(static_server.http_url + "/static/style.css")  # any same-origin page: module URLs resolve
        result = page.evaluate("""async () => {
            const rate = 44100, seconds = 1;
            const ctx = new OfflineAudioContext(1, rate * seconds, rate);
            await ctx.audioWorklet.addModule('/static/capture-worklet.js');
            const node = new AudioWorkletNode(ctx, 'shoptalk-capture', {numberOfInputs: 1, numberOfOutputs: 1,
                processorOptions: {targetRate: 16000, frameSamples: 640, sending: true}});
            const frames = [];
            let flushed = false;
            node.port.onmessage = (e) => { if (e.data.type === 'frame') frames.push(e.data); else flushed = true; };
            const osc = new OscillatorNode(ctx, {frequency: 440});
            const gain = new GainNode(ctx, {gain: 0.5});
            osc.connect(gain).connect(node).connect(ctx.destination);
            osc.start();
            await ctx.startRendering();
            await new Promise(r => setTimeout(r, 200));
            const full = frames.length;
            node.port.postMessage('flush');
            await new Promise(r => setTimeout(r, 200));
            const sizes = frames.map(f => f.pcm.byteLength);
            const samples = [];
            for (const f of frames) { const v = new DataView(f.pcm);
                for (let i = 0; i < f.pcm.byteLength; i += 2) samples.push(v.getInt16(i, true) / 32768); }
            return {full, sizes, samples, flushed, levels: frames.slice(0, full).map(f => f.level)};
        }""")
    assert result["flushed"]
    sizes = result["sizes"]
    assert all(size == 1280 for size in sizes[: result["full"]]), sizes  # 640 samples x 2 bytes = 40 ms at 16 kHz
    import numpy as np

    samples = np.asarray(result["samples"], dtype=np.float64)
    # The worklet sees whole 128-sample render quanta: 345 x 128 input samples, each input instant comes out once.
    rendered = -(-44100 // 128) * 128
    assert len(samples) == -(-rendered * 16000 // 44100), len(samples)
    t = np.arange(len(samples)) / 16000
    middle = slice(400, len(samples) - 400)
    expected = 0.5 * np.sin(2 * np.pi * 440 * t)
    assert float(np.max(np.abs(samples[middle] - expected[middle]))) < 3e-3
    assert 0.3 < float(np.median(result["levels"])) < 0.4  # rms of a 0.5 sine


@pytest.mark.browser
def test_page_signs_in_with_a_page_token_when_auth_is_on(tmp_path: Path) -> None:
    """Auth on: the page gets an anonymous token from its own origin and sends it as its first websocket message."""
    state = build(tmp_path, auth="on", api_keys=["merchant-key-0123456789abcdef"])
    with LiveServer(create_app(state=state)) as live, chromium() as browser:
        page = browser.new_page()
        page.goto(live.http_url)
        page.wait_for_function("() => window.shoptalk && window.shoptalk.state.connected", timeout=15000)
        page.get_by_role("textbox", name="Message").fill("black hoodie")
        page.keyboard.press("Enter")
        page.wait_for_selector(".card", timeout=20000)
        assert page.locator("#alerts").is_hidden()
    # Without the page token the same websocket is refused.
    async def bare() -> dict[str, object]:
        with LiveServer(create_app(state=state)) as again:
            async with websockets.connect(again.ws_url) as ws:
                await ws.send(json.dumps({"type": "session.update", "session": {}}))
                return dict(json.loads(await ws.recv()))

    event = asyncio.run(bare())
    assert event["type"] == "error" and event["error"]["code"] == "auth_failed"  # type: ignore[index]
