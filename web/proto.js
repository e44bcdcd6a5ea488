// A minimal protobuf codec for the live session's messages (proto/compositing.proto:
// SessionInput out, SessionOutput in). Hand-written so the page needs no build step;
// field numbers must follow the .proto file.

class Writer {
  constructor() { this.bytes = []; this.chunks = []; }
  varint(v) {
    let n = BigInt.asUintN(64, BigInt(v));
    while (n >= 0x80n) { this.bytes.push(Number(n & 0x7fn) | 0x80); n >>= 7n; }
    this.bytes.push(Number(n));
  }
  tag(field, wire) { this.varint((field << 3) | wire); }
  int(field, v) { if (v) { this.tag(field, 0); this.varint(v); } }
  bool(field, v) { if (v) { this.tag(field, 0); this.varint(1); } }
  bytesField(field, u8) {
    this.tag(field, 2); this.varint(u8.length); this.flush(); this.chunks.push(u8);
  }
  string(field, s) { if (s) this.bytesField(field, new TextEncoder().encode(s)); }
  message(field, w) { this.bytesField(field, w.finish()); }
  flush() { if (this.bytes.length) { this.chunks.push(Uint8Array.from(this.bytes)); this.bytes = []; } }
  finish() {
    this.flush();
    const total = this.chunks.reduce((a, c) => a + c.length, 0);
    const out = new Uint8Array(total);
    let o = 0;
    for (const c of this.chunks) { out.set(c, o); o += c.length; }
    return out;
  }
}

class Reader {
  constructor(u8) { this.u8 = u8; this.pos = 0; }
  done() { return this.pos >= this.u8.length; }
  varint() {
    let result = 0, shift = 0, b;
    let big = null;
    do {
      if (this.pos >= this.u8.length) throw new Error('truncated varint');
      b = this.u8[this.pos++];
      if (shift < 49) result += (b & 0x7f) * 2 ** shift;
      else {
        if (big === null) big = BigInt(result);
        big += BigInt(b & 0x7f) << BigInt(shift);
      }
      shift += 7;
    } while (b & 0x80);
    if (big !== null) return Number(BigInt.asIntN(64, big));
    return result;
  }
  bytes() {
    const n = this.varint();
    if (this.pos + n > this.u8.length) throw new Error('truncated field');
    const out = this.u8.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  skip(wire) {
    if (wire === 0) this.varint();
    else if (wire === 2) this.bytes();
    else if (wire === 1) this.pos += 8;
    else if (wire === 5) this.pos += 4;
    else throw new Error('unsupported wire type ' + wire);
  }
  // fields: {number: [name, kind, repeated?]} with kind 'int' | 'bool' | 'bytes' | 'string' |
  // decoder fn; repeated fields (third element true) are arrays of their values.
  read(fields) {
    const out = {};
    for (const [name, kind, repeated] of Object.values(fields)) {  // proto3: absent = default
      if (repeated) out[name] = [];
      else if (kind === 'int') out[name] = 0;
      else if (kind === 'bool') out[name] = false;
      else if (kind === 'string') out[name] = '';
      else if (kind === 'bytes') out[name] = new Uint8Array(0);
    }
    while (!this.done()) {
      const key = this.varint();
      const field = Math.floor(key / 8), wire = key & 7;
      const spec = fields[field];
      if (!spec) { this.skip(wire); continue; }
      const [name, kind, repeated] = spec;
      let v;
      if (kind === 'int') v = this.varint();
      else if (kind === 'bool') v = this.varint() !== 0;
      else if (kind === 'bytes') v = this.bytes();
      else if (kind === 'string') v = new TextDecoder().decode(this.bytes());
      else v = kind(new Reader(this.bytes()));
      if (repeated) out[name].push(v); else out[name] = v;
    }
    return out;
  }
}

export const Codec = { DEFAULT: 0, H264: 1, MJPEG: 2 };
export const Control = { INTERRUPT: 1, END_OF_SPEECH: 2, CLOSE: 3, KEY_FRAME: 4 };
export const EventKind = ['UNSPECIFIED', 'OPENED', 'SPEECH_STARTED', 'SPEECH_ENDED',
  'INTERRUPTED', 'WARNING', 'ERROR', 'CLOSED'];

// SessionInput{open}
export function encodeOpen(o) {
  const w = new Writer();
  w.string(1, o.modelId); w.int(2, o.sampleRate); w.int(3, o.channels); w.int(4, o.codec);
  w.int(5, o.fps); w.int(6, o.bitrateKbps); w.int(7, o.lookaheadFrames); w.int(8, o.jpegQuality);
  w.string(9, o.authorization); w.bool(10, o.webrtc);
  const top = new Writer(); top.message(1, w); return top.finish();
}
// SessionInput{audio}: pcm is a Uint8Array of s16le
export function encodeAudio(pcm) {
  const w = new Writer(); w.bytesField(1, pcm);
  const top = new Writer(); top.message(2, w); return top.finish();
}
export function encodeControl(kind) {
  const w = new Writer(); w.int(1, kind);
  const top = new Writer(); top.message(3, w); return top.finish();
}
export function encodeSpeak(text, voice) {
  const w = new Writer(); w.string(1, text); w.string(2, voice);
  const top = new Writer(); top.message(4, w); return top.finish();
}

const frameFields = {
  1: ['frameIndex', 'int'], 2: ['ptsUs', 'int'], 3: ['video', 'bytes'], 4: ['keyFrame', 'bool'],
  5: ['audio', 'bytes'], 6: ['audioSampleRate', 'int'], 7: ['speaking', 'bool'],
  8: ['backgroundIndex', 'int'], 9: ['generation', 'int'],
};
const eventFields = { 1: ['kind', 'int'], 2: ['message', 'string'], 3: ['frameIndex', 'int'], 4: ['code', 'int'] };
const openedFields = {
  1: ['width', 'int'], 2: ['height', 'int'], 3: ['fps', 'int'], 4: ['codec', 'int'],
  5: ['audioSampleRate', 'int'], 6: ['lookaheadFrames', 'int'], 7: ['sessionId', 'string'],
};
const statsFields = {
  1: ['framesSent', 'int'], 2: ['speakingFrames', 'int'], 3: ['repeatedFrames', 'int'],
  4: ['droppedFrames', 'int'], 5: ['inferenceBatches', 'int'], 6: ['bufferedAudioMs', 'int'],
};

export const WebRtcState = ['UNSPECIFIED', 'READY', 'UNAVAILABLE', 'LOST'];
const iceFields = { 1: ['urls', 'string', true], 2: ['username', 'string'], 3: ['credential', 'string'] };
const webrtcFields = {
  1: ['state', 'int'], 2: ['janusUrl', 'string'], 3: ['mountpointId', 'int'], 4: ['pin', 'string'],
  5: ['token', 'string'], 6: ['iceServers', (r) => r.read(iceFields), true], 7: ['message', 'string'],
};

// SessionOutput -> {frame} | {event} | {opened} | {stats} | {webrtc}
export function decodeOutput(u8) {
  return new Reader(u8).read({
    1: ['frame', (r) => r.read(frameFields)],
    2: ['event', (r) => r.read(eventFields)],
    3: ['opened', (r) => r.read(openedFields)],
    4: ['stats', (r) => r.read(statsFields)],
    5: ['webrtc', (r) => r.read(webrtcFields)],
  });
}
