import { strict as assert } from 'assert';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/vhd/create';
import { cliJson, randomBytes, readChain, rng, tempDir } from '../helpers/util';

const SECTOR = 512;

function checkClean(top: string): void {
  const report = cliJson<{ ok: boolean; problems: unknown[] }>(['check', top]);
  assert.ok(report.ok, `check finds problems in ${top}: ${JSON.stringify(report.problems)}`);
}

/**
 * A base with data and a differencing child whose blocks are all allocated (and flushed); then
 * writes with deferred sector bitmaps (what the NBD server does).
 */
async function setup(dir: string, seed: number, blockSize: number, size: number) {
  const r = rng(seed);
  const base = path.join(dir, `b${seed}.vhd`);
  const child = path.join(dir, `c${seed}.vhd`);
  await createImage(base, { size, type: 'dynamic', blockSize, exactSize: true });
  const baseData = randomBytes(r, size);
  const b = await openChain(base, { writable: true });
  await b.write(0, baseData);
  await b.close();
  await createChild(base, child);
  const model = Buffer.from(baseData);
  const chain = await openChain(child, { writable: true });
  // One sector in each block: every block allocated, most of its sectors still the parent's.
  for (let off = 0; off < size; off += blockSize) {
    const d = randomBytes(r, SECTOR);
    await chain.write(off, d);
    d.copy(model, off);
  }
  await chain.flush();
  return { r, base, child, chain, model };
}

describe('VHD sector bitmaps kept back until flush (deferMetadataWrites)', function () {
  this.timeout(120_000);
  const t = tempDir('diskimg-deferred-');
  after(() => t.cleanup());

  for (const seed of [1, 2, 3]) {
    it(`seed ${seed}: the writer reads its writes at once; the files hold each sector old or new until flush, exactly the writes after it`, async () => {
      const size = 4 * 1024 * 1024;
      const { r, child, chain, model } = await setup(t.dir, seed, 64 * 1024, size);
      const flushed = Buffer.from(model);
      chain.top.deferMetadataWrites!();
      for (let i = 0; i < 60; i++) {
        // Aligned and unaligned, within and across blocks.
        const len = [SECTOR, 4096, 777, 70000, 1][i % 5];
        const off = Math.floor(r() * (size - len));
        const d = randomBytes(r, len);
        await chain.write(off, d);
        d.copy(model, off);
      }
      assert.ok((await chain.readRange(0, size)).equals(model), 'the writing chain reads every write');
      // Before the flush: the files are valid and every sector reads as before the writes or after them.
      checkClean(child);
      // A second reader of the files (its own open, as another process would read them).
      {
        const onDisk = await readChain(child);
        let kept = 0;
        for (let s = 0; s < size; s += SECTOR) {
          const got = onDisk.subarray(s, s + SECTOR);
          const isNew = got.equals(model.subarray(s, s + SECTOR));
          if (!isNew) {
            assert.ok(got.equals(flushed.subarray(s, s + SECTOR)), `sector ${s / SECTOR} is neither the old nor the new data`);
            kept++;
          }
        }
        assert.ok(kept > 0, 'some bitmap updates are kept back before the flush');
      }
      await chain.flush();
      assert.ok((await readChain(child)).equals(model), 'after the flush the file reads every write');
      await chain.close();
      checkClean(child);
    });
  }

  it('close writes the kept-back bitmaps', async () => {
    const size = 1024 * 1024;
    const { r, child, chain, model } = await setup(t.dir, 10, 4096, size);
    chain.top.deferMetadataWrites!();
    for (let i = 0; i < 50; i++) {
      const off = Math.floor(r() * (size / SECTOR)) * SECTOR;
      const d = randomBytes(r, SECTOR);
      await chain.write(off, d);
      d.copy(model, off);
    }
    await chain.close();
    assert.ok((await readChain(child)).equals(model));
    checkClean(child);
  });

  it('memory stays bounded: past 4096 blocks with kept-back bitmaps, they are written without a flush', async () => {
    const blockSize = 4096;
    const blocks = 5000;
    const size = blocks * blockSize;
    const { r, child, chain, model } = await setup(t.dir, 11, blockSize, size);
    chain.top.deferMetadataWrites!();
    for (let b = 0; b < blocks; b++) {
      const off = b * blockSize + SECTOR * (1 + Math.floor(r() * 7));
      const d = randomBytes(r, SECTOR);
      await chain.write(off, d);
      d.copy(model, off);
    }
    const onDisk = await readChain(child);
    let newBlocks = 0;
    for (let b = 0; b < blocks; b++) {
      if (onDisk.subarray(b * blockSize, (b + 1) * blockSize).equals(model.subarray(b * blockSize, (b + 1) * blockSize))) newBlocks++;
    }
    assert.ok(newBlocks > 4096, `only ${newBlocks} blocks' bitmaps reached the file`);
    assert.ok(newBlocks < blocks, 'the last writes are still kept back');
    await chain.flush();
    assert.ok((await readChain(child)).equals(model));
    await chain.close();
  });
});
