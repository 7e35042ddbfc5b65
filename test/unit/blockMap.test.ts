import { strict as assert } from 'assert';
import * as path from 'path';
import { buildBlockMap, fillLevel, NO_OWNER, NO_SECTOR, ownerCounts } from '../../src/chain/blockMap';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/vhd/create';
import { VhdImage } from '../../src/format/vhd/vhdImage';
import { rng, tempDir } from '../helpers/util';

const MiB = 1024 * 1024;

async function write(p: string, offset: number, length: number, byte = 0xab): Promise<void> {
  const c = await openChain(p, { writable: true });
  try { await c.write(offset, Buffer.alloc(length, byte)); } finally { await c.close(); }
}

describe('blockMap (core): per-block allocation, fill and owning layer', () => {
  const t = tempDir('blockmap-');
  after(() => t.cleanup());

  it('fillLevel scales to 0..255 and never rounds a non-empty block down to 0', () => {
    assert.equal(fillLevel(0, 4096), 0);
    assert.equal(fillLevel(1, 4096), 1);
    assert.equal(fillLevel(4096, 4096), 255);
    assert.equal(fillLevel(4095, 4096), 254);
    assert.equal(fillLevel(2048, 4096), 128);
  });

  it('reports allocation and fill of the top layer and the topmost owner of each block', async () => {
    const base = path.join(t.dir, 'base.vhd');
    const child = path.join(t.dir, 'child.vhd');
    const top = path.join(t.dir, 'top.vhd');
    await createImage(base, { size: 64 * MiB, exactSize: true });
    await write(base, 0, 2 * MiB);            // block 0 full in base
    await write(base, 5 * MiB, 4096);         // block 2 partly in base
    await createChild(base, child);
    await write(child, 2 * MiB, 512);         // block 1: one sector in child
    await write(child, 5 * MiB + 8192, 512 * 1024); // block 2: a quarter in child
    await createChild(child, top);
    await write(top, 0, 1024);                // block 0: two sectors in top
    await write(top, 20 * MiB, 2 * MiB);      // block 10: whole block in top
    const chain = await openChain(top);
    try {
      const m = await buildBlockMap(chain);
      assert.equal(m.blockCount, 32);
      assert.equal(m.layerCount, 3);
      assert.deepEqual([...m.allocated.subarray(0, 11)], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
      assert.equal(m.fill[0], fillLevel(2, 4096));
      assert.equal(m.fill[10], 255);
      assert.equal(m.fill[1], 0);
      assert.equal(m.owner[0], 0);
      assert.equal(m.owner[1], 1);
      assert.equal(m.owner[2], 1, 'the child holds part of block 2, above the base');
      assert.equal(m.owner[10], 0);
      assert.equal(m.owner[3], NO_OWNER);
      const counts = ownerCounts(m);
      assert.deepEqual(counts, [2, 2, 0, 28]);
      // The owner's data offset is its BAT entry plus the one-sector bitmap.
      assert.equal(m.ownerSector[10], (chain.layers[0] as VhdImage).bat!.entries[10] + 1);
      assert.equal(m.ownerSector[1], (chain.layers[1] as VhdImage).bat!.entries[1] + 1);
      assert.equal(m.ownerSector[3], NO_SECTOR);
    } finally {
      await chain.close();
    }
  });

  it('agrees with chain.map() on the owner of every block of a random chain', async () => {
    const r = rng(42);
    const base = path.join(t.dir, 'r-base.vhd');
    await createImage(base, { size: 40 * MiB, exactSize: true, blockSize: 512 * 1024 });
    const layers = [base];
    for (let i = 0; i < 3; i++) {
      const next = path.join(t.dir, `r-${i}.vhd`);
      await createChild(layers[layers.length - 1], next);
      layers.push(next);
    }
    for (const p of layers) {
      for (let k = 0; k < 12; k++) {
        const off = Math.floor(r() * (40 * MiB - 70000));
        await write(p, off, 1 + Math.floor(r() * 70000), k);
      }
    }
    const chain = await openChain(layers[layers.length - 1]);
    try {
      const m = await buildBlockMap(chain);
      const expected = new Uint16Array(m.blockCount).fill(NO_OWNER);
      for (const e of await chain.map()) {
        if (!e.data) continue;
        for (let b = Math.floor(e.start / m.blockSize); b * m.blockSize < e.start + e.length; b++) {
          expected[b] = Math.min(expected[b], e.depth);
        }
      }
      assert.deepEqual([...m.owner], [...expected]);
      for (let b = 0; b < m.blockCount; b++) assert.equal(m.allocated[b], chain.top.isBlockAllocated(b) ? 1 : 0);
    } finally {
      await chain.close();
    }
  });

  it('maps a 2 TiB dynamic image (1,048,576 blocks) quickly, reading only allocated blocks', async () => {
    const big = path.join(t.dir, 'big.vhd');
    await createImage(big, { size: 2 * 1024 * 1024 * MiB, exactSize: true });
    const child = path.join(t.dir, 'big-child.vhd');
    await write(big, 1000 * 2 * MiB, 4096);
    await createChild(big, child);
    await write(child, 999_999 * 2 * MiB, 512);
    const chain = await openChain(child);
    try {
      const heapBefore = process.memoryUsage().heapUsed;
      const started = process.hrtime.bigint();
      const m = await buildBlockMap(chain);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      assert.equal(m.blockCount, 1_048_576);
      assert.equal(m.owner[1000], 1);
      assert.equal(m.owner[999_999], 0);
      assert.equal(m.allocated[999_999], 1);
      assert.equal(m.fill[999_999], 1);
      assert.equal(ownerCounts(m)[2], 1_048_576 - 2);
      assert.ok(ms < 1000, `block map of 1M blocks took ${ms.toFixed(0)} ms`);
      // The arrays are 4 MiB; nothing proportional to the virtual size beyond them.
      assert.ok(process.memoryUsage().heapUsed - heapBefore < 64 * MiB);
    } finally {
      await chain.close();
    }
  });

  it('handles a fixed image: every block allocated and owned by it', async () => {
    const fixed = path.join(t.dir, 'fixed.vhd');
    await createImage(fixed, { size: 8 * MiB, type: 'fixed', exactSize: true });
    const chain = await openChain(fixed);
    try {
      const m = await buildBlockMap(chain);
      assert.equal(m.blockCount, 4);
      assert.deepEqual([...m.allocated], [1, 1, 1, 1]);
      assert.deepEqual([...m.fill], [255, 255, 255, 255]);
      assert.deepEqual([...m.owner], [0, 0, 0, 0]);
      assert.deepEqual([...m.ownerSector], [0, 4096, 8192, 12288]);
    } finally {
      await chain.close();
    }
  });
});
