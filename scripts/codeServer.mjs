// Starts code-server (installed by scripts/installCodeServer.sh into a cache outside the repository)
// with its own user-data and extensions folders, optionally installing a .vsix first. Used by
// `npm run demo` and by the end-to-end tests.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Installs code-server once (cached) and returns the path of its entry script. */
export function ensureCodeServer() {
  const out = execFileSync('bash', [join(root, 'scripts', 'installCodeServer.sh')], { encoding: 'utf8', timeout: 15 * 60 * 1000, stdio: ['ignore', 'pipe', 'inherit'] });
  return out.trim().split('\n').pop();
}

/** Packages the extension with vsce (which runs the prepublish build); returns the .vsix path. */
export function packageVsix(outDir) {
  mkdirSync(outDir, { recursive: true });
  const out = join(outDir, 'disk-image-inspector.vsix');
  execFileSync(process.execPath, [join(root, 'node_modules', '@vscode', 'vsce', 'vsce'), 'package', '--out', out],
    { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], timeout: 5 * 60 * 1000 });
  return out;
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? res(a.port) : rej(new Error('no port'))));
    });
  });
}

/**
 * Starts code-server on `folder`; resolves once /healthz answers with
 * { url, port, process, log, stop() }. Options: entry, home, folder, vsix?, settings?, port?, env? (added to the environment).
 */
export async function startCodeServer(o) {
  const userData = join(o.home, 'user-data');
  const extensions = join(o.home, 'extensions');
  mkdirSync(join(userData, 'User'), { recursive: true });
  mkdirSync(extensions, { recursive: true });
  writeFileSync(join(userData, 'User', 'settings.json'), JSON.stringify({
    'workbench.startupEditor': 'none', 'security.workspace.trust.enabled': false, 'telemetry.telemetryLevel': 'off',
    'workbench.tips.enabled': false, 'extensions.ignoreRecommendations': true, 'update.mode': 'none', 'workbench.enableExperiments': false,
    'chat.commandCenter.enabled': false, 'workbench.welcomePage.walkthroughs.openOnInstall': false, 'files.hotExit': 'off',
    ...o.settings,
  }, null, 2));
  const common = ['--user-data-dir', userData, '--extensions-dir', extensions];
  if (o.vsix) execFileSync(process.execPath, [o.entry, ...common, '--install-extension', o.vsix, '--force'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 120000 });
  const port = o.port ?? await freePort();
  const log = [];
  const child = spawn(process.execPath, [o.entry, ...common, '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry',
    '--disable-update-check', '--disable-workspace-trust', '--disable-getting-started-override', o.folder], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
  child.stdout.on('data', (d) => log.push(String(d)));
  child.stderr.on('data', (d) => log.push(String(d)));
  const url = `http://127.0.0.1:${port}`;
  const started = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`code-server exited ${child.exitCode}: ${log.join('')}`);
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() - started > 60000) { child.kill('SIGKILL'); throw new Error(`code-server did not start: ${log.join('')}`); }
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    url, port, process: child, log,
    stop: () => new Promise((res) => {
      if (child.exitCode !== null) return res();
      child.once('exit', () => res());
      child.kill('SIGTERM');
      setTimeout(() => { if (child.exitCode === null) child.kill('SIGKILL'); }, 5000);
    }),
  };
}
