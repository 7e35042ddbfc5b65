import { strict as assert } from 'assert';
import { ChildProcess, spawn, spawnSync } from 'child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { describeImage } from '../../src/chain/info';
import { mergeChild } from '../../src/chain/merge';
import { DiskImageError } from '../../src/format/errors';
import { createImage } from '../../src/format/registry';
import { hasTool, randomBytes, readChain, rng, tempDir } from '../helpers/util';
import { startServe, ServeProcess } from '../serve/helpers';

const MiB = 1024 * 1024;

async function waitFor(cond: () => boolean, what: string, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('remote parents over NBD (own client, against qemu-nbd and diskimg serve)', function () {
  this.timeout(120000);
  const t = tempDir('nbdparent-');
  const procs: ChildProcess[] = [];
  let serve: ServeProcess | null = null;
  let base = '';
  let model = Buffer.alloc(0);
  let n = 0;
  const sub = () => {
    const d = path.join(t.dir, `c${n++}`);
    mkdirSync(d);
    return d;
  };
  const qemuNbd = async (args: string[], socket?: string): Promise<ChildProcess> => {
    const p = spawn('qemu-nbd', args, { stdio: 'ignore' });
    procs.push(p);
    if (socket) await waitFor(() => existsSync(socket), `qemu-nbd socket ${socket}`);
    else await new Promise((r) => setTimeout(r, 500));
    return p;
  };

  before(async function () {
    if (!hasTool('qemu-nbd')) {
      console.log('    (NBD parent tests against qemu-nbd not run: qemu-nbd not installed)');
      this.skip();
    }
    process.env.DISKIMG_HTTP_BACKOFF_MS = '10';
    base = path.join(t.dir, 'base.vhd');
    // An exact CHS size, so that qemu (which takes the size from CHS) and we agree on it.
    const size = await createImage(base, { size: 8 * MiB });
    model = Buffer.alloc(size);
    const chain = await openChain(base, { writable: true });
    const rand = rng(11);
    for (let i = 0; i < 40; i++) {
      const len = (1 + Math.floor(rand() * 256)) * 512;
      const off = Math.floor(rand() * ((model.length - len) / 512)) * 512;
      const data = randomBytes(rand, len);
      await chain.write(off, data);
      data.copy(model, off);
    }
    await chain.close();
  });
  after(async () => {
    delete process.env.DISKIMG_HTTP_BACKOFF_MS;
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    if (serve) await serve.stop();
    t.cleanup();
  });

  it('qemu-nbd exporting the VHD file: the child finds a VHD parent (UUID checked), reads match, merge refused', async () => {
    const sock = path.join(t.dir, 'file.sock');
    await qemuNbd(['-r', '-t', '-f', 'raw', '-x', 'basefile', `--socket=${sock}`, base], sock);
    const url = `nbd+unix:///basefile?socket=${sock}`;
    const d = sub();
    const child = path.join(d, 'child.vhd');
    await createChild(url, child);
    const info = await describeImage(child);
    assert.equal(info.chain.length, 2);
    assert.equal((info.chain[1] as { kind?: string }).kind, 'nbd+unix');
    assert.notEqual(info.parent!.uuid, '00000000-0000-0000-0000-000000000000');
    assert.equal(info.parent!.remote!.reachable, true);
    const expect = Buffer.from(model);
    assert.ok((await readChain(child)).equals(expect));
    const w = await openChain(child, { writable: true });
    await w.write(3 * MiB, Buffer.alloc(4096, 0xee));
    await w.close();
    Buffer.alloc(4096, 0xee).copy(expect, 3 * MiB);
    assert.ok((await readChain(child)).equals(expect));
    await assert.rejects(mergeChild(child), (e: unknown) => e instanceof DiskImageError && e.code === 'EREMOTEWRITE');
  });

  it('qemu-nbd exporting the flattened disk over TCP: a raw parent; with a full cache it reads with the server gone', async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const p = await qemuNbd(['-r', '-t', '-f', 'vpc', '-x', 'flat', '-p', String(port), '-b', '127.0.0.1', base]);
    const url = `nbd://127.0.0.1:${port}/flat`;
    const d = sub();
    const child = path.join(d, 'over-flat.vhd');
    await createChild(url, child);
    const info = await describeImage(child);
    assert.equal(info.parent!.uuid, '00000000-0000-0000-0000-000000000000');
    const chain = await openChain(child, { cache: true });
    try {
      assert.ok((await chain.readRange(0, chain.virtualSize)).equals(model));
    } finally {
      await chain.close();
    }
    p.kill('SIGTERM');
    await new Promise((r) => p.once('exit', r));
    assert.ok((await readChain(child)).equals(model), 'read from the cache alone');
  });

  it('diskimg serve as the parent server', async () => {
    const sock = path.join(t.dir, 'serve.sock');
    serve = await startServe([base, '--read-only', '--socket', sock]);
    const d = sub();
    const child = path.join(d, 'over-serve.vhd');
    await createChild(serve.url, child);
    assert.ok((await readChain(child)).equals(model));
  });

  it('an unreachable NBD parent: one clear line after 5 tries', async () => {
    const d = sub();
    const sock = path.join(t.dir, 'short-lived.sock');
    const p = await qemuNbd(['-r', '-t', '-f', 'raw', '-x', 'x', `--socket=${sock}`, base], sock);
    const url = `nbd+unix:///x?socket=${sock}`;
    const child = path.join(d, 'lost.vhd');
    await createChild(url, child);
    p.kill('SIGTERM');
    await new Promise((r) => (p.exitCode !== null ? r(null) : p.once('exit', r)));
    spawnSync('rm', ['-f', sock]);
    await assert.rejects(readChain(child), (e: unknown) => e instanceof DiskImageError
      && e.message === `${child}: parent ${url}: no such socket after 5 tries`);
    void readFileSync; void writeFileSync;
  });
});
