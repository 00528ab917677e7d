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
    first = _load("first_run")
    if first:
        from bench import first_run

        parts += ["", f"### A new user's first minutes (`shoptalk bench first-run`; a fresh clone of "
                  f"{first['commit']} and a fresh data dir)", "", first_run.table(first)]
    voice = _load("voice_latency")
    if voice:
        parts += ["", f"### Voice turn latency (`shoptalk bench voice`, {voice['queries']} spoken queries, "
                  f"median {voice['speech_s']['p50'] / 1000:.1f} s of speech)", "", voice_latency.table(voice)]
    spoken_results = _load("spoken")
    if spoken_results:
        from bench import spoken

        req = spoken_results["requests"]
        parts += ["", f"### Spoken vs typed requests (`shoptalk bench spoken`; {req['total']} requests, "
                  f"{req['product']} asking for products, {len(spoken_results['voices'])} voices the product never "
                  f"heard, {spoken_results['degraded_per_voice']} per voice in each degraded condition, "
                  f"{spoken_results['concurrency']} concurrent sessions, server VAD at real-time pace)", "",
                  spoken.table(spoken_results)]
    load_results = _load("load")
    if load_results:
        from bench import load

        levels = ", ".join(str(r["n"]) for r in load_results["levels"])
        parts += ["", f"### Concurrent sessions (`shoptalk bench load`; {levels} sessions, "
                  f"{load_results['seconds_per_level']:.0f} s each, spoken queries at real-time pace, server VAD, "
                  "against one `shoptalk serve` process)", "", load.table(load_results)]
    redesign = _load("redesign_17")
    if redesign:
        parts += ["", "### The assistant/ redesign (#17), before and after (one run each, same machine, minutes "
                  "apart)", "", redesign_table(redesign)]
    ranker_latency = _load("ranker_latency")
    if ranker_latency:
        parts += ["", "### Voice and load with the ranker served (the default since #18)", "",
                  ranker_latency_table(ranker_latency)]
    llm = _load("llm_runtime")
    if llm:
        from bench import llm_runtime

        parts += ["", "### LLM runtime (`shoptalk bench llm-runtime`; SmolLM2-135M-Instruct, the reply writer's "
                  "prompts)", "", llm_runtime.table(llm)]
    batching = _load("batching")
    if batching:
        from bench import batching as batching_bench

        parts += ["", f"### Micro-batching across sessions (`shoptalk bench batching`; each client encodes "
                  f"{batching['per_client']} distinct queries back to back)", "", batching_bench.table(batching)]
    photo = _load("photo_lookup")
    if photo:
        parts += ["", "### Photo lookup (`shoptalk bench photo`, Luma catalog photos)", "", photo_lookup.markdown(photo)]
    rank = _load("ranking")
    if rank:
        parts += ["", "### Ranking quality (`shoptalk bench ranking`, Luma catalog)", "", ranking.table(rank)]
    index = _load("index_scale")
    if index:
        parts += ["", "### Vector index at scale (`shoptalk bench index`)", "", index_scale.table(index)]
    dialogue = _load("dialogue")
    if dialogue:
        from bench import dialogue as dialogue_bench

        parts += ["", "### Conversation brain (`shoptalk bench dialogue`; intents over the demo catalog)", "",
                  dialogue_bench.markdown({**dialogue, "sections": {**dialogue["sections"],
                                                                   **_grounding_section()}})]
    conversations = _load("conversations")
    if conversations:
        from bench import conversations as conversations_bench

        parts += ["", "### Conversations on an unseen catalog (`python -m bench.conversations`; multi-turn "
                  "conversations and requests for what the catalog lacks, over luma-dev)", ""]
        for name, label in (("conversations_before", "Before #9"), ("conversations_baseline", "Baseline")):
            before = _load(name)
            if not before:
                continue
            cells = [f"{split} {sec['conversations']['share_right']:.3f} of turns right "
                     f"({sec['conversations']['checked_turns']} turns), honesty {sec['not_carried']['honesty_rate']:.3f}"
                     f" ({sec['not_carried']['n']} requests)" for split, sec in before["splits"].items()]
            commit = str(before.get("code", {}).get("commit", "9ffc0fc"))[:7]
            parts += [f"{label} (commit {commit}, typed): {'; '.join(cells)}.", ""]
        parts.append(conversations_bench.table(conversations))
        for path in sorted(RESULTS.glob("conversations_spoken*.json")):  # one file per voice
            parts += ["", conversations_bench.table(json.loads(path.read_text()))]
    kbm = _load("kb_moderation")
    if kbm:
        parts += ["", "### Knowledge base and moderation (`python -m bench.kb_moderation`)", "", kb_table(kbm)]
    gpu = _load("gpu_paths")
    if gpu:
        from bench import gpu_paths

        env = gpu.get("meta", {}).get("env", {})
        where = f"a lent {env.get('gpu', 'GPU')}, CPU column on its {env.get('cpus', '?')} cores"
        parts += ["", f"### GPU paths (`python -m bench.gpu_paths`, run on {where}; random weights of the "
                  "real architectures: timings valid, outputs meaningless)", "", gpu_paths.markdown(gpu)]
    return "\n".join(parts)


def redesign_table(r: dict[str, Any]) -> str:
    """Voice and load latency, loop lag and ranking quality before and after the #17 redesign."""
    v, load, rank = r["voice"], r["load"], r["ranking"]
    lines = ["| measure | before | after |", "|---|---|---|"]
    for mode in ("ptt", "server_vad"):
        b, a = v["before"]["first_audio_ms"][mode], v["after"]["first_audio_ms"][mode]
        lines.append(f"| bench voice, first audio p50 / p95 ms ({mode}) | {b[0]:.0f} / {b[1]:.0f} | "
                     f"{a[0]:.0f} / {a[1]:.0f} |")
    lines.append(f"| bench voice, word error rate (ptt) | {v['before']['word_error_rate']['ptt']:.3f} | "
                 f"{v['after']['word_error_rate']['ptt']:.3f} |")
    lag = r.get("loop_lag_before_planning_on_loop", {})
    for before, after in zip(load["before"], load["after"], strict=True):
        n = after["n"]
        lines.append(f"| bench load, {n} sessions: first audio p50 / p95 ms | {before['first_audio_ms']['p50']:.0f} / "
                     f"{before['first_audio_ms']['p95']:.0f} | {after['first_audio_ms']['p50']:.0f} / "
                     f"{after['first_audio_ms']['p95']:.0f} |")
        if after.get("server_loop_lag_max_ms") is not None:
            was = lag.get(str(n))
            lines.append(f"| bench load, {n} sessions: largest event-loop lag ms | "
                         f"{'—' if was is None else f'{was:.0f}'} | {after['server_loop_lag_max_ms']:.0f} |")
    b, a = rank["before_dcf5755"], rank["after"]
    for name in ("hybrid", "hybrid+near-misses", "hybrid+ranker"):
        lines.append(f"| bench ranking, (b) nDCG@10 {name} | {b['luma'][name]:.3f} | {a['luma'][name]:.3f} |")
    lines.append(f"| bench ranking, re-rank p50 ms (100 candidates) | {b['rerank_p50_ms']:.1f} | "
                 f"{a['rerank_p50_ms']:.1f} |")
    photo = r.get("photo")
    if photo:
        row = photo["rows"]["aligned+adapted, 1 view"]
        lines.append(f"| bench photo, top-1 real / phone-style photos (aligned, 1 view) | "
                     f"{row['before']['real_top1']:.3f} / {row['before']['phone_top1']:.3f} | "
                     f"{row['after']['real_top1']:.3f} / {row['after']['phone_top1']:.3f} |")
        same = all(v["before"] == v["after"] for v in photo["rows"].values())
        lines.append(f"| bench photo, every method's top-1 the same | | {'yes' if same else 'no'} |")
    lines += ["", f"Before: {r['before']} (ranking: dcf5755, which differs from it only outside search); after: "
              f"{r['after']}. Ranking quality identical on every system and set: "
              f"{'yes' if rank['identical_ndcg_mrr'] else 'no'}. The loop lag before is the stop-22 measurement with "
              "planning on the loop (the code before had no lag monitor)."]
    return "\n".join(lines)


def ranker_latency_table(r: dict[str, Any]) -> str:
    """First audio with the ranker served and off, and the #18 latency targets."""
    on, off = r["voice_first_audio_ms"], r["ranker_off"]["voice_first_audio_ms"]
    lines = ["| measure | ranker off | ranker served | target |", "|---|---|---|---|"]
    for mode in ("ptt", "server_vad"):
        target = f"p50 ≤ {r['targets']['single_first_audio_p50_ms']}" if mode == "server_vad" else ""
        lines.append(f"| bench voice, first audio p50 / p95 ms ({mode}) | {off[mode]['p50']:.0f} / {off[mode]['p95']:.0f} "
                     f"| {on[mode]['p50']:.0f} / {on[mode]['p95']:.0f} | {target} |")
    for served, plain in zip(r["load"], r["ranker_off"]["load"], strict=True):
        target = f"p95 ≤ {r['targets']['eight_sessions_first_audio_p95_ms']}" if served["n"] == 8 else ""
        lines.append(f"| bench load, {served['n']} sessions: first audio p50 / p95 ms | "
                     f"{plain['first_audio_ms']['p50']:.0f} / {plain['first_audio_ms']['p95']:.0f} | "
                     f"{served['first_audio_ms']['p50']:.0f} / {served['first_audio_ms']['p95']:.0f} | {target} |")
    lines.append(f"| server RSS at the end of bench load, MB | {r['ranker_off']['rss_mb_end']:.0f} | "
                 f"{r['rss_mb_end']:.0f} | |")
    lines += ["", f"Ranker served: {r['code']}, one run. Ranker off: `bench/results/redesign_17.json` (after), the "
              "same machine, about half an hour earlier."]
    return "\n".join(lines)


def _grounding_section() -> dict[str, Any]:
    grounding = _load("reply_grounding")
    return {"grounding": grounding} if grounding else {}


def kb_table(r: dict[str, Any]) -> str:
    kb, mod = r["kb"]["eval"], r["moderation"]["lexicon+minilm"]
    return "\n".join([
        "| metric | value |",
        "|---|---|",
        f"| policy questions answered correctly ({kb['n']} held out: {kb['supported_n']} answerable, "
        f"{kb['unsupported_n']} not) | {kb['accuracy']:.3f} |",
        f"| answerable: from the right document / declined questions refused | "
        f"{kb['supported_correct']}/{kb['supported_n']} / {kb['unsupported_refused']}/{kb['unsupported_n']} |",
        f"| abusive precision / recall | {mod['abusive']['precision']:.2f} / {mod['abusive']['recall']:.2f} |",
        f"| unsafe precision / recall | {mod['unsafe']['precision']:.2f} / {mod['unsafe']['recall']:.2f} |",
        f"| frustrated precision / recall | {mod['frustrated']['precision']:.2f} / "
        f"{mod['frustrated']['recall']:.2f} |",
        f"| calm utterances flagged | {mod['calm_flagged_rate']:.1%} |",
    ])


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
