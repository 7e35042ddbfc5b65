import { strict as assert } from 'assert';
import { execFileSync } from 'child_process';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/vhd/create';
import { cliJson, cliOk, rng, randomBytes, tempDir } from '../helpers/util';

const PYVHDI_READ = path.join(__dirname, '..', 'helpers', 'pyvhdi_read.py');

/** Builds a random chain and a flat model of what its top must read as. */
async function randomChain(dir: string, seed: number, opts: { layers: number; base: 'fixed' | 'dynamic'; blockSize: number; size: number; align?: number }) {
  const r = rng(seed);
  const paths: string[] = [];
  const base = path.join(dir, `s${seed}-0.vhd`);
  const size = await createImage(base, { size: opts.size, type: opts.base, blockSize: opts.blockSize, exactSize: true });
  paths.push(base);
  const model = Buffer.alloc(size);
  for (let layer = 0; layer < opts.layers; layer++) {
    if (layer > 0) {
      const child = path.join(dir, `s${seed}-${layer}.vhd`);
      await createChild(paths[paths.length - 1], child);
      paths.push(child);
    }
    const chain = await openChain(paths[paths.length - 1], { writable: true });
    const writes = 3 + Math.floor(r() * 8);
    for (let i = 0; i < writes; i++) {
      const align = opts.align ?? 1;
      const maxLen = Math.min(size, opts.blockSize * 2 + 5000);
      let len = 1 + Math.floor(r() * maxLen);
      let off = Math.floor(r() * (size - len));
      if (align > 1) {
        off = Math.floor(off / align) * align;
        len = Math.max(align, Math.floor(len / align) * align);
        if (off + len > size) off = size - len;
      }
      const data = randomBytes(r, len);
      await chain.write(off, data);
      data.copy(model, off);
    }
    await chain.close();
  }
  return { paths: paths.reverse(), model, size };
}

describe('chains against a flat model', function () {
  this.timeout(180000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-chain-')));
  after(() => cleanup());

  for (let seed = 1; seed <= 24; seed++) {
    const layers = 1 + (seed % 6);
    const base = seed % 3 === 0 ? 'fixed' : 'dynamic';
    const blockSize = [4096, 65536, 512 * 1024, 2 * 1024 * 1024][seed % 4];
    it(`seed ${seed}: ${layers} layer(s) over a ${base} base, ${blockSize / 1024} KiB blocks, partial sectors and block crossings`, async () => {
      const size = 3 * 1024 * 1024 + (seed % 5) * 512 + (seed % 2) * 100 * 1024;
      const { paths, model } = await randomChain(dir, seed, { layers, base, blockSize, size });
      const chain = await openChain(paths[0]);
      try {
        assert.equal(chain.layers.length, layers);
        // Whole-disk read, then random positioned reads of any alignment.
        const all = await chain.readRange(0, model.length);
        assert.ok(all.equals(model), 'full read equals the model');
        const r = rng(seed * 977);
        for (let i = 0; i < 40; i++) {
          const len = 1 + Math.floor(r() * 300000);
          const off = Math.floor(r() * (model.length - len));
          assert.ok((await chain.readRange(off, len)).equals(model.subarray(off, off + len)), `read ${off}+${len}`);
        }
        // The map covers the disk exactly and says data=false only where the model is zero.
        const map = await chain.map();
        let pos = 0;
        for (const e of map) {
          assert.equal(e.start, pos);
          assert.ok(e.depth >= 0 && e.depth < layers);
          if (!e.data) assert.ok(model.subarray(e.start, e.start + e.length).every((b) => b === 0));
          pos += e.length;
        }
        assert.equal(pos, model.length);
      } finally {
        await chain.close();
      }
    });
  }

  it('reads identically through libvhdi (pyvhdi with set_parent), 4 KiB-aligned writes', async () => {
    for (const seed of [101, 102, 103]) {
      const { paths, model } = await randomChain(dir, seed, { layers: 3 + (seed % 2), base: seed === 102 ? 'fixed' : 'dynamic', blockSize: 2 * 1024 * 1024, size: 9 * 1024 * 1024, align: 4096 });
      const viaLibvhdi = execFileSync('/usr/bin/python3', [PYVHDI_READ, ...paths], { maxBuffer: 1 << 28 });
      assert.equal(viaLibvhdi.length, model.length);
      assert.ok(viaLibvhdi.equals(model), `seed ${seed}: libvhdi reads the chain as the model`);
    }
  });

  it('the CLI reads, writes, exports and maps through a 3-layer chain', async () => {
    const { paths, model } = await randomChain(dir, 500, { layers: 3, base: 'dynamic', blockSize: 512 * 1024, size: 4 * 1024 * 1024 });
    const extra = randomBytes(rng(5), 3000);
    cliOk(['write', paths[0], '--offset', '1000001'], extra);
    extra.copy(model, 1000001);
    assert.ok(cliOk(['read', paths[0]]).equals(model));
    assert.ok(cliOk(['read', paths[0], '--offset', '999999', '--length', '3005']).equals(model.subarray(999999, 999999 + 3005)));
    const map = cliJson(['map', paths[0]]) as Array<{ start: number; length: number; depth: number; data: boolean }>;
    for (let i = 1; i < map.length; i++) {
      assert.equal(map[i].start, map[i - 1].start + map[i - 1].length);
      assert.ok(!(map[i].depth === map[i - 1].depth && map[i].data === map[i - 1].data), 'adjacent equal ranges are merged');
      assert.equal(map[i].start % 512, 0);
    }
    const info = cliJson(['info', paths[0]]);
    assert.deepEqual(info.chain.map((c: { path: string }) => c.path), paths.map((p) => path.resolve(p)));
    assert.equal(info.parent.resolvedPath, path.resolve(paths[1]));
  });
});
