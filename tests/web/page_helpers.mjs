// Helpers shared by the page tests (page_test.mjs, webrtc_page_test.mjs) and the WebRTC
// benchmark (bench/web/webrtc_bench.sh): checks with a failure list, waiting on the page,
// free loopback ports, the beep WAV, and `lipsync serve` as a child process.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';

// playwright-core as installed by page_test.sh into $PLAYWRIGHT_DIR/node_modules.
export function loadPlaywright(dir = process.env.PLAYWRIGHT_DIR) {
  const require = createRequire(path.join(dir, 'node_modules', 'x.js'));
  return require('playwright-core');
}

export const failures = [];
export function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures.push(what);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A TCP port free on loopback now.
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

// Polls `fn` (run in the page, with `arg`) every `pollMs` until it is true; a failed
// check when `timeoutMs` passes first.
export async function waitFor(page, fn, timeoutMs, what, arg, pollMs = 100) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await page.evaluate(fn, arg)) return true;
    await sleep(pollMs);
  }
  check(false, `${what} (within ${timeoutMs} ms)`);
  return false;
}

// window.lipsyncStats, copied out of the page.
export const stats = (page) => page.evaluate(() => JSON.parse(JSON.stringify(window.lipsyncStats)));

// Order statistics of the non-null values (null when none).
export function summary(values) {
  const v = values.filter((x) => x !== null && x !== undefined).sort((a, b) => a - b);
  if (!v.length) return null;
  const q = (p) => v[Math.min(v.length - 1, Math.floor(p * v.length))];
  return { n: v.length, p50: q(0.5), p95: q(0.95), min: v[0], max: v[v.length - 1] };
}

// 16 kHz mono s16le WAV: 100 ms 1 kHz beeps (amplitude 0.5) at `beepsAt` seconds, with
// a quieter 300 Hz "voice" (0.15) in between so the session has speech, silence elsewhere.
export function writeWav(file, seconds, beepsAt) {
  const rate = 16000, n = Math.round(seconds * rate);
  const data = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    let v = 0;
    for (const b of beepsAt) {
      if (t >= b && t < b + 0.1) v = 0.5 * Math.sin(2 * Math.PI * 1000 * (t - b));
      else if (t >= b + 0.2 && t < b + 0.6) v = 0.15 * Math.sin(2 * Math.PI * 300 * t) * Math.sin(Math.PI * (t - b - 0.2) / 0.4);
    }
    data.writeInt16LE(Math.round(v * 32767), i * 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0); header.writeUInt32LE(36 + data.length, 4); header.write('WAVE', 8);
  header.write('fmt ', 12); header.writeUInt32LE(16, 16); header.writeUInt16LE(1, 20);
  header.writeUInt16LE(1, 22); header.writeUInt32LE(rate, 24); header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32); header.writeUInt16LE(16, 34); header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  fs.writeFileSync(file, Buffer.concat([header, data]));
}

// The inference config of a test's `lipsync serve` (CPU, the demo models in `models`).
export function writeInferenceYaml(file, port, models) {
  fs.writeFileSync(file, `server:
  port: "127.0.0.1:${port}"
gpus:
  enabled: true
  count: 0
model_root: "${models}"
logging:
  level: "warn"
`);
}

// Runs `bin args` with its stdout and stderr gathered; `output()` is all of it so far.
export function spawnLogged(bin, args) {
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { out += d; });
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  return { proc, output: () => out, exited };
}

// Runs `bin args` to its end (at most `timeoutMs`, then SIGKILL): { code, output }.
export async function runToExit(bin, args, timeoutMs) {
  const p = spawnLogged(bin, args);
  const timer = setTimeout(() => { try { p.proc.kill('SIGKILL'); } catch { } }, timeoutMs);
  const { code, signal } = await p.exited;
  clearTimeout(timer);
  return { code, signal, output: p.output() };
}

// `lipsync serve` with the two configs; resolves once it prints the browser page's
// address (throws with its output if it exits or is not up within `timeoutMs`).
export async function startServe(bin, inferenceYaml, compositingYaml, timeoutMs = 60000) {
  const p = spawnLogged(bin, ['serve', '--inference-config', inferenceYaml,
    '--compositing-config', compositingYaml]);
  const stop = () => { try { p.proc.kill('SIGTERM'); } catch { } };
  process.on('exit', stop);
  const readyBy = Date.now() + timeoutMs;
  while (!p.output().includes('Browser page:')) {
    if (Date.now() > readyBy || p.proc.exitCode !== null) {
      console.log(p.output());
      throw new Error('lipsync serve did not print the browser page URL');
    }
    await sleep(100);
  }
  return { ...p, stop };
}
