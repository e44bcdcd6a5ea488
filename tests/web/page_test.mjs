// The real page (web/) in Debian's headless chromium, driven by playwright-core, against
// the real `lipsync serve` binary with the web port (issue 10, "Must show"):
//   - the page opens and shows idle frames at about 25 fps, with zero inference while idle;
//   - typed text (server-side espeak-ng), the WAV upload path and the fake microphone
//     (a WAV file given to chromium) each play a session: speaking frames and sound;
//   - the A/V offset measured where the viewer sees and hears it: the demo avatar's
//     frame index burned into its pixels (make-demo --burn-index) read back from the
//     canvas when the AudioWorklet plays a beep (beeps at known samples in the WAV);
//   - the Interrupt button returns to idle.
// Bounds are LOOSE (a loaded 2-core box); the exact figures are printed, not asserted.
// Usage: node page_test.mjs  (env: LIPSYNC_BIN, WORK, PLAYWRIGHT_DIR, CHROMIUM)
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  check, failures, freePort, loadPlaywright, sleep, startServe, stats, summary, waitFor,
  writeInferenceYaml, writeWav,
} from './page_helpers.mjs';

const BIN = process.env.LIPSYNC_BIN;
const WORK = process.env.WORK;
const { chromium } = loadPlaywright();
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

const figures = {};
// PAGE_TEST_ROUNDS > 1 repeats text, WAV and microphone + interrupt (bench/web/page_bench.sh).
const ROUNDS = Math.max(1, Number(process.env.PAGE_TEST_ROUNDS || 1));
const rec = (key, value) => { (figures[key] ||= []).push(value); };

// Waits until the page has shown no speaking frame for `quietMs` in a row.
async function waitQuiet(page, quietMs, timeoutMs, what) {
  const end = Date.now() + timeoutMs;
  let quietSince = null, lastSpeaking = -1;
  while (Date.now() < end) {
    const s = await page.evaluate(() => [window.lipsyncStats.speaking, window.lipsyncStats.speakingFramesDisplayed]);
    if (s[0] || s[1] !== lastSpeaking) { quietSince = null; lastSpeaking = s[1]; }
    else if (quietSince === null) quietSince = Date.now();
    else if (Date.now() - quietSince >= quietMs) return true;
    await sleep(100);
  }
  check(false, `${what} (within ${timeoutMs} ms)`);
  return false;
}

async function main() {
  fs.mkdirSync(WORK, { recursive: true });
  const models = path.join(WORK, 'models');
  const t0 = Date.now();
  execFileSync(BIN, ['make-demo', '--out', models, '--only', 'demo', '--burn-index',
    '--width', '320', '--height', '240', '--frames', '50'], { stdio: 'inherit' });
  console.log(`[page-test] demo avatar ready in ${Date.now() - t0} ms`);
  const wav = path.join(WORK, 'beeps.wav');
  writeWav(wav, 4.0, [0.4, 1.4, 2.4, 3.4]);
  const micWav = path.join(WORK, 'mic.wav');
  writeWav(micWav, 2.0, [0.3, 1.3]);

  const [inferPort, compPort, webPort] = [await freePort(), await freePort(), await freePort()];
  writeInferenceYaml(path.join(WORK, 'inference.yaml'), inferPort, models);
  fs.writeFileSync(path.join(WORK, 'compositing.yaml'), `server:
  port: "127.0.0.1:${compPort}"
inference_server:
  url: "127.0.0.1:${inferPort}"
model_root: "${models}"
logging:
  level: "warn"
web:
  host: "127.0.0.1"
  port: ${webPort}
`);
  const server = await startServe(BIN, path.join(WORK, 'inference.yaml'), path.join(WORK, 'compositing.yaml'));
  const stop = server.stop;
  const url = `http://127.0.0.1:${webPort}/?avatar=demo`;
  console.log(`[page-test] server up; page at ${url}`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${micWav}`, '--autoplay-policy=no-user-gesture-required',
      '--no-sandbox'],
  });
  try {
    const page = await browser.newPage();
    page.on('console', (m) => { if (m.type() === 'error') console.log('[page]', m.text()); });
    page.on('pageerror', (e) => console.log('[page error]', e.message));
    await page.goto(url);

    // --- idle: frames flow, no inference ---
    await waitFor(page, () => window.lipsyncStats.framesDisplayed > 5 && window.lipsyncStats.state === 'idle', 20000, 'the page shows idle frames');
    let s = await stats(page);
    figures.codec = s.codec;
    figures.pageOpenToFirstFrameMs = s.pageOpenToFirstFrameMs;
    figures.navigationToFirstFrameMs = s.navigationToFirstFrameMs;
    figures.openSteps = s.openSteps;
    await sleep(300);
    s = await stats(page);
    const idleBatches0 = s.serverStats ? s.serverStats.inferenceBatches : 0;
    const frames0 = s.framesDisplayed, tIdle = Date.now();
    await sleep(3000);
    s = await stats(page);
    const idleFps = (s.framesDisplayed - frames0) / ((Date.now() - tIdle) / 1000);
    figures.idleFps = Math.round(idleFps * 10) / 10;
    check(idleFps > 12 && idleFps < 40, `idle frames flow at about 25 fps (${figures.idleFps})`);
    check(s.serverStats !== null, 'SessionStats arrive');
    check(s.serverStats && s.serverStats.inferenceBatches === idleBatches0, `zero inference while idle (batches ${idleBatches0} -> ${s.serverStats && s.serverStats.inferenceBatches})`);
    check(s.pixelIndex !== null, `the burned frame index reads back from the canvas (${s.pixelIndex} vs background ${s.lastBackgroundIndex})`);
    check(s.pixelIndex === s.lastBackgroundIndex, 'the pixels show the background the frame says');

    for (let round = 0; round < ROUNDS; round++) {
    if (ROUNDS > 1) console.log(`[page-test] round ${round + 1} of ${ROUNDS}`);
    s = await stats(page);
    // --- typed text (espeak-ng on the server) ---
    const ended0 = (s.eventCounts.SPEECH_ENDED || 0);
    const latencies0 = s.firstFrameLatencies.length;
    const energy0 = s.audioPlayedEnergy;
    const speaking0 = s.speakingFramesDisplayed;
    await page.fill('#text', 'Hello there. This avatar talks in the browser.');
    await page.click('#speak');
    await waitFor(page, (n) => window.lipsyncStats.speakingFramesDisplayed > n + 3, 30000, 'typed text plays speaking frames', speaking0);
    s = await stats(page);
    rec('textFirstFrameMs', s.firstFrameLatencies[latencies0] ?? null);
    const tSpeak = Date.now(), framesSpeak = s.framesDisplayed;
    await sleep(1500);
    s = await stats(page);
    const speakingFps = Math.round((s.framesDisplayed - framesSpeak) / ((Date.now() - tSpeak) / 1000) * 10) / 10;
    rec('speakingFps', speakingFps);
    check(speakingFps > 12 && speakingFps < 40, `speaking frames flow at about 25 fps (${speakingFps})`);
    check(s.audioPlayedEnergy > energy0 + 1, `sound plays (energy ${Math.round(energy0)} -> ${Math.round(s.audioPlayedEnergy)})`);
    check(s.speakingFramesDisplayed > speaking0, 'video shows the speaking mouth');
    await waitQuiet(page, 1500, 40000, 'back to idle after the text');
    s = await stats(page);
    check(s.state === 'idle' && (s.eventCounts.SPEECH_ENDED || 0) > ended0, 'the text ended (SPEECH_ENDED) and the page is idle');

    // --- WAV upload with beeps: A/V offset from pixels and played sound ---
    const beeps0 = s.beeps;
    const ended1 = (s.eventCounts.SPEECH_ENDED || 0);
    const latencies1 = s.firstFrameLatencies.length, offsets1 = s.avOffsets.length;
    await page.setInputFiles('#wav', wav);
    await waitFor(page, (b) => window.lipsyncStats.beeps >= b + 4, 25000, 'the 4 beeps of the uploaded WAV are played', beeps0);
    await waitQuiet(page, 1500, 40000, 'back to idle after the WAV');
    s = await stats(page);
    check((s.eventCounts.SPEECH_ENDED || 0) > ended1, 'the WAV speech ended (SPEECH_ENDED)');
    rec('wavFirstFrameMs', s.firstFrameLatencies[latencies1] ?? null);
    rec('beepsHeard', s.beeps - beeps0);
    const offsets = s.avOffsets.slice(offsets1);
    figures.avOffsetsMs = (figures.avOffsetsMs || []).concat(offsets);
    check(offsets.length >= 2, `A/V offsets measured (${offsets.length} of 4 beeps)`);
    // Loose (a loaded CI box): every reading but one within ±200 ms; one beep may land in a
    // scheduling freeze of the page. The exact figures come from bench/web/page_bench.sh.
    const worst = Math.max(...offsets.map(Math.abs));
    const within = offsets.filter((o) => Math.abs(o) <= 200).length;
    check(offsets.length > 0 && within >= Math.max(1, offsets.length - 1),
      `A/V offset within ±200 ms (${within} of ${offsets.length}; worst ${worst} ms)`);

    // --- microphone (the fake capture file) and Interrupt ---
    const speakingMic0 = s.speakingFramesDisplayed;
    const latencies2 = s.firstFrameLatencies.length;
    await page.click('#mic');
    await waitFor(page, (n) => window.lipsyncStats.speakingFramesDisplayed > n + 10, 20000, 'the microphone plays speaking frames', speakingMic0);
    s = await stats(page);
    rec('micFirstFrameMs', s.firstFrameLatencies[latencies2] ?? null);
    await page.click('#interrupt');
    await waitFor(page, () => window.lipsyncStats.interruptToIdleMs !== null, 10000, 'Interrupt returns to idle');
    s = await stats(page);
    rec('interruptToIdleMs', s.interruptToIdleMs);
    check(s.interruptToIdleMs !== null && s.interruptToIdleMs < 2000, `interrupt to idle frame under 2 s (${s.interruptToIdleMs} ms)`);
    // A batch already in flight at the interrupt may still finish (its frames are dropped):
    // let it land (a loaded CI box runs other tests beside this one) before counting.
    await sleep(3000);
    s = await stats(page);
    const after0 = s.serverStats.inferenceBatches;
    await sleep(2000);
    s = await stats(page);
    check(s.state === 'idle' && !s.speaking, 'idle after the interrupt');
    check(s.serverStats.inferenceBatches === after0, `no inference after the interrupt (${after0} -> ${s.serverStats.inferenceBatches})`);
    }  // rounds
    figures.lateFrames = s.lateFrames;
    figures.missingFrames = s.missingFrames;
    figures.serverStats = s.serverStats;
    figures.audioUnderruns = s.audioUnderruns;
    figures.errors = s.errors;
    figures.eventCounts = s.eventCounts;
    figures.freezes = s.freezes;
    figures.longestFreezeMs = s.longestFreezeMs;
    check(s.errors.length === 0, `no page errors (${JSON.stringify(s.errors).slice(0, 200)})`);
    await page.screenshot({ path: path.join(WORK, 'page.png') });

    // --- the MJPEG path (createImageBitmap): a new session, idle frames and speech ---
    await page.selectOption('#codec', 'mjpeg');
    await waitFor(page, () => window.lipsyncStats.codec === 'mjpeg' && window.lipsyncStats.state === 'idle', 15000, 'an MJPEG session opens');
    s = await stats(page);
    const mjpeg0 = s.framesDisplayed, tM = Date.now(), speakM = s.speakingFramesDisplayed;
    await page.click('#speak');
    await waitFor(page, (n) => window.lipsyncStats.speakingFramesDisplayed > n + 3, 30000, 'MJPEG shows speaking frames', speakM);
    s = await stats(page);
    figures.mjpegFps = Math.round((s.framesDisplayed - mjpeg0) / ((Date.now() - tM) / 1000) * 10) / 10;
    check(figures.mjpegFps > 12 && figures.mjpegFps < 40, `MJPEG frames flow at about 25 fps (${figures.mjpegFps})`);
    check(s.errors.length === 0, `no page errors with MJPEG (${JSON.stringify(s.errors).slice(0, 200)})`);
  } finally {
    await browser.close();
    stop();
    fs.writeFileSync(path.join(WORK, 'serve.log'), server.output());
  }
  console.log('[page-test] figures ' + JSON.stringify(figures));
  const table = {};
  for (const k of ['textFirstFrameMs', 'wavFirstFrameMs', 'micFirstFrameMs', 'interruptToIdleMs', 'avOffsetsMs', 'speakingFps']) {
    if (figures[k]) table[k] = summary(figures[k]);
  }
  console.log('[page-test] summary ' + JSON.stringify(table));
  fs.writeFileSync(path.join(WORK, 'figures.json'), JSON.stringify({ figures, summary: table }, null, 1));
  if (failures.length) {
    console.log(`[page-test] ${failures.length} failed`);
    process.exit(1);
  }
  console.log('[page-test] passed');
  process.exit(0);
}

main().catch((e) => { console.error('[page-test] error:', e); process.exit(1); });
