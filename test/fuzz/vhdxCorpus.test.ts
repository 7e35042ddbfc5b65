// Every image of the VHDX malformed corpus, with its expected outcome when opened and read whole.
import { strict as assert } from 'assert';
import * as path from 'path';
import { readThrough } from '../../src/chain/chain';
import { DiskImageError } from '../../src/format/errors';
import { VhdxImage } from '../../src/format/vhdx/vhdxImage';
import { tempDir } from '../helpers/util';
import { buildVhdxCorpus, VhdxCorpusCase, VhdxErrorExpectation } from './vhdxCorpus';

function matchError(e: unknown, x: VhdxErrorExpectation, c: VhdxCorpusCase, what: string): void {
  if (!(e instanceof DiskImageError)) throw new Error(`${c.name} ${what}: expected a DiskImageError, got ${(e as Error)?.stack ?? e}`);
  const msg = `${c.name} ${what}: ${e.message}`;
  assert.equal(e.code, x.code, msg);
  assert.equal(e.file, c.image, msg);
  assert.equal(e.structure, x.structure, msg);
  assert.equal(e.offset, x.offset, msg);
  assert.match(e.message, x.message, msg);
  assert.ok(e.message.endsWith(`(${x.structure} at offset ${x.offset})`), msg);
}

/** Opens the image and its parents (by locator) and reads the whole disk in 1 MiB pieces. */
async function readAll(top: VhdxImage): Promise<void> {
  const layers = [top];
  try {
    while (layers[layers.length - 1].diskType === 'differencing') {
      const r = layers[layers.length - 1].resolveParent();
      assert.ok(r.resolvedPath, `parent not found: ${r.tried.join('; ')}`);
      layers.push(await VhdxImage.open(r.resolvedPath!));
    }
    const b = Buffer.alloc(1 << 20);
    for (let pos = 0; pos < top.virtualSize; pos += b.length) await readThrough(layers, 0, pos, b.subarray(0, Math.min(b.length, top.virtualSize - pos)));
  } finally {
    for (const l of layers.slice(1)) await l.close();
  }
}

describe('VHDX malformed corpus', function () {
  this.timeout(120000);
  let t: ReturnType<typeof tempDir>;
  let cases: VhdxCorpusCase[];
  before(async () => {
    t = tempDir('diskimg-vhdx-corpus-');
    cases = await buildVhdxCorpus(path.join(t.dir, 'corpus'));
  });
  after(() => t.cleanup());

  it('has the cases the issue lists', () => {
    const names = cases.map((c) => c.name);
    for (const n of ['header1-bad-checksum', 'headers-both-bad', 'region-overlap', 'bat-region-past-end', 'log-wrapped-entry', 'log-write-past-file', 'log-tail-outside', 'locator-duplicate-keys', 'locator-huge-value', 'locator-huge-count']) {
      assert.ok(names.includes(n), n);
    }
    assert.equal(new Set(names).size, names.length);
  });

  it('each case opens and reads as expected', async () => {
    for (const c of cases) {
      let img: VhdxImage | null = null;
      try {
        img = await VhdxImage.open(c.image);
      } catch (e) {
        if (c.open === 'ok') throw new Error(`${c.name}: open failed: ${(e as Error).message}`);
        matchError(e, c.open, c, 'open');
        continue;
      }
      try {
        assert.equal(c.open, 'ok', `${c.name}: opened but should fail`);
        for (const w of c.warnings ?? []) assert.ok(img.warnings.some((x) => w.test(x)), `${c.name}: no warning ${w} in ${JSON.stringify(img.warnings)}`);
        if (!c.warnings) assert.deepEqual(img.warnings, [], `${c.name}: unexpected warnings`);
        try {
          await readAll(img);
          assert.equal(c.read ?? 'ok', 'ok', `${c.name}: read succeeded but should fail`);
        } catch (e) {
          if (c.read === 'ok' || c.read === undefined) throw e;
          matchError(e, c.read, c, 'read');
        }
      } finally {
        await img.close();
      }
    }
  });
});
