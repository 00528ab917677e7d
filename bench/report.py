"""Regenerate the README's benchmark section from ``bench/results/*.json`` (``shoptalk bench report``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

RESULTS = Path("bench/results")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def section() -> str:
    from bench import index_scale, photo_lookup, ranking, voice_latency

    parts = ["Numbers from the last `make bench` on the 2-core CPU machine (JSON in `bench/results/`); each "
             "benchmark runs its baseline in the same run."]
    voice = _load("voice_latency")
    if voice:
        parts += ["", f"### Voice turn latency (`shoptalk bench voice`, {voice['queries']} spoken queries, "
                  f"median {voice['speech_s']['p50'] / 1000:.1f} s of speech)", "", voice_latency.table(voice)]
    photo = _load("photo_lookup")
    if photo:
        parts += ["", "### Photo lookup (`shoptalk bench photo`, Luma catalog photos)", "", photo_lookup.markdown(photo)]
    rank = _load("ranking")
    if rank:
        parts += ["", "### Ranking quality (`shoptalk bench ranking`, Luma catalog)", "", ranking.table(rank)]
    index = _load("index_scale")
    if index:
        parts += ["", "### Vector index at scale (`shoptalk bench index`)", "", index_scale.table(index)]
    return "\n".join(parts)


def update_readme(readme: Path = Path("README.md")) -> None:
    text = readme.read_text()
    block = f"{BEGIN}\n{section()}\n{END}"
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.replace("BENCH_TABLE", block)
    readme.write_text(text)


if __name__ == "__main__":
    update_readme()
