"""``shoptalk bench load`` machinery against a fake-engine server process (tests/fake_server.py), in seconds."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import load
from bench.common import write_results


def _tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_load_bench_against_fake_server(tmp_path: Path) -> None:
    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "tests.fake_server", "--port", str(port), "--data-dir", str(tmp_path),
                "--grace", "2"]

    clips = [_tone(0.4, 220.0), _tone(0.3, 330.0)]
    results = load.run(clips, command, levels=[1, 2], seconds=1.5, texts=["black hoodie", "red shoes"],
                       warmup_turns=1, think_s=(0.05, 0.1), stagger_s=0.2, settle_s=0.2)

    assert results["benchmark"] == "load"
    assert results["machine"]["cpus"] and results["machine"]["loadavg_before"]
    assert results["server"]["health"]["status"] == "ok" and results["server"]["exit_code"] in (0, -signal.SIGTERM)
    assert [r["n"] for r in results["levels"]] == [1, 2]
    for row in results["levels"]:
        assert row["turns"] >= row["n"], row
        assert row["errors"] == 0, row["errors_by_kind"]
        fa, done = row["first_audio_ms"], row["done_ms"]
        assert 0 < fa["p50"] <= fa["p95"] < 10_000
        assert done["p50"] >= fa["p50"]
        assert row["rss_mb"]["start"] > 10 and row["rss_mb"]["max"] >= row["rss_mb"]["end"]
        assert isinstance(row["memory_flat"], bool) and isinstance(row["target_met"], bool)
        assert "word_error_rate" in row and "client:transcript" in row["stages_p50_ms"]
    assert results["levels"][0]["p95_ratio_vs_n1"] == 1.0
    mem = results["rss_mb"]
    assert len(mem["samples"]) >= 4 and mem["max"] >= mem["end"] > 10
    assert results["target_met"] is False  # no N = 8 level in this run

    out = tmp_path / "load.json"
    write_results(out, results)
    assert json.loads(out.read_text())["levels"][1]["n"] == 2
    table = load.table(results)
    print(table)
    assert sum(line.startswith("| ") for line in table.splitlines()) == 6 and "Server RSS over the whole run" in table


def test_rss_window_and_slope() -> None:
    sampler = load.RssSampler(pid=0)
    sampler.samples = [(0.0, 100.0), (0.5, 101.0), (1.0, 102.0), (1.5, 110.0), (2.0, 103.0)]
    window = sampler.window(0.6, 2.0)
    assert window == {"start": 101.0, "end": 103.0, "max": 110.0, "slope_mb_per_min": window["slope_mb_per_min"]}
    assert load.slope([(0.0, 100.0), (60.0, 130.0)]) == 30.0
    assert load.flat_memory(500.0, 520.0) and not load.flat_memory(100.0, 130.0)


def test_parse_levels() -> None:
    assert load.parse_levels("1, 2,4") == [1, 2, 4]
    with pytest.raises(ValueError):
        load.parse_levels("0,2")
