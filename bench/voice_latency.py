"""Voice latency: end of speech -> first reply audio byte, over spoken shopping queries.

Every query is spoken by the packaged TTS voice (trimmed of silence) and streamed to a real server over loopback at
real-time pace, like a microphone.  Three ways of ending the turn are measured in the same run:

* ``ptt``: push-to-talk; the client commits the moment the speech ends.
* ``server_vad``: hands-free; the server's VAD must first hear ``silence_duration_ms`` of silence.
* ``baseline``: the naive sequential pipeline, in process, timed from the end of speech: openai-whisper transcribes
  the whole utterance after it ends, then search, then the full reply text, then TTS of the full reply.

Also the ASR real-time factor (decode time / audio time) of the streaming engine and of the baseline's.
Run: ``shoptalk bench voice`` (results to bench/results/voice_latency.json).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ThreadServer, machine, summary, write_results
from server.settings import Settings

log = logging.getLogger(__name__)

QUERIES = [
    "Show me black hoodies under fifty dollars.",
    "I need red running shoes.",
    "Do you have a navy rain jacket?",
    "Find me a small backpack for school.",
    "I'm looking for blue jeans in size thirty two.",
    "Show me white sneakers.",
    "Any wool socks?",
    "I want a green t-shirt under twenty dollars.",
    "Do you sell wireless headphones?",
    "Show me a summer dress in yellow.",
    "I need a warm winter hat.",
    "Find a water bottle that keeps drinks cold.",
    "Show me grey sweatpants.",
    "Do you have leather boots?",
    "I'm after a pink hoodie for my daughter.",
    "Show me jackets under one hundred dollars.",
    "I want a black t-shirt in medium.",
    "Find hiking boots in brown.",
    "Show me a red dress.",
    "Do you have purple running shoes?",
    "I need a beige trench coat.",
    "Show me cheap sunglasses.",
    "Any orange beanies?",
    "Find me a laptop backpack in grey.",
]


def speak_queries(settings: Settings, texts: list[str]) -> list[np.ndarray]:
    """Synthesize each query with the packaged voice, resample to 16 kHz, trim leading/trailing silence."""
    import librosa

    from speech.audio import resample
    from speech.registry import create_tts

    tts = create_tts("hibari", cache_dir=settings.cache_dir)
    clips = []
    for text in texts:
        audio = resample(tts.synthesize(text), tts.sample_rate, 16000)
        trimmed, _ = librosa.effects.trim(audio, top_db=35)
        clips.append(trimmed.astype(np.float32))
    return clips


async def _run_streaming(url: str, clips: list[np.ndarray], mode: str) -> list[dict[str, Any]]:
    from server.client import TalkClient

    rows = []
    async with TalkClient(url) as client:
        if mode == "ptt":
            await client.update(turn_detection=None)
        for clip in clips:
            result = await client.say(clip, realtime=True, push_to_talk=(mode == "ptt"), timeout=60)
            ok = result.status == "completed" and result.first_audio_at is not None and result.speech_end_sent
            rows.append({
                "transcript": result.transcript,
                "status": result.status,
                "latency_ms": 1000 * (result.first_audio_at - result.speech_end_sent) if ok else None,  # type: ignore[operator]
                "products": [p["title"] for p in result.products[:3]],
            })
            await asyncio.sleep(0.3)
    return rows


def _run_baseline(settings: Settings, state: Any, clips: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Naive sequential pipeline timed from the end of speech; returns latencies and ASR RTFs."""
    from assistant.replies.templates import compose_reply
    from assistant.search.query import parse_query
    from speech.registry import create_stt

    whisper = create_stt("openai-whisper:tiny.en", cache_dir=settings.cache_dir, device="cpu")
    whisper.transcribe(np.zeros(16000, dtype=np.float32))
    latencies, rtfs = [], []
    for clip in clips:
        t0 = time.perf_counter()
        text = whisper.transcribe(clip).text
        t_asr = time.perf_counter() - t0
        query = parse_query(text)
        hits = state.searcher.search(query)
        reply = compose_reply(query, hits)
        state.tts.synthesize(reply)
        latencies.append(1000 * (time.perf_counter() - t0))
        rtfs.append(t_asr / (len(clip) / 16000))
    return latencies, rtfs


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over normalised words, divided by the reference length."""
    from speech.stt import normalize_text

    ref, hyp = normalize_text(reference).split(), normalize_text(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(1, len(ref))


def _streaming_rtf(state: Any, clips: list[np.ndarray]) -> list[float]:
    stt = state.engines.stt
    rtfs = []
    for clip in clips:
        t0 = time.perf_counter()
        stt.transcribe(clip)
        rtfs.append((time.perf_counter() - t0) / (len(clip) / 16000))
    return rtfs


def run(settings: Settings, n_queries: int = 20) -> dict[str, Any]:
    from server.app import create_app
    from server.engines import build_app_state

    texts = (QUERIES * (1 + n_queries // len(QUERIES)))[:n_queries]
    state = build_app_state(settings)
    clips = speak_queries(settings, texts)
    with ThreadServer(create_app(state=state)) as server:
        ptt = asyncio.run(_run_streaming(server.ws_url, clips, "ptt"))
        vad = asyncio.run(_run_streaming(server.ws_url, clips, "server_vad"))
    base_lat, base_rtf = _run_baseline(settings, state, clips)
    fw_rtf = _streaming_rtf(state, clips)

    ptt_lat = [r["latency_ms"] for r in ptt if r["latency_ms"] is not None]
    vad_lat = [r["latency_ms"] for r in vad if r["latency_ms"] is not None]
    results: dict[str, Any] = {
        "benchmark": "voice_latency",
        "machine": machine(),
        "queries": len(clips),
        "speech_s": summary([1000 * len(c) / 16000 for c in clips]),
        "stt": settings.stt_model,
        "tts": settings.tts_model,
        "vad_silence_ms": settings.vad_silence_ms,
        "first_audio_ms": {
            "ptt": summary(ptt_lat),
            "server_vad": summary(vad_lat),
            "baseline_sequential": summary(base_lat),
        },
        "ratio_p50_ptt_vs_baseline": round(float(np.median(ptt_lat) / np.median(base_lat)), 3),
        "asr_rtf": {"faster_whisper": summary(fw_rtf, 4), "openai_whisper_baseline": summary(base_rtf, 4)},
        "word_error_rate": {
            mode: round(float(np.mean([word_error_rate(t, r["transcript"]) for t, r in zip(texts, rows, strict=True)])), 3)
            for mode, rows in (("ptt", ptt), ("server_vad", vad))
        },
        "failures": {"ptt": len(clips) - len(ptt_lat), "server_vad": len(clips) - len(vad_lat)},
        "samples": {"ptt": ptt, "server_vad": vad},
        "targets": {"p50_ms": 600, "ratio": 0.4},
    }
    return results


def table(results: dict[str, Any]) -> str:
    fa = results["first_audio_ms"]
    rows = ["| end of speech → first reply audio | p50 ms | p95 ms |", "|---|---|---|"]
    for name, label in (("ptt", "streaming, push-to-talk"), ("server_vad", "streaming, server VAD (incl. silence wait)"),
                        ("baseline_sequential", "naive sequential baseline")):
        rows.append(f"| {label} | {fa[name]['p50']} | {fa[name]['p95']} |")
    rtf = results["asr_rtf"]
    wer = results["word_error_rate"]
    rows.append(f"| ratio p50 push-to-talk / baseline | {results['ratio_p50_ptt_vs_baseline']} | |")
    rows.append(f"| ASR real-time factor (p50): faster-whisper streaming engine / openai-whisper baseline "
                f"| {rtf['faster_whisper']['p50']:.3f} / {rtf['openai_whisper_baseline']['p50']:.3f} | |")
    rows.append(f"| word error rate of the final transcripts (push-to-talk / server VAD) | {wer['ptt']} / {wer['server_vad']} | |")
    return "\n".join(rows)


def main(settings: Settings, *, n_queries: int = 20, out: Path = Path("bench/results/voice_latency.json")) -> None:
    logging.basicConfig(level=logging.INFO)
    results = run(settings, n_queries)
    write_results(out, results)
    print(table(results))
    print(f"\nresults written to {out}")
