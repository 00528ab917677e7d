"""Turn detection: scripted fake VAD (fast) and the real Silero model on real clips."""

from __future__ import annotations

import numpy as np
import pytest

from speech.audio import SAMPLE_RATE, load_audio
from speech.errors import AudioFormatError
from speech.vad import SileroVAD, TurnDetector, VADEvent, VADOptions
from tests.shared_data import SPEECH_DIR as SHARED_SPEECH

FRAME = SileroVAD.FRAME_SAMPLES  # 512 samples = 32 ms
SPEECH_DIR = SHARED_SPEECH / "audio"


class ScriptedVAD:
    """Returns probabilities from a script, one per frame; 0.0 once the script runs out."""

    def __init__(self, probs: list[float]) -> None:
        self.script = list(probs)
        self.calls = 0
        self.frame_sizes: list[int] = []

    def prob(self, frame: np.ndarray) -> float:
        self.frame_sizes.append(frame.size)
        p = self.script[self.calls] if self.calls < len(self.script) else 0.0
        self.calls += 1
        return p

    def reset(self) -> None:
        self.calls = 0


def frames(n: int) -> np.ndarray:
    return np.zeros(n * FRAME, np.float32)


def test_turn_sequence_with_pause_and_resume():
    # frames: 3 silent, 8 speech (256 ms >= 200), 3 silent (96 ms < 500), 5 speech, 20 silent (640 ms)
    script = [0.0] * 3 + [0.9] * 8 + [0.1] * 3 + [0.8] * 5 + [0.05] * 20
    det = TurnDetector(ScriptedVAD(script), VADOptions())
    events = det.feed(frames(len(script)))
    assert events == [
        VADEvent("speech_started", 3 * 32),  # where the voiced run began: frame 3 -> 96 ms
        VADEvent("speech_paused", 11 * 32),  # first silent frame: 352 ms
        VADEvent("speech_resumed", 14 * 32),  # 448 ms
        VADEvent("speech_paused", 19 * 32),  # 608 ms
        VADEvent("speech_stopped", 19 * 32),  # after 16 silent frames (512 ms >= 500), at_ms = speech end
    ]
    assert not det.in_speech
    assert det.fed_ms == len(script) * 32


def test_started_fires_after_min_speech():
    det = TurnDetector(ScriptedVAD([0.9] * 10), VADOptions(min_speech_ms=200))
    fired_at = None
    for i in range(10):
        if det.feed(frames(1)):
            fired_at = i
            break
    assert fired_at == 6  # 7 frames x 32 ms = 224 ms is the first count >= 200 ms
    assert det.in_speech


def test_short_blip_is_ignored():
    script = [0.9] * 4 + [0.0] * 30  # 128 ms of "speech": a click, not a turn
    det = TurnDetector(ScriptedVAD(script), VADOptions())
    assert det.feed(frames(len(script))) == []
    assert not det.in_speech


def test_hysteresis_keeps_speech_between_thresholds():
    # 0.4 is below threshold (0.5) but above neg threshold (0.35): it neither pauses speech nor starts it.
    script = [0.9] * 8 + [0.4] * 30 + [0.1] * 20
    det = TurnDetector(ScriptedVAD(script), VADOptions())
    events = det.feed(frames(len(script)))
    assert [e.kind for e in events] == ["speech_started", "speech_paused", "speech_stopped"]
    assert events[1].at_ms == 38 * 32
    assert TurnDetector(ScriptedVAD([0.4] * 30), VADOptions()).feed(frames(30)) == []


def test_pause_needs_threshold_to_resume():
    # During a pause, 0.4 (between thresholds) does not resume; silence keeps counting to the stop.
    script = [0.9] * 8 + [0.1] + [0.4] * 20
    events = TurnDetector(ScriptedVAD(script), VADOptions()).feed(frames(len(script)))
    assert [e.kind for e in events] == ["speech_started", "speech_paused", "speech_stopped"]
    assert events[-1].at_ms == 8 * 32


def test_feed_buffers_partial_frames():
    vad = ScriptedVAD([0.9] * 20)
    det = TurnDetector(vad, VADOptions())
    events: list[VADEvent] = []
    chunk = 320  # 20 ms chunks do not line up with 32 ms frames
    audio = frames(20)
    for i in range(0, audio.size, chunk):
        events += det.feed(audio[i : i + chunk])
    assert vad.calls == 20 and set(vad.frame_sizes) == {FRAME}
    assert events == [VADEvent("speech_started", 0)]
    assert det.fed_ms == 20 * 32


def test_reset_clears_state():
    vad = ScriptedVAD([0.9] * 10)
    det = TurnDetector(vad, VADOptions())
    det.feed(frames(10))
    assert det.in_speech
    det.reset()
    assert not det.in_speech and det.fed_ms == 0 and vad.calls == 0


# -- real Silero model -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def silero() -> SileroVAD:
    return SileroVAD()


@pytest.mark.real_model
def test_silero_rejects_wrong_frame_size(silero: SileroVAD):
    with pytest.raises(AudioFormatError):
        silero.prob(np.zeros(480, np.float32))


@pytest.mark.real_model
def test_silero_on_jfk(silero: SileroVAD):
    clip = SPEECH_DIR / "jfk.flac"
    if not clip.is_file():
        pytest.skip("speech clips not available")
    pad = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([pad, load_audio(clip), pad])
    det = TurnDetector(silero, VADOptions())
    events = det.feed(audio)
    kinds = [e.kind for e in events]
    assert kinds[0] == "speech_started" and kinds[-1] == "speech_stopped"
    assert 1000 <= events[0].at_ms <= 2000  # speech starts shortly after the 1 s of padding
    assert events[-1].at_ms <= det.fed_ms - 500
    assert kinds.count("speech_started") == kinds.count("speech_stopped")
    assert not det.in_speech


@pytest.mark.real_model
@pytest.mark.parametrize("kind", ["silence", "noise"])
def test_silero_ignores_noise_and_silence(silero: SileroVAD, kind: str):
    rng = np.random.default_rng(1)
    audio = np.zeros(3 * SAMPLE_RATE, np.float32)
    if kind == "noise":
        audio = (rng.uniform(-1, 1, audio.size) * 0.1).astype(np.float32)
    det = TurnDetector(silero, VADOptions())
    assert det.feed(audio) == []
    assert not det.in_speech
