// AudioWorklet processors of the demo page (loaded with audioWorklet.addModule).
//  - 'lipsync-capture': forwards the microphone's samples (mono) to the page.
//  - 'lipsync-player': plays the session's sound from a ring buffer. Its playhead (the
//    count of session samples played) is the page's master clock: each video frame is
//    shown when the playhead reaches its timestamp. On underrun it plays silence and the
//    playhead waits. It also reports the onset of every beep it plays (a loud tone
//    after >= 50 ms of quiet), for the A/V offset measurement.
//  - 'lipsync-onsets': the same beep onsets in a stream passing through (WebRTC's sound).

class CaptureProcessor extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0 && input[0].length > 0) {
      this.port.postMessage(input[0].slice(0));
    }
    return true;
  }
}
registerProcessor('lipsync-capture', CaptureProcessor);

class PlayerProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.capacity = sampleRate * 20;  // 20 s
    this.ring = new Float32Array(this.capacity);
    this.readPos = 0;   // session samples played (the master clock)
    this.writePos = 0;  // session samples received
    this.underruns = 0;
    this.quietRun = 0;
    this.blocks = 0;
    this.playedEnergy = 0;
    this.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === 'push') {
        const s = m.samples;
        // Starts at session sample m.pos; a gap (dropped frames) is filled with silence.
        if (m.pos > this.writePos) {
          for (let p = this.writePos; p < m.pos; p++) this.ring[p % this.capacity] = 0;
          this.writePos = m.pos;
        }
        const skip = Math.max(0, this.writePos - m.pos);
        for (let i = skip; i < s.length; i++) this.ring[(m.pos + i) % this.capacity] = s[i];
        this.writePos = Math.max(this.writePos, m.pos + s.length);
        if (this.writePos - this.readPos > this.capacity) this.readPos = this.writePos - this.capacity;
      } else if (m.type === 'flush') {  // interrupt: drop what is queued after `pos`
        this.writePos = Math.max(this.readPos, Math.min(this.writePos, m.pos));
      } else if (m.type === 'reset') {
        this.readPos = m.pos; this.writePos = m.pos;
      }
    };
  }
  process(inputs, outputs) {
    const out = outputs[0];
    const n = out[0].length;
    const avail = this.writePos - this.readPos;
    const ch0 = out[0];
    if (avail >= n) {
      for (let i = 0; i < n; i++) {
        const v = this.ring[(this.readPos + i) % this.capacity];
        ch0[i] = v;
        const a = Math.abs(v);
        this.playedEnergy += v * v;
        if (a > 0.25) {
          if (this.quietRun >= sampleRate * 0.05) {
            this.port.postMessage({ type: 'beep', pos: this.readPos + i, time: currentTime + i / sampleRate });
          }
          this.quietRun = 0;
        } else if (a < 0.02) {
          this.quietRun++;
        }
      }
      this.readPos += n;
    } else {
      ch0.fill(0);
      if (avail > 0 || this.writePos > 0) this.underruns++;
    }
    for (let c = 1; c < out.length; c++) out[c].set(ch0);
    if (++this.blocks % 4 === 0) {
      this.port.postMessage({ type: 'clock', pos: this.readPos, time: currentTime, buffered: this.writePos - this.readPos,
        underruns: this.underruns, energy: this.playedEnergy });
    }
    return true;
  }
}
registerProcessor('lipsync-player', PlayerProcessor);

// 'lipsync-onsets': passes its input through (the WebRTC transport's remote sound on its
// way to the speakers), reports each beep's onset as the player does, and the energy.
class OnsetProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.quietRun = 0;
    this.energy = 0;
    this.blocks = 0;
  }
  process(inputs, outputs) {
    const input = inputs[0], out = outputs[0];
    const n = out[0].length;
    const ch0 = input && input.length ? input[0] : null;
    for (let c = 0; c < out.length; c++) {
      const src = input && input.length ? input[Math.min(c, input.length - 1)] : null;
      if (src) out[c].set(src); else out[c].fill(0);
    }
    if (!ch0) return true;
    for (let i = 0; i < n; i++) {
      const a = Math.abs(ch0[i]);
      this.energy += a * a;
      if (a > 0.25) {
        if (this.quietRun >= sampleRate * 0.05) this.port.postMessage({ type: 'beep', time: currentTime + i / sampleRate });
        this.quietRun = 0;
      } else if (a < 0.02) {
        this.quietRun++;
      }
    }
    if (++this.blocks % 40 === 0) this.port.postMessage({ type: 'energy', energy: this.energy });
    return true;
  }
}
registerProcessor('lipsync-onsets', OnsetProcessor);
