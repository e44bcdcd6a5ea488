// The live session demo page (docs/STREAMING.md "Browser"). One WebSocket carries one
// session: serialized SessionInput out, SessionOutput in (proto.js). Video: H.264 through
// WebCodecs VideoDecoder (Annex B, no description) or MJPEG through createImageBitmap,
// drawn to a canvas. Sound: an AudioWorklet ring buffer whose playhead is the master
// clock; each video frame is drawn when the playhead reaches its timestamp.
// Figures are on the page and on window.lipsyncStats (the page tests read them).
// Transport WebRTC (docs/STREAMING.md "WebRTC through Janus"): the open asks for WebRTC,
// SessionOutput.webrtc names the Janus mountpoint, and the video and sound come from the
// peer connection (janus.js) while it is up; controls still go over the WebSocket, and
// its frames take over again when Janus is lost (until the mountpoint is back: the page
// subscribes again by itself).
import * as proto from './proto.js';
import { JanusViewer } from './janus.js';

const SUPPORTED_RATES = [8000, 16000, 22050, 24000, 44100, 48000];
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const stats = {
  state: 'disconnected',  // disconnected | connecting | idle | speaking | closed | error
  connected: false,
  opened: null,
  codec: null,
  framesReceived: 0,
  framesDisplayed: 0,
  speakingFramesDisplayed: 0,
  idleFramesDisplayed: 0,
  fps: 0,
  lateFrames: 0,          // decoded but skipped: their time had passed (late)
  missingFrames: 0,       // frame indices never received (dropped on the way)
  serverStats: null,      // the last SessionStats
  firstFrameLatencyMs: null,   // speech sent -> first speaking frame shown
  firstFrameLatencies: [],
  pageOpenToFirstFrameMs: null,      // from this script's start
  navigationToFirstFrameMs: null,    // from the navigation's start (page requested)
  // Where the page-open time goes (ms after the script started): avatar list fetched,
  // audio ready, socket open, session opened, first frame received, first frame shown.
  openSteps: {},
  interruptToIdleMs: null,
  avOffsetMs: null,       // the last A/V offset (+: video late)
  avOffsets: [],
  beeps: 0,
  freezes: 0,             // gaps over 120 ms between shown frames
  longestFreezeMs: 0,
  audioUnderruns: 0,
  audioPlayedEnergy: 0,
  audioBufferedMs: 0,
  pixelIndex: null,       // the frame index burned into the demo avatar (null: none)
  lastBackgroundIndex: null,
  speaking: false,
  events: [],             // the last 200 events
  eventCounts: {},        // events by kind since the page opened
  errors: [],
  closeCode: null,
  closeReason: '',
  transport: 'websocket',  // websocket | webrtc (asked for)
  webrtc: {
    state: null,          // READY | UNAVAILABLE | LOST (SessionOutput.webrtc)
    active: false,        // the peer connection plays (the WebSocket frames are not shown)
    mountpointId: null,
    subscriptions: 0,     // READY messages acted on (re-subscriptions after a Janus restart)
    message: '',
    framesDecoded: 0, fps: 0, freezeCount: 0, totalFreezesDurationMs: 0, framesDropped: 0,
    audioPacketsReceived: 0, audioSamplesReceived: 0, audioEnergy: 0, concealedSamples: 0,
    jitterBufferDelayMs: null,       // audio (getStats average)
    videoJitterBufferDelayMs: null,
    localCandidateType: null,  // the selected ICE pair's local side (relay: through TURN)
    jitterBufferTargetMs: 0,   // set on both receivers at subscribe (0: the browser's own)
    jitterBufferTargetRaises: 0,  // times it was raised to match the larger delay
    activeSince: null,    // performance.now() of the last 'webrtc up'
    presentedFrames: 0,   // requestVideoFrameCallback's count
    syncedFrames: 0,      // displayed frames whose session index is known (A/V, idle)
    syncMismatches: 0,    // of those, frames whose pixels show another background
    playedEnergy: 0,      // sum of squares of the sound played (the AudioContext)
  },
};
window.lipsyncStats = stats;

let ws = null;
let audioCtx = null;
let player = null;          // AudioWorkletNode 'lipsync-player'
let clock = { pos: 0, time: 0, buffered: 0 };
let sessionRate = 16000;    // the session's input and output PCM rate
let fps = 25;
let ptsBase = null;         // pts of the first frame (its audio starts at ctx sample 0)
let decoder = null;
let jpegChain = Promise.resolve();
let queue = [];             // decoded frames waiting for their time: {pts, image, meta}
const metaByPts = new Map();
let lastIndex = null;
let waitingKey = true;
let speechStart = null;     // performance.now() of the speech's first send
let interruptAt = null;
let generation = 0;         // the generation an interrupt ends
let lastGeneration = 0;     // the newest generation received
let rebaseAt = null;        // INTERRUPTED: the first idle frame's index
let drawTimes = [];
let lastDrawAt = null;      // performance.now() of the last frame shown
let micStream = null, micNode = null, micSource = null;
let sendTimer = null;
const canvas = $('video');
const ctx2d = canvas.getContext('2d', { willReadFrequently: true });
const pageOpened = performance.now();
let h264Probe = null;       // VideoDecoder.isConfigSupported, asked once
let viewer = null;          // JanusViewer while the session is watched over WebRTC
let rtcEnded = false;       // the peer connection stopped: rebase on the next WebSocket frame
const rtcVideo = $('rtc');

function step(name) {
  if (stats.openSteps[name] === undefined) stats.openSteps[name] = Math.round(performance.now() - pageOpened);
}

function log(text) {
  const line = `${new Date().toISOString().slice(11, 23)} ${text}`;
  const el = $('log');
  el.textContent = (line + '\n' + el.textContent).slice(0, 8000);
}

function setState(s) { stats.state = s; $('state').textContent = s; }

function key() { return $('key').value.trim(); }

async function loadAvatars() {
  const k = key();
  const headers = k ? { Authorization: 'Bearer ' + k } : {};
  const res = await fetch('api/avatars', { headers });
  const body = await res.json();
  $('key-row').hidden = !body.auth_required;
  const select = $('avatar');
  select.innerHTML = '';
  for (const id of body.avatars || []) {
    const o = document.createElement('option');
    o.value = o.textContent = id;
    select.appendChild(o);
  }
  if (params.get('avatar')) select.value = params.get('avatar');
  if (!res.ok) log('avatars: ' + (body.error || res.status));
  return (body.avatars || []).length > 0;
}

function h264Supported() {
  if (h264Probe) return h264Probe;
  h264Probe = (async () => {
    if (!('VideoDecoder' in window)) return false;
    try {
      const r = await VideoDecoder.isConfigSupported({ codec: 'avc1.42E01F', optimizeForLatency: true });
      return r.supported;
    } catch { return false; }
  })();
  return h264Probe;
}

// The audio context and its player worklet, made once (concurrent callers share it).
let audioReady = null;
function ensureAudio() {
  if (audioReady) return audioReady;
  audioReady = (async () => {
    const ctx = new AudioContext({ latencyHint: 'interactive' });
    await ctx.audioWorklet.addModule('worklets.js');
    player = new AudioWorkletNode(ctx, 'lipsync-player', { outputChannelCount: [2] });
    player.connect(ctx.destination);
    player.port.onmessage = (e) => onPlayerMessage(e.data);
    audioCtx = ctx;
    if (audioCtx.state !== 'running') {
      $('unmute').hidden = false;
    }
  })();
  audioReady.catch(() => { audioReady = null; });
  return audioReady;
}

function onPlayerMessage(m) {
  if (m.type === 'clock') {
    clock = m;
    stats.audioUnderruns = m.underruns;
    stats.audioPlayedEnergy = m.energy;
    stats.audioBufferedMs = Math.round(m.buffered / audioCtx.sampleRate * 1000);
  } else if (m.type === 'beep') {
    // Read the canvas when the beep is heard (after the output latency).
    const heardIn = (m.time + (audioCtx.outputLatency || 0) - audioCtx.currentTime) * 1000;
    setTimeout(() => measureOffset(m.pos), Math.max(0, heardIn));
  }
}

// Session time (us since ptsBase) the listener hears now.
function playheadUs() {
  if (!audioCtx) return 0;
  const rate = audioCtx.sampleRate;
  let pos = clock.pos + (audioCtx.currentTime - clock.time) * rate;
  pos = Math.min(pos, clock.pos + clock.buffered);
  pos -= (audioCtx.outputLatency || 0) * rate;
  return Math.max(0, pos) / rate * 1e6;
}

async function connect() {
  disconnect();
  const model = $('avatar').value;
  if (!model) { log('no avatar to pick'); return; }
  setState('connecting');
  // The socket's handshake, the audio worklet and the codec probe overlap; the open
  // message goes as soon as all three are done.
  const url = new URL('ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const socket = new WebSocket(url);
  ws = socket;
  ws.binaryType = 'arraybuffer';
  const opened = new Promise((resolve, reject) => {
    socket.onopen = () => { step('socketOpen'); resolve(); };
    socket.onerror = () => reject(new Error('the session socket did not open'));
  });
  ws.onmessage = (e) => { if (socket === ws) onOutput(new Uint8Array(e.data)); };
  ws.onclose = (e) => {
    if (socket !== ws) return;
    stats.connected = false;
    stats.closeCode = e.code; stats.closeReason = e.reason;
    setState(e.code === 1000 ? 'closed' : 'error');
    if (e.code !== 1000) { stats.errors.push(`closed ${e.code} ${e.reason}`); log(`session closed: ${e.code} ${e.reason}`); }
  };
  const useRtc = $('transport').value === 'webrtc';
  stats.transport = useRtc ? 'webrtc' : 'websocket';
  const wantH264 = useRtc || $('codec').value !== 'mjpeg';
  const [, h264] = await Promise.all([ensureAudio().then(() => step('audioReady')), wantH264 ? h264Supported() : false]);
  if (socket !== ws) return;  // a newer connect() took over
  const ctxRate = audioCtx.sampleRate;
  sessionRate = SUPPORTED_RATES.includes(ctxRate) ? ctxRate : 16000;
  let codec = proto.Codec.MJPEG;
  if (wantH264) {
    if (h264) codec = proto.Codec.H264;
    else log('H.264 decoding is not available here: MJPEG');
  }
  stats.codec = codec === proto.Codec.H264 ? 'h264' : 'mjpeg';
  ptsBase = null; queue = []; lastDrawAt = null; rebaseAt = null; metaByPts.clear(); lastIndex = null; waitingKey = true;
  player.port.postMessage({ type: 'reset', pos: 0 });
  clock = { pos: 0, time: audioCtx.currentTime, buffered: 0 };
  try { await opened; } catch (e) { if (socket === ws) log(e.message); return; }
  if (socket !== ws) return;
  stats.connected = true;
  const k = key();
  socket.send(proto.encodeOpen({
    modelId: model, sampleRate: sessionRate, channels: 1, codec, fps: 25,
    lookaheadFrames: Number($('lookahead').value) || 0,
    authorization: k ? 'Bearer ' + k : '',
    webrtc: useRtc,
  }));
}

function disconnect() {
  stopMic(); stopSending();
  stopRtc();
  if (ws) { const old = ws; ws = null; try { old.close(); } catch { } }
  if (decoder) { try { decoder.close(); } catch { } decoder = null; }
  for (const q of queue) closeImage(q.image);
  queue = [];
  setState('disconnected');
}

function setupDecoder() {
  if (stats.codec !== 'h264') return;
  const o = stats.opened;
  decoder = new VideoDecoder({
    output: (frame) => {
      const meta = metaByPts.get(frame.timestamp);
      metaByPts.delete(frame.timestamp);
      enqueue(frame.timestamp, frame, meta || {});
    },
    error: (e) => { stats.errors.push('decoder: ' + e.message); log('decoder: ' + e.message); },
  });
  const level = o.width * o.height > 1280 * 720 ? '28' : '1F';
  decoder.configure({ codec: 'avc1.42E0' + level, optimizeForLatency: true, codedWidth: o.width, codedHeight: o.height });
}

function onOutput(u8) {
  let out;
  try { out = proto.decodeOutput(u8); } catch (e) { log('bad message: ' + e.message); return; }
  if (out.opened) {
    step('sessionOpened');
    stats.opened = out.opened;
    fps = out.opened.fps || 25;
    canvas.width = out.opened.width; canvas.height = out.opened.height;
    setupDecoder();
    setState('idle');
    log(`session ${out.opened.sessionId}: ${out.opened.width}x${out.opened.height} ${stats.codec} ${out.opened.audioSampleRate} Hz`);
  } else if (out.frame) {
    onFrame(out.frame);
  } else if (out.event) {
    const ev = out.event;
    const name = proto.EventKind[ev.kind] || String(ev.kind);
    stats.events.push({ kind: name, message: ev.message || '', frameIndex: ev.frameIndex ?? null, code: ev.code || 0 });
    if (stats.events.length > 200) stats.events.shift();
    stats.eventCounts[name] = (stats.eventCounts[name] || 0) + 1;
    if (name === 'ERROR') stats.errors.push(ev.message);
    // Barge-in: the frame the server named is the first idle one; the page drops what
    // it still holds of the speech and restarts its clock there (no waiting for it).
    if (name === 'INTERRUPTED' && ev.frameIndex >= 0) rebaseAt = ev.frameIndex;
    log(`event ${name}${ev.message ? ': ' + ev.message : ''}`);
  } else if (out.webrtc) {
    onWebRtc(out.webrtc);
  } else if (out.stats) {
    stats.serverStats = {
      framesSent: 0, speakingFrames: 0, repeatedFrames: 0, droppedFrames: 0,
      inferenceBatches: 0, bufferedAudioMs: 0, ...out.stats,
    };
  }
}

function s16ToFloat(u8) {
  const view = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  const n = u8.byteLength >> 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = view.getInt16(i * 2, true) / 32768;
  return out;
}

function resample(samples, from, to) {
  if (from === to) return samples;
  const n = Math.round(samples.length * to / from);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const x = i * from / to, j = Math.floor(x), f = x - j;
    out[i] = (samples[j] || 0) * (1 - f) + (samples[j + 1] ?? samples[j] ?? 0) * f;
  }
  return out;
}

function rebase(f) {
  for (const q of queue) closeImage(q.image);
  queue = [];
  metaByPts.clear();
  player.port.postMessage({ type: 'reset', pos: 0 });
  clock = { pos: 0, time: audioCtx.currentTime, buffered: 0 };
  ptsBase = f.ptsUs;
  if (!f.keyFrame) waitingKey = true;
}

function onFrame(f) {
  stats.framesReceived++;
  step('firstFrameReceived');
  if (rebaseAt !== null) {
    if (f.frameIndex < rebaseAt) { lastIndex = f.frameIndex; return; }  // speech: dropped
    rebaseAt = null;
    rebase(f);
  }
  if (lastIndex !== null && f.frameIndex > lastIndex + 1) stats.missingFrames += f.frameIndex - lastIndex - 1;
  lastIndex = f.frameIndex;
  lastGeneration = Math.max(lastGeneration, f.generation || 0);
  backgroundOf.set(f.frameIndex, f.backgroundIndex || 0);
  if (backgroundOf.size > 500) backgroundOf.delete(backgroundOf.keys().next().value);
  if (stats.transport === 'webrtc') rtcNoteFrame(f);
  if (stats.webrtc.active) return;  // the peer connection plays this session
  if (rtcEnded) { rtcEnded = false; rebase(f); }
  if (ptsBase === null) ptsBase = f.ptsUs;
  const meta = { index: f.frameIndex, speaking: !!f.speaking, background: f.backgroundIndex || 0, generation: f.generation || 0 };
  // Sound: this frame's samples start at its own position on the session clock.
  if (f.audio && f.audio.length) {
    const rate = f.audioSampleRate || sessionRate;
    const samples = resample(s16ToFloat(f.audio), rate, audioCtx.sampleRate);
    const pos = Math.round((f.ptsUs - ptsBase) / 1e6 * audioCtx.sampleRate);
    player.port.postMessage({ type: 'push', pos, samples }, [samples.buffer]);
  }
  if (!f.video || !f.video.length) return;
  if (stats.codec === 'h264') {
    if (waitingKey && !f.keyFrame) { sendControl(proto.Control.KEY_FRAME); return; }
    waitingKey = false;
    metaByPts.set(f.ptsUs, meta);
    try {
      decoder.decode(new EncodedVideoChunk({ type: f.keyFrame ? 'key' : 'delta', timestamp: f.ptsUs, data: f.video }));
    } catch (e) { stats.errors.push('decode: ' + e.message); waitingKey = true; }
  } else {
    const data = f.video.slice();
    jpegChain = jpegChain.then(async () => {
      try {
        const image = await createImageBitmap(new Blob([data], { type: 'image/jpeg' }));
        enqueue(f.ptsUs, image, meta);
      } catch (e) { stats.errors.push('jpeg: ' + e.message); }
    });
  }
}

function enqueue(pts, image, meta) {
  if (ptsBase !== null && pts < ptsBase) { closeImage(image); return; }  // before a rebase
  queue.push({ pts, image, meta });
  if (queue.length > 100) { closeImage(queue.shift().image); stats.lateFrames++; }
}

function closeImage(image) { try { image.close(); } catch { } }

// Burned-in frame index of the demo avatar (make-demo --burn-index): the top 16 rows, 16
// cells across (cell 0 white, cell 1 black, cells 2..15 the index, MSB first).
// What a frame shown at time t (either transport) says: speaking or idle, the first
// speaking frame after speech was sent, the first idle frame after an interrupt.
function noteShownFrame(meta, t) {
  stats.speaking = meta.speaking;
  if (meta.speaking) stats.speakingFramesDisplayed++; else stats.idleFramesDisplayed++;
  if (meta.speaking && speechStart !== null) {
    stats.firstFrameLatencyMs = Math.round(t - speechStart);
    stats.firstFrameLatencies.push(stats.firstFrameLatencyMs);
    speechStart = null;
  }
  if (!meta.speaking && interruptAt !== null && meta.generation > generation) {
    stats.interruptToIdleMs = Math.round(t - interruptAt);
    interruptAt = null;
  }
  if (stats.state === 'idle' || stats.state === 'speaking') setState(meta.speaking ? 'speaking' : 'idle');
}

function readPixelIndex() {
  const w = canvas.width;
  if (w < 32 || canvas.height < 8) return null;
  const row = ctx2d.getImageData(0, 6, w, 1).data;
  const cell = w / 16;
  const bit = (c) => {
    const x = Math.floor(c * cell + cell / 2) * 4;
    return (row[x] + row[x + 1] + row[x + 2]) / 3 > 128 ? 1 : 0;
  };
  if (bit(0) !== 1 || bit(1) !== 0) return null;
  let v = 0;
  for (let c = 2; c < 16; c++) v = v * 2 + bit(c);
  return v;
}

function draw() {
  if (stats.webrtc.active) { drawRtc(); return; }
  if (!audioCtx || ptsBase === null || queue.length === 0) return;
  const now = playheadUs() + ptsBase;
  let show = null;
  while (queue.length && queue[0].pts <= now) {
    if (show) { closeImage(show.image); stats.lateFrames++; }
    show = queue.shift();
  }
  if (!show) return;
  ctx2d.drawImage(show.image, 0, 0, canvas.width, canvas.height);
  closeImage(show.image);
  const t = performance.now();
  if (lastDrawAt !== null && t - lastDrawAt > 120) {
    stats.freezes++;
    stats.longestFreezeMs = Math.max(stats.longestFreezeMs, Math.round(t - lastDrawAt));
  }
  lastDrawAt = t;
  stats.framesDisplayed++;
  drawTimes.push(t);
  while (drawTimes.length && drawTimes[0] < t - 1000) drawTimes.shift();
  stats.fps = drawTimes.length;
  const meta = show.meta;
  stats.lastBackgroundIndex = meta.background;
  stats.pixelIndex = readPixelIndex();
  if (stats.pageOpenToFirstFrameMs === null) {
    stats.pageOpenToFirstFrameMs = Math.round(t - pageOpened);
    stats.navigationToFirstFrameMs = Math.round(t);
    step('firstFrameShown');
  }
  noteShownFrame(meta, t);
  updateFigures();
}

// The beep at session-clock sample `pos` (ctx rate) is heard now: which frame is shown?
function measureOffset(pos) {
  stats.beeps++;
  const shown = readPixelIndex();
  if (shown === null || ptsBase === null) return;
  const frameUs = 1e6 / fps;
  const beepUs = pos / audioCtx.sampleRate * 1e6 + ptsBase;  // the beep's place on the clock
  const expected = Math.floor(beepUs / frameUs);  // the frame that owns it
  // The pixels hold the avatar's background index; find the session frame near
  // `expected` that showed that background (ping-pong: the nearest one).
  let best = null;
  for (let k = expected - 12; k <= expected + 12; k++) {
    const bg = backgroundOf.get(k);
    if (bg === undefined || bg !== shown) continue;
    if (best === null || Math.abs(k - expected) < Math.abs(best - expected)) best = k;
  }
  if (best === null) return;
  // + : the picture shown is behind the sound.
  const offset = Math.round(beepUs - (best * frameUs + frameUs / 2));
  stats.avOffsetMs = Math.round(offset / 1000);
  stats.avOffsets.push(stats.avOffsetMs);
}
const backgroundOf = new Map();  // session frame index -> background index (recent)

// --- WebRTC (Janus) ---

function stopRtc() {
  if (viewer) { viewer.close(); viewer = null; }
  if (stats.webrtc.active) { stats.webrtc.active = false; rtcEnded = true; waitingKey = true; }
  rtcVideo.srcObject = null;
  if (rtcSound) { try { rtcSound.source.disconnect(); rtcSound.node.disconnect(); } catch { } rtcSound = null; }
  rtcSync.reset();
}

// What the viewer sees and hears over WebRTC. The session's frames still arrive on the
// WebSocket (index, speaking, generation, background, sound) and the RTP timestamps are
// the frame index x 3600 (90 kHz, 25 fps) from an unknown base (Janus rewrites it per
// viewer): `rtcSync` finds that base by matching the burned background index read from
// each displayed WebRTC frame against the WebSocket's frames, so every displayed frame
// gets its session index, hence speaking/idle (interrupt to idle) and its place on the
// session clock (A/V offset). The sound of the peer connection plays through the page's
// AudioContext past a worklet that reports each beep's onset; the beeps' session times
// come from the WebSocket's copy of the sound.
let rtcSound = null;        // {source, node}: the remote audio track through the worklet
const rtcMeta = new Map();  // session frame index -> {speaking, generation, background}
const rtcBeeps = [];        // session times (us) of beep onsets in the WebSocket's sound
const rtcShown = [];        // the last displayed WebRTC frames: {t (performance.now), index}
const rtcOnset = { quiet: 0 };
const rtcSync = {
  k: null,                  // session index = RTP frame count + k
  samples: [],              // the last displayed frames: {frame (RTP frame count), bg}
  lastRtp: null, ext: 0, misses: 0,
  reset() { this.k = null; this.samples = []; this.lastRtp = null; this.ext = 0; this.misses = 0; },
  // The session index of a displayed frame (null until the base is found).
  index(rtpTimestamp, bg) {
    if (this.lastRtp !== null) {
      let d = (rtpTimestamp - this.lastRtp) >>> 0;
      if (d >= 2 ** 31) d -= 2 ** 32;
      this.ext += d;
    }
    this.lastRtp = rtpTimestamp;
    const frame = Math.round(this.ext * fps / 90000);
    if (bg === null) return this.k === null ? null : frame + this.k;
    if (this.k !== null) {
      const want = backgroundOf.get(frame + this.k);
      if (want === undefined || want === bg) { this.misses = 0; return frame + this.k; }
      if (++this.misses < 4) return frame + this.k;
      this.k = null;  // the base moved (a new subscription, a re-created mountpoint)
      this.samples = [];
    }
    this.samples.push({ frame, bg });
    if (this.samples.length > 8) this.samples.shift();
    if (this.samples.length < 8 || lastIndex === null) return null;
    // Shifts that put the newest sample on a recent WebSocket frame with its background;
    // 8 frames of the ping-pong background leave one (the sequence is not periodic
    // within 98 frames), read errors aside: all 8 must agree.
    const found = [];
    for (let i = lastIndex; i >= lastIndex - 90; i--) {
      if (backgroundOf.get(i) !== bg) continue;
      const k = i - frame;
      if (this.samples.every((x) => backgroundOf.get(x.frame + k) === x.bg)) found.push(k);
    }
    if (found.length !== 1) return null;
    this.k = found[0];
    this.misses = 0;
    return frame + this.k;
  },
};

function rtcNoteFrame(f) {
  rtcMeta.set(f.frameIndex, { speaking: !!f.speaking, generation: f.generation || 0 });
  if (rtcMeta.size > 500) rtcMeta.delete(rtcMeta.keys().next().value);
  // Beep onsets in the session's sound (as the player worklet finds them: a loud sample
  // after >= 50 ms of quiet), on the session clock.
  if (!f.audio || !f.audio.length) return;
  const rate = f.audioSampleRate || sessionRate;
  const view = new DataView(f.audio.buffer, f.audio.byteOffset, f.audio.byteLength);
  for (let i = 0; i < f.audio.byteLength >> 1; i++) {
    const a = Math.abs(view.getInt16(i * 2, true) / 32768);
    if (a > 0.25) {
      if (rtcOnset.quiet >= rate * 0.05) {
        rtcBeeps.push(f.ptsUs + i / rate * 1e6);
        if (rtcBeeps.length > 50) rtcBeeps.shift();
      }
      rtcOnset.quiet = 0;
    } else if (a < 0.02) {
      rtcOnset.quiet++;
    }
  }
}

// The remote sound plays through the page's AudioContext (as the WebSocket transport's
// does; the <video> element is muted, heard once): source -> onset worklet -> speakers,
// so the worklet's time + the context's output latency is when the viewer hears it.
async function rtcListen(track) {
  await ensureAudio();
  if (rtcSound && rtcSound.track === track) return;
  if (rtcSound) { try { rtcSound.source.disconnect(); rtcSound.node.disconnect(); } catch { } }
  const source = audioCtx.createMediaStreamSource(new MediaStream([track]));
  const node = new AudioWorkletNode(audioCtx, 'lipsync-onsets', { outputChannelCount: [2] });
  node.port.onmessage = (e) => {
    if (e.data.type === 'beep') onRtcBeep(e.data);
    else if (e.data.type === 'energy') stats.webrtc.playedEnergy = e.data.energy;
  };
  source.connect(node).connect(audioCtx.destination);
  rtcSound = { source, node, track };
  rtcVideo.muted = true;
}

// A beep of the remote sound is heard at context time m.time (+ output latency): which
// frame does the viewer see then?
function onRtcBeep(m) {
  if (!stats.webrtc.active) return;
  stats.beeps++;
  const heardAt = performance.now() + (m.time + (audioCtx.outputLatency || 0) - audioCtx.currentTime) * 1000;
  setTimeout(() => {
    let shown = null;
    for (const x of rtcShown) if (x.t <= heardAt) shown = x;
    if (!shown || shown.index === null) return;
    const frameUs = 1e6 / fps;
    const mid = shown.index * frameUs + frameUs / 2;
    // The beep the viewer hears: the onset nearest the picture (beeps are 1 s apart).
    let beepUs = null;
    for (const b of rtcBeeps) if (beepUs === null || Math.abs(b - mid) < Math.abs(beepUs - mid)) beepUs = b;
    if (beepUs === null || Math.abs(beepUs - mid) > 500000) return;
    stats.avOffsetMs = Math.round((beepUs - mid) / 1000);  // +: the picture is behind the sound
    stats.avOffsets.push(stats.avOffsetMs);
    updateFigures();
  }, Math.max(0, heardAt - performance.now()) + 60);
}

// Each WebRTC frame the <video> presents: drawn to the canvas, its burned index read back,
// its session index found; the speaking/idle figures as for WebSocket frames.
function onRtcPresented(now, md) {
  rtcVideo.requestVideoFrameCallback(onRtcPresented);
  if (!stats.webrtc.active || !rtcVideo.videoWidth) return;
  if (canvas.width !== rtcVideo.videoWidth) canvas.width = rtcVideo.videoWidth;
  if (canvas.height !== rtcVideo.videoHeight) canvas.height = rtcVideo.videoHeight;
  ctx2d.drawImage(rtcVideo, 0, 0, canvas.width, canvas.height);
  const bg = readPixelIndex();
  stats.pixelIndex = bg;
  const index = md.rtpTimestamp === undefined ? null : rtcSync.index(md.rtpTimestamp, bg);
  const t = md.expectedDisplayTime || now;
  rtcShown.push({ t, index });
  if (rtcShown.length > 100) rtcShown.shift();
  const w = stats.webrtc;
  w.presentedFrames = md.presentedFrames;
  w.syncedFrames += index !== null ? 1 : 0;
  const want = index === null ? undefined : backgroundOf.get(index);
  if (want !== undefined && bg !== null && want !== bg) w.syncMismatches++;
  stats.framesDisplayed++;
  const meta = index === null ? null : rtcMeta.get(index);
  if (!meta) return;
  stats.lastBackgroundIndex = want ?? null;
  noteShownFrame(meta, t);
}
if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) rtcVideo.requestVideoFrameCallback(onRtcPresented);

// Sound and video start at one matched receiver delay (web/janus.js): without it chromium
// plays each as soon as it can until it has Janus's sender reports for both and has
// slewed them together (10-25 s; the sound heard 60-500 ms after the picture meanwhile).
// From 1 s to RTC_MATCH_S s the target is raised (never lowered; 100 ms a second at most,
// up to 300) toward the larger of the two delays the receivers reached in the last second
// when one went past it (a busy box or a jittery link: the sound's jitter buffer grows
// past 150 ms), so the two stay matched until chromium's own lip sync holds; then it
// comes back down 20 ms a second to the starting target.
// ?rtcDelay=MS sets the starting target, 0: the browser's own delays, nothing set
// (docs/STREAMING.md "A/V offset right after subscribing").
const RTC_JITTER_TARGET_MS = 150;
const RTC_JITTER_TARGET_MAX_MS = 300;
const RTC_MATCH_FROM_S = 1;   // the first second's buffers hold the start-up burst
const RTC_MATCH_S = 30;
const RTC_UNMATCH_STEP_MS = 20;  // a second, after RTC_MATCH_S
const RTC_MATCH_STEP_MS = 100;  // the video's one longer wait stays under a freeze (190 ms)
const rtcJitterTargetMs = params.has('rtcDelay') ? Math.max(0, Number(params.get('rtcDelay')) || 0) : RTC_JITTER_TARGET_MS;

function onWebRtc(info) {
  const w = stats.webrtc;
  w.state = proto.WebRtcState[info.state] || String(info.state);
  w.message = info.message || '';
  log(`webrtc ${w.state}${w.message ? ': ' + w.message : ''}`);
  if (w.state !== 'READY') { stopRtc(); return; }  // the WebSocket frames play meanwhile
  stopRtc();
  w.mountpointId = info.mountpointId;
  w.subscriptions++;
  w.jitterBufferTargetMs = rtcJitterTargetMs;
  const mine = new JanusViewer(info, {
    iceTransportPolicy: params.get('relay') ? 'relay' : 'all',
    jitterBufferTargetMs: rtcJitterTargetMs,
    onTrack: (track, stream) => {
      if (viewer !== mine) return;
      if (rtcVideo.srcObject !== stream) rtcVideo.srcObject = stream;
      rtcVideo.play().catch((e) => log('webrtc play: ' + e.message));
      if (track.kind === 'audio') rtcListen(track).catch((e) => log('webrtc sound: ' + e.message));
    },
    onState: (s) => {
      if (viewer !== mine) return;
      log('janus: ' + s);
      if (s === 'webrtc up') {
        // The picture comes from the peer connection now: drop what the WebSocket
        // path holds, and ask for a key frame (a viewer joined).
        for (const q of queue) closeImage(q.image);
        queue = [];
        if (player) player.port.postMessage({ type: 'reset', pos: 0 });
        w.active = true;
        w.activeSince = performance.now();
        for (const k of Object.keys(rtcJitterLast)) delete rtcJitterLast[k];
        sendControl(proto.Control.KEY_FRAME);
      } else if (s.startsWith('hangup') || s.startsWith('janus unreachable')) {
        if (w.active) { w.active = false; rtcEnded = true; waitingKey = true; }
      }
    },
  });
  viewer = mine;
  mine.start().catch((e) => { if (viewer === mine) { log('webrtc: ' + e.message); stats.errors.push('webrtc: ' + e.message); } });
}

function drawRtc() {
  if ('requestVideoFrameCallback' in rtcVideo) return;  // onRtcPresented draws
  if (rtcVideo.readyState < 2 || !rtcVideo.videoWidth) return;
  if (canvas.width !== rtcVideo.videoWidth) canvas.width = rtcVideo.videoWidth;
  if (canvas.height !== rtcVideo.videoHeight) canvas.height = rtcVideo.videoHeight;
  ctx2d.drawImage(rtcVideo, 0, 0, canvas.width, canvas.height);
  stats.pixelIndex = readPixelIndex();
}

// The peer connection's figures, once a second (getStats: inbound-rtp video and audio).
let rtcLast = null;
async function pollRtcStats() {
  const pc = viewer && viewer.pc;
  if (!pc || !stats.webrtc.active) { rtcLast = null; return; }
  const report = await pc.getStats();
  const w = stats.webrtc;
  const t = performance.now();
  const delays = {};  // kind -> ms, over the last second (jitterBufferDelay / emitted)
  report.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.jitterBufferEmittedCount && (r.kind === 'audio' || r.kind === 'video')) {
      const last = rtcJitterLast[r.kind];
      if (last && r.jitterBufferEmittedCount > last.n) {
        delays[r.kind] = (r.jitterBufferDelay - last.d) / (r.jitterBufferEmittedCount - last.n) * 1000;
      }
      rtcJitterLast[r.kind] = { d: r.jitterBufferDelay, n: r.jitterBufferEmittedCount };
    }
    if (r.type === 'transport' && r.selectedCandidatePairId) {
      const pair = report.get(r.selectedCandidatePairId);
      const local = pair && report.get(pair.localCandidateId);
      if (local) w.localCandidateType = local.candidateType;  // host | srflx | relay
    }
    if (r.type !== 'inbound-rtp') return;
    if (r.kind === 'video') {
      if (rtcLast) w.fps = Math.round((r.framesDecoded - rtcLast.frames) * 1000 / (t - rtcLast.t));
      rtcLast = { frames: r.framesDecoded, t };
      w.framesDecoded = r.framesDecoded || 0;
      w.freezeCount = r.freezeCount || 0;
      w.totalFreezesDurationMs = Math.round((r.totalFreezesDuration || 0) * 1000);
      w.framesDropped = r.framesDropped || 0;
      if (r.jitterBufferEmittedCount) {
        w.videoJitterBufferDelayMs = Math.round(r.jitterBufferDelay / r.jitterBufferEmittedCount * 1000);
      }
      stats.fps = w.fps;
    } else if (r.kind === 'audio') {
      w.audioPacketsReceived = r.packetsReceived || 0;
      w.audioSamplesReceived = r.totalSamplesReceived || 0;
      w.audioEnergy = r.totalAudioEnergy || 0;
      w.concealedSamples = r.concealedSamples || 0;
      if (r.jitterBufferEmittedCount) {
        w.jitterBufferDelayMs = Math.round(r.jitterBufferDelay / r.jitterBufferEmittedCount * 1000);
      }
    }
  });
  rtcMatchTargets(delays);
  updateFigures();
}
setInterval(() => { pollRtcStats().catch(() => {}); }, 1000);

// Keeps both receivers at one delay for the first RTC_MATCH_S s (RTC_JITTER_TARGET_MS),
// then back down to the starting target.
const rtcJitterLast = {};
function rtcMatchTargets(delays) {
  const w = stats.webrtc;
  if (!viewer || !w.jitterBufferTargetMs || w.activeSince === null) return;
  const since = performance.now() - w.activeSince;
  if (since > RTC_MATCH_S * 1000) {
    // Chromium's lip sync holds now: back down to the starting target, slowly (both
    // receivers alike; its sync moves faster than this), so a busy start's long buffer
    // does not stay for the session.
    if (w.jitterBufferTargetMs > rtcJitterTargetMs) {
      w.jitterBufferTargetMs = Math.max(rtcJitterTargetMs, w.jitterBufferTargetMs - RTC_UNMATCH_STEP_MS);
      viewer.setJitterBufferTarget(w.jitterBufferTargetMs);
    }
    return;
  }
  if (since < RTC_MATCH_FROM_S * 1000) return;
  const most = Math.max(delays.audio || 0, delays.video || 0);
  if (most <= w.jitterBufferTargetMs + 10) return;
  // At most RTC_MATCH_STEP_MS a second: the video waits that much longer once (no freeze).
  const ms = Math.min(RTC_JITTER_TARGET_MAX_MS, w.jitterBufferTargetMs + RTC_MATCH_STEP_MS,
    Math.ceil(most / 10) * 10 + 10);
  if (ms <= w.jitterBufferTargetMs) return;
  w.jitterBufferTargetMs = ms;
  w.jitterBufferTargetRaises++;
  viewer.setJitterBufferTarget(ms);
}

function updateFigures() {
  const s = stats.serverStats || {};
  $('fig-fps').textContent = stats.fps;
  $('fig-latency').textContent = stats.firstFrameLatencyMs ?? '–';
  $('fig-av').textContent = stats.avOffsetMs ?? '–';
  $('fig-late').textContent = `${stats.lateFrames} / ${stats.missingFrames + (s.droppedFrames || 0)}`;
  $('fig-repeated').textContent = s.repeatedFrames ?? 0;
  $('fig-batches').textContent = s.inferenceBatches ?? 0;
  $('fig-buffer').textContent = stats.audioBufferedMs;
  $('fig-interrupt').textContent = stats.interruptToIdleMs ?? '–';
}

function send(bytes) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(bytes); }
function sendControl(kind) { send(proto.encodeControl(kind)); }

function floatToS16(samples) {
  const out = new Uint8Array(samples.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < samples.length; i++) {
    const v = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(i * 2, Math.round(v * 32767), true);
  }
  return out;
}

function markSpeech() { if (speechStart === null) speechStart = performance.now(); }

// --- sources of speech ---

async function startMic() {
  if (micStream) return;
  await ensureAudio();
  micStream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  micSource = audioCtx.createMediaStreamSource(micStream);
  micNode = new AudioWorkletNode(audioCtx, 'lipsync-capture', { numberOfOutputs: 1 });
  const mute = audioCtx.createGain();
  mute.gain.value = 0;
  micSource.connect(micNode).connect(mute).connect(audioCtx.destination);
  const chunk = Math.round(audioCtx.sampleRate / 50);  // 20 ms
  let parts = [];
  let pending = 0;
  const node = micNode;
  let first = true;
  micNode.port.onmessage = (e) => {
    if (node !== micNode) return;  // stopped
    parts.push(e.data); pending += e.data.length;
    if (pending < chunk) return;
    const all = new Float32Array(pending);
    let o = 0;
    for (const b of parts) { all.set(b, o); o += b.length; }
    parts = []; pending = 0;
    if (first) { markSpeech(); first = false; }  // latency from the first chunk only
    send(proto.encodeAudio(floatToS16(resample(all, audioCtx.sampleRate, sessionRate))));
  };
  $('mic').textContent = 'Stop microphone';
  log('microphone on');
}

function stopMic(endOfSpeech = true) {
  if (!micStream) return;
  micStream.getTracks().forEach((t) => t.stop());
  try { micNode.port.onmessage = null; micSource.disconnect(); micNode.disconnect(); } catch { }
  micStream = null; micNode = null; micSource = null;
  $('mic').textContent = 'Speak (microphone)';
  if (endOfSpeech) sendControl(proto.Control.END_OF_SPEECH);
}

function stopSending() { if (sendTimer) { clearTimeout(sendTimer); sendTimer = null; } }

// Sends PCM (session rate) in 200 ms chunks, a little ahead of real time.
function sendPcm(samples) {
  stopSending();
  const chunk = Math.round(sessionRate / 5);
  let offset = 0;
  markSpeech();
  const started = performance.now();
  const step = () => {
    // Up to 2 s ahead of real time (the server buffers up to 60 s).
    const due = (performance.now() - started) / 1000 * sessionRate + 2 * sessionRate;
    while (offset < samples.length && offset < due) {
      send(proto.encodeAudio(floatToS16(samples.subarray(offset, offset + chunk))));
      offset += chunk;
    }
    if (offset < samples.length) { sendTimer = setTimeout(step, 100); return; }
    sendTimer = null;
    sendControl(proto.Control.END_OF_SPEECH);
  };
  step();
}

async function playWav(file) {
  await ensureAudio();
  const data = await file.arrayBuffer();
  const buffer = await audioCtx.decodeAudioData(data);
  const mono = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const ch = buffer.getChannelData(c);
    for (let i = 0; i < ch.length; i++) mono[i] += ch[i] / buffer.numberOfChannels;
  }
  log(`WAV: ${buffer.duration.toFixed(2)} s at ${buffer.sampleRate} Hz`);
  sendPcm(resample(mono, buffer.sampleRate, sessionRate));
}

function speak() {
  const text = $('text').value.trim();
  if (!text) return;
  markSpeech();
  send(proto.encodeSpeak(text.slice(0, 2000), $('voice').value.trim()));
}

function interrupt() {
  stopSending();
  stopMic(false);
  sendControl(proto.Control.INTERRUPT);
  interruptAt = performance.now();
  stats.interruptToIdleMs = null;
  generation = lastGeneration;
  speechStart = null;
  // Drop what is buffered here too: sound and frames ahead of the playhead.
  if (ptsBase !== null) {
    const now = playheadUs();
    player.port.postMessage({ type: 'flush', pos: Math.round(now / 1e6 * audioCtx.sampleRate) + Math.round(audioCtx.sampleRate / fps) });
    const keep = [];
    for (const q of queue) { if (q.pts - ptsBase <= now + 1e6 / fps) keep.push(q); else closeImage(q.image); }
    queue = keep;
  }
  log('interrupt');
}

// --- wiring ---

$('connect').onclick = () => connect();
$('avatar').onchange = () => connect();
$('codec').onchange = () => connect();
$('transport').onchange = () => connect();
$('mic').onclick = () => (micStream ? stopMic() : startMic().catch((e) => log('microphone: ' + e.message)));
$('wav').onchange = (e) => {
  const file = e.target.files[0];
  e.target.value = '';  // the same file again is a new upload
  if (file) playWav(file).catch((err) => log('WAV: ' + err.message));
};
$('speak').onclick = () => speak();
$('text').onkeydown = (e) => { if (e.key === 'Enter') speak(); };
$('interrupt').onclick = () => interrupt();
$('key').onchange = async () => { localStorage.setItem('lipsync-key', key()); if (await loadAvatars()) connect(); };
$('unmute').onclick = async () => { await audioCtx.resume(); $('unmute').hidden = true; };

function tick() { draw(); requestAnimationFrame(tick); }
requestAnimationFrame(tick);
setInterval(draw, 10);  // also when the page is hidden (rAF paused)
setInterval(() => {
  if (stats.speaking === false && (stats.state === 'idle' || stats.state === 'speaking')) updateFigures();
}, 500);

window.lipsync = {
  connect, disconnect, speak, interrupt, startMic, stopMic, playWav, sendControl,
  webrtcInfo: () => (viewer ? viewer.info : null),  // the mountpoint this page watches (tests)
  outputLatencyMs: () => (audioCtx ? Math.round(((audioCtx.outputLatency || 0) + (audioCtx.baseLatency || 0)) * 1000) : null),
};

(async () => {
  $('key').value = params.get('key') || localStorage.getItem('lipsync-key') || '';
  if (params.get('codec')) $('codec').value = params.get('codec');
  if (params.get('transport')) $('transport').value = params.get('transport');
  try {
    h264Supported();
    const audio = ensureAudio().catch((e) => log('audio: ' + e.message));
    const wanted = params.get('avatar');
    if (wanted) {
      // The avatar is named in the address: open its session while the list loads.
      const o = document.createElement('option');
      o.value = o.textContent = wanted;
      $('avatar').appendChild(o);
      const listed = loadAvatars().then(() => step('avatarsListed'));
      await audio;
      await connect();
      await listed;
    } else {
      const any = await loadAvatars();
      step('avatarsListed');
      await audio;
      if (any) await connect();
    }
  } catch (e) { log('start: ' + e.message); stats.errors.push(e.message); }
})();
