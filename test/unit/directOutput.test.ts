import { strict as assert } from 'assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, statfsSync, statSync } from 'fs';
import * as path from 'path';
import { runPipeline } from '../../src/chain/stream';
import { AlignedPool, DirectOutput, WriteRoute } from '../../src/io/directOutput';
import { ImageFile } from '../../src/io/imageFile';
import { CLI, hasTool, randomBytes, rng, sh, tempDir } from '../helpers/util';
import { spawnSync } from 'child_process';
import { cachedBytes, EXT4_MAGIC, TMPFS_MAGIC } from '../helpers/pageCache';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Writes `pieces` (offset, length; taken from pool buffers or, for `plain`, from ordinary memory)
 * through a DirectOutput into a new file in `dir`; returns the file, the model and whether direct
 * writes stayed on.
 */
async function writePieces(dir: string, pieces: Array<{ at: number; len: number; plain?: boolean }>) {
  const file = path.join(dir, `out-${Math.random().toString(36).slice(2)}.raw`);
  const size = Math.max(...pieces.map((p) => p.at + p.len));
  const model = Buffer.alloc(size);
  const rand = rng(size);
  const pool = new AlignedPool(2, 4 * MiB);
  const bufs = [pool.take(), pool.take()];
  const out = await ImageFile.create(file, false);
  const direct = await DirectOutput.open(file, pool);
  try {
    let n = 0;
    for (const p of pieces) {
      const data = randomBytes(rand, p.len);
      data.copy(model, p.at);
      // A piece sits in its pool buffer where its offset would put it in a request starting at a page.
      const buf = bufs[n++ % 2];
      const inBuf = p.at % (2 * MiB);
      const src = p.plain ? data : buf.subarray(inBuf, inBuf + p.len);
      if (!p.plain) data.copy(src);
      await direct.write(src, p.at, (d, at) => out.writeAt(d, at));
    }
    return { file, model, active: direct.active };
  } finally {
    await direct.close();
    await out.close();
  }
}

describe('direct output (src/io/directOutput.ts)', function () {
  this.timeout(120000);
  const t = tempDir('diskimg-direct-');
  after(() => t.cleanup());

  it('aligned pool buffers are distinct, page aligned views of one memory', () => {
    const pool = new AlignedPool(3, 64 * KiB);
    const [a, b, c] = [pool.take(), pool.take(), pool.take()];
    assert.equal(a.buffer, pool.arrayBuffer);
    assert.deepEqual([a.byteOffset, b.byteOffset, c.byteOffset], [0, 64 * KiB, 128 * KiB]);
    a.fill(1); b.fill(2);
    assert.equal(a[a.length - 1], 1); assert.equal(b[0], 2); assert.equal(c[0], 0);
    assert.throws(() => pool.take(), /exhausted/);
    assert.throws(() => new AlignedPool(1, 1000), /multiple of 4096/);
  });

  it('runPipeline takes its buffers from `allocate`: at most depth of them, every request consumed from one', async () => {
    const pool = new AlignedPool(3, 64 * KiB);
    let made = 0;
    const seen = new Set<number>();
    const reqs = Array.from({ length: 20 }, (_, i) => ({ offset: i * 64 * KiB, length: 64 * KiB }));
    await runPipeline(reqs, {
      bufferSize: 64 * KiB,
      depth: 3,
      allocate: () => { made++; return pool.take(); },
      read: async (req, buf) => { buf.writeUInt32LE(req.offset / (64 * KiB), 0); },
      consume: (req, buf) => {
        assert.equal(buf.buffer, pool.arrayBuffer);
        assert.equal(buf.readUInt32LE(0), req.offset / (64 * KiB));
        seen.add(buf.byteOffset);
      },
    });
    assert.equal(made, 3);
    assert.equal(seen.size, 3);
  });

  it('aligned and unaligned pieces, pool and plain buffers: the file holds exactly what was written', async () => {
    const pieces = [
      { at: 0, len: 2 * MiB },                      // whole pages
      { at: 2 * MiB + 512, len: 64 * KiB },         // unaligned head and tail
      { at: 3 * MiB, len: 1000 },                   // shorter than a page
      { at: 4 * MiB + 4096, len: 3 * 4096 + 17 },   // aligned head, odd tail
      { at: 6 * MiB, len: 256 * KiB, plain: true }, // not from the pool: buffered
      { at: 7 * MiB - 300, len: 8 * KiB },          // crosses a MiB boundary unaligned
    ];
    const { file, model, active } = await writePieces(t.dir, pieces);
    const got = readFileSync(file);
    assert.equal(got.length, model.length);
    assert.ok(got.equals(model), 'file differs from the model');
    // ext4 takes O_DIRECT (others may not, and are then written buffered with the same result).
    if (statfsSync(t.dir).type === EXT4_MAGIC) assert.equal(active, true);
  });

  it('whole aligned pieces bypass the page cache (fincore), buffered ones stay in it', async function () {
    if (statfsSync(t.dir).type !== EXT4_MAGIC || cachedBytes(__filename) === null) this.skip();
    const { file } = await writePieces(t.dir, [{ at: 0, len: 4 * MiB }]);
    const direct = cachedBytes(file)!;
    const plain = await writePieces(t.dir, [{ at: 0, len: 4 * MiB, plain: true }]);
    const buffered = cachedBytes(plain.file)!;
    assert.ok(direct < 64 * KiB, `${direct} bytes of a direct write in the page cache`);
    assert.ok(buffered >= 4 * MiB - 64 * KiB, `${buffered} bytes of a buffered write in the page cache`);
  });

  it('on tmpfs (O_DIRECT since Linux 6.6, refused before) the bytes are the same either way', async function () {
    if (!existsSync('/dev/shm') || statfsSync('/dev/shm').type !== TMPFS_MAGIC) this.skip();
    const dir = mkdtempSync('/dev/shm/diskimg-direct-');
    try {
      const { file, model } = await writePieces(dir, [{ at: 0, len: MiB }, { at: MiB + 512, len: 100 * KiB }]);
      assert.ok(readFileSync(file).equals(model));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the write route: buffered while cheap, direct after two slow buffered writes, rare buffered probes back', () => {
    const r = new WriteRoute(4);
    const w = (ms: number, bytes = 4 * MiB) => { const d = r.goDirect(bytes); r.record(d, bytes, ms); return d ? 'D' : 'B'; };
    // Page cache cheap (0.4 ms per MiB): stays buffered; one slow write (a preemption) changes nothing.
    assert.deepEqual([w(1.6), w(1.6), w(40), w(1.6), w(1.6)], ['B', 'B', 'B', 'B', 'B']);
    // Two slow ones in a row (16 ms per 4 MiB: pages the host took back): direct from then on.
    assert.deepEqual([w(16), w(16)], ['B', 'B']);
    assert.equal(r.route, 'direct');
    // Writes under 1 MiB follow the route and are not timed.
    assert.deepEqual([w(500, 64 * KiB), w(4)], ['D', 'D']);
    // After 4 timed direct writes, one buffered probe; still slow: the next probe waits twice as long.
    assert.deepEqual([w(4), w(4), w(4), w(16)], ['D', 'D', 'D', 'B']);
    assert.equal(r.route, 'direct');
    assert.deepEqual([w(4), w(4), w(4), w(4), w(4), w(4), w(4), w(4), w(1.6)], ['D', 'D', 'D', 'D', 'D', 'D', 'D', 'D', 'B']);
    // The probe was cheaper than direct (1 ms per MiB): buffered again.
    assert.equal(r.route, 'buffered');
    assert.deepEqual([w(1.6), w(1.6)], ['B', 'B']);
    // A disk slower than the slow page cache (direct 10 ms per MiB): back to buffered at the first probe.
    const slowDisk = new WriteRoute(2);
    const s = (ms: number) => { const d = slowDisk.goDirect(4 * MiB); slowDisk.record(d, 4 * MiB, ms); return d ? 'D' : 'B'; };
    assert.deepEqual([s(16), s(16), s(40), s(40), s(16), s(16)], ['B', 'B', 'D', 'D', 'B', 'B']);
    assert.equal(slowDisk.route, 'buffered');
    assert.deepEqual(slowDisk.stats, { directBytes: 8 * MiB, bufferedBytes: 16 * MiB, switches: 2 });
  });

  it('a DirectOutput with a route times its writes and sends them the way the route says; the bytes are the same', async () => {
    const file = path.join(t.dir, 'routed.raw');
    const pool = new AlignedPool(2, 4 * MiB);
    const bufs = [pool.take(), pool.take()];
    const route = new WriteRoute(1);
    const out = await ImageFile.create(file, false);
    const direct = await DirectOutput.open(file, pool, route);
    const model = Buffer.alloc(16 * MiB);
    const rand = rng(7);
    // Buffered writes made to cost CPU (a busy loop in the buffered callback), so the route turns
    // direct; a wait that costs no CPU (a preemption) would not.
    const slowBuffered = async (d: Buffer, at: number) => { const end = Date.now() + 30; while (Date.now() < end); await out.writeAt(d, at); };
    try {
      for (let i = 0; i < 4; i++) {
        const buf = bufs[i % 2];
        randomBytes(rand, 4 * MiB).copy(buf);
        buf.copy(model, i * 4 * MiB);
        await direct.write(buf, i * 4 * MiB, slowBuffered);
      }
    } finally {
      await direct.close();
      await out.close();
    }
    assert.ok(readFileSync(file).equals(model));
    // Writes that wait without spending CPU stay buffered. The buffered path here only waits: a real
    // page-cache write can cost real CPU on this VM (free page reporting faults every page back in),
    // and the route is right to go direct then, which is not what this checks.
    const idle = new WriteRoute(1);
    const file2 = path.join(t.dir, 'routed-idle.raw');
    await (await ImageFile.create(file2, false)).close();
    const direct2 = await DirectOutput.open(file2, pool, idle);
    let waited = 0;
    try {
      for (let i = 0; i < 3; i++) await direct2.write(bufs[i % 2], i * 4 * MiB, async () => { await new Promise((res) => setTimeout(res, 30)); waited++; });
    } finally {
      await direct2.close();
    }
    assert.equal(waited, 3);
    assert.equal(idle.route, 'buffered');
    if (statfsSync(t.dir).type === EXT4_MAGIC) {
      assert.equal(route.route, 'direct');
      assert.ok(route.stats.directBytes >= 4 * MiB, JSON.stringify(route.stats));
    }
  });

  it('export with DISKIMG_EXPORT_DIRECT=1 writes direct and matches qemu-img convert for a qcow2 chain whose map is cut off the page grid', function () {
    if (!hasTool('qemu-img') || !hasTool('qemu-io')) this.skip();
    const base = path.join(t.dir, 'odd-base.qcow2');
    const top = path.join(t.dir, 'odd-top.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
    sh('qemu-io', ['-c', 'write -P 0x33 0 20M', '-c', 'write -P 0x44 40M 3M', base]);
    // 2 KiB subclusters (extended L2): the chain's map switches layers at 2 KiB boundaries.
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', '-b', base, '-F', 'qcow2', top]);
    for (const at of [2048, 3 * MiB + 6144, 41 * MiB - 2048, 63 * MiB + 2048]) sh('qemu-io', ['-c', `write -P 0x5a ${at} 2k`, top]);
    const ours = path.join(t.dir, 'odd.raw');
    const w = spawnSync(process.execPath, [CLI, 'export', top, ours], { env: { ...process.env, DISKIMG_EXPORT_DIRECT: '1' } });
    assert.equal(w.status, 0, w.stderr?.toString());
    const fsType = statfsSync(t.dir).type;
    if (fsType === EXT4_MAGIC && cachedBytes(ours) !== null) {
      // Most of the 23 MiB of data went around the page cache (checked before anything reads it).
      assert.ok(cachedBytes(ours)! < 4 * MiB, `${cachedBytes(ours)} bytes of the export in the page cache`);
    }
    const qemu = path.join(t.dir, 'odd-qemu.raw');
    sh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', top, qemu]);
    sh('cmp', [ours, qemu]);
    // The never-written 20 MiB between the base's two runs stays a hole.
    assert.ok(statSync(ours).blocks * 512 <= 24 * MiB, `${statSync(ours).blocks * 512} bytes allocated`);
  });
});
