"""A new user's first minutes (``shoptalk bench first-run``): a fresh clone, ``make run``, the first answers.

In a temporary clone of this repository's committed HEAD and a fresh data dir, with the pip cache as it is:

1. ``install``: ``make install`` (a fresh virtual environment; ``--venv`` reuses one and reports it skipped);
2. ``prepare``: ``make run`` up to the server's start (the model preparation it runs first);
3. ``serve``: until ``GET /healthz`` answers;
4. ``typed`` and ``spoken``: a typed turn and a spoken turn (a WAV, streamed by ``shoptalk talk --wav``) through the
   websocket, each timed until its products arrive.

"First answer" is the time from the end of the install to the typed turn's products (target: 90 s).

With ``--heads`` it also measures photo lookup on the demo catalog's own photos seen phone-style (views drawn
with a seed no align uses): top-1 with the shipped heads against the heads of another align (e.g. the 10-epoch
align ``make run`` used to run on every fresh data dir).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import free_port, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
TYPED = "show me a black hoodie"
SPOKEN = "show me black hoodies under fifty dollars"
TARGET_FIRST_ANSWER_S = 90.0
VIEW_SALT = 4242  # phone-style views of this benchmark: `vision.align` draws its views with seed 0


class Timeline:
    """The lines a child process prints, each with the seconds since `start` when it was read."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def follow(self, stream: Any) -> threading.Thread:
        def read() -> None:
            for line in stream:
                with self._lock:
                    self.lines.append((time.monotonic() - self.start, line.rstrip("\n")))

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread

    def first(self, needle: str) -> float | None:
        with self._lock:
            return next((t for t, line in self.lines if needle in line), None)

    def tail(self, n: int = 20) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines[-n:])


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float) -> float:
    start = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return time.monotonic() - start


def _healthz(port: int) -> dict[str, Any] | None:
    import httpx

    try:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except httpx.HTTPError:
        return None
    return dict(response.json()) if response.status_code == 200 else None


def _talk(clone: Path, env: dict[str, str], port: int, *args: str) -> tuple[float, int]:
    """Seconds until ``shoptalk talk ... --json`` printed its turn's products, and how many."""
    start = time.monotonic()
    done = subprocess.run([str(clone / ".venv/bin/shoptalk"), "talk", "--url", f"ws://127.0.0.1:{port}/v1/realtime",
                           "--json", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - start
    products = 0
    for line in done.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("type") == "response.products":
            products = max(products, len(event.get("products", [])))
    if done.returncode != 0 or not products:
        raise RuntimeError(f"talk {' '.join(args)} returned no products:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")
    return elapsed, products


def speak(text: str, path: Path) -> str:
    """A WAV of `text` in a test voice the product does not reply with (`bench.voices`): eSpeak NG when installed,
    else hibari at another speed and pitch. Returns the voice's name."""
    import soundfile as sf

    from bench.voices import espeak_available, synthesize

    voice = "espeak-us-m" if espeak_available() else "hibari-slow-high"
    sf.write(path, synthesize(text, voice), 16000)
    return voice


def first_run(*, venv: Path | None = None, commit: str | None = None, keep: bool = False,
              timeout_s: float = 900.0) -> dict[str, Any]:
    """Clone, install, ``make run``, then a typed and a spoken turn; the seconds of each phase.

    `commit`: check this revision out in the clone (a baseline) instead of HEAD.
    """
    work = Path(tempfile.mkdtemp(prefix="shoptalk-first-run-"))
    clone, data = work / "clone", work / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPTALK_")}  # a new user's environment
    env["HOME"] = str(work)  # nothing of this machine's data dir
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))  # warm pip cache
    phases: dict[str, float | None] = {}
    result: dict[str, Any] = {"machine": machine(), "target_first_answer_s": TARGET_FIRST_ANSWER_S}
    server: subprocess.Popen[str] | None = None
    try:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        if commit is not None:
            subprocess.run(["git", "checkout", "--quiet", commit], cwd=clone, check=True)
        result["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True,
                                          text=True, check=True).stdout.strip()
        if venv is not None:
            (clone / ".venv").symlink_to(venv.resolve())
            (clone / ".venv" / ".installed").touch()
            phases["install"] = None
        else:
            phases["install"] = round(_run(["make", "install"], clone, env, timeout_s), 1)
        port = free_port()
        start = time.monotonic()
        server = subprocess.Popen(["make", "run", f"DATA={data}", f"PORT={port}"], cwd=clone, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        timeline = Timeline(start)
        timeline.follow(server.stdout)
        health = None
        while health is None:
            if server.poll() is not None or time.monotonic() - start > timeout_s:
                raise RuntimeError(f"make run did not serve:\n{timeline.tail()}")
            time.sleep(0.25)
            health = _healthz(port)
        served = time.monotonic() - start
        serve_line = timeline.first("shoptalk serve")
        phases["prepare"] = round(serve_line, 1) if serve_line is not None else None
        phases["serve"] = round(served - (serve_line or 0.0), 1)
        typed_s, typed_products = _talk(clone, env, port, "--text", TYPED)
        phases["typed"] = round(typed_s, 1)
        wav = work / "request.wav"
        result["voice"] = speak(SPOKEN, wav)
        spoken_s, spoken_products = _talk(clone, env, port, "--wav", str(wav))
        phases["spoken"] = round(spoken_s, 1)
        result.update(
            phases=phases,
            first_answer_s=round(served + typed_s, 1),
            products={"typed": typed_products, "spoken": spoken_products},
            healthz=_healthz(port) or health,
        )
        result["met"] = result["first_answer_s"] <= TARGET_FIRST_ANSWER_S
        return result
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, 15)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, 9)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def demo_photo_top1(checkpoint: Path | None, demo: Path, *, limit: int | None = None) -> dict[str, float]:
    """Photo lookup top-1 and top-5 on phone-style views of the demo catalog's own photos with `checkpoint`'s heads.

    The index holds every demo photo (as the server's does); each query is a view of one photo drawn with
    `VIEW_SALT`, never one an align trained on. A hit is the photo's own product.
    """
    import numpy as np
    from PIL import Image

    from assistant.catalog.model import Catalog
    from vision import create_encoder
    from vision.augment import phone_style
    from vision.encoder import file_sha256, view_seed

    catalog = Catalog.load_jsonl(demo / "products.jsonl")
    photos = [(p.id, path) for p in catalog.parents() if (path := catalog.image_path(p)) is not None]
    encoder = create_encoder("lite0-minilm-lit", checkpoint=checkpoint, device="cpu")
    index = np.asarray(encoder.encode_image_files([path for _, path in photos]), dtype=np.float32)
    queries = photos[:limit] if limit else photos
    views = []
    for _, path in queries:
        with Image.open(path) as image:
            rng = np.random.default_rng(view_seed(file_sha256(path), 1, VIEW_SALT))
            views.append(phone_style(image.convert("RGB"), rng))
    vectors = np.asarray(encoder.encode_image(views), dtype=np.float32)
    ranks = np.argsort(-(vectors @ index.T), axis=1)
    owners = np.array([pid for pid, _ in photos])
    truth = np.array([pid for pid, _ in queries])
    top1 = float(np.mean(owners[ranks[:, 0]] == truth))
    top5 = float(np.mean([(owners[row[:5]] == t).any() for row, t in zip(ranks, truth, strict=True)]))
    return {"top1": round(top1, 3), "top5": round(top5, 3), "views": len(queries)}


def heads_comparison(other: Path) -> dict[str, Any]:
    """`demo_photo_top1` with the shipped heads, with `other` and with the raw tower, on the same views."""
    from assistant.catalog.demo import generate_demo_catalog
    from vision.registry import shipped_heads

    shipped = shipped_heads("lite0-minilm-lit")
    if shipped is None:
        raise FileNotFoundError("no shipped heads (make vision-heads)")
    with tempfile.TemporaryDirectory() as tmp:
        demo = generate_demo_catalog(Path(tmp) / "demo").parent
        return {"shipped": demo_photo_top1(shipped, demo), "other": demo_photo_top1(other, demo),
                "raw": demo_photo_top1(None, demo)}


def table(results: dict[str, Any]) -> str:
    """The README table of a first run (and of its baseline commit, when it ran one)."""
    base = results.get("baseline")
    names = {"install": "`make install` (fresh venv, warm pip cache)", "prepare": "`make run`: before the server starts "
             "(model preparation; the baseline also aligned the heads)", "serve": "`make run`: server start until "
             "`/healthz` answers", "typed": "typed turn (`talk --text`)",
             "spoken": f"spoken turn (`talk --wav`, {results.get('voice', '')})"}

    def cell(run: dict[str, Any], key: str) -> str:
        value = run["phases"].get(key)
        return "reused venv" if value is None else f"{value:.1f}"

    rows = ["| phase | seconds |" + (f" baseline {base['commit']} |" if base else ""),
            "|---|---:|" + ("---:|" if base else "")]
    for key, label in names.items():
        rows.append(f"| {label} | {cell(results, key)} |" + (f" {cell(base, key)} |" if base else ""))
    rows.append(f"| **first answer after the install** (target ≤ {results['target_first_answer_s']:.0f} s) | "
                f"**{results['first_answer_s']:.1f}** |" + (f" {base['first_answer_s']:.1f} |" if base else ""))
    heads = results.get("heads")
    if heads:
        rows += ["", "| demo photo lookup, phone-style views | top-1 | top-5 |", "|---|---:|---:|"]
        labels = {"shipped": "shipped heads (served at once)", "other": "a 10-epoch align on the data dir (what `make "
                  "run` used to run first)", "raw": "raw tower, no heads"}
        for key, label in labels.items():
            if key in heads:
                rows.append(f"| {label} | {heads[key]['top1']:.3f} | {heads[key]['top5']:.3f} |")
    return "\n".join(rows)


def main(*, out: Path, venv: Path | None = None, heads: Path | None = None, baseline: str | None = None,
         keep: bool = False) -> dict[str, Any]:
    results = first_run(venv=venv, keep=keep)
    if baseline is not None:  # the same steps on an earlier commit, with this run's environment
        results["baseline"] = first_run(venv=venv, commit=baseline, keep=keep)
    if heads is not None:
        results["heads"] = heads_comparison(heads)
    write_results(out, results)
    print(table(results))
    return results


if __name__ == "__main__":
    main(out=ROOT / "bench/results/first_run.json", venv=Path(sys.argv[1]) if len(sys.argv) > 1 else None)
