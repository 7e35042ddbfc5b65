// Bugs the fuzzer found in the core, one test each.
import { strict as assert } from 'assert';
import { execFileSync } from 'child_process';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { DiskImageError } from '../../src/format/errors';
import { createImage } from '../../src/format/vhd/create';
import { MAX_VIRTUAL_SIZE, VhdImage } from '../../src/format/vhd/vhdImage';
import { ImageBytes } from './patch';
import { tempDir } from '../helpers/util';

function cpuMs<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const c0 = process.cpuUsage();
  return fn().then((value) => { const c = process.cpuUsage(c0); return { value, ms: (c.user + c.system) / 1000 }; });
}

describe('fuzz regressions', () => {
  let t: ReturnType<typeof tempDir>;
  before(() => { t = tempDir('diskimg-fuzzreg-'); });
  after(() => t.cleanup());

  it('a current size of 2^63-1 is refused at open (it used to make map loop for a minute)', async () => {
    const p = path.join(t.dir, 'huge-fixed.vhd');
    await createImage(p, { size: 64 * 1024, type: 'fixed' });
    const img = ImageBytes.read(p);
    img.footer64(48, 0x7fffffffffffffffn).fixChecksums().write(p);
    await assert.rejects(VhdImage.open(p), (e: unknown) => e instanceof DiskImageError && e.code === 'EFORMAT'
      && e.structure === 'footer' && e.offset === img.endFooter + 48 && /current size \d+ is larger than a VHD can be/.test(e.message));
  });

  it('a dynamic image of 2 TiB with 512-byte blocks and a one-entry BAT maps in bounded time', async () => {
    const p = path.join(t.dir, 'tiny-bat.vhd');
    await createImage(p, { size: 64 * 1024, blockSize: 512 });
    const img = ImageBytes.read(p);
    img.footer64(48, BigInt(MAX_VIRTUAL_SIZE)).header32(28, 1).fixChecksums().write(p);
    const chain = await openChain(p);
    try {
      const { value: extents, ms } = await cpuMs(() => chain.map());
      assert.deepEqual(extents, [{ start: 0, length: MAX_VIRTUAL_SIZE, depth: 0, data: false }]);
      assert.ok(ms < 1000, `map took ${ms} ms of CPU`);
      const runs = await chain.top.runs(0, MAX_VIRTUAL_SIZE);
      assert.deepEqual(runs, [{ offset: 0, length: MAX_VIRTUAL_SIZE, present: false }]);
    } finally {
      await chain.close();
    }
  });

  it('a FIFO named as an image is refused at once instead of blocking the open', async function () {
    this.timeout(5000);
    const p = path.join(t.dir, 'fifo.vhd');
    execFileSync('mkfifo', [p]);
    await assert.rejects(VhdImage.open(p), (e: unknown) => e instanceof DiskImageError && e.code === 'EOPEN' && /is not a regular file/.test(e.message));
    await assert.rejects(VhdImage.open(t.dir), (e: unknown) => e instanceof DiskImageError && /is a directory/.test(e.message));
  });
});
