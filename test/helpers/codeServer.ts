/**
 * A real VS Code (code-server) for the end-to-end tests: installed once into a cache outside the
 * repository by scripts/installCodeServer.sh, started per test run on a free port with its own
 * user-data and extensions folders, and stopped afterwards.
 */
import { ChildProcess, execFileSync, spawn } from 'child_process';
import { mkdirSync, writeFileSync } from 'fs';
import { createServer } from 'net';
import * as path from 'path';
import { ROOT } from './util';

export function ensureCodeServer(): string {
  const out = execFileSync('bash', [path.join(ROOT, 'scripts', 'installCodeServer.sh')], { encoding: 'utf8', timeout: 15 * 60 * 1000, stdio: ['ignore', 'pipe', 'inherit'] });
  return out.trim().split('\n').pop()!;
}

/** Packages the extension with vsce (runs the prepublish build) and returns the .vsix path. */
export function packageVsix(outDir: string): string {
  mkdirSync(outDir, { recursive: true });
  const out = path.join(outDir, 'disk-image-inspector.vsix');
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules', '@vscode', 'vsce', 'vsce'), 'package', '--no-dependencies', '--out', out],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], timeout: 5 * 60 * 1000 });
  return out;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

export interface CodeServer {
  url: string;
  port: number;
  process: ChildProcess;
  log: string[];
  stop(): Promise<void>;
}

export interface CodeServerOptions {
  entry: string;
  home: string;
  folder: string;
  vsix?: string;
  settings?: Record<string, unknown>;
  port?: number;
}

/** Installs the .vsix (when given) and starts code-server on `folder`; resolves once it answers. */
export async function startCodeServer(o: CodeServerOptions): Promise<CodeServer> {
  const userData = path.join(o.home, 'user-data');
  const extensions = path.join(o.home, 'extensions');
  mkdirSync(path.join(userData, 'User'), { recursive: true });
  mkdirSync(extensions, { recursive: true });
  writeFileSync(path.join(userData, 'User', 'settings.json'), JSON.stringify({
    'workbench.startupEditor': 'none', 'security.workspace.trust.enabled': false, 'telemetry.telemetryLevel': 'off',
    'workbench.tips.enabled': false, 'extensions.ignoreRecommendations': true, 'update.mode': 'none', 'workbench.enableExperiments': false,
    'chat.commandCenter.enabled': false, 'workbench.welcomePage.walkthroughs.openOnInstall': false, 'files.hotExit': 'off',
    ...o.settings,
  }, null, 2));
  const common = ['--user-data-dir', userData, '--extensions-dir', extensions];
  if (o.vsix) execFileSync(process.execPath, [o.entry, ...common, '--install-extension', o.vsix, '--force'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 120000 });
  const port = o.port ?? await freePort();
  const log: string[] = [];
  const child = spawn(process.execPath, [o.entry, ...common, '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry',
    '--disable-update-check', '--disable-workspace-trust', '--disable-getting-started-override', o.folder], {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PORT: String(port) },
  });
  child.stdout!.on('data', (d) => log.push(String(d)));
  child.stderr!.on('data', (d) => log.push(String(d)));
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
    if (Date.now() - started > 60000) throw new Error(`code-server did not start: ${log.join('')}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    url, port, process: child, log,
    stop: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
      setTimeout(() => { if (child.exitCode === null) child.kill('SIGKILL'); }, 5000);
    }),
  };
}
