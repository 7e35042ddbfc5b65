import { ChildProcess, execFileSync, spawnSync } from 'child_process';
import { existsSync, mkdtempSync, rmSync, readFileSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import { gunzipSync } from 'zlib';
import { openChain } from '../../src/chain/chain';

export const ROOT = path.resolve(__dirname, '..', '..');
export const CLI = path.join(ROOT, 'dist', 'cli.js');
/** The real images written by other tools: $DISKIMG_FIXTURES, else ../shared/fixtures beside the checkout. */
export const FIXTURES = path.resolve(process.env.DISKIMG_FIXTURES || path.join(ROOT, '..', 'shared', 'fixtures'));
export const HAVE_FIXTURES = existsSync(FIXTURES);

let missingSaid = false;
/** Says once per run where the fixtures were looked for, when they are not there. */
function sayFixturesMissing(): void {
  if (missingSaid) return;
  missingSaid = true;
  console.log(`  fixtures not found at ${FIXTURES} (set DISKIMG_FIXTURES to their folder): the tests that read them are skipped`);
}

/** `it` for a test that reads fixtures; skipped, with one line saying where they were looked for, when they are missing. */
export function itFixtures(title: string, fn: Mocha.Func | Mocha.AsyncFunc): Mocha.Test {
  if (HAVE_FIXTURES) return it(title, fn);
  sayFixturesMissing();
  return it.skip(title, fn);
}

/** `describe` for a suite that reads fixtures, skipped as a whole when they are missing. */
export function describeFixtures(title: string, fn: (this: Mocha.Suite) => void): Mocha.Suite | void {
  if (HAVE_FIXTURES) return describe(title, fn);
  sayFixturesMissing();
  return describe.skip(title, fn);
}

/** A fresh temp folder per test suite, removed afterwards. */
export function tempDir(prefix = 'diskimg-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface CliResult {
  code: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs the built `diskimg` as a real process. */
export function runCli(args: string[], input?: Buffer): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { input, maxBuffer: 1 << 30 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.toString() };
}

export function cliOk(args: string[], input?: Buffer): Buffer {
  const r = runCli(args, input);
  if (r.code !== 0) throw new Error(`diskimg ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

export function cliJson<T = any>(args: string[]): T {
  return JSON.parse(cliOk([...args, '--json']).toString());
}

export function hasTool(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { maxBuffer: 1 << 30 }).toString();
}

/** Decompresses a fixture from ../shared/fixtures (.gz or .bz2) into `dir`; returns the path. */
export function fixture(name: string, dir: string): string {
  const src = path.join(FIXTURES, name);
  const out = path.join(dir, name.replace(/\.(gz|bz2)$/, ''));
  if (name.endsWith('.gz')) writeFileSync(out, gunzipSync(readFileSync(src)));
  else if (name.endsWith('.bz2')) execFileSync('sh', ['-c', `bzip2 -dc "${src}" > "${out}"`]);
  else writeFileSync(out, readFileSync(src));
  return out;
}

/** Deterministic PRNG (mulberry32) so randomised tests are reproducible from their seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomBytes(rand: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

/** The whole virtual disk of an image, read through its chain (test images are small). */
export async function readChain(p: string): Promise<Buffer> {
  const c = await openChain(p);
  try {
    return await c.readRange(0, c.virtualSize);
  } finally {
    await c.close();
  }
}

/** Resolves when `child` has exited, also when it already had before the call (a bare on('exit') would then wait forever). */
export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((res) => child.once('exit', (code, signal) => res({ code, signal })));
}
