import { strict as assert } from 'assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, statfsSync, statSync } from 'fs';
import * as path from 'path';
import { runPipeline } from '../../src/chain/stream';
import { AlignedPool, DirectOutput } from '../../src/io/directOutput';
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
