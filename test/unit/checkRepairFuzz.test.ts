import { strict as assert } from 'assert';
import { copyFileSync, readFileSync, statSync, truncateSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { checkImage, CheckResult } from '../../src/chain/check';
import { createChild } from '../../src/chain/createChild';
import { repairImage } from '../../src/chain/repair';
import { DiskImageError } from '../../src/format/errors';
import { createImage } from '../../src/format/vhd/create';
import { VhdImage } from '../../src/format/vhd/vhdImage';
import { randomBytes, rng, tempDir } from '../helpers/util';

const KiB = 1024;

async function readable(file: string): Promise<boolean> {
  try {
    const chain = await openChain(file);
    try { await chain.readRange(0, chain.virtualSize); } finally { await chain.close(); }
    return true;
  } catch (e) {
    if (e instanceof DiskImageError) return false;
    throw e;
  }
}

async function opens(file: string): Promise<boolean> {
  try {
    (await VhdImage.open(file)).close();
    return true;
  } catch (e) {
    if (e instanceof DiskImageError) return false;
    throw e;
  }
}

function wellFormed(r: CheckResult, size: number): void {
  assert.equal(r.ok, !r.problems.some((p) => p.severity === 'error'));
  for (const p of r.problems) {
    assert.ok(p.severity === 'error' || p.severity === 'warning');
    assert.ok(typeof p.structure === 'string' && p.structure.length > 0);
    assert.ok(Number.isSafeInteger(p.offset) && p.offset >= 0 && p.offset <= size, `offset ${p.offset} of ${JSON.stringify(p)} in a ${size}-byte file`);
    assert.ok(p.message.length > 0);
  }
}

/**
 * Damaged copies of small dynamic and differencing images: check never throws on content (only
 * DiskImageError when there is no footer at all), every problem names a structure and an offset
 * inside the file; an image check calls clean reads through; repair never turns an image that
 * opened into one that does not, and a second repair has nothing left to change.
 */
describe('check and repair on randomly damaged images', function () {
  this.timeout(180000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-fuzz-')));
  after(() => cleanup());

  it('300 damaged images: no crash, precise problems, safe and idempotent repair', async () => {
    const r = rng(4242);
    const dyn = path.join(dir, 'dyn.vhd');
    await createImage(dyn, { size: 1024 * KiB, type: 'dynamic', blockSize: 64 * KiB });
    let chain = await openChain(dyn, { writable: true });
    for (let i = 0; i < 6; i++) await chain.write(Math.floor(r() * 1000) * 1000, randomBytes(r, 5000));
    await chain.close();
    const par = path.join(dir, 'par.vhd');
    copyFileSync(dyn, par);
    const diff = path.join(dir, 'diff.vhd');
    await createChild(par, diff);
    chain = await openChain(diff, { writable: true });
    for (let i = 0; i < 4; i++) await chain.write(Math.floor(r() * 1000) * 1000, randomBytes(r, 3000));
    await chain.close();
    const originals = [readFileSync(dyn), readFileSync(diff)];
    const stats = { checked: 0, threw: 0, clean: 0, repaired: 0, cleanAfter: 0 };

    for (let iter = 0; iter < 300; iter++) {
      const src = originals[iter % 2];
      const file = path.join(dir, `f${iter}.vhd`);
      const bytes = Buffer.from(src);
      const kind = r();
      const meta = (n: number) => Math.floor(r() * n);
      if (kind < 0.35) {
        // Flip bytes in the metadata: footer copy, header, BAT, locators.
        for (let k = 0, n = 1 + meta(6); k < n; k++) bytes[meta(Math.min(bytes.length, 4096))] ^= 1 + meta(255);
      } else if (kind < 0.55) {
        // Flip bytes in the end footer.
        for (let k = 0, n = 1 + meta(4); k < n; k++) bytes[bytes.length - 512 + meta(512)] ^= 1 + meta(255);
      } else if (kind < 0.75) {
        // A BAT entry set to something random (often past EOF or overlapping).
        const to = 1536;
        const e = meta(16);
        const v = r() < 0.5 ? bytes.readUInt32BE(to + meta(16) * 4) : meta(0xffffffff);
        bytes.writeUInt32BE(v >>> 0, to + e * 4);
      } else if (kind < 0.9) {
        // Header fields set to random values.
        const fields = [16, 24, 28, 32, 40, 56, 576 + 8, 576 + 16 + 4];
        bytes.writeUInt32BE(meta(0xffffffff) >>> 0, 512 + fields[meta(fields.length)]);
      }
      writeFileSync(file, bytes);
      if (kind >= 0.9) truncateSync(file, 512 + meta(bytes.length - 512));
      const size = statSync(file).size;
      const openedBefore = await opens(file);
      let res: CheckResult;
      try {
        res = await checkImage(file);
      } catch (e) {
        assert.ok(e instanceof DiskImageError, `iteration ${iter}: ${(e as Error).stack}`);
        assert.match((e as Error).message, /^.*f\d+\.vhd: /);
        stats.threw++;
        continue;
      }
      stats.checked++;
      wellFormed(res, size);
      if (res.ok) {
        stats.clean++;
        assert.ok(await readable(file), `iteration ${iter}: check is clean but the image does not read: ${JSON.stringify(res.problems)}`);
      }
      const rep = await repairImage(file);
      if (rep.changes.length > 0) stats.repaired++;
      wellFormed(rep.after!, statSync(file).size);
      if (rep.after!.ok) stats.cleanAfter++;
      if (openedBefore) assert.ok(await opens(file), `iteration ${iter}: repair made an image that opened unopenable: ${JSON.stringify(rep.changes)}`);
      if (rep.after!.ok) assert.ok(await readable(file), `iteration ${iter}: clean after repair but does not read`);
      const again = await repairImage(file, { dryRun: true });
      assert.deepEqual(again.changes, [], `iteration ${iter}: a second repair still has changes: ${JSON.stringify(again.changes)} after ${JSON.stringify(rep.changes)}`);
    }
    console.log(`      ${JSON.stringify(stats)}`);
    // The damage must actually exercise both paths.
    assert.ok(stats.repaired > 50 && stats.cleanAfter > 50 && stats.checked > 200, JSON.stringify(stats));
  });
});
