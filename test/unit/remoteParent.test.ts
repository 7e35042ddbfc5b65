import { strict as assert } from 'assert';
import { execFile } from 'child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { describeImage } from '../../src/chain/info';
import { mergeChild } from '../../src/chain/merge';
import { exportRaw } from '../../src/chain/export';
import { DiskImageError } from '../../src/format/errors';
import { createImage } from '../../src/format/registry';
import { cacheStatus, parentCachePath } from '../../src/io/parentCache';
import { CLI, randomBytes, readChain, rng, tempDir } from '../helpers/util';
import { snapshot } from '../../src/chain/snapshot';
import { discardChild } from '../../src/chain/discard';
import { diffImages } from '../../src/chain/diff';
import { startServe } from '../serve/helpers';
import { Fault, RangeServer, startRangeServer } from '../helpers/rangeServer';

const MiB = 1024 * 1024;

/** The CLI without blocking this process's event loop (the test's server runs in it). */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, maxBuffer: 64 * MiB, encoding: 'buffer', timeout: 60000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout: stdout.toString('latin1'), stderr: stderr.toString() });
    });
  });
}

async function writeAll(image: string, model: Buffer, seed: number, count: number): Promise<void> {
  const rand = rng(seed);
  const chain = await openChain(image, { writable: true });
  try {
    for (let i = 0; i < count; i++) {
      const len = (1 + Math.floor(rand() * 128)) * 512;
      const off = Math.floor(rand() * ((model.length - len) / 512)) * 512;
      const data = randomBytes(rand, len);
      await chain.write(off, data);
      data.copy(model, off);
    }
  } finally {
    await chain.close();
  }
}

describe('remote parents over HTTP', function () {
  this.timeout(120000);
  const t = tempDir('remote-');
  const serverDir = path.join(t.dir, 'server');
  let base = '';
  let baseBytes = Buffer.alloc(0);
  let n = 0;
  const servers: RangeServer[] = [];
  const sub = () => {
    const d = path.join(t.dir, `client${n++}`);
    mkdirSync(d);
    return d;
  };
  const serve = async (options: Parameters<typeof startRangeServer>[1] = {}) => {
    const s = await startRangeServer(serverDir, options);
    servers.push(s);
    return s;
  };

  before(async () => {
    process.env.DISKIMG_HTTP_BACKOFF_MS = '10';
    mkdirSync(serverDir);
    base = path.join(serverDir, 'base.vhd');
    await createImage(base, { size: 12 * MiB, exactSize: true });
    baseBytes = Buffer.alloc(12 * MiB);
    await writeAll(base, baseBytes, 1, 80);
    writeFileSync(path.join(serverDir, 'disk.img'), randomBytes(rng(2), 5 * MiB + 300));
    writeFileSync(path.join(serverDir, 'big.img'), randomBytes(rng(4), 24 * MiB));
  });
  after(async () => {
    delete process.env.DISKIMG_HTTP_BACKOFF_MS;
    delete process.env.DISKIMG_HTTP_TIMEOUT_MS;
    for (const s of servers) await s.close();
    t.cleanup();
  });

  it('child <URL>: the URL in a MacX locator; reads, writes and info go through the chain unchanged', async () => {
    const s = await serve({ latencyMs: 2 });
    const d = sub();
    const child = path.join(d, 'child.vhd');
    await createChild(s.url('base.vhd'), child);
    const info = await describeImage(child);
    assert.deepEqual(info.parent!.locators, [{ platform: 'MacX', path: s.url('base.vhd') }]);
    assert.equal(info.parent!.name, 'base.vhd');
    assert.equal(info.parent!.resolvedPath, s.url('base.vhd'));
    const remote = info.parent!.remote as { kind: string; url: string; reachable: boolean; size: number; cache: unknown };
    assert.deepEqual(remote, { kind: 'http', url: s.url('base.vhd'), size: 12 * MiB, reachable: true, problem: null, cache: null });
    assert.equal((info.chain[1] as { url?: string }).url, s.url('base.vhd'));
    const model = Buffer.from(baseBytes);
    assert.ok((await readChain(child)).equals(model));
    await writeAll(child, model, 3, 50);
    assert.ok((await readChain(child)).equals(model));
    // export works as usual; merge into the server's file is refused, saying why.
    const out = path.join(d, 'flat.raw');
    await exportRaw(child, out);
    assert.ok(require('fs').readFileSync(out).equals(model));
    await assert.rejects(mergeChild(child), (e: unknown) => e instanceof DiskImageError && e.code === 'EREMOTEWRITE'
      && /writes never go to a parent on a server/.test(e.message) && /local copy/.test(e.message));
    assert.ok(existsSync(child));
  });

  it('a raw file on the server is a raw parent (nil parent UUID)', async () => {
    const s = await serve();
    const d = sub();
    const child = path.join(d, 'over-raw.vhd');
    await createChild(s.url('disk.img'), child);
    const info = await describeImage(child);
    assert.equal(info.parent!.uuid, '00000000-0000-0000-0000-000000000000');
    assert.equal(info.virtualSize, Math.ceil((5 * MiB + 300) / 512) * 512);
    assert.equal((info.chain[1] as { kind?: string }).kind, 'http');
    const expect = Buffer.concat([require('fs').readFileSync(path.join(serverDir, 'disk.img')), Buffer.alloc(info.virtualSize - 5 * MiB - 300)]);
    assert.ok((await readChain(child)).equals(expect));
  });

  it('reads are coalesced into runs of at least 1 MiB', async () => {
    const s = await serve();
    const d = sub();
    const child = path.join(d, 'c.vhd');
    await createChild(s.url('disk.img'), child);
    s.log.length = 0;
    const chain = await openChain(child);
    try {
      // Many small reads, as a file system would make them.
      const buf = Buffer.alloc(4096);
      for (let pos = 0; pos + buf.length <= chain.virtualSize; pos += buf.length) await chain.read(pos, buf);
    } finally {
      await chain.close();
    }
    const ranges = s.log.map((l) => /bytes=(\d+)-(\d+)/.exec(l)!).map((m) => Number(m[2]) - Number(m[1]) + 1);
    // The open's probe of the first sector, then whole runs (the file's last run may be shorter).
    assert.ok(ranges.length <= 8, `requests: ${s.log.join(', ')}`);
    assert.ok(ranges.filter((r) => r > 512).slice(0, -1).every((r) => r >= MiB), `ranges: ${ranges.join(', ')}`);
  });

  it('opening a chain: the first request is the first chunk (kept for the format probe), the last chunk comes with it; the open after the probe reuses its source', async () => {
    const s = await serve();
    const child = path.join(sub(), 'c.vhd');
    await createChild(s.url('disk.img'), child);
    s.log.length = 0;
    const size = 5 * MiB + 300;
    const chain = await openChain(child);
    try {
      const ranges = s.log.map((l) => /bytes=(\d+)-(\d+)/.exec(l)!).map((m) => `${m[1]}-${m[2]}`);
      // One probe for the probe and the open both; the ends fetched at once; nothing asked twice.
      assert.deepEqual(ranges.slice(0, 2), [`0-${MiB - 1}`, `${5 * MiB}-${size - 1}`], s.log.join(', '));
      assert.equal(new Set(ranges).size, ranges.length, s.log.join(', '));
      assert.ok(ranges.length <= 3, s.log.join(', '));
      const before = s.log.length;
      // Both ends are read from memory, without another request.
      const disk = readFileSync(path.join(serverDir, 'disk.img'));
      assert.ok((await chain.readRange(0, 4096)).equals(disk.subarray(0, 4096)));
      assert.ok((await chain.readRange(5 * MiB, 300)).equals(disk.subarray(5 * MiB)));
      assert.equal(s.log.length, before);
    } finally {
      await chain.close();
    }
  });

  it('--cache: every remote byte is fetched once; the second full read makes zero requests; cache --status/--drop', async () => {
    const s = await serve({ latencyMs: 1 });
    const d = sub();
    const child = path.join(d, 'cached.vhd');
    await createChild(s.url('base.vhd'), child);
    const first = await openChain(child, { cache: true });
    try {
      const a = await first.readRange(0, first.virtualSize);
      assert.ok(a.equals(baseBytes));
    } finally {
      await first.close();
    }
    const cachePath = parentCachePath(child);
    assert.equal(path.basename(cachePath), '.cached.vhd.parent-cache');
    const st = cacheStatus(cachePath)!;
    assert.equal(st.cachedBytes, st.size, 'the whole parent file is cached');
    const before = s.requests;
    const again = await cli(['read', child]); // the cache exists: used without --cache
    assert.equal(again.code, 0, again.stderr);
    assert.ok(Buffer.from(again.stdout, 'latin1').equals(baseBytes));
    assert.equal(s.requests, before, 'zero requests to the server');
    const status = await cli(['cache', child, '--status', '--json']);
    assert.equal(status.code, 0, status.stderr);
    const j = JSON.parse(status.stdout);
    assert.equal(j.fill, 1);
    assert.equal(j.parent, s.url('base.vhd'));
    const info = await describeImage(child);
    assert.equal((info.parent!.remote as { cache: { fill: number } }).cache.fill, 1);
    const drop = await cli(['cache', child, '--drop']);
    assert.equal(drop.code, 0, drop.stderr);
    assert.ok(!existsSync(cachePath));
    const fill = await cli(['cache', child, '--fill', '--json']);
    assert.equal(fill.code, 0, fill.stderr);
    assert.equal(JSON.parse(fill.stdout).fill, 1);
  });

  it('a parent that changed on the server is an error naming it, never new data (open, between requests, under a cache)', async () => {
    let etag = '"v1"';
    const s = await serve({ etag: () => etag });
    const d = sub();
    const child = path.join(d, 'ch.vhd');
    await createChild(s.url('big.img'), child);
    const chain = await openChain(child, { cache: true });
    try {
      await chain.readRange(0, MiB);
      etag = '"v2"';
      // Past the read-ahead: this range must come from the server, which now has another file.
      await assert.rejects(chain.readRange(20 * MiB, MiB), (e: unknown) => e instanceof DiskImageError && e.code === 'ECHANGED'
        && e.message.startsWith(`${child}: parent ${s.url('big.img')}: parent changed on the server`));
    } finally {
      await chain.close();
    }
    // The cache holds the first MiB of v1; the server now has v2: reading what is cached is fine,
    // reading what must be fetched is refused.
    const again = await openChain(child);
    try {
      await again.readRange(0, MiB);
      await assert.rejects(again.readRange(16 * MiB, MiB), (e: unknown) => e instanceof DiskImageError && e.code === 'ECHANGED' && /since it was cached/.test(e.message));
    } finally {
      await again.close();
    }
  });

  it('random chains whose bottom is remote (VHD or raw) match a flat model through snapshot, diff, discard and merge between local layers', async () => {
    const s = await serve({ latencyMs: 1 });
    for (const [name, seed] of [['base.vhd', 31], ['disk.img', 32]] as Array<[string, number]>) {
      const d = sub();
      const rand = rng(seed);
      let top = path.join(d, 'l0.vhd');
      await createChild(s.url(name), top);
      const model = await readChain(top);
      const depth = 2 + Math.floor(rand() * 3);
      let previous: Buffer = Buffer.from(model);
      let previousTop = top;
      for (let k = 0; k < depth; k++) {
        await writeAll(top, model, seed * 10 + k, 15);
        assert.ok((await readChain(top)).equals(model), `${name}: depth ${k}`);
        previous = Buffer.from(model);
        previousTop = top;
        top = await snapshot(top);
      }
      // A last layer written, diffed against its parent, then discarded: the parent reads as before.
      await writeAll(top, model, seed * 100, 10);
      const diff = await diffImages(top, previousTop);
      assert.equal(diff.identical, previous.equals(model));
      await discardChild(top);
      assert.ok((await readChain(previousTop)).equals(previous));
      // Merging local layers into each other (never into the server's file) keeps the view.
      await mergeChild(previousTop);
      const parentOfTop = (await describeImage(path.join(d, 'l0.vhd'))).path;
      assert.ok(existsSync(parentOfTop));
    }
  });

  it('serve over a chain whose parent is on a server: a client reads the right bytes; the cache is on by default', async () => {
    const s = await serve({ latencyMs: 1 });
    const d = sub();
    const child = path.join(d, 'served.vhd');
    await createChild(s.url('base.vhd'), child);
    const model = Buffer.from(baseBytes);
    await writeAll(child, model, 41, 20);
    const srv = await startServe([child, '--read-only', '--socket', path.join(d, 'served.sock')]);
    try {
      const over = path.join(d, 'client-of-serve.vhd');
      await createChild(srv.url, over);
      assert.ok((await readChain(over)).equals(model));
    } finally {
      await srv.stop();
    }
    const cache = cacheStatus(parentCachePath(child));
    assert.ok(cache && cache.cachedBytes > 0, 'serve read the parent through its cache');
  });

  describe('faults', () => {
    const faulty = async (fault: (n: number) => Fault | null) => {
      const s = await serve({ fault });
      return { url: s.url('base.vhd') };
    };
    const readVia = async (url: string): Promise<Buffer> => {
      const d = sub();
      const child = path.join(d, 'r.vhd');
      // The first request of the child's making may itself hit a fault: that is the open's retry.
      await createChild(url, child);
      return readChain(child);
    };

    for (const kind of ['500', '503', 'drop', 'short'] as Fault[]) {
      it(`${kind}: retried with backoff, the bytes are right`, async () => {
        // Every third request fails once.
        const { url } = await faulty((n) => (n % 3 === 2 ? kind : null));
        assert.ok((await readVia(url)).equals(baseBytes));
      });
    }

    it('a stall past the timeout is retried, not a hang', async () => {
      process.env.DISKIMG_HTTP_TIMEOUT_MS = '300';
      try {
        const { url } = await faulty((n) => (n === 3 ? 'stall' : null));
        assert.ok((await readVia(url)).equals(baseBytes));
      } finally {
        delete process.env.DISKIMG_HTTP_TIMEOUT_MS;
      }
    });

    it('a server without ranges, or with a wrong Content-Range, is an error (not retried into wrong bytes)', async () => {
      const a = await faulty(() => 'no-range');
      await assert.rejects(createChild(a.url, path.join(sub(), 'x.vhd')), /does not answer range requests/);
      const b = await faulty((n) => (n > 1 ? 'bad-range' : null));
      const d = sub();
      const child = path.join(d, 'y.vhd');
      await assert.rejects(async () => { await createChild(b.url, child); await readChain(child); }, /Content-Range 'bytes \d+-\d+\/\d+' does not answer/);
    });

    it('a parent that stays unreachable: one clear line after 5 tries', async () => {
      const s = await serve();
      const d = sub();
      const child = path.join(d, 'gone.vhd');
      await createChild(s.url('base.vhd'), child);
      const url = s.url('base.vhd');
      await s.close();
      servers.splice(servers.indexOf(s), 1);
      const r = await cli(['read', child, '--length', '512'], { DISKIMG_HTTP_BACKOFF_MS: '5' });
      assert.equal(r.code, 2);
      assert.equal(r.stderr, `diskimg: ${child}: parent ${url}: connection refused after 5 tries\n`);
      const info = await cli(['info', '--json', child], { DISKIMG_HTTP_BACKOFF_MS: '5' });
      assert.equal(info.code, 0, info.stderr);
      const j = JSON.parse(info.stdout);
      assert.equal(j.parent.remote.reachable, false);
      assert.match(j.parent.remote.problem, /connection refused after 5 tries/);
      const merge = await cli(['merge', child], { DISKIMG_HTTP_BACKOFF_MS: '5' });
      assert.equal(merge.code, 2);
    });
  });
});
