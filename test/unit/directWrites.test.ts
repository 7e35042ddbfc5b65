// Merge's direct writes (ImageFile + setDirectWrites): whole pages of page-aligned memory at
// page-aligned offsets go around the page cache, everything else stays buffered, the file holds
// exactly what was written either way, and a merge's new data in the target is written direct.
import { strict as assert } from 'assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, statfsSync } from 'fs';
import * as path from 'path';
import { createChild } from '../../src/chain/createChild';
import { mergeChild } from '../../src/chain/merge';
import { openChain } from '../../src/chain/chain';
import { createImage } from '../../src/format/registry';
import { alignedBuffer } from '../../src/io/alignedBuffer';
import { allowWriteBehind, ImageFile, setDirectWriteBehind, setDirectWrites, setSynchronousIo, writeBehindDone, writeBehindPending } from '../../src/io/imageFile';
import { checkImage } from '../../src/chain/check';
import { VhdImage } from '../../src/format/vhd/vhdImage';
import { execFileSync, spawnSync } from 'child_process';
import { hasTool, randomBytes, readChain, rng, sh, tempDir } from '../helpers/util';
import { cachedBytes, EXT4_MAGIC, TMPFS_MAGIC } from '../helpers/pageCache';

const PYVHDI = path.join(__dirname, '..', 'helpers', 'pyvhdi_read.py');

const KiB = 1024;
const MiB = 1024 * KiB;

/** Writes aligned, unaligned and plain pieces through one ImageFile with direct writes on; returns the file and its model. */
async function writeMixed(dir: string, sync: boolean, behind = false): Promise<{ file: string; model: Buffer }> {
  const file = path.join(dir, `mixed-${sync ? 's' : 'a'}${behind ? 'b' : ''}-${Math.random().toString(36).slice(2)}.bin`);
  const size = 12 * MiB;
  const model = Buffer.alloc(size);
  const rand = rng(size + (sync ? 1 : 0));
  const window = alignedBuffer(4 * MiB);
  if (behind) allowWriteBehind(window);
  const restoreBehind = setDirectWriteBehind(behind ? 2 : 0);
  const restoreDirect = setDirectWrites(true);
  const restoreSync = sync ? setSynchronousIo({ writes: true, reads: false }) : () => undefined;
  const out = await ImageFile.create(file, false);
  try {
    const put = async (at: number, data: Buffer, vectored = false) => {
      data.copy(model, at);
      if (vectored) {
        const half = Math.floor(data.length / 2 / 4096) * 4096 || data.length;
        await out.writevAt([data.subarray(0, half), data.subarray(half)].filter((b) => b.length > 0), at);
      } else {
        await out.writeAt(data, at);
      }
    };
    const fromWindow = async (inWindow: number, len: number) => {
      // Memory whose writes may be in flight is changed only once they are done.
      await writeBehindDone(window);
      const b = window.subarray(inWindow, inWindow + len);
      randomBytes(rand, len).copy(b);
      return b;
    };
    await put(0, await fromWindow(0, 2 * MiB));                        // direct
    await put(2 * MiB, await fromWindow(0, 2 * MiB), true);            // direct, vectored
    await put(4 * MiB + 512, await fromWindow(512, 64 * KiB));          // offset and memory off the page grid: buffered
    await put(5 * MiB, await fromWindow(4096, 3 * 4096 + 17));         // odd length: buffered
    await put(6 * MiB, randomBytes(rand, 256 * KiB));            // plain memory: buffered
    await put(7 * MiB, await fromWindow(8192, 8192), true);            // direct over a page the next write shares
    await put(7 * MiB + 4096 + 100, randomBytes(rand, 300));     // buffered into a page written direct just before
    await put(8 * MiB, await fromWindow(0, 4 * MiB));                  // direct, extends the file
    await out.sync();
    assert.equal(writeBehindPending(window), false, 'sync left a write in flight');
  } finally {
    await out.close();
    restoreSync();
    restoreDirect();
    restoreBehind();
  }
  return { file, model };
}

describe('direct writes of a merge (ImageFile, setDirectWrites)', function () {
  this.timeout(120000);
  const t = tempDir('diskimg-directwrites-');
  after(() => t.cleanup());

  for (const sync of [true, false]) {
    for (const behind of [false, true]) {
      it(`aligned, unaligned and plain pieces, ${sync ? 'synchronous' : 'pool'} writes${behind ? ', direct ones left in flight' : ''}: the file holds exactly what was written`, async () => {
        const { file, model } = await writeMixed(t.dir, sync, behind);
        assert.ok(readFileSync(file).equals(model), 'file differs from the model');
      });
    }
  }

  it('write-behind: a direct write returns in flight (memory given to allowWriteBehind only, at most the depth per file); reads and writes over it wait for it; sync waits for all', async () => {
    const file = path.join(t.dir, 'behind.bin');
    const SIZE = 16 * MiB; // long enough that a write is still on its way when the next call comes
    const bufs = [alignedBuffer(SIZE), alignedBuffer(SIZE), alignedBuffer(SIZE)];
    bufs.forEach(allowWriteBehind);
    const plainAligned = alignedBuffer(SIZE); // aligned but not given: each write completes before it returns
    const rand = rng(99);
    const restoreDirect = setDirectWrites(true);
    const restoreBehind = setDirectWriteBehind(2);
    // Synchronous reads: a read right after a write in flight runs at once unless it waits for it.
    const restoreSync = setSynchronousIo({ writes: true, reads: true });
    const out = await ImageFile.create(file, false);
    const model = Buffer.alloc(5 * SIZE);
    let seenInFlight = 0;
    try {
      for (let i = 0; i < 3; i++) {
        randomBytes(rand, SIZE).copy(bufs[i]);
        bufs[i].copy(model, i * SIZE);
        await out.writeAt(bufs[i], i * SIZE);
        seenInFlight = Math.max(seenInFlight, bufs.filter(writeBehindPending).length);
        // A read over a write in flight sees its bytes.
        const back = Buffer.alloc(64 * KiB);
        await out.readInto(back, i * SIZE + SIZE - 64 * KiB);
        assert.ok(back.equals(model.subarray((i + 1) * SIZE - 64 * KiB, (i + 1) * SIZE)), `read over write ${i} in flight`);
      }
      // At most two in flight: the third waited for one of the first two.
      assert.ok(seenInFlight >= 1 && seenInFlight <= 2, `${seenInFlight} in flight`);
      // A buffered write over a direct one in flight lands after it.
      await writeBehindDone(bufs[1]);
      randomBytes(rand, SIZE).copy(bufs[1]);
      bufs[1].copy(model, SIZE);
      await out.writeAt(bufs[1], SIZE);
      const over = randomBytes(rand, 1000);
      over.copy(model, SIZE + 5000);
      await out.writeAt(over, SIZE + 5000);
      randomBytes(rand, SIZE).copy(plainAligned);
      plainAligned.copy(model, 4 * SIZE);
      await out.writeAt(plainAligned, 4 * SIZE);
      assert.equal(writeBehindPending(plainAligned), false);
      randomBytes(rand, SIZE).copy(bufs[0]);
      await writeBehindDone(bufs[0]);
      randomBytes(rand, SIZE).copy(bufs[0]);
      bufs[0].copy(model, 3 * SIZE);
      await out.writeAt(bufs[0], 3 * SIZE);
      // The flush itself (fdatasync) starts only once the writes in flight are done.
      const handle = (out as unknown as { handle: { datasync(): Promise<void> } }).handle;
      const datasync = handle.datasync.bind(handle);
      let pendingAtFlush: boolean | null = null;
      handle.datasync = () => { pendingAtFlush = bufs.some(writeBehindPending); return datasync(); };
      await out.sync();
      assert.equal(pendingAtFlush, false, 'fdatasync ran with a write in flight');
      assert.equal(bufs.some(writeBehindPending), false, 'sync returned with writes in flight');
    } finally {
      await out.close();
      restoreSync();
      restoreBehind();
      restoreDirect();
    }
    assert.ok(readFileSync(file).equals(model), 'file differs from the model');
  });

  it('only whole aligned pages from aligned memory go direct, and only while it is on', () => {
    const window = alignedBuffer(64 * KiB);
    const probe = async () => {
      const file = await ImageFile.create(path.join(t.dir, `probe-${Math.random().toString(36).slice(2)}`), false);
      try {
        return {
          whole: file.takesDirect([window.subarray(0, 8192)], 4096),
          vectored: file.takesDirect([window.subarray(0, 4096), window.subarray(8192, 16384)], 0),
          offOffset: file.takesDirect([window.subarray(0, 8192)], 512),
          offMemory: file.takesDirect([window.subarray(512, 512 + 8192)], 0),
          oddLength: file.takesDirect([window.subarray(0, 5000)], 0),
          plain: file.takesDirect([Buffer.alloc(8192)], 0),
        };
      } finally {
        await file.close();
      }
    };
    return (async () => {
      assert.deepEqual(Object.values(await probe()).filter(Boolean).length, 0, 'nothing goes direct while it is off');
      const restore = setDirectWrites(true);
      try {
        assert.deepEqual(await probe(), { whole: true, vectored: true, offOffset: false, offMemory: false, oddLength: false, plain: false });
      } finally {
        restore();
      }
    })();
  });

  it('direct pieces bypass the page cache (fincore), buffered ones stay in it', async function () {
    if (statfsSync(t.dir).type !== EXT4_MAGIC || cachedBytes(__filename) === null) this.skip();
    const { file } = await writeMixed(t.dir, true);
    // 8 MiB of the 12 went direct; the buffered pieces (and pages they share) are cached.
    const cached = cachedBytes(file)!;
    assert.ok(cached < 2 * MiB, `${cached} bytes in the page cache`);
  });

  it('on tmpfs (O_DIRECT since Linux 6.6, refused before) the bytes are the same either way', async function () {
    if (!existsSync('/dev/shm') || statfsSync('/dev/shm').type !== TMPFS_MAGIC) this.skip();
    const dir = mkdtempSync('/dev/shm/diskimg-directwrites-');
    try {
      const { file, model } = await writeMixed(dir, true);
      assert.ok(readFileSync(file).equals(model));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a merge into a dynamic VHD puts each new block\'s data on a page (bitmap before it, zeros before that) and writes it direct; check, qemu-img and libvhdi read it as the model', async function () {
    const base = path.join(t.dir, 'v-base.vhd');
    const child = path.join(t.dir, 'v-child.vhd');
    const size = await createImage(base, { size: 64 * MiB });
    const model = Buffer.alloc(size);
    const r = rng(21);
    // A block the base holds already (written in place), then new blocks around it.
    const own = await openChain(base, { writable: true });
    const held = randomBytes(r, 2 * MiB);
    await own.write(20 * MiB, held);
    held.copy(model, 20 * MiB);
    await own.close();
    await createChild(base, child);
    const chain = await openChain(child, { writable: true });
    for (const [at, len] of [[2 * MiB, 16 * MiB], [20 * MiB, 4 * MiB], [41 * MiB + 512, 3 * MiB]]) {
      const data = randomBytes(r, len);
      await chain.write(at, data);
      data.copy(model, at);
    }
    await chain.close();
    await mergeChild(child);
    assert.ok((await readChain(base)).equals(model), 'the target reads as the model');
    assert.deepEqual((await checkImage(base)).problems, []);
    const img = await VhdImage.open(base);
    try {
      const onPage = [];
      for (let b = 0; b < img.blockCount; b++) {
        const at = img.blockFileOffset(b);
        if (at !== null && b !== 10) onPage.push(at % 4096);
      }
      // Blocks 1-8 and 11 are new and whole in the child: their data starts on a page.
      assert.ok(onPage.length >= 9, `${onPage.length} new blocks`);
      if (statfsSync(t.dir).type === EXT4_MAGIC) assert.ok(onPage.filter((x) => x === 0).length >= 9, `data offsets modulo 4096: ${onPage.join(', ')}`);
    } finally {
      await img.close();
    }
    const raw = path.join(t.dir, 'v-model.raw');
    require('fs').writeFileSync(raw, model);
    if (hasTool('qemu-img')) sh('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', base, raw]);
    if (hasTool('vhdiinfo') && spawnSync('/usr/bin/python3', ['-c', 'import pyvhdi']).status === 0) {
      const theirs = execFileSync('/usr/bin/python3', [PYVHDI, base], { maxBuffer: 1 << 27 });
      assert.ok(theirs.equals(model), 'libvhdi reads the model');
    }
  });

  for (const c of [{ ext: 'vhdx', child: 'avhdx' }, { ext: 'qcow2', child: 'qcow2' }]) {
    it(`a merge into ${c.ext} writes the new data direct (not in the page cache) and reads as the model`, async function () {
      const base = path.join(t.dir, `m-base.${c.ext}`);
      const child = path.join(t.dir, `m-child.${c.child}`);
      const size = await createImage(base, { size: 64 * MiB, blockSize: c.ext === 'qcow2' ? 65536 : undefined });
      await createChild(base, child);
      const model = Buffer.alloc(size);
      const data = randomBytes(rng(9), 40 * MiB);
      data.copy(model, 8 * MiB);
      const chain = await openChain(child, { writable: true });
      await chain.write(8 * MiB, data);
      await chain.close();
      await mergeChild(child);
      assert.ok(!existsSync(child));
      if (statfsSync(t.dir).type === EXT4_MAGIC && cachedBytes(base) !== null) {
        const cached = cachedBytes(base)!;
        assert.ok(cached < 8 * MiB, `${cached} bytes of the target in the page cache after merging 40 MiB`);
      }
      assert.ok((await readChain(base)).equals(model), 'the target reads as the model');
    });
  }
});
