// Audio conversion used by the capture worklet and the page: streaming resampling to the server's rate,
// float <-> PCM16 little-endian, and fixed-size framing.  Pure functions and classes with no browser API,
// so node's test runner checks them (tests/web/pcm.test.mjs).

const TABLE_RES = 512;

/** Windowed-sinc resampler that keeps its state between chunks, so a stream cut into any chunk sizes gives
 * the same output as the whole signal at once.  Downsampling low-passes below the new Nyquist frequency
 * (no aliasing); the kernel is centred on each output instant, so there is no phase shift, only a latency
 * of `halfWidth` input samples. */
export class StreamResampler {
  constructor(inRate, outRate, { zeroCrossings = 12, rolloff = 0.92 } = {}) {
    if (!(inRate > 0) || !(outRate > 0)) throw new RangeError(`bad sample rates ${inRate} -> ${outRate}`);
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate; // input samples per output sample
    const scale = Math.min(1, outRate / inRate);
    this.cutoff = 0.5 * scale * rolloff; // cycles per input sample
    this.halfWidth = Math.ceil(zeroCrossings / (2 * this.cutoff));
    // Input history: buf[0] is input sample number bufStart.  Samples before 0 are silence.
    this.bufStart = -this.halfWidth;
    this.buf = new Float32Array(this.halfWidth);
    this.n = 0; // next output sample number
    this.inCount = 0;
    // The kernel tabulated at 1/TABLE_RES of an input sample (linear interpolation between entries).
    this.table = new Float32Array(this.halfWidth * TABLE_RES + 2);
    for (let k = 0; k < this.table.length; k++) this.table[k] = this._kernel(k / TABLE_RES);
  }

  _lookup(x) {
    const pos = Math.abs(x) * TABLE_RES;
    const k = Math.floor(pos);
    if (k >= this.table.length - 1) return 0;
    const frac = pos - k;
    return this.table[k] + frac * (this.table[k + 1] - this.table[k]);
  }

  _kernel(x) {
    // Lowpass sinc at `cutoff`, Blackman window over [-halfWidth, halfWidth].
    if (Math.abs(x) >= this.halfWidth) return 0;
    const fc = this.cutoff;
    const arg = 2 * fc * x;
    const sinc = arg === 0 ? 1 : Math.sin(Math.PI * arg) / (Math.PI * arg);
    const w = 0.42 + 0.5 * Math.cos((Math.PI * x) / this.halfWidth) + 0.08 * Math.cos((2 * Math.PI * x) / this.halfWidth);
    return 2 * fc * sinc * w;
  }

  _append(chunk) {
    const merged = new Float32Array(this.buf.length + chunk.length);
    merged.set(this.buf, 0);
    merged.set(chunk, this.buf.length);
    this.buf = merged;
    this.inCount += chunk.length;
  }

  /** Resample one chunk of input; returns the output samples that are complete so far. */
  process(chunk) {
    this._append(chunk);
    return this._drain(this.bufStart + this.buf.length);
  }

  /** Output what is left, as if the input went on with silence (end of an utterance). */
  flush() {
    const end = this.inCount;
    this._append(new Float32Array(this.halfWidth + 1));
    const out = this._drain(this.bufStart + this.buf.length, end);
    this.reset();
    return out;
  }

  reset() {
    this.bufStart = -this.halfWidth;
    this.buf = new Float32Array(this.halfWidth);
    this.n = 0;
    this.inCount = 0;
  }

  _drain(available, limit = Infinity) {
    const out = [];
    const hw = this.halfWidth;
    for (;;) {
      const t = (this.n * this.inRate) / this.outRate; // exact for integer rates up to 2^53
      if (t >= limit) break;
      const centre = Math.floor(t);
      if (centre + hw >= available) break;
      let acc = 0;
      let norm = 0;
      for (let i = centre - hw + 1; i <= centre + hw; i++) {
        const w = this._lookup(t - i);
        const j = i - this.bufStart;
        acc += w * (j >= 0 && j < this.buf.length ? this.buf[j] : 0);
        norm += w;
      }
      out.push(norm > 0 ? acc / norm : 0);
      this.n++;
    }
    // Drop history no later output needs.
    const nextCentre = Math.floor((this.n * this.inRate) / this.outRate);
    const keepFrom = nextCentre - hw + 1;
    const drop = keepFrom - this.bufStart;
    if (drop > 0) {
      this.buf = this.buf.slice(Math.min(drop, this.buf.length));
      this.bufStart += drop;
    }
    return Float32Array.from(out);
  }
}

/** Float samples in [-1, 1] to PCM16 little-endian bytes; out-of-range samples clip. */
export function floatToPcm16(samples) {
  const bytes = new ArrayBuffer(samples.length * 2);
  const view = new DataView(bytes);
  for (let i = 0; i < samples.length; i++) {
    let s = samples[i];
    if (!(s === s)) s = 0; // NaN -> silence
    // Scale by 32768 and clip, the inverse of pcm16ToFloat, so a round trip is lossless.
    view.setInt16(i * 2, Math.max(-32768, Math.min(32767, Math.round(s * 32768))), true);
  }
  return bytes;
}

/** PCM16 little-endian bytes to float samples in [-1, 1). */
export function pcm16ToFloat(buffer) {
  if (buffer.byteLength % 2 !== 0) throw new RangeError(`PCM16 needs an even byte count, got ${buffer.byteLength}`);
  const view = new DataView(buffer);
  const out = new Float32Array(buffer.byteLength / 2);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(i * 2, true) / 32768;
  return out;
}

/** Collects samples and hands out frames of exactly `frameSamples` (the last one, on flush, may be shorter). */
export class FrameChunker {
  constructor(frameSamples) {
    if (!Number.isInteger(frameSamples) || frameSamples <= 0) throw new RangeError(`bad frame size ${frameSamples}`);
    this.size = frameSamples;
    this.pending = new Float32Array(frameSamples);
    this.fill = 0;
  }

  push(samples) {
    const frames = [];
    let i = 0;
    while (i < samples.length) {
      const take = Math.min(this.size - this.fill, samples.length - i);
      this.pending.set(samples.subarray(i, i + take), this.fill);
      this.fill += take;
      i += take;
      if (this.fill === this.size) {
        frames.push(this.pending.slice());
        this.fill = 0;
      }
    }
    return frames;
  }

  flush() {
    const rest = this.pending.slice(0, this.fill);
    this.fill = 0;
    return rest;
  }
}

/** Root mean square of a block (0 for an empty one). */
export function rms(samples) {
  if (samples.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  return Math.sqrt(sum / samples.length);
}

/** Average the channels of one worklet input into mono (a stereo microphone stays a single voice). */
export function downmix(channels) {
  if (channels.length === 1) return channels[0];
  const out = new Float32Array(channels[0].length);
  for (const ch of channels) for (let i = 0; i < out.length; i++) out[i] += ch[i] / channels.length;
  return out;
}
