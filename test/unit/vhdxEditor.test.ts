// The editor's model (overview, header fields, chain, block detail) of a VHDX chain, without VS Code.
import { strict as assert } from 'assert';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { blockDetail, buildBlockData, buildImageModel } from '../../src/extension/model';
import { createImage } from '../../src/format/registry';
import { tempDir } from '../helpers/util';

const MiB = 1024 * 1024;

describe('editor model of a VHDX chain', () => {
  let t: ReturnType<typeof tempDir>;
  before(() => { t = tempDir('vhdx-editor-'); });
  after(() => t.cleanup());

  it('overview, header fields with both CRC-32C checksums, chain links by DataWriteGuid, MSB-first block bitmaps', async () => {
    const base = path.join(t.dir, 'base.vhdx');
    const child = path.join(t.dir, 'child.avhdx');
    await createImage(base, { size: 8 * MiB, blockSize: MiB });
    let c = await openChain(base, { writable: true });
    await c.write(0, Buffer.alloc(2 * MiB, 1));
    await c.close();
    await createChild(base, child);
    c = await openChain(child, { writable: true });
    await c.write(512, Buffer.alloc(512, 2)); // sector 1 of block 0
    await c.write(5 * MiB, Buffer.alloc(MiB, 3)); // all of block 5
    await c.close();

    const chain = await openChain(child);
    try {
      const m = await buildImageModel(chain, false);
      assert.equal(m.overview.diskType, 'differencing');
      assert.deepEqual(m.overview.chain, ['child.avhdx', 'base.vhdx']);
      assert.equal(m.overview.creator, 'Disk Image Inspector (diskimg)');
      assert.equal(m.overview.allocatedBlocks, 2);
      const names = m.header.fields.map((f) => `${f.structure}/${f.name}`);
      for (const n of ['file identifier/signature', 'header 1/DataWriteGuid', 'header 2/log offset', 'region table 1/BAT region', 'metadata table/file parameters', 'file parameters/block size', 'parent locator/parent_linkage', 'parent locator/relative_path']) {
        assert.ok(names.includes(n), n);
      }
      assert.deepEqual(m.header.checksums.map((x) => [x.structure, x.ok]), [['header 1', true], ['header 2', true], ['region table 1', true], ['region table 2', true]]);
      const dwg = m.header.fields.find((f) => f.structure === 'header 1' && f.name === 'DataWriteGuid')!;
      assert.equal(dwg.offset, 65536 + 32);
      assert.equal(m.chain[0].link!.uuidMatches, true);
      assert.equal(m.chain[0].parentUuid, (chain.layers[1] as unknown as { dataWriteGuid: string }).dataWriteGuid);

      const d0 = await blockDetail(chain, 0);
      assert.equal(d0[0].allocated, true);
      assert.equal(d0[0].bitmap![0], 0x40, 'sector 1 of 2048, most significant bit first');
      assert.ok(d0[0].fileOffset! >= 4 * MiB);
      assert.equal(d0[1].allocated, true);
      const d5 = await blockDetail(chain, 5);
      assert.ok(d5[0].bitmap!.every((x) => x === 0xff));
      const data = await buildBlockData(chain);
      assert.equal(data.blockSize, MiB);
    } finally {
      await chain.close();
    }
  });
});
