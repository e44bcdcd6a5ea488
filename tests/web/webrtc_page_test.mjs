// Live sessions over WebRTC through Janus (issue 13), with the real programs: Debian's
// `janus` with the shipped deploy/janus configuration (only ports and folders changed),
// the real `lipsync serve` with a webrtc section, and the real page in Debian's headless
// chromium (playwright-core) with the WebRTC transport:
//   - wrong `api_secret` or `admin_key` against the running Janus: `lipsync serve` and
//     `lipsync compositing` exit at startup with a message naming the setting;
//   - getStats on the page's peer connection: frames decoded at about 25 fps, no long
//     freeze, audio packets flowing (and sound energy once text is spoken);
//   - the A/V offset where the viewer sees and hears it: the burned frame index read from
//     each presented WebRTC frame (requestVideoFrameCallback), the beeps of an uploaded
//     WAV detected in the peer connection's sound (web/app.js "rtcSync"), the first WAV
//     after subscribing within ±150 ms (both receivers start at one matched delay);
//   - the interrupt reaches the viewer as an idle WebRTC frame;
//   - a second viewer of the same mountpoint (janus.js on another page) decodes too; a
//     second session gets its own mountpoint;
//   - a session that ends removes its mountpoint;
//   - relay only (when Debian's coturn is installed; WEBRTC_RELAY=0 skips it): a page
//     with iceTransportPolicy 'relay' gets the same stream through coturn listening on
//     loopback (deploy/coturn/turnserver.conf, its one-box lines uncommented) and relaying
//     on the box's own address;
//   - Janus restarted mid-session: the page says LOST, shows the WebSocket's frames
//     meanwhile, and subscribes again by itself to the re-created mountpoint.
// Bounds are LOOSE (a loaded 2-core box); the figures are printed.
// WEBRTC_BENCH_MINUTES=N (bench/web/webrtc_bench.sh) runs instead one viewer for N
// minutes with a beep WAV every 20 s and reports the A/V offset at the start and the end,
// fps and freezes; WEBRTC_BENCH_START=ROUNDS (webrtc_bench.sh start) compares the first
// 25 s after subscribing across page variants (below).
// Usage: node webrtc_page_test.mjs  (env: LIPSYNC_BIN, WORK, PLAYWRIGHT_DIR, CHROMIUM, ROOT)
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  check, failures, freePort, loadPlaywright, runToExit, sleep, startServe, stats, summary,
  waitFor as waitForEvery, writeInferenceYaml, writeWav,
} from './page_helpers.mjs';

const BIN = process.env.LIPSYNC_BIN;
const WORK = process.env.WORK;
const ROOT = process.env.ROOT;
const { chromium } = loadPlaywright();
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// Where coturn listens (loopback by default) and relays: the box's own non-loopback
// address, where Janus gathers its ICE candidates (a relayed candidate on loopback never
// pairs with them: deploy/coturn/turnserver.conf).
const TURN_HOST = process.env.TURN_HOST || '127.0.0.1';
const RELAY_IP = process.env.TURN_RELAY_IP || Object.values(os.networkInterfaces()).flat()
  .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
// The relay-only phase runs when coturn is installed (WEBRTC_RELAY=0: not at all).
const RELAY = process.env.WEBRTC_RELAY !== '0' && fs.existsSync('/usr/bin/turnserver');
const BENCH_MINUTES = Number(process.env.WEBRTC_BENCH_MINUTES || 0);
// WEBRTC_BENCH_START=ROUNDS (bench/web/webrtc_bench.sh start): the first 25 s after
// subscribing, side by side: each round opens a fresh page (its own session and
// subscription) per variant of WEBRTC_BENCH_VARIANTS (page query strings, comma
// separated, alternating) and plays the WAV at once, ~10 s and ~20 s later.
const BENCH_START = Number(process.env.WEBRTC_BENCH_START || 0);
const BENCH_VARIANTS = (process.env.WEBRTC_BENCH_VARIANTS || 'rtcDelay=0,').split(',');
const API_SECRET = 'change-me-api-secret', ADMIN_KEY = 'change-me-admin-key', ADMIN_SECRET = 'change-me-admin-secret';
const figures = {};
const waitFor = (page, fn, timeoutMs, what, arg) => waitForEvery(page, fn, timeoutMs, what, arg, 200);

// Janus from the shipped files, ports and folders templated (as tests/webrtc/janus_fixture.h).
class Janus {
  constructor(dir, httpPort, adminPort) { Object.assign(this, { dir, httpPort, adminPort }); }
  async start() {
    fs.mkdirSync(this.dir, { recursive: true });
    for (const name of ['janus.jcfg', 'janus.transport.http.jcfg', 'janus.plugin.streaming.jcfg']) {
      let s = fs.readFileSync(path.join(ROOT, 'deploy', 'janus', name), 'utf8');
      s = s.replace('configs_folder = "/etc/janus"', `configs_folder = "${this.dir}"`)
        .replace('port = 8088', `port = ${this.httpPort}`)
        .replace('admin_port = 7088', `admin_port = ${this.adminPort}`);
      fs.writeFileSync(path.join(this.dir, name), s);
    }
    this.log = '';
    this.proc = spawn('/usr/bin/janus', ['-F', this.dir, '-C', path.join(this.dir, 'janus.jcfg'), '-d', '4',
      '-r', '30000-31000'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout.on('data', (d) => { this.log += d; });
    this.proc.stderr.on('data', (d) => { this.log += d; });
    const end = Date.now() + 15000;
    while (!this.log.includes('HTTP webserver started')) {
      if (Date.now() > end || this.proc.exitCode !== null) throw new Error('janus did not start:\n' + this.log.slice(-2000));
      await sleep(100);
    }
  }
  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    const done = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGTERM');
    await Promise.race([done, sleep(5000)]);
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
  url() { return `http://127.0.0.1:${this.httpPort}/janus`; }
  // The lipsync mountpoints Janus has now (the streaming plugin's list, with the admin_key).
  async mountpoints() {
    const post = async (u, body) => (await fetch(u, { method: 'POST', body: JSON.stringify({ ...body, apisecret: API_SECRET, transaction: 't' }) })).json();
    const s = await post(this.url(), { janus: 'create' });
    const h = await post(`${this.url()}/${s.data.id}`, { janus: 'attach', plugin: 'janus.plugin.streaming' });
    const r = await post(`${this.url()}/${s.data.id}/${h.data.id}`, { janus: 'message', body: { request: 'list', admin_key: ADMIN_KEY } });
    await post(`${this.url()}/${s.data.id}`, { janus: 'destroy' });
    return (r.plugindata.data.list || []).filter((m) => (m.description || '').startsWith('lipsync:')).map((m) => m.id);
  }
}

// Frames decoded per second by the page's peer connection, over `ms`.
async function rtcFps(page, ms) {
  const a = await stats(page);
  await sleep(ms);
  const b = await stats(page);
  return {
    fps: Math.round((b.webrtc.framesDecoded - a.webrtc.framesDecoded) / (ms / 1000) * 10) / 10,
    freezes: b.webrtc.freezeCount - a.webrtc.freezeCount,
    audioPackets: b.webrtc.audioPacketsReceived - a.webrtc.audioPacketsReceived,
  };
}

// The compositing config of a test's `lipsync serve`, with its webrtc section.
function compositingYaml({ compPort, inferPort, webPort, models, janus, turnPort, apiSecret = API_SECRET, adminKey = ADMIN_KEY }) {
  return `server:
  port: "127.0.0.1:${compPort}"
inference_server:
  url: "127.0.0.1:${inferPort}"
model_root: "${models}"
logging:
  level: "info"
web:
  host: "127.0.0.1"
  port: ${webPort}
webrtc:
  enabled: true
  janus_url: "${janus.url()}"
  admin_url: "http://127.0.0.1:${janus.adminPort}/admin"
  api_secret: "${apiSecret}"
  admin_key: "${adminKey}"
  admin_secret: "${ADMIN_SECRET}"
  rtp_interface: "127.0.0.1"
  instance: "webrtc-page-test"
  ice_servers:
    turn:
      urls: ["turn:${TURN_HOST}:${turnPort}?transport=udp"]
      username: "lipsync"
      credential: "change-me-turn-password"
`;
}

// Wrong secrets against the running Janus: `lipsync serve` and `lipsync compositing` stop
// at startup (exit code 1) with a message naming the setting Janus refused.
async function startupErrors(ports) {
  for (const [setting, bad] of [['api_secret', { apiSecret: 'wrong-api-secret' }], ['admin_key', { adminKey: 'wrong-admin-key' }]]) {
    const yaml = path.join(WORK, `compositing-wrong-${setting}.yaml`);
    fs.writeFileSync(yaml, compositingYaml({ ...ports, ...bad, compPort: await freePort(), webPort: await freePort() }));
    const serve = await runToExit(BIN, ['serve', '--inference-config', path.join(WORK, 'inference.yaml'),
      '--compositing-config', yaml], 60000);
    const line = (serve.output.split('\n').find((l) => l.includes(`webrtc.${setting}`)) || '').trim();
    check(serve.code === 1 && line !== '', `wrong ${setting}: lipsync serve exits 1 naming webrtc.${setting} (exit ${serve.code}: "${line.slice(0, 160)}")`);
    if (serve.code !== 1 || !line) console.log(serve.output.slice(-1500));
    const comp = await runToExit(BIN, ['compositing', '--config', yaml], 60000);
    const cline = (comp.output.split('\n').find((l) => l.includes(`webrtc.${setting}`)) || '').trim();
    check(comp.code === 1 && cline.startsWith('lipsync compositing:'), `wrong ${setting}: lipsync compositing exits 1 naming webrtc.${setting} (exit ${comp.code}: "${cline.slice(0, 160)}")`);
    if (comp.code !== 1 || !cline) console.log(comp.output.slice(-1500));
  }
}

// The A/V offsets measured on `page` while it plays `wav` (beeps 1 s apart), and whether
// the beeps were all heard.
async function wavOffsets(page, wav, beeps) {
  const s0 = await stats(page);
  await page.setInputFiles('#wav', wav);
  const heard = await waitFor(page, (b) => window.lipsyncStats.beeps >= b.n + b.k, 25000, `the ${beeps} beeps of the WAV are heard over WebRTC`, { n: s0.beeps, k: beeps });
  await sleep(1500);  // the last reading is taken a little after its beep is heard
  const s = await stats(page);
  return { heard, offsets: s.avOffsets.slice(s0.avOffsets.length) };
}

// Waits until no speaking WebRTC frame has been shown for `quietMs`.
async function waitIdle(page, quietMs, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  let quietSince = null, last = -1;
  while (Date.now() < end) {
    const s = await page.evaluate(() => [window.lipsyncStats.speaking, window.lipsyncStats.speakingFramesDisplayed]);
    if (s[0] || s[1] !== last) { quietSince = null; last = s[1]; }
    else if (quietSince === null) quietSince = Date.now();
    else if (Date.now() - quietSince >= quietMs) return true;
    await sleep(200);
  }
  check(false, `${what} (within ${timeoutMs} ms)`);
  return false;
}

// One viewer for BENCH_MINUTES with the beep WAV every 20 s: A/V offsets over time, fps
// (getStats) and freezes.
async function bench(page, wav) {
  const t0 = Date.now(), endAt = t0 + BENCH_MINUTES * 60000;
  const s0 = await stats(page);
  const readings = [];  // {minute, offsets}
  while (Date.now() < endAt) {
    const started = Date.now();
    const r = await wavOffsets(page, wav, 4);
    const minute = Math.round((started - t0) / 6000) / 10;
    readings.push({ minute, offsets: r.offsets });
    const t = await page.evaluate(() => window.lipsyncStats.webrtc.jitterBufferTargetMs);
    console.log(`[webrtc-bench] ${minute} min: A/V offsets ${JSON.stringify(r.offsets)} ms (jitterBufferTarget ${t} ms)`);
    const rest = 20000 - (Date.now() - started);
    if (rest > 0) await sleep(Math.min(rest, Math.max(0, endAt - Date.now())));
  }
  const s1 = await stats(page);
  const seconds = (Date.now() - t0) / 1000;
  const all = readings.flatMap((r) => r.offsets);
  const first = readings.slice(0, 3).flatMap((r) => r.offsets);
  const last = readings.slice(-3).flatMap((r) => r.offsets);
  const out = {
    minutes: Math.round(seconds / 6) / 10,
    fps: Math.round((s1.webrtc.framesDecoded - s0.webrtc.framesDecoded) / seconds * 10) / 10,
    framesDecoded: s1.webrtc.framesDecoded - s0.webrtc.framesDecoded,
    framesDropped: s1.webrtc.framesDropped - s0.webrtc.framesDropped,
    freezes: s1.webrtc.freezeCount - s0.webrtc.freezeCount,
    freezesMs: s1.webrtc.totalFreezesDurationMs - s0.webrtc.totalFreezesDurationMs,
    concealedSamples: s1.webrtc.concealedSamples - s0.webrtc.concealedSamples,
    avOffsetStartMs: summary(first), avOffsetEndMs: summary(last), avOffsetAllMs: summary(all),
    beepsMeasured: all.length, wavsPlayed: readings.length, subscriptions: s1.webrtc.subscriptions,
    audioJitterBufferDelayMs: s1.webrtc.jitterBufferDelayMs,
    videoJitterBufferDelayMs: s1.webrtc.videoJitterBufferDelayMs,
    jitterBufferTargetMs: s1.webrtc.jitterBufferTargetMs, jitterBufferTargetRaises: s1.webrtc.jitterBufferTargetRaises,
    outputLatencyMs: await page.evaluate(() => window.lipsync.outputLatencyMs()), errors: s1.errors,
    loadavg: fs.readFileSync('/proc/loadavg', 'utf8').trim(),
  };
  figures.bench = out;
  figures.benchReadings = readings;
  check(out.fps > 20, `${out.minutes} min at about 25 fps (${out.fps})`);
  check(readings.length > 0 && last.length > 0, `A/V offsets measured at the end (${last.length})`);
}

// The first 25 s after subscribing, variants alternating (WEBRTC_BENCH_START rounds).
async function benchStart(browser, base, wav) {
  const results = {};  // variant -> { wav1: [], wav2: [], wav3: [], audioJb: [], videoJb: [] }
  for (let round = 0; round < BENCH_START; round++) {
    for (const variant of BENCH_VARIANTS) {
      const r = results[variant] ||= { wav1: [], wav2: [], wav3: [], audioJbMs: [], videoJbMs: [], syncMs: [], targetMs: [] };
      const page = await browser.newPage();
      page.on('pageerror', (e) => console.log('[page error]', e.message));
      const t0 = Date.now();
      await page.goto(`${base}/?avatar=demo&transport=webrtc${variant ? '&' + variant : ''}`);
      await waitFor(page, () => window.lipsyncStats.webrtc.active && window.lipsyncStats.webrtc.syncedFrames > 8, 30000, 'the page plays the session over WebRTC, frames matched');
      const up = Date.now();
      r.syncMs.push(up - t0);
      const line = [];
      for (const [k, at] of [['wav1', 0], ['wav2', 10000], ['wav3', 20000]]) {
        const wait = up + at - Date.now();
        if (wait > 0) await sleep(wait);
        const w = await wavOffsets(page, wav, 4);
        r[k].push(...w.offsets);
        line.push(`${k} +${Math.round((Date.now() - up) / 1000)}s ${JSON.stringify(w.offsets)}`);
      }
      const s = await stats(page);
      r.audioJbMs.push(s.webrtc.jitterBufferDelayMs);
      r.videoJbMs.push(s.webrtc.videoJitterBufferDelayMs);
      r.targetMs.push(s.webrtc.jitterBufferTargetMs);
      console.log(`[webrtc-bench] round ${round + 1} '${variant}': ${line.join('; ')} ms; jitter buffers audio ${s.webrtc.jitterBufferDelayMs} / video ${s.webrtc.videoJitterBufferDelayMs} ms, target ${s.webrtc.jitterBufferTargetMs} ms (raised ${s.webrtc.jitterBufferTargetRaises}x)`);
      await page.close();
      await sleep(1000);
    }
  }
  const out = {};
  for (const [variant, r] of Object.entries(results)) {
    out[variant || '(default)'] = {
      wav1: summary(r.wav1), wav2: summary(r.wav2), wav3: summary(r.wav3),
      wav1Within40_60: r.wav1.filter((o) => o <= 40 && o >= -60).length + '/' + r.wav1.length,
      audioJitterBufferMs: summary(r.audioJbMs), videoJitterBufferMs: summary(r.videoJbMs),
      openToMatchedMs: summary(r.syncMs), jitterBufferTargetMs: summary(r.targetMs),
    };
    console.log(`[webrtc-bench] '${variant}': ${JSON.stringify(out[variant || '(default)'])}`);
  }
  figures.benchStart = out;
  figures.benchStartLoadavg = fs.readFileSync('/proc/loadavg', 'utf8').trim();
}

async function main() {
  fs.mkdirSync(WORK, { recursive: true });
  const models = path.join(WORK, 'models');
  execFileSync(BIN, ['make-demo', '--out', models, '--only', 'demo', '--burn-index',
    '--width', '320', '--height', '240', '--frames', '50'], { stdio: 'inherit' });
  const wav = path.join(WORK, 'beeps.wav');
  writeWav(wav, 4.0, [0.4, 1.4, 2.4, 3.4]);
  const [inferPort, compPort, webPort, janusPort, adminPort] =
    [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];
  const janus = new Janus(path.join(WORK, 'janus'), janusPort, adminPort);
  await janus.start();
  process.on('exit', () => { try { janus.proc.kill('SIGKILL'); } catch { } });
  // coturn from the shipped example, on loopback (its loopback lines uncommented).
  const turnPort = await freePort();
  let turnConf = fs.readFileSync(path.join(ROOT, 'deploy', 'coturn', 'turnserver.conf'), 'utf8')
    .replace('listening-port=3478', `listening-port=${turnPort}`)
    .replace('tls-listening-port=5349', `tls-listening-port=${await freePort()}`)
    .replace('min-port=49152', 'min-port=31001').replace('max-port=65535', 'max-port=32000')
    .replace('#allow-loopback-peers', 'allow-loopback-peers')
    .replace('#listening-ip=127.0.0.1', `listening-ip=${TURN_HOST}`)
    .replace('#relay-ip=192.0.2.2', `relay-ip=${RELAY_IP}`);
  fs.writeFileSync(path.join(WORK, 'turnserver.conf'), turnConf);
  let turnLog = '';
  if (RELAY && !RELAY_IP) console.log('[webrtc-page-test] relay-only phase skipped: no non-loopback IPv4 address to relay on');
  if (RELAY && RELAY_IP && !BENCH_MINUTES && !BENCH_START) {
    const turn = spawn('/usr/bin/turnserver', ['-c', path.join(WORK, 'turnserver.conf'), '--log-file', 'stdout', '--no-tls', '--no-dtls', '-v'],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    turn.stdout.on('data', (d) => { turnLog += d; });
    turn.stderr.on('data', (d) => { turnLog += d; });
    process.on('exit', () => { try { turn.kill('SIGKILL'); } catch { } });
  }
  writeInferenceYaml(path.join(WORK, 'inference.yaml'), inferPort, models);
  const ports = { compPort, inferPort, webPort, models, janus, turnPort };
  if (!BENCH_MINUTES && !BENCH_START) await startupErrors(ports);
  fs.writeFileSync(path.join(WORK, 'compositing.yaml'), compositingYaml(ports));
  const server = await startServe(BIN, path.join(WORK, 'inference.yaml'), path.join(WORK, 'compositing.yaml'));
  const base = `http://127.0.0.1:${webPort}`;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--autoplay-policy=no-user-gesture-required', '--no-sandbox'],
  });
  // The test's phases, or (WEBRTC_BENCH_MINUTES) the long viewing only.
  phases: try {
    if (BENCH_START) {
      await benchStart(browser, base, wav);
      break phases;
    }
    const page = await browser.newPage();
    page.on('console', (m) => { if (m.type() === 'error') console.log('[page]', m.text()); });
    page.on('pageerror', (e) => console.log('[page error]', e.message));
    // WEBRTC_BENCH_QUERY: page query for the long viewing (e.g. rtcDelay=0).
    const query = BENCH_MINUTES && process.env.WEBRTC_BENCH_QUERY ? '&' + process.env.WEBRTC_BENCH_QUERY : '';
    await page.goto(`${base}/?avatar=demo&transport=webrtc${query}`);
    await waitFor(page, () => window.lipsyncStats.webrtc.active && window.lipsyncStats.webrtc.framesDecoded > 10, 30000, 'the page plays the session over WebRTC');
    if (BENCH_MINUTES) {
      await waitFor(page, () => window.lipsyncStats.webrtc.syncedFrames > 25, 20000, 'the displayed WebRTC frames get their session index');
      await bench(page, wav);
      break phases;
    }
    let s = await stats(page);
    check(s.webrtc.state === 'READY', `SessionOutput.webrtc READY (mountpoint ${s.webrtc.mountpointId})`);
    let m = await rtcFps(page, 3000);
    figures.idle = m;
    check(m.fps > 15 && m.fps < 35, `WebRTC frames decoded at about 25 fps (${m.fps})`);
    check(m.freezes === 0, `no freeze (getStats freezeCount +${m.freezes})`);
    check(m.audioPackets > 50, `audio packets flow (${m.audioPackets} in 3 s)`);
    s = await stats(page);
    check(s.pixelIndex !== null, `the burned frame index reads back from the WebRTC video (${s.pixelIndex})`);
    await waitFor(page, () => window.lipsyncStats.webrtc.syncedFrames > 25, 15000, 'the displayed WebRTC frames get their session index (RTP timestamp + burned index)');
    await sleep(2000);
    s = await stats(page);
    const w0 = s.webrtc;
    check(s.state === 'idle' && w0.syncMismatches <= w0.syncedFrames / 20, `displayed WebRTC frames are idle and show their session frames' backgrounds (${w0.syncMismatches} of ${w0.syncedFrames} not)`);

    // Speech: sound arrives over the peer connection and plays.
    const energy0 = s.webrtc.playedEnergy;
    const speaking0 = s.speakingFramesDisplayed;
    await page.fill('#text', 'Hello there. This avatar talks over WebRTC.');
    await page.click('#speak');
    await waitFor(page, (e) => window.lipsyncStats.webrtc.playedEnergy > e + 1, 30000, 'spoken text is heard over WebRTC', energy0);
    m = await rtcFps(page, 2000);
    figures.speaking = m;
    check(m.fps > 15, `speaking frames decoded at about 25 fps (${m.fps})`);
    s = await stats(page);
    check(s.speakingFramesDisplayed > speaking0, `speaking WebRTC frames are shown (${s.speakingFramesDisplayed - speaking0})`);
    figures.textFirstFrameMs = s.firstFrameLatencyMs;
    await page.click('#interrupt');
    await waitIdle(page, 1500, 20000, 'idle after the text');

    // A/V offset where the viewer sees and hears it: the beeps of a WAV.
    const av = await wavOffsets(page, wav, 4);
    figures.avOffsetsMs = av.offsets;
    const sa = await stats(page);
    figures.avJitterBuffers = { targetMs: sa.webrtc.jitterBufferTargetMs, raises: sa.webrtc.jitterBufferTargetRaises,
      audioMs: sa.webrtc.jitterBufferDelayMs, videoMs: sa.webrtc.videoJitterBufferDelayMs, loadavg: fs.readFileSync('/proc/loadavg', 'utf8').trim() };
    const within = av.offsets.filter((o) => Math.abs(o) <= 150).length;
    // The first WAV after subscribing (the receivers start at one matched delay, web/janus.js
    // jitterBufferTarget). Loose (a loaded box): all readings but one within ±150 ms (the
    // issue's +40/-60 ms is the benchmark's, bench/web/webrtc_bench.sh).
    check(av.offsets.length >= 2 && within >= av.offsets.length - 1,
      `A/V offset of the first WAV over WebRTC within ±150 ms (${JSON.stringify(av.offsets)} ms; ${within} of ${av.offsets.length})`);
    check(s.webrtc.jitterBufferTargetMs > 0, `the page set a matched jitterBufferTarget on both receivers (${s.webrtc.jitterBufferTargetMs} ms)`);
    await waitIdle(page, 1500, 20000, 'idle after the WAV');

    // Interrupt: the first idle WebRTC frame after the click.
    s = await stats(page);
    const sp0 = s.speakingFramesDisplayed;
    await page.setInputFiles('#wav', wav);
    await waitFor(page, (n) => window.lipsyncStats.speakingFramesDisplayed > n + 10, 20000, 'the WAV plays speaking WebRTC frames', sp0);
    await page.click('#interrupt');
    await waitFor(page, () => window.lipsyncStats.interruptToIdleMs !== null, 10000, 'the interrupt reaches the viewer as an idle WebRTC frame');
    s = await stats(page);
    figures.interruptToIdleMs = s.interruptToIdleMs;
    check(s.interruptToIdleMs !== null && s.interruptToIdleMs < 1500, `interrupt to idle WebRTC frame under 1.5 s (${s.interruptToIdleMs} ms)`);
    await waitIdle(page, 1000, 10000, 'idle after the interrupt');

    // A second viewer of the same mountpoint (janus.js on another page).
    const info = await page.evaluate(() => JSON.parse(JSON.stringify(window.lipsync.webrtcInfo())));
    const second = await browser.newPage();
    await second.goto(`${base}/api/avatars`);
    await second.evaluate(async (inf) => {
      const { JanusViewer } = await import('/janus.js');
      window.v = new JanusViewer(inf, {});
      await window.v.start();
    }, info);
    await waitFor(second, async () => {
      if (!window.v.pc) return false;
      let n = 0;
      (await window.v.pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n = r.framesDecoded; });
      return n > 10;
    }, 20000, 'a second viewer of the same mountpoint decodes frames');

    // A second session: its own mountpoint.
    const other = await browser.newPage();
    await other.goto(`${base}/?avatar=demo&transport=webrtc`);
    await waitFor(other, () => window.lipsyncStats.webrtc.active && window.lipsyncStats.webrtc.framesDecoded > 10, 30000, 'a second session plays over WebRTC');
    const o = await stats(other);
    check(o.webrtc.mountpointId !== s.webrtc.mountpointId, 'two sessions, two mountpoints');
    let ids = await janus.mountpoints();
    check(ids.length === 2, `Janus has the two sessions' mountpoints (${ids.length})`);
    await other.close();  // the session ends with its page
    const endBy = Date.now() + 15000;
    while (Date.now() < endBy && (ids = await janus.mountpoints()).length !== 1) await sleep(200);
    check(ids.length === 1 && ids[0] === s.webrtc.mountpointId, `a session that ends removes its mountpoint (${ids.length} left)`);
    // Relay only: a page with iceTransportPolicy 'relay' gets the same stream through
    // coturn (listening on loopback, relaying on the box's own address).
    if (RELAY && RELAY_IP && !BENCH_MINUTES) {
      const relay = await browser.newPage();
      relay.on('pageerror', (e) => console.log('[relay page error]', e.message));
      await relay.goto(`${base}/?avatar=demo&transport=webrtc&relay=1`);
      if (await waitFor(relay, () => window.lipsyncStats.webrtc.active && window.lipsyncStats.webrtc.framesDecoded > 10, 30000, 'a relay-only page plays through coturn')) {
        await waitFor(relay, () => window.lipsyncStats.webrtc.syncedFrames > 25, 15000, 'the relayed frames are the session\'s (burned index and RTP timestamps)');
        await sleep(1200);
        const r = await stats(relay);
        check(r.webrtc.localCandidateType === 'relay', `the selected ICE pair is relayed (${r.webrtc.localCandidateType})`);
        check(r.webrtc.syncMismatches <= r.webrtc.syncedFrames / 20, `relayed frames show their session frames' backgrounds (${r.webrtc.syncMismatches} of ${r.webrtc.syncedFrames} not)`);
        const rm = await rtcFps(relay, 2000);
        figures.relay = rm;
        check(rm.fps > 15 && rm.audioPackets > 30, `relayed frames at about 25 fps with audio (${rm.fps}, ${rm.audioPackets} packets)`);
        check(/ALLOCATE processed, success/.test(turnLog) && /CREATE_PERMISSION processed, success/.test(turnLog),
          'coturn allocated a relay and a permission for Janus');
      } else {
        const r = await stats(relay);
        console.log('[webrtc-page-test] relay page: ' + JSON.stringify(r.webrtc) + ' ice: ' +
          JSON.stringify(await relay.evaluate(() => window.lipsync.webrtcInfo() && window.lipsync.webrtcInfo().iceServers)) +
          ' log: ' + (await relay.evaluate(() => document.getElementById('log').textContent)).slice(0, 1500));
      }
      fs.writeFileSync(path.join(WORK, 'turn.log'), turnLog);
      await relay.close();
    }

    // Janus restarted mid-session: LOST, the WebSocket's frames meanwhile, then READY again.
    await janus.stop();
    await waitFor(page, () => window.lipsyncStats.webrtc.state === 'LOST', 15000, 'the page learns that WebRTC is lost');
    s = await stats(page);
    const shown0 = s.framesDisplayed;
    await waitFor(page, (n) => window.lipsyncStats.framesDisplayed > n + 10, 15000, 'the WebSocket frames play meanwhile', shown0);
    s = await stats(page);
    check((s.eventCounts.WARNING || 0) > 0, 'a WARNING event says so');
    await janus.start();
    await waitFor(page, () => window.lipsyncStats.webrtc.subscriptions >= 2 && window.lipsyncStats.webrtc.active, 30000, 'the page subscribes again to the re-created mountpoint');
    await sleep(1500);
    m = await rtcFps(page, 2000);
    figures.afterRestart = m;
    check(m.fps > 10, `frames decoded again after the restart (${m.fps})`);
  } finally {
    await browser.close();
    server.stop();
    await janus.stop();
    fs.writeFileSync(path.join(WORK, 'serve.log'), server.output());
  }
  console.log('[webrtc-page-test] figures: ' + JSON.stringify(figures));
  fs.writeFileSync(path.join(WORK, 'figures.json'), JSON.stringify(figures, null, 1));
  if (failures.length) {
    console.log(`[webrtc-page-test] ${failures.length} failure(s)`);
    console.log(server.output().split('\n').filter((l) => l.includes('webrtc')).slice(-20).join('\n'));
    process.exit(1);
  }
  console.log('[webrtc-page-test] all checks passed');
  process.exit(0);  // coturn's pipes would keep node alive (the exit handler stops it)
}

main().catch((e) => { console.error(e); process.exit(1); });
