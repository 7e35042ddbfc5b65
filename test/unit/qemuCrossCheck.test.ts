import { strict as assert } from 'assert';
import { execFileSync, spawnSync } from 'child_process';
import { readFileSync, writeFileSync, statSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { VhdImage } from '../../src/format/vhd/vhdImage';
import { geometryForSize } from '../../src/format/vhd/geometry';
import { cliJson, cliOk, rng, randomBytes, tempDir } from '../helpers/util';

/** Images written by qemu must read exactly as qemu reads them, and images we write must compare equal under qemu. */
describe('cross-check with qemu-img / qemu-io', function () {
  this.timeout(120000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-qemu-')));
  after(() => cleanup());

  const cases: Array<{ size: string; sub: 'dynamic' | 'fixed'; force?: boolean }> = [
    { size: '3M', sub: 'dynamic' },
    { size: '17M', sub: 'fixed' },
    { size: '64M', sub: 'dynamic', force: true },
    { size: '1000K', sub: 'dynamic' },
    { size: '33M', sub: 'fixed', force: true },
  ];
  cases.forEach((c, idx) => {
    it(`qemu-img ${c.sub} ${c.size}${c.force ? ' force_size' : ''}: geometry, info and every byte match qemu`, async () => {
      const img = path.join(dir, `q${idx}.vhd`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', `subformat=${c.sub}${c.force ? ',force_size=on' : ''}`, img, c.size]);
      const qinfo = JSON.parse(execFileSync('qemu-img', ['info', '-f', 'vpc', '--output=json', img]).toString());
      const size: number = qinfo['virtual-size'];
      const r = rng(100 + idx);
      // Writes at odd offsets and lengths, crossing block boundaries.
      for (let i = 0; i < 12; i++) {
        const len = 1 + Math.floor(r() * 300000);
        const off = Math.floor(r() * (size - len));
        const pat = (r() * 255) | 0;
        execFileSync('qemu-io', ['-f', 'vpc', '-c', `write -P ${pat} ${off} ${len}`, img], { stdio: 'ignore' });
      }
      const expected = path.join(dir, `q${idx}.raw`);
      execFileSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img, expected]);
      const info = cliJson(['info', img]);
      assert.equal(info.diskType, c.sub);
      // qemu trusts CHS for its own 'conectix' images unless forced; our virtual size is the footer's current size.
      const image = await VhdImage.open(img);
      assert.deepEqual(image.footer.geometry, c.force ? image.footer.geometry : geometryForSize(image.footer.currentSize));
      assert.equal(image.qemuVirtualSize, size);
      await image.close();
      const ours = path.join(dir, `q${idx}.ours.raw`);
      cliOk(['export', img, ours]);
      const a = readFileSync(expected);
      const b = readFileSync(ours);
      assert.equal(b.length, info.virtualSize);
      assert.ok(a.equals(b.subarray(0, a.length)), 'exported bytes equal qemu-img convert');
      assert.ok(b.subarray(a.length).every((x) => x === 0));
      // A positioned read through the CLI agrees too.
      const off = Math.floor(size / 3) + 123;
      const piece = cliOk(['read', img, '--offset', String(off), '--length', '70000']);
      assert.ok(piece.equals(a.subarray(off, off + 70000)));
    });
  });

  for (const type of ['dynamic', 'fixed'] as const) {
    for (const blockSize of type === 'dynamic' ? ['2M', '512K', '64K'] : ['-']) {
      it(`images we create (${type}${blockSize !== '-' ? `, ${blockSize} blocks` : ''}) and write compare identical under qemu-img compare`, async () => {
        const img = path.join(dir, `ours-${type}-${blockSize}.vhd`);
        const args = ['create', img, '--size', '21M', '--type', type];
        if (blockSize !== '-') args.push('--block-size', blockSize);
        cliOk(args);
        const size = cliJson(['info', img]).virtualSize;
        const model = Buffer.alloc(size);
        const r = rng(blockSize.length * 31 + type.length);
        const chain = await openChain(img, { writable: true });
        for (let i = 0; i < 25; i++) {
          const len = 1 + Math.floor(r() * 200000);
          const off = Math.floor(r() * (size - len));
          const data = randomBytes(r, len);
          await chain.write(off, data);
          data.copy(model, off);
        }
        await chain.close();
        const raw = path.join(dir, `ours-${type}-${blockSize}.raw`);
        writeFileSync(raw, model);
        const cmp = spawnSync('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', img, raw]);
        assert.equal(cmp.status, 0, cmp.stdout.toString() + cmp.stderr.toString());
        const check = spawnSync('qemu-img', ['check', '-f', 'vpc', img]);
        assert.notEqual(check.status, 2, check.stderr.toString());
        const qsize = JSON.parse(execFileSync('qemu-img', ['info', '-f', 'vpc', '--output=json', img]).toString())['virtual-size'];
        assert.equal(qsize, size, 'qemu and the footer agree on the size (CHS-exact)');
        if (type === 'fixed') assert.equal(statSync(img).size, size + 512);
      });
    }
  }

  it('--exact-size keeps the byte count; the default rounds up to exact CHS', () => {
    const a = path.join(dir, 'exact.vhd');
    const b = path.join(dir, 'rounded.vhd');
    cliOk(['create', a, '--size', '10000000', '--exact-size']);
    cliOk(['create', b, '--size', '10000000']);
    assert.equal(cliJson(['info', a]).virtualSize, 10000384);
    const rb = cliJson(['info', b]);
    assert.ok(rb.virtualSize >= 10000000);
    assert.equal(rb.chsSize, rb.virtualSize);
  });
});
