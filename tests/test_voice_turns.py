"""Server-VAD turns in one session: every final holds its own utterance (#8, streaming loses nothing)."""

from __future__ import annotations

import asyncio

import numpy as np

from assistant.core.frames import SpeechStarted, SpeechStopped, Transcript
from assistant.runtime.voice import END_PADDING_MS, VoiceInput, VoiceOptions
from tests.fakes import SR, EnergyVAD, FakeSTT, silence, tone


async def _turns(utterances: list[float], stt: FakeSTT) -> tuple[list[Transcript], list[object]]:
    finals: list[Transcript] = []
    events: list[object] = []

    async def emit(frame: object) -> None:
        events.append(frame)

    async def on_final(t: Transcript) -> None:
        finals.append(t)

    voice = VoiceInput(stt, EnergyVAD, VoiceOptions(), emit, on_final)
    step = SR // 50
    for seconds in utterances:
        audio = np.concatenate([silence(0.4), tone(seconds), silence(1.0)])
        for i in range(0, audio.size, step):
            await voice.append((np.clip(audio[i:i + step], -1, 1) * 32767).astype("<i2").tobytes())
        for _ in range(100):
            if len(finals) == utterances.index(seconds) + 1:
                break
            await asyncio.sleep(0.02)
    await voice.close()
    return finals, events


async def test_every_turn_of_a_session_decodes_its_own_speech() -> None:
    stt = FakeSTT("black hoodies")
    finals, events = await _turns([1.2, 0.8, 1.5], stt)
    assert [f.text for f in finals] == ["black hoodies"] * 3
    finals_s = [s for s, o in zip(stt.calls, stt.options, strict=True) if o is not None and o.beam_size > 1]
    # each final covers its utterance plus the end padding (the second and third used to be cut to nothing)
    for spoken, decoded in zip([1.2, 0.8, 1.5], finals_s[-3:], strict=True):
        assert decoded >= spoken + END_PADDING_MS / 1000 - 0.05, (spoken, decoded)
    starts = [e.audio_start_ms for e in events if isinstance(e, SpeechStarted)]
    stops = [e.audio_end_ms for e in events if isinstance(e, SpeechStopped)]
    assert starts == sorted(starts) and stops == sorted(stops) and starts[1] > stops[0]  # one stream clock
