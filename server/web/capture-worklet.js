// AudioWorklet processor: microphone samples at the AudioContext's rate -> 16 kHz PCM16 frames for the server.
// Runs on the audio thread; each frame goes to the page as a transferable ArrayBuffer with its level.
import { FrameChunker, StreamResampler, downmix, floatToPcm16, rms } from "./pcm.js";

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.targetRate = opts.targetRate || 16000;
    this.resampler = new StreamResampler(sampleRate, this.targetRate);
    this.chunker = new FrameChunker(opts.frameSamples || Math.round(this.targetRate * 0.04));
    this.sending = Boolean(opts.sending);
    this.alive = true;
    this.port.onmessage = (event) => this.command(event.data);
  }

  command(message) {
    if (message === "start") {
      this.resampler.reset();
      this.chunker.flush();
      this.sending = true;
    } else if (message === "flush") {
      // End of a push-to-talk utterance: send what is buffered, then say so, so the page commits after it.
      if (this.sending) {
        const tail = this.chunker.push(this.resampler.flush());
        const rest = this.chunker.flush();
        for (const frame of tail) this.emit(frame);
        if (rest.length) this.emit(rest);
      }
      this.sending = false;
      this.port.postMessage({ type: "flushed" });
    } else if (message === "pause") {
      this.sending = false;
    } else if (message === "close") {
      this.alive = false;
    }
  }

  emit(samples) {
    const pcm = floatToPcm16(samples);
    this.port.postMessage({ type: "frame", pcm, level: rms(samples) }, [pcm]);
  }

  process(inputs) {
    const input = inputs[0];
    if (this.sending && input && input.length > 0 && input[0].length > 0) {
      for (const frame of this.chunker.push(this.resampler.process(downmix(input)))) this.emit(frame);
    }
    return this.alive;
  }
}

registerProcessor("shoptalk-capture", CaptureProcessor);
