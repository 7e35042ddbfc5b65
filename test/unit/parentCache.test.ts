import { strict as assert } from 'assert';
import { execFile, execFileSync, spawn } from 'child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'fs';
import * as http from 'http';
import { AddressInfo } from 'net';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { cacheStatus, parentCachePath } from '../../src/io/parentCache';
import { CLI, exited, randomBytes, rng, tempDir } from '../helpers/util';
import { RangeServer, startRangeServer } from '../helpers/rangeServer';

const MiB = 1024 * 1024;

/** The CLI without blocking this process's event loop (the test's server runs in it). */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, maxBuffer: 64 * MiB, encoding: 'buffer', timeout: 60000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr: stderr.toString() });
    });
  });
}

/** Byte ranges the server was asked for since log index `from`, as [start, end] pairs. */
function rangesSince(s: RangeServer, from: number): Array<[number, number]> {
  return s.log.slice(from).map((l) => /bytes=(\d+)-(\d+)/.exec(l)).filter((m): m is RegExpExecArray => m !== null).map((m) => [Number(m[1]), Number(m[2])]);
}

/** Where the cache's two metadata slots start (layout of parentCache.ts: 4 KiB header, then the slots). */
function slotOffsets(size: number): [number, number] {
  const bitmap = Math.ceil(Math.ceil(size / MiB) / 8);
  const slot = Math.ceil((64 + 2 * bitmap) / 4096) * 4096;
  return [4096, 4096 + slot];
}

function generation(cache: string, at: number): number {
  return readFileSync(cache).readUInt32LE(at + 4);
}

describe('the parent cache: written without fsync per chunk, never serving wrong bytes', function () {
  this.timeout(120000);
  const t = tempDir('remote-cache-');
  const serverDir = path.join(t.dir, 'server');
  const SIZE = 24 * MiB;
  let bytes: Buffer = Buffer.alloc(0);
  let server: RangeServer;
  let n = 0;
  const sub = () => {
    const d = path.join(t.dir, `client${n++}`);
    mkdirSync(d);
    return d;
  };

  before(async () => {
    mkdirSync(serverDir);
    bytes = randomBytes(rng(7), SIZE);
    writeFileSync(path.join(serverDir, 'disk.img'), bytes);
    server = await startRangeServer(serverDir, { latencyMs: 2 });
  });
  after(async () => {
    await server.close();
    t.cleanup();
  });

  const newChild = async () => {
    const child = path.join(sub(), 'c.vhd');
    await createChild(server.url('disk.img'), child);
    return child;
  };

  it('a full read fills it; the slots alternate with growing generations; a second read makes zero requests', async () => {
    const child = await newChild();
    const first = await cli(['read', child, '--cache']);
    assert.equal(first.code, 0, first.stderr);
    assert.ok(first.stdout.equals(bytes));
    const cache = parentCachePath(child);
    assert.equal(cacheStatus(cache)!.cachedBytes, SIZE);
    const [a, b] = slotOffsets(SIZE);
    assert.notEqual(generation(cache, a), generation(cache, b), 'both slots written, different generations');
    const before = server.requests;
    const again = await cli(['read', child]);
    assert.ok(again.stdout.equals(bytes));
    assert.equal(server.requests, before);
  });

  it('a torn newest slot: the other one is used; both torn: the cache is dropped and fetched again, bytes right', async () => {
    const child = await newChild();
    assert.equal((await cli(['read', child, '--cache'])).code, 0);
    const cache = parentCachePath(child);
    const [a, b] = slotOffsets(SIZE);
    const newest = generation(cache, a) > generation(cache, b) ? a : b;
    const olderFill = (() => {
      // What the older slot vouches for: tear the newest and look.
      const fd = openSync(cache, 'r+');
      try { writeSync(fd, Buffer.from([0xff, 0xff]), 0, 2, newest + 40); } finally { closeSync(fd); }
      return cacheStatus(cache);
    })();
    assert.ok(olderFill, 'a cache with one whole slot is still a cache');
    assert.ok(olderFill.cachedBytes < SIZE, 'the older slot records fewer chunks');
    let from = server.log.length;
    const r1 = await cli(['read', child]);
    assert.ok(r1.stdout.equals(bytes));
    // Only chunks the older slot did not vouch for were fetched.
    const fetched = rangesSince(server, from).reduce((s, [x, y]) => s + y - x + 1, 0);
    // (+ the opening probe of the first sector: with a cache there, the open fetches no more)
    assert.ok(fetched <= SIZE - olderFill.cachedBytes + 512, `fetched ${fetched}`);
    // Now tear both slots.
    const fd = openSync(cache, 'r+');
    try {
      writeSync(fd, Buffer.from('XXXX'), 0, 4, a);
      writeSync(fd, Buffer.from('XXXX'), 0, 4, b);
    } finally { closeSync(fd); }
    assert.equal(cacheStatus(cache), null);
    from = server.log.length;
    const r2 = await cli(['read', child]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.ok(r2.stdout.equals(bytes), 'never the torn cache\'s bytes');
    assert.ok(rangesSince(server, from).length > 0, 'fetched again');
    assert.equal(cacheStatus(cache)!.cachedBytes, SIZE, 'a new cache took its place');
  });

  it('bytes in the data area without their bit are never served (a killed writer)', async () => {
    const child = await newChild();
    // A cache with no chunk recorded: open it once and close it.
    const c = await openChain(child, { cache: true });
    await c.close();
    const cache = parentCachePath(child);
    // The open itself read the first and the last chunk (the format probes); chunk 3 is not there.
    assert.ok(cacheStatus(cache)!.cachedBytes <= 2 * MiB);
    // Garbage where chunk 3 would go, as a writer killed before its slot would leave it.
    const [, b] = slotOffsets(SIZE);
    const data = b + (b - 4096);
    const fd = openSync(cache, 'r+');
    try { writeSync(fd, Buffer.alloc(MiB, 0xee), 0, MiB, data + 3 * MiB); } finally { closeSync(fd); }
    const r = await cli(['read', child, '--offset', String(3 * MiB), '--length', String(MiB)]);
    assert.ok(r.stdout.equals(bytes.subarray(3 * MiB, 4 * MiB)));
  });

  it('kill -9 in the middle of a first read: what was recorded is served without a request, the rest fetched, bytes right', async () => {
    const slow = await startRangeServer(serverDir, { latencyMs: 5, bytesPerSecond: 3 * MiB });
    try {
      const child = path.join(sub(), 'k.vhd');
      await createChild(slow.url('disk.img'), child);
      const p = spawn(process.execPath, [CLI, 'read', child, '--cache', '--output', '/dev/null'], { stdio: 'ignore' });
      const cache = parentCachePath(child);
      // Killed once the cache records some chunks (commits come every 16), or after 20 s at most (hang guard).
      const t0 = Date.now();
      while ((cacheStatus(cache)?.cachedBytes ?? 0) === 0 && Date.now() - t0 < 20000) await new Promise((r) => setTimeout(r, 50));
      p.kill('SIGKILL');
      await exited(p);
      const st = cacheStatus(cache)!;
      assert.ok(st.cachedBytes > 0 && st.cachedBytes < SIZE, `recorded ${st.cachedBytes}`);
      const from = slow.log.length;
      const r = await cli(['read', child]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(bytes));
      // Only what the cache had not recorded was fetched.
      const recorded = st.cachedBytes / MiB;
      const fetched = rangesSince(slow, from);
      assert.ok(fetched.length > 0);
      const fetchedBytes = fetched.reduce((s, [x, y]) => s + y - x + 1, 0);
      assert.ok(fetchedBytes <= SIZE - recorded * MiB + 512, `fetched ${fetchedBytes} with ${recorded} MiB recorded`);
    } finally {
      await slow.close();
    }
  });

  it('after a reboot (another boot id) only chunks fsynced before their slot count; cache --fill fsyncs', async () => {
    const child = await newChild();
    const cache = parentCachePath(child);
    assert.equal((await cli(['read', child, '--cache'], { DISKIMG_BOOT_ID: 'boot-a' })).code, 0);
    const same = await cli(['cache', child, '--status', '--json'], { DISKIMG_BOOT_ID: 'boot-a' });
    assert.equal(JSON.parse(same.stdout.toString()).fill, 1, 'full in the boot that wrote it');
    // This process runs in the machine's real boot: nothing boot-a wrote was fsynced, so nothing counts.
    assert.equal(cacheStatus(cache)!.cachedBytes, 0);
    // Another boot: nothing was fsynced, so nothing is vouched for (but the two chunks the status
    // command's own open read again: the first and the last).
    const other = await cli(['cache', child, '--status', '--json'], { DISKIMG_BOOT_ID: 'boot-b' });
    assert.ok(JSON.parse(other.stdout.toString()).fill <= 2 / 24);
    let before = server.requests;
    const r = await cli(['read', child], { DISKIMG_BOOT_ID: 'boot-b' });
    assert.ok(r.stdout.equals(bytes));
    assert.ok(server.requests > before, 'fetched again after the "reboot"');
    // --fill makes it durable: it survives the next "reboot" whole.
    assert.equal((await cli(['cache', child, '--fill'], { DISKIMG_BOOT_ID: 'boot-b' })).code, 0);
    const st = await cli(['cache', child, '--status', '--json'], { DISKIMG_BOOT_ID: 'boot-c' });
    assert.equal(JSON.parse(st.stdout.toString()).fill, 1);
    before = server.requests;
    const r2 = await cli(['read', child], { DISKIMG_BOOT_ID: 'boot-c' });
    assert.ok(r2.stdout.equals(bytes));
    assert.equal(server.requests, before, 'zero requests');
  });

  it('two children of one URL in one directory share one cache (a hard link): each byte fetched once', async () => {
    const d = sub();
    const one = path.join(d, 'one.vhd');
    const two = path.join(d, 'two.vhd');
    await createChild(server.url('disk.img'), one);
    await createChild(server.url('disk.img'), two);
    const from = server.log.length;
    assert.equal((await cli(['read', one, '--cache'])).code, 0);
    const r = await cli(['read', two, '--cache']);
    assert.ok(r.stdout.equals(bytes));
    // Past the opening probes (the first sector), every chunk is a 1 MiB or longer range.
    const fetched = rangesSince(server, from).filter(([x, y]) => y - x + 1 > 512).reduce((s, [x, y]) => s + y - x + 1, 0);
    assert.equal(fetched, SIZE, 'every byte fetched once for both children');
    assert.equal(statSync(parentCachePath(one)).ino, statSync(parentCachePath(two)).ino);
    // Dropping one child's cache leaves the other's.
    assert.equal((await cli(['cache', one, '--drop'])).code, 0);
    assert.equal(cacheStatus(parentCachePath(two))!.cachedBytes, SIZE);
  });

  it('received bodies go to the cache with O_DIRECT (not through the page cache), an unaligned last chunk too; tmpfs works', async function () {
    // A parent whose size is not a multiple of a page: its last bytes cannot be an O_DIRECT write.
    const odd = 9 * MiB + 1234;
    const oddBytes = randomBytes(rng(11), odd);
    writeFileSync(path.join(serverDir, 'odd.img'), oddBytes);
    for (const base of [t.dir, '/dev/shm']) {
      const dir = mkdtempSync(path.join(base, 'remote-direct-'));
      try {
        const child = path.join(dir, 'c.vhd');
        await createChild(server.url('odd.img'), child);
        const first = await cli(['read', child, '--cache']);
        assert.equal(first.code, 0, first.stderr);
        // The child's size is the parent's rounded up to a sector: zeros past the parent's end.
        assert.ok(first.stdout.subarray(0, odd).equals(oddBytes), `${base}: first read`);
        assert.ok(first.stdout.subarray(odd).every((b) => b === 0));
        const cache = parentCachePath(child);
        assert.equal(cacheStatus(cache)!.cachedBytes, odd);
        const fsType = execFileSync('stat', ['-f', '-c', '%T', dir]).toString().trim();
        if (fsType !== 'tmpfs') {
          // fincore (util-linux) counts the file's bytes in the page cache: the data went past it.
          // Only the header, the slots and the unaligned tail page were written through it, and
          // the first chunks, read back from the cache when the CLI opened the chain a second time
          // (written through the page cache, all 9 MiB would be there).
          const resident = Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', cache]).toString().trim());
          assert.ok(resident <= 3 * MiB, `${base}: ${resident} of ${odd} bytes of the cache in the page cache`);
        }
        // The data area (after the header and slots) holds the parent's bytes at their offsets.
        const [, slotB] = slotOffsets(odd);
        const dataAt = slotB + (slotB - 4096);
        assert.ok(readFileSync(cache).subarray(dataAt, dataAt + odd).equals(oddBytes), `${base}: cache data`);
        const before = server.requests;
        const again = await cli(['read', child]);
        assert.ok(again.stdout.subarray(0, odd).equals(oddBytes), `${base}: second read`);
        assert.equal(server.requests, before, `${base}: the second read makes no request`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  });

  it('a server answering with a chunked body: Node\'s client takes over, bytes right', async () => {
    // No Content-Length: Node's server sends the 206 body chunked.
    const srv = http.createServer((req, res) => {
      const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '')!;
      const [s, e] = [Number(m[1]), Number(m[2])];
      res.writeHead(206, { 'Content-Range': `bytes ${s}-${e}/${SIZE}`, ETag: '"x"' });
      res.write(bytes.subarray(s, Math.min(s + 1000, e + 1)));
      res.end(bytes.subarray(Math.min(s + 1000, e + 1), e + 1));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    try {
      const child = path.join(sub(), 'ch.vhd');
      await createChild(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/disk.img`, child);
      const r = await cli(['read', child, '--cache']);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(bytes));
      // Its bodies arrive in pieces: stored with one gathered write each, all of them.
      assert.equal(cacheStatus(parentCachePath(child))!.cachedBytes, SIZE);
      srv.closeAllConnections();
      const again = await cli(['read', child]);
      assert.ok(again.stdout.equals(bytes));
    } finally {
      srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
    }
  });
});
