// Merge's bulk write path (stageWrites: data first, metadata after one flush per batch), for each
// format: new blocks before and after blocks the target already holds, windows that end with
// in-place writes only, blocks larger than a window (VHDX), and a differencing target (whole
// blocks). The result is checked against a model and by qemu-img (compare, check).
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { existsSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { checkImage } from '../../src/chain/check';
import { createChild } from '../../src/chain/createChild';
import { mergeChild } from '../../src/chain/merge';
import { createImage } from '../../src/format/registry';
import { Qcow2Image } from '../../src/format/qcow2/qcow2Image';
import { readFileSync } from 'fs';
import { rng, randomBytes, tempDir, readChain } from '../helpers/util';

const QEMU_FORMAT: Record<string, string> = { vhd: 'vpc', vhdx: 'vhdx', qcow2: 'qcow2' };

function qemu(args: string[]): { code: number; out: string } {
  const r = spawnSync('qemu-img', args);
  return { code: r.status ?? -1, out: r.stdout.toString() + r.stderr.toString() };
}

describe('merge: bulk writes (data, one flush, then metadata) for VHD, VHDX and qcow2', function () {
  this.timeout(300000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-mergebulk-')));
  after(() => cleanup());

  async function writeAll(file: string, model: Buffer, ranges: Array<[number, number]>, r: () => number): Promise<void> {
    const chain = await openChain(file, { writable: true });
    for (const [off, len] of ranges) {
      const data = randomBytes(r, len);
      await chain.write(off, data);
      data.copy(model, off);
    }
    await chain.close();
  }

  const MiB = 1024 * 1024;
  const cases: Array<{ ext: string; child: string; blockSize?: number; size: number }> = [
    { ext: 'vhd', child: 'vhd', size: 64 * MiB },
    // VHDX's default 32 MiB blocks are larger than merge's window: a new block is staged piece by piece.
    { ext: 'vhdx', child: 'avhdx', size: 128 * MiB },
    { ext: 'qcow2', child: 'qcow2', blockSize: 65536, size: 64 * MiB },
  ];
  for (const c of cases) {
    it(`${c.ext}: the target's own blocks at the end (last windows write in place only), new blocks before them; qemu-img agrees`, async () => {
      const r = rng(c.size + c.ext.length);
      const base = path.join(dir, `b-${c.ext}.${c.ext}`);
      const child = path.join(dir, `c-${c.ext}.${c.child}`);
      const size = await createImage(base, { size: c.size, blockSize: c.blockSize });
      const model = Buffer.alloc(size);
      // The base holds the last quarter; the child writes the first half (new in the target), odd
      // pieces, and over the base's quarter (in place), ending with a write the base already holds.
      await writeAll(base, model, [[size - size / 4, size / 4]], r);
      await createChild(base, child);
      await writeAll(child, model, [[0, size / 2], [size / 2 + 4096 * 3, 5000 * 512], [size - size / 4 + 512, size / 8], [size - 2 * MiB, 2 * MiB]], r);
      const res = await mergeChild(child);
      assert.ok(!existsSync(child), 'the child is gone');
      assert.ok(res.bytesWritten > size / 2);
      assert.ok((await readChain(base)).equals(model), 'the target reads as the model');
      const errors = (await checkImage(base)).problems;
      assert.deepEqual(errors, [], JSON.stringify(errors));
      const raw = path.join(dir, `model-${c.ext}.raw`);
      writeFileSync(raw, model);
      const cmp = qemu(['compare', '-f', QEMU_FORMAT[c.ext], '-F', 'raw', base, raw]);
      assert.equal(cmp.code, 0, `qemu-img compare: ${cmp.out}`);
      if (c.ext !== 'vhd') {
        const chk = qemu(['check', '-f', QEMU_FORMAT[c.ext], base]);
        assert.equal(chk.code, 0, `qemu-img check: ${chk.out}`);
      }
    });
  }

  it('a differencing VHD target (grandchild into child): new and held blocks, whole blocks a window; the chain reads as the model', async () => {
    const r = rng(77);
    const base = path.join(dir, 'd-base.vhd');
    const mid = path.join(dir, 'd-mid.vhd');
    const top = path.join(dir, 'd-top.vhd');
    // The size as made (a VHD rounds it to a CHS size).
    const size = await createImage(base, { size: 32 * MiB, blockSize: 512 * 1024 });
    const model = Buffer.alloc(size);
    await writeAll(base, model, [[0, size]], r);
    const baseModel = Buffer.from(model);
    await createChild(base, mid);
    await writeAll(mid, model, [[3 * MiB + 1024, 2 * MiB], [20 * MiB, 700 * 512]], r);
    await createChild(mid, top);
    await writeAll(top, model, [[MiB, 4 * MiB], [20 * MiB + 4096, 64 * 1024], [30 * MiB, 2 * MiB]], r);
    await mergeChild(top);
    assert.ok(!existsSync(top));
    assert.ok((await readChain(mid)).equals(model), 'the merged child reads as the model');
    const errors = (await checkImage(mid)).problems.filter((p) => p.severity === 'error');
    assert.deepEqual(errors, []);
    // (qemu-img's vpc driver does not follow differencing VHDs, so the model is the only reference here.)
    assert.ok((await readChain(base)).equals(baseModel), 'the base is untouched');
  });

  it('qcow2: a base with an internal snapshot: clusters shared with it are copied on write in batches; the snapshot keeps its data', async () => {
    const r = rng(4242);
    const base = path.join(dir, 's-base.qcow2');
    const ov = path.join(dir, 's-ov.qcow2');
    const size = 16 * MiB;
    assert.equal(qemu(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', base, String(size)]).code, 0);
    const model = Buffer.alloc(size);
    await writeAll(base, model, [[0, 8 * MiB]], r);
    const snapModel = Buffer.from(model);
    assert.equal(qemu(['snapshot', '-c', 'before', base]).code, 0);
    await createChild(base, ov);
    // Over the shared data (whole clusters, an odd piece), and past it (new clusters).
    await writeAll(ov, model, [[MiB, 5 * MiB], [7 * MiB + 1536, 3000], [10 * MiB, 2 * MiB]], r);
    // Count the windows the bulk path took, and those it left to write().
    const counts = { staged: 0, declined: 0 };
    const proto = Qcow2Image.prototype as unknown as { stageWrites: Qcow2Image['stageWrites'] };
    const original = proto.stageWrites;
    proto.stageWrites = async function (this: Qcow2Image, ...args: Parameters<Qcow2Image['stageWrites']>) {
      const c = await original.apply(this, args);
      counts[c ? 'staged' : 'declined']++;
      return c;
    };
    try {
      await mergeChild(ov);
    } finally {
      proto.stageWrites = original;
    }
    // 1 MiB windows (a 16 MiB disk): [1, 6) MiB shared, the odd piece's cluster (the overlay holds it
    // whole) and [10, 12) MiB new: every window with data goes through the bulk path.
    assert.equal(counts.declined, 0, JSON.stringify(counts));
    assert.ok(counts.staged >= 8, JSON.stringify(counts));
    assert.ok((await readChain(base)).equals(model), 'the base reads as the model');
    const chk = qemu(['check', '-f', 'qcow2', base]);
    assert.equal(chk.code, 0, `qemu-img check (no errors, no leaks): ${chk.out}`);
    const raw = path.join(dir, 's-model.raw');
    writeFileSync(raw, model);
    const cmp = qemu(['compare', '-f', 'qcow2', '-F', 'raw', base, raw]);
    assert.equal(cmp.code, 0, `qemu-img compare: ${cmp.out}`);
    // The snapshot still reads as before the merge, as qemu reads it.
    const snapRaw = path.join(dir, 's-snap.raw');
    const conv = qemu(['convert', '-f', 'qcow2', '-O', 'raw', '-l', 'snapshot.name=before', base, snapRaw]);
    assert.equal(conv.code, 0, conv.out);
    assert.ok(readFileSync(snapRaw).equals(snapModel), 'the snapshot reads as before');
  });
});
