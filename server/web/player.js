// Reply audio: PCM16 chunks from the server, scheduled back to back on an AudioContext; stop() cuts it at once.
import { pcm16ToFloat } from "./pcm.js";

export class Player {
  constructor(context, rate) {
    this.context = context;
    this.rate = rate;
    this.sources = new Set();
    this.nextTime = 0;
    this.chunks = 0;
    this.stops = 0;
    this.onchange = () => {};
  }

  get playing() {
    return this.sources.size > 0;
  }

  enqueue(buffer) {
    const samples = pcm16ToFloat(buffer);
    if (samples.length === 0) return;
    const audio = this.context.createBuffer(1, samples.length, this.rate);
    audio.copyToChannel(samples, 0);
    const source = this.context.createBufferSource();
    source.buffer = audio;
    source.connect(this.context.destination);
    // A small lead on the first chunk absorbs network jitter; later chunks follow without a gap.
    const start = Math.max(this.nextTime, this.context.currentTime + 0.05);
    source.start(start);
    this.nextTime = start + audio.duration;
    this.sources.add(source);
    this.chunks += 1;
    source.onended = () => {
      this.sources.delete(source);
      if (!this.playing) this.onchange(false);
    };
    if (this.sources.size === 1) this.onchange(true);
  }

  /** Barge-in: silence everything queued now. Returns whether anything was playing. */
  stop() {
    const was = this.playing;
    for (const source of this.sources) {
      source.onended = null;
      try {
        source.stop();
      } catch {
        // already stopped
      }
      source.disconnect();
    }
    this.sources.clear();
    this.nextTime = 0;
    if (was) {
      this.stops += 1;
      this.onchange(false);
    }
    return was;
  }
}
