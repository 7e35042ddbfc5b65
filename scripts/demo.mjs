// The main job: `npm run demo` (after the build) generates the demo chain in .demo/, starts a demo
// emulator session on child2.vhd (an undo session: `diskimg serve --session`, automatic snapshots)
// with a scripted guest writing into it (scripts/demoWriter.mjs, no QEMU needed), and opens the chain
// in a real VS Code with the extension: desktop VS Code (--extensionDevelopmentPath) when `code` is
// on the PATH, otherwise code-server in the browser (the URL is printed). The session is announced
// in the sessions folder, so the Sessions view shows it; open child2.vhd to see the blocks flash and
// the Timeline fill. It runs until Ctrl+C, which stops the guest and the session (its writes are
// discarded: child2.vhd is left as it was) and code-server.
//   --browser   use code-server even when `code` exists
//   --smoke     headless check, then exit: the session takes the guest's writes and a snapshot, the
//               trace records them, code-server serves the editor page, and stopping the session
//               leaves child2.vhd byte-identical (used by the tests and CI)
//   DEMO_PORT   port for code-server (default: 8080 when free, else any free port)
//   DEMO_DIR    where to put the demo (default .demo/ in the repository)
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeDemoChain } from './makeDemoChain.mjs';
import { ensureCodeServer, freePort, packageVsix, startCodeServer } from './codeServer.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
const smoke = args.has('--smoke');
const demoDir = resolve(process.env.DEMO_DIR ?? join(root, '.demo'));
const chain = makeDemoChain(join(demoDir, 'images'));
const show = (...a) => {
  console.log(`\n$ diskimg ${a.join(' ')}`);
  console.log(execFileSync(process.execPath, [join(root, 'dist', 'cli.js'), ...a]).toString().trimEnd());
};
show('info', chain.child2);

const imageSha = sha256(chain.child2);
const session = await startDemoSession(chain.child2, smoke ? '1s' : '20s');
console.log(`\nDemo session: ${session.url} serves ${chain.child2} as an undo session (writes go to a new child; snapshots every ${smoke ? '1s' : '20s'}, the last 5 kept).`);
const guest = spawn(process.execPath, [join(root, 'scripts', 'demoWriter.mjs'), session.url, '--seconds', smoke ? '4' : '3600', '--rate', smoke ? '40' : '15'],
  { stdio: ['ignore', 'inherit', 'inherit'] });
const guestDone = new Promise((res) => guest.once('exit', (code) => res(code)));
let stopping = null;
/** Stops the guest, then the session (SIGTERM: its --on-exit discard leaves child2.vhd as it was). */
const stopDemo = () => (stopping ??= (async () => {
  if (guest.exitCode === null) guest.kill('SIGTERM');
  await guestDone;
  await session.stop();
})());

if (smoke) {
  const code = await guestDone;
  if (code !== 0) await fail(`the scripted guest failed (exit ${code})`);
  // The trace the editor's timeline reads: the guest's writes, and the automatic snapshots' marks.
  const records = readFileSync(session.trace, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const writes = records.filter((r) => r.op === 'write').length;
  const snapshots = records.filter((r) => r.op === 'snapshot').length;
  console.log(`demo session: ${writes} writes and ${snapshots} snapshot marks in the trace`);
  if (writes < 20 || snapshots < 1) await fail('the demo session did not record the guest\'s writes and a snapshot');
}

const hasCode = !args.has('--browser') && !smoke && spawnSync('sh', ['-c', 'command -v code'], { stdio: 'ignore' }).status === 0;
if (hasCode) {
  console.log(`\nOpening ${chain.child2} in VS Code with the extension from ${root}`);
  spawnSync('code', ['--new-window', `--extensionDevelopmentPath=${root}`, join(demoDir, 'images'), chain.child2], { stdio: 'inherit' });
  console.log('\nThe Disk Image Sessions view (Explorer) shows the demo session; child2.vhd\'s Blocks tab flashes each write and its Timeline tab fills.\nCtrl+C stops the guest and the session (its writes are discarded).');
  const stop = async () => { await stopDemo(); process.exit(0); };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  await guestDone;
  await stopDemo();
  process.exit(0);
}

console.log('\nStarting code-server (VS Code in the browser); the first run installs it into a cache (about a minute).');
const entry = ensureCodeServer();
const vsix = packageVsix(join(demoDir, 'vsix'));
const wanted = Number(process.env.DEMO_PORT) || await portOr(8080);
const server = await startCodeServer({ entry, home: join(demoDir, 'code-server'), folder: join(demoDir, 'images'), vsix, port: wanted });
const url = `${server.url}/?folder=${encodeURIComponent(join(demoDir, 'images'))}`;
if (smoke) {
  const page = await fetch(url);
  const ok = page.ok && (await page.text()).includes('workbench');
  await server.stop();
  if (!ok) await fail('the workbench page did not load');
  await stopDemo();
  const left = readdirSync(dirname(chain.child2)).filter((n) => n.startsWith('child2.session-'));
  if (left.length) await fail(`stopping the session left its layers: ${left.join(', ')}`);
  if (sha256(chain.child2) !== imageSha) await fail(`${chain.child2} changed: the session's writes reached it`);
  console.log(`demo ok: ${url}`);
  process.exit(0);
}
console.log(`\nOpen ${url}\nthen click child2.vhd in the explorer: its Blocks tab flashes each write of the demo session, its Timeline tab fills;`
  + ' the Disk Image Sessions view (Explorer) shows the session. Ctrl+C stops the guest, the session (its writes are discarded) and the server.');
const stop = async () => { await stopDemo(); await server.stop(); process.exit(0); };
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
server.process.on('exit', (code) => { console.log(`code-server exited (${code})`); void stopDemo().finally(() => process.exit(code ?? 1)); });

async function portOr(preferred) {
  const { createServer } = await import('node:net');
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => freePort().then(res));
    s.listen(preferred, '127.0.0.1', () => s.close(() => res(preferred)));
  });
}

async function fail(why) {
  console.log(`demo failed: ${why}`);
  await stopDemo().catch((e) => console.log(`stopping the demo session: ${e.message}`));
  process.exit(1);
}

function sha256(file) {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/**
 * `diskimg serve <image> --session --on-exit discard` with a control socket and a trace, detached
 * from the terminal (Ctrl+C reaches this script, which stops it), announced in the sessions folder
 * (the same record the extension writes, see src/extension/sessionModel.ts) so VS Code shows it.
 */
async function startDemoSession(image, every) {
  const id = `demo-${Date.now().toString(36)}-${process.pid}`;
  const records = join(tmpdir(), 'diskimg-sessions');
  mkdirSync(records, { recursive: true, mode: 0o700 });
  const dir = join(demoDir, 'session');
  mkdirSync(dir, { recursive: true });
  const r = {
    id, image, mode: 'undo', control: join(records, `${id}.ctl`), trace: join(dir, `${id}.trace.jsonl`), log: join(dir, `${id}.log`),
    url: '', pid: 0, started: new Date().toISOString(), snapshotEvery: every,
  };
  const out = openSync(r.log, 'a');
  const serve = spawn(process.execPath, [join(root, 'dist', 'cli.js'), 'serve', image, '--socket', join(records, `${id}.nbd`), '--control', r.control,
    '--trace', r.trace, '--session', '--on-exit', 'discard', '--snapshot-every', every, '--keep', '5'], { detached: true, stdio: ['ignore', out, out] });
  closeSync(out);
  const exited = new Promise((res) => serve.once('exit', (code) => res(code)));
  for (let i = 0; ; i++) {
    const m = /^serving .* on (\S+)$/m.exec(existsSync(r.log) ? readFileSync(r.log, 'utf8') : '');
    if (m) { r.url = m[1]; break; }
    if (serve.exitCode !== null || i > 600) throw new Error(`diskimg serve did not start: ${readFileSync(r.log, 'utf8').trim()}`);
    await new Promise((res) => setTimeout(res, 50));
  }
  for (let i = 0; i < 250 && !existsSync(r.control); i++) await new Promise((res) => setTimeout(res, 20));
  r.pid = serve.pid;
  const recordFile = join(records, `${id}.json`);
  writeFileSync(`${recordFile}.tmp`, `${JSON.stringify(r, null, 1)}\n`, { mode: 0o600 });
  renameSync(`${recordFile}.tmp`, recordFile);
  return {
    ...r,
    stop: async () => {
      if (serve.exitCode === null) serve.kill('SIGTERM');
      await exited;
      try { unlinkSync(recordFile); } catch { /* the extension ended it */ }
    },
  };
}
