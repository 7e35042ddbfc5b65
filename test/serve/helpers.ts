import { ChildProcess, spawn, spawnSync } from 'child_process';
import { createHash } from 'crypto';
import { readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/vhd/create';
import { CLI, randomBytes } from '../helpers/util';

/** python3 with Debian's libnbd bindings (python3-libnbd installs into the system python). */
export const PYTHON = '/usr/bin/python3';

export interface ServeProcess {
  proc: ChildProcess;
  url: string;
  readyLine: string;
  stdout: () => string;
  stderr: () => string;
  /** Sends a signal and resolves with the exit code once the process has ended. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

/** Starts `diskimg serve …` and resolves when it prints its ready line. */
export function startServe(args: string[], timeoutMs = 20000): Promise<ServeProcess> {
  const proc = spawn(process.execPath, [CLI, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code, sig) => resolve(code ?? (sig ? -1 : null))));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`serve did not get ready: ${err}`)); }, timeoutMs);
    proc.stderr!.on('data', (d) => { err += d.toString(); });
    proc.stdout!.on('data', (d) => {
      out += d.toString();
      const m = /^serving .* on (\S+)$/m.exec(out);
      if (m && timer) {
        clearTimeout(timer);
        resolve({
          proc,
          url: m[1],
          readyLine: m[0],
          stdout: () => out,
          stderr: () => err,
          exited,
          stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
            if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
            return exited;
          },
        });
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited ${code} before it was ready: ${err}`));
    });
  });
}

/** Runs a python3 + libnbd script (given as text) with arguments; returns stdout, throws on failure. */
export function py(script: string, args: string[], input?: string): string {
  const r = spawnSync(PYTHON, ['-c', script, ...args], { input, maxBuffer: 1 << 30, timeout: 120_000 });
  if (r.status !== 0) throw new Error(`python exited ${r.status}: ${r.stderr?.toString()}`);
  return r.stdout.toString();
}

/** Like py() but asynchronous, for concurrent clients. */
export function pyAsync(script: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(PYTHON, ['-c', script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { err += d; });
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`python exited ${code}: ${err}`))));
  });
}

export function run(cmd: string, args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 30, timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

export function runOk(cmd: string, args: string[]): string {
  const r = run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

export function sha(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/**
 * A random chain base <- c1 <- … <- cN (dynamic or fixed base, random block size) with random
 * writes in every layer; returns the paths (top last) and the flat model of the top's disk.
 */
export async function randomChain(dir: string, r: () => number, options: { layers: number; base: 'dynamic' | 'fixed'; size?: number; blockSize?: number }): Promise<{ paths: string[]; model: Buffer }> {
  const size = options.size ?? 8 * 1024 * 1024;
  const paths = [path.join(dir, 'base.vhd')];
  const real = await createImage(paths[0], { size, type: options.base, blockSize: options.blockSize ?? 512 * 1024, exactSize: true });
  const model = Buffer.alloc(real);
  const writeSome = async (p: string) => {
    const c = await openChain(p, { writable: true });
    try {
      for (let i = 0; i < 6; i++) {
        const len = 1 + Math.floor(r() * 300000);
        const off = Math.floor(r() * (real - len));
        const data = randomBytes(r, len);
        await c.write(off, data);
        data.copy(model, off);
      }
      await c.flush();
    } finally {
      await c.close();
    }
  };
  await writeSome(paths[0]);
  for (let i = 1; i <= options.layers; i++) {
    paths.push(path.join(dir, `c${i}.vhd`));
    await createChild(paths[i - 1], paths[i]);
    await writeSome(paths[i]);
  }
  return { paths, model };
}

export function writeFile(file: string, data: Buffer): string {
  writeFileSync(file, data);
  return file;
}

/** Python: apply a JSON list of operations through libnbd, then print the final disk's sha256. */
export const PY_APPLY = `
import sys, json, nbd, hashlib
ops = json.load(open(sys.argv[2]))
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for op in ops:
    k = op['op']
    if k == 'write':
        data = bytes.fromhex(op['hex']) if 'hex' in op else bytes([op['byte']]) * op['length']
        h.pwrite(data, op['offset'], nbd.CMD_FLAG_FUA if op.get('fua') else 0)
    elif k == 'zero':
        h.zero(op['length'], op['offset'], nbd.CMD_FLAG_NO_HOLE if op.get('nohole') else 0)
    elif k == 'trim':
        h.trim(op['length'], op['offset'])
    elif k == 'flush':
        h.flush()
h.flush()
size = h.get_size()
m = hashlib.sha256()
off = 0
while off < size:
    n = min(4 << 20, size - off)
    m.update(h.pread(n, off))
    off += n
print(m.hexdigest())
h.shutdown()
`;
