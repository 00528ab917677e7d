// Unit tests of the browser client's audio conversion (server/web/pcm.js): `node --test tests/web/`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { FrameChunker, StreamResampler, downmix, floatToPcm16, pcm16ToFloat, rms } from "../../server/web/pcm.js";

function sine(freq, rate, seconds, amp = 0.5) {
  const out = new Float32Array(Math.round(rate * seconds));
  for (let i = 0; i < out.length; i++) out[i] = amp * Math.sin((2 * Math.PI * freq * i) / rate);
  return out;
}

function resampleInChunks(signal, inRate, outRate, chunk) {
  const r = new StreamResampler(inRate, outRate);
  const parts = [];
  for (let i = 0; i < signal.length; i += chunk) parts.push(r.process(signal.subarray(i, i + chunk)));
  parts.push(r.flush());
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Float32Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

for (const inRate of [48000, 44100, 22050, 16000, 8000]) {
  test(`a 440 Hz tone at ${inRate} Hz keeps its frequency, amplitude and phase at 16 kHz`, () => {
    const seconds = 1;
    const out = resampleInChunks(sine(440, inRate, seconds), inRate, 16000, 128);
    // One output sample per 1/16000 s of input, to the sample.
    assert.equal(out.length, Math.ceil(seconds * 16000));
    // Away from the edges (where the input starts and stops abruptly) it is the same tone sampled at 16 kHz.
    const expected = sine(440, 16000, seconds);
    let worst = 0;
    for (let n = 200; n < out.length - 200; n++) worst = Math.max(worst, Math.abs(out[n] - expected[n]));
    assert.ok(worst < 2e-3, `max error ${worst}`);
  });
}

test("tones above the new Nyquist frequency are removed, not folded down (no aliasing)", () => {
  // 11 kHz at 48 kHz would alias to 5 kHz at 16 kHz without the low-pass filter.
  const out = resampleInChunks(sine(11000, 48000, 1, 0.8), 48000, 16000, 128);
  const middle = out.subarray(400, out.length - 400);
  const attenuationDb = 20 * Math.log10(rms(middle) / (0.8 / Math.SQRT2));
  assert.ok(attenuationDb < -50, `only ${attenuationDb.toFixed(1)} dB down`);
  // A 6 kHz tone, inside the passband, goes through at full level.
  const pass = resampleInChunks(sine(6000, 48000, 1, 0.8), 48000, 16000, 128);
  const passDb = 20 * Math.log10(rms(pass.subarray(400, pass.length - 400)) / (0.8 / Math.SQRT2));
  assert.ok(Math.abs(passDb) < 0.2, `passband level ${passDb.toFixed(2)} dB`);
});

test("the output does not depend on how the stream is cut into chunks", () => {
  const rng = mulberry32(7);
  const noise = Float32Array.from({ length: 44100 }, () => rng() * 2 - 1);
  const whole = resampleInChunks(noise, 44100, 16000, noise.length);
  for (const chunk of [1, 3, 128, 1000]) {
    const cut = resampleInChunks(noise, 44100, 16000, chunk);
    assert.equal(cut.length, whole.length);
    for (let i = 0; i < whole.length; i++) assert.ok(Math.abs(cut[i] - whole[i]) < 1e-6, `chunk ${chunk}, sample ${i}`);
  }
});

test("upsampling 8 kHz to 16 kHz interpolates between the samples", () => {
  const out = resampleInChunks(sine(300, 8000, 0.5), 8000, 16000, 160);
  const expected = sine(300, 16000, 0.5);
  assert.equal(out.length, expected.length);
  for (let n = 200; n < out.length - 200; n++) assert.ok(Math.abs(out[n] - expected[n]) < 2e-3, `sample ${n}`);
});

test("after flush the resampler starts a fresh utterance", () => {
  const r = new StreamResampler(48000, 16000);
  r.process(sine(440, 48000, 0.1));
  r.flush();
  const again = new StreamResampler(48000, 16000);
  const a = r.process(sine(440, 48000, 0.05));
  const b = again.process(sine(440, 48000, 0.05));
  assert.deepEqual(Array.from(a), Array.from(b));
});

test("bad sample rates are refused", () => {
  assert.throws(() => new StreamResampler(0, 16000), RangeError);
  assert.throws(() => new StreamResampler(48000, Number.NaN), RangeError);
});

test("float to PCM16: full scale, clipping, rounding, NaN, little-endian bytes", () => {
  const bytes = floatToPcm16(Float32Array.from([0, 1, -1, 2, -2, 0.5, -0.5, Number.NaN, 1 / 32768]));
  const view = new DataView(bytes);
  const values = Array.from({ length: 9 }, (_, i) => view.getInt16(i * 2, true));
  assert.deepEqual(values, [0, 32767, -32768, 32767, -32768, 16384, -16384, 0, 1]);
  // Little-endian on the wire whatever the machine: 32767 is ff 7f, -32768 is 00 80.
  assert.deepEqual(Array.from(new Uint8Array(bytes, 2, 4)), [0xff, 0x7f, 0x00, 0x80]);
});

test("PCM16 to float and back is lossless", () => {
  const ints = Int16Array.from([0, 1, -1, 1234, -32768, 32767]);
  const bytes = new ArrayBuffer(ints.length * 2);
  const view = new DataView(bytes);
  ints.forEach((v, i) => view.setInt16(i * 2, v, true));
  const floats = pcm16ToFloat(bytes);
  assert.equal(floats[4], -1);
  const back = new DataView(floatToPcm16(floats));
  ints.forEach((v, i) => assert.equal(back.getInt16(i * 2, true), v));
  assert.throws(() => pcm16ToFloat(new ArrayBuffer(3)), RangeError);
});

test("frames are exactly 640 samples (40 ms at 16 kHz), the remainder comes out on flush", () => {
  const chunker = new FrameChunker(640);
  const frames = [];
  for (let i = 0; i < 20; i++) frames.push(...chunker.push(new Float32Array(100).fill(i)));
  assert.equal(frames.length, 3);
  for (const f of frames) assert.equal(f.length, 640);
  assert.equal(frames[1][0], 6); // sample 640 came from the 7th push of 100
  const rest = chunker.flush();
  assert.equal(rest.length, 2000 - 3 * 640);
  assert.equal(chunker.flush().length, 0);
  assert.throws(() => new FrameChunker(0), RangeError);
});

test("stereo input is averaged to mono; rms of a sine is amplitude over root two", () => {
  const mono = downmix([Float32Array.from([1, 0.5]), Float32Array.from([0, 0.5])]);
  assert.deepEqual(Array.from(mono), [0.5, 0.5]);
  assert.ok(Math.abs(rms(sine(1000, 16000, 1, 0.5)) - 0.5 / Math.SQRT2) < 1e-4);
  assert.equal(rms(new Float32Array(0)), 0);
});

function mulberry32(seed) {
  let a = seed;
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
