// Bugs the fuzzer found in the core, one test each.
import { strict as assert } from 'assert';
import { execFileSync } from 'child_process';
import * as path from 'path';
import { copyFileSync, readFileSync } from 'fs';
import { buildBlockMap } from '../../src/chain/blockMap';
import { checkImage } from '../../src/chain/check';
import { openChain } from '../../src/chain/chain';
import { DiskImageError } from '../../src/format/errors';
import { createImage } from '../../src/format/vhd/create';
import { MAX_VIRTUAL_SIZE, VhdImage } from '../../src/format/vhd/vhdImage';
import { CPU_LIMIT_MS } from './fuzzer';
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
      assert.ok(ms < CPU_LIMIT_MS, `map took ${ms} ms of CPU`);
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

  it('a fixed image truncated far below its current size maps its missing tail as zeros', async () => {
    const p = path.join(t.dir, 'truncated-fixed.vhd');
    await createImage(p, { size: 64 * 1024, type: 'fixed', exactSize: true });
    const whole = path.join(t.dir, 'whole-fixed.vhd');
    const chain0 = await openChain(p, { writable: true });
    await chain0.write(1000, Buffer.alloc(5000, 0x77));
    await chain0.close();
    copyFileSync(p, whole);
    const img = ImageBytes.read(p);
    img.footer64(48, 32n << 30n).fixChecksums().write(p); // 32 GiB claimed, 64 KiB held
    const chain = await openChain(p);
    try {
      assert.match(chain.warnings.join('\n'), /file holds 65536 data bytes but the footer says 34359738368/);
      assert.deepEqual(await chain.map(), [
        { start: 0, length: 65536, depth: 0, data: true },
        { start: 65536, length: 32 * 2 ** 30 - 65536, depth: 0, data: false },
      ]);
      const tail = await chain.readRange(32 * 2 ** 30 - 4096, 4096);
      assert.ok(tail.equals(Buffer.alloc(4096)));
    } finally {
      await chain.close();
    }
    void whole;
  });

  it("the editor's block map refuses a size its BAT cannot describe instead of allocating gigabytes", async () => {
    const p = path.join(t.dir, 'blockmap-huge.vhd');
    await createImage(p, { size: 256 * 1024, blockSize: 4096 });
    const img = ImageBytes.read(p);
    img.footer64(48, 2n ** 41n).fixChecksums().write(p); // 2 TiB in 4 KiB blocks: 512 Mi cells, BAT of 68
    const chain = await openChain(p);
    try {
      const ab0 = process.memoryUsage().arrayBuffers;
      await assert.rejects(buildBlockMap(chain), (e: unknown) => e instanceof DiskImageError && e.code === 'ETOOBIG'
        && e.structure === 'dynamic header' && e.offset === 512 + 28 && /needs 536870912 blocks of 4096 bytes but the BAT has 68 entries/.test(e.message));
      assert.ok(process.memoryUsage().arrayBuffers - ab0 < 64 * 1024 * 1024);
    } finally {
      await chain.close();
    }
    // A fixed image of 2 TiB maps on its nominal 2 MiB grid: 1 Mi cells.
    const f = path.join(t.dir, 'blockmap-fixed.vhd');
    await createImage(f, { size: 64 * 1024, type: 'fixed' });
    ImageBytes.read(f).footer64(48, 2n ** 41n).fixChecksums().write(f);
    const fc = await openChain(f);
    try {
      const map = await buildBlockMap(fc);
      assert.equal(map.blockCount, 1 << 20);
    } finally {
      await fc.close();
    }
  });

  it('check of a BAT with a million entries pointing past the end takes well under a second', async () => {
    const p = path.join(t.dir, 'million-bad.vhd');
    await createImage(p, { size: 4 * 1024 * 1024 * 1024, blockSize: 4096, exactSize: true }); // 1 Mi entries, 4 MiB BAT
    const img = ImageBytes.read(p);
    assert.equal(img.entries, 1 << 20);
    for (let i = 0; i < img.entries; i++) img.setBat(i, 0x7fffff00 - (i & 0xff));
    img.write(p);
    const { value: r, ms } = await cpuMs(() => checkImage(p));
    assert.ok(ms < CPU_LIMIT_MS, `check took ${ms} ms of CPU`);
    assert.equal(r.ok, false);
    const listed = r.problems.filter((x) => x.structure === 'BAT entry');
    assert.equal(listed.length, 101, 'the first 100 and one line for the rest');
    assert.ok(listed.some((x) => x.message === `${(1 << 20) - 100} more problems like the ones above are not listed`));
    assert.match(listed[0].message, /^block 0 points at offset \d+, past the end of the data/);
  });

  it('special files named as the image: one typed error each, for reading and for writing', async () => {
    const { symlinkSync, writeFileSync } = await import('fs');
    const loop = path.join(t.dir, 'self-loop.vhd');
    symlinkSync('self-loop.vhd', loop);
    const empty = path.join(t.dir, 'empty.vhd');
    writeFileSync(empty, '');
    const cases: Array<[string, RegExp]> = [
      [t.dir, /is a directory/],
      [loop, /cannot open: too many levels of symbolic links/],
      ['/dev/zero', /is not a regular file/],
      [path.join(t.dir, 'nothing-here.vhd'), /cannot open: no such file/],
      [empty, /file is too small to be a VHD \(0 bytes\)/],
    ];
    for (const [p, message] of cases) {
      for (const writable of [false, true]) {
        await assert.rejects(VhdImage.open(p, { writable }), (e: unknown) => e instanceof DiskImageError && message.test(e.message), `${p} writable=${writable}`);
      }
    }
    const { existsSync } = await import('fs');
    assert.ok(!existsSync('/dev/.zero.diskimg-lock'), 'no lock file is made next to a device');
  });

  describe('writes never damage a broken image further', () => {
    async function damaged(name: string, edit: (i: ImageBytes) => void): Promise<{ p: string; T: number }> {
      const p = path.join(t.dir, name);
      await createImage(p, { size: 4 << 20, blockSize: 512 * 1024, exactSize: true });
      const chain = await openChain(p, { writable: true });
      await chain.write(0, Buffer.alloc(4096, 1));
      await chain.write(3 * 512 * 1024, Buffer.alloc(4096, 3));
      await chain.close();
      const img = ImageBytes.read(p);
      edit(img);
      img.write(p);
      return { p, T: img.table };
    }
    async function refused(p: string, offset: number, x: { offset: number; message: RegExp }): Promise<void> {
      const before = readFileSync(p);
      const chain = await openChain(p, { writable: true });
      try {
        await assert.rejects(chain.write(offset, Buffer.alloc(1000, 0xee)), (e: unknown) => e instanceof DiskImageError && e.code === 'ECORRUPT'
          && e.structure === 'BAT entry' && e.offset === x.offset && x.message.test(e.message));
      } finally {
        await chain.close();
      }
      assert.ok(readFileSync(p).equals(before), 'the file is unchanged');
    }

    it('a BAT entry pointing into the dynamic header or the BAT', async () => {
      const { p, T } = await damaged('w-into-header.vhd', (i) => i.setBat(1, 1));
      await refused(p, 512 * 1024 + 10, { offset: T + 4, message: /block 1 \(512\.\.\d+\) overlaps the dynamic header \(512\.\.1536\); refusing to write/ });
    });

    it('two BAT entries pointing at the same block: neither is written', async () => {
      const { p, T } = await damaged('w-overlap.vhd', (i) => i.setBat(1, i.batEntry(0)));
      await refused(p, 512 * 1024, { offset: T + 4, message: /block 1 .* overlaps block 0/ });
      await refused(p, 100, { offset: T, message: /block 0 .* overlaps block 1/ });
    });

    it('a BAT entry past the end stays refused after appends have grown the file past it', async () => {
      const { p, T } = await damaged('w-past-end.vhd', (i) => i.setBat(1, (i.size >> 9) + 1));
      const chain = await openChain(p, { writable: true });
      try {
        await chain.write(2 * 512 * 1024, Buffer.alloc(512 * 1024, 2)); // appends block 2 where block 1 claims to be
        await assert.rejects(chain.write(512 * 1024, Buffer.alloc(512, 9)), (e: unknown) => e instanceof DiskImageError && e.offset === T + 4 && /block 1 .* runs past the end of the data/.test(e.message));
        assert.ok((await chain.readRange(2 * 512 * 1024, 512 * 1024)).equals(Buffer.alloc(512 * 1024, 2)));
      } finally {
        await chain.close();
      }
    });

    it('a block that reaches into the end footer is not written (the next append would land in it)', async () => {
      const span = 512 + 512 * 1024;
      const { p, T } = await damaged('w-into-footer.vhd', (i) => i.setBat(1, (i.size - 512 - span + 512) / 512));
      await refused(p, 512 * 1024 + 4096, { offset: T + 4, message: /block 1 \(\d+\.\.\d+\) runs past the end of the data \(\d+, where the end footer or the file ends\); refusing to write/ });
      // Found by the long campaign (case 40792 of seed 20261128): the write went in, the append of
      // the next block overwrote its tail, and the range no longer read back as written.
      const chain = await openChain(p, { writable: true });
      try {
        const data = Buffer.alloc(30000, 0x3c);
        await chain.write(2 * 512 * 1024 - 100, data).catch(() => undefined);
        await chain.write(2 * 512 * 1024, data);
        assert.ok((await chain.readRange(2 * 512 * 1024, 30000)).equals(data));
      } finally {
        await chain.close();
      }
    });

    it('a million BAT entries sharing one block: the write is refused in well under a second', async () => {
      const p = path.join(t.dir, 'w-million.vhd');
      await createImage(p, { size: 4 * 1024 * 1024 * 1024, blockSize: 4096, exactSize: true }); // 1 Mi entries
      const chain0 = await openChain(p, { writable: true });
      await chain0.write(0, Buffer.alloc(4096, 1));
      await chain0.close();
      const img = ImageBytes.read(p);
      const e0 = img.batEntry(0);
      for (let i = 1; i < img.entries; i++) img.setBat(i, i % 2 ? e0 : 0x7fffff00);
      img.write(p);
      const chain = await openChain(p, { writable: true });
      try {
        const { ms } = await cpuMs(() => assert.rejects(chain.write(4096 * 1001, Buffer.alloc(10, 5)), /block 1001 \(\d+\.\.\d+\) overlaps block \d+; refusing to write/));
        assert.ok(ms < CPU_LIMIT_MS, `took ${ms} ms of CPU`);
        await assert.rejects(chain.write(4096 * 1002, Buffer.alloc(10, 5)), /block 1002 .* runs past the end of the data/);
      } finally {
        await chain.close();
      }
    });

    it('a truncated fixed image is not written past the data it holds (its footer would end up mid-file)', async () => {
      const p = path.join(t.dir, 'w-fixed.vhd');
      await createImage(p, { size: 64 * 1024, type: 'fixed', exactSize: true });
      ImageBytes.read(p).footer64(48, 1n << 20n).fixChecksums().write(p);
      const before = readFileSync(p);
      const chain = await openChain(p, { writable: true });
      try {
        await assert.rejects(chain.write(65000, Buffer.alloc(1000, 7)), (e: unknown) => e instanceof DiskImageError && e.code === 'ECORRUPT'
          && e.structure === 'footer' && e.offset === 65536 && /holds only 65536 of 1048576 data bytes/.test(e.message));
        assert.ok(readFileSync(p).equals(before));
        await chain.write(1000, Buffer.alloc(1000, 7));
      } finally {
        await chain.close();
      }
      assert.ok((await VhdImage.open(p).then(async (v) => { const b = Buffer.alloc(1000); await v.readOwn(1000, b); await v.close(); return b; })).equals(Buffer.alloc(1000, 7)));
    });
  });
});
