import { strict as assert } from 'assert';
import { execFileSync, spawn, spawnSync } from 'child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { discardChild } from '../../src/chain/discard';
import { exportImage } from '../../src/chain/export';
import { mergeChild, planMerge } from '../../src/chain/merge';
import { reparent } from '../../src/chain/reparent';
import { snapshot } from '../../src/chain/snapshot';
import { createImage } from '../../src/format/vhd/create';
import { DiskImageError } from '../../src/format/errors';
import { CLI, cliJson, cliOk, runCli, rng, randomBytes, tempDir, readChain } from '../helpers/util';

async function writeRandom(p: string, r: () => number, count: number, model: Buffer): Promise<void> {
  const c = await openChain(p, { writable: true });
  try {
    for (let i = 0; i < count; i++) {
      const len = 1 + Math.floor(r() * 400000);
      const off = Math.floor(r() * (model.length - len));
      const data = randomBytes(r, len);
      await c.write(off, data);
      data.copy(model, off);
    }
  } finally {
    await c.close();
  }
}

/** A chain base <- l1 <- ... <- ln with random writes in every layer; models[i] is what layer i reads as. */
async function buildChain(dir: string, seed: number, n: number, base: 'fixed' | 'dynamic', blockSize: number) {
  const r = rng(seed);
  const paths = [path.join(dir, `c${seed}-0.vhd`)];
  const size = await createImage(paths[0], { size: 4 * 1024 * 1024 + 3 * 512, type: base, blockSize, exactSize: true });
  const models: Buffer[] = [Buffer.alloc(size)];
  await writeRandom(paths[0], r, 4, models[0]);
  for (let i = 1; i <= n; i++) {
    paths.push(path.join(dir, `c${seed}-${i}.vhd`));
    await createChild(paths[i - 1], paths[i]);
    models.push(Buffer.from(models[i - 1]));
    await writeRandom(paths[i], r, 2 + Math.floor(r() * 5), models[i]);
  }
  return { paths, models, r };
}

describe('chain operations: merge, discard, reparent, snapshot, export', function () {
  this.timeout(120000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-ops-')));
  after(() => cleanup());

  for (let seed = 1; seed <= 12; seed++) {
    const n = 1 + (seed % 4);
    const base = seed % 3 === 0 ? 'fixed' : 'dynamic';
    const blockSize = [65536, 512 * 1024, 2 * 1024 * 1024][seed % 3];
    const into = seed % 2 === 0 && n > 1;
    it(`seed ${seed}: merge ${into ? `a ${n}-layer cascade --into the ${base} base` : `the top of ${n} layer(s) into its parent`} matches the model`, async () => {
      const sub = path.join(dir, `m${seed}`);
      mkdirSync(sub);
      const { paths, models, r } = await buildChain(sub, seed, n, base, blockSize);
      // A grandchild of the merged image must be re-linked and keep reading the same.
      const mergedIdx = n;
      const grand = path.join(sub, 'grand.vhd');
      await createChild(paths[mergedIdx], grand);
      const grandModel = Buffer.from(models[mergedIdx]);
      await writeRandom(grand, r, 3, grandModel);
      const targetIdx = into ? 0 : mergedIdx - 1;
      const plan = await planMerge(paths[mergedIdx], { into: into ? paths[0] : undefined });
      assert.deepEqual(plan.merged, paths.slice(targetIdx + 1).reverse());
      assert.deepEqual(plan.relink, [grand]);
      assert.deepEqual(plan.siblings, []);
      const result = await mergeChild(paths[mergedIdx], { into: into ? paths[0] : undefined });
      assert.equal(result.target, paths[targetIdx]);
      for (const p of paths.slice(targetIdx + 1)) assert.ok(!existsSync(p), `${p} removed`);
      assert.ok((await readChain(paths[targetIdx])).equals(models[mergedIdx]), 'target reads as the child did');
      assert.ok((await readChain(grand)).equals(grandModel), 're-linked grandchild reads the same');
      const info = cliJson(['info', grand]);
      assert.equal(info.parent.resolvedPath, paths[targetIdx]);
      assert.deepEqual(info.warnings.filter((w: string) => !w.includes('CHS geometry')), []);
      for (let i = 0; i < targetIdx; i++) assert.ok((await readChain(paths[i])).equals(models[i]), 'layers below the target untouched');
    });
  }

  it('refuses to merge when the target has other children, lists them, and merges with force', async () => {
    const sub = path.join(dir, 'siblings');
    mkdirSync(sub);
    const { paths } = await buildChain(sub, 77, 1, 'dynamic', 512 * 1024);
    const sib = path.join(sub, 'sibling.vhd');
    await createChild(paths[0], sib);
    const r = runCli(['merge', paths[1]]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /refusing to merge: .*sibling\.vhd.*--force/);
    assert.ok(existsSync(paths[1]));
    cliOk(['merge', paths[1], '--force']);
    assert.ok(!existsSync(paths[1]));
  });

  it('--search finds siblings in other folders (repeatable, before or after the image)', async () => {
    const sub = path.join(dir, 'search');
    const elsewhere = path.join(dir, 'search-elsewhere');
    mkdirSync(sub);
    mkdirSync(elsewhere);
    const { paths } = await buildChain(sub, 78, 1, 'dynamic', 512 * 1024);
    await createChild(paths[0], path.join(elsewhere, 'far-sibling.vhd'));
    assert.deepEqual((await planMerge(paths[1])).siblings, []);
    const r = runCli(['merge', '--search', elsewhere, paths[1]]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /far-sibling\.vhd/);
    assert.equal(runCli(['merge', paths[1], '--search', sub, '--search', elsewhere]).code, 2);
    assert.ok(existsSync(paths[1]));
    // Without the folder named, nothing is known of that sibling.
    cliOk(['merge', paths[1]]);
    assert.ok(!existsSync(paths[1]));
  });

  it('cancellation stops a merge cleanly: the chain reads as before and a re-run completes', async () => {
    const sub = path.join(dir, 'cancel');
    mkdirSync(sub);
    const { paths, models } = await buildChain(sub, 91, 2, 'dynamic', 65536);
    const controller = new AbortController();
    let calls = 0;
    await assert.rejects(mergeChild(paths[2], {
      signal: controller.signal,
      onProgress: () => { if (++calls === 3) controller.abort(); },
    }), (e: unknown) => e instanceof DiskImageError && e.code === 'ECANCELLED');
    assert.ok((await readChain(paths[2])).equals(models[2]));
    await mergeChild(paths[2]);
    assert.ok((await readChain(paths[1])).equals(models[2]));
  });

  it('discard deletes a leaf child, leaves the parent untouched, and refuses a child that is a parent', async () => {
    const sub = path.join(dir, 'discard');
    mkdirSync(sub);
    const { paths, models } = await buildChain(sub, 55, 2, 'dynamic', 512 * 1024);
    const before = readFileSync(paths[1]);
    const r = runCli(['discard', paths[1]]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /refusing to discard: 1 image\(s\) use it as their parent: .*c55-2\.vhd/);
    await discardChild(paths[2]);
    assert.ok(!existsSync(paths[2]));
    assert.ok(readFileSync(paths[1]).equals(before), 'parent byte-identical');
    assert.ok((await readChain(paths[1])).equals(models[1]));
    await assert.rejects(discardChild(paths[0]), /not a differencing child/);
  });

  it('reparent re-links a child to a moved parent; refuses a different UUID unless told', async () => {
    const sub = path.join(dir, 'reparent');
    mkdirSync(path.join(sub, 'moved'), { recursive: true });
    const { paths, models } = await buildChain(sub, 66, 1, 'dynamic', 512 * 1024);
    const moved = path.join(sub, 'moved', 'base-renamed.vhd');
    renameSync(paths[0], moved);
    const broken = runCli(['read', paths[1], '--length', '512']);
    assert.equal(broken.code, 2);
    assert.match(broken.stderr, /not found; tried W2ru/);
    const r = await reparent(paths[1], moved);
    assert.equal(r.uuidChanged, false);
    const info = cliJson(['info', paths[1]]);
    assert.equal(info.headerChecksumValid, true);
    assert.equal(info.parent.name, 'base-renamed.vhd');
    assert.deepEqual(info.parent.locators, [{ platform: 'W2ru', path: '.\\moved\\base-renamed.vhd' }, { platform: 'W2ku', path: moved }]);
    assert.ok((await readChain(paths[1])).equals(models[1]));
    // libvhdi agrees on the new parent name.
    assert.match(execFileSync('vhdiinfo', [paths[1]]).toString(), /Parent filename\s*:\s*base-renamed\.vhd/);
    // A stranger of the right size is refused, then accepted on request.
    const other = path.join(sub, 'other.vhd');
    await createImage(other, { size: models[0].length, exactSize: true });
    const refused = runCli(['reparent', paths[1], other]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /parent UUID mismatch: the child expects [0-9a-f-]+ but .*other\.vhd is [0-9a-f-]+.*\(dynamic header at offset 552\)/);
    cliOk(['reparent', paths[1], other, '--ignore-id-mismatch']);
    const after = cliJson(['info', paths[1]]);
    assert.equal(after.parent.uuid, cliJson(['info', other]).uuid);
    assert.deepEqual(after.warnings.filter((w: string) => !w.includes('CHS geometry')), []);
    // Self-parent and cycles are refused.
    assert.match(runCli(['reparent', paths[1], paths[1]]).stderr, /own parent/);
    const grand = path.join(sub, 'grand.vhd');
    await createChild(paths[1], grand);
    assert.match(runCli(['reparent', paths[1], grand, '--ignore-id-mismatch']).stderr, /cycle/);
  });

  it('snapshot freezes the top and starts the next child', async () => {
    const sub = path.join(dir, 'snap');
    mkdirSync(sub);
    const base = path.join(sub, 'disk.vhd');
    await createImage(base, { size: 2 * 1024 * 1024 });
    const s1 = cliOk(['snapshot', base]).toString().trim();
    assert.equal(s1, path.join(sub, 'disk-1.vhd'));
    const s2 = await snapshot(s1);
    assert.equal(s2, path.join(sub, 'disk-2.vhd'));
    const info = cliJson(['info', s2]);
    assert.deepEqual(info.chain.map((c: { path: string }) => path.basename(c.path)), ['disk-2.vhd', 'disk-1.vhd', 'disk.vhd']);
  });

  it('export to raw, fixed VHD and dynamic VHD: qemu-img compares them identical; dynamic allocates only non-zero blocks', async () => {
    const sub = path.join(dir, 'export');
    mkdirSync(sub);
    const { paths, models } = await buildChain(sub, 33, 2, 'dynamic', 512 * 1024);
    const top = paths[2];
    // Zero a whole block in the child so the flattened disk has a zero block that some layer allocated.
    const c = await openChain(top, { writable: true });
    await c.write(512 * 1024, Buffer.alloc(512 * 1024));
    await c.close();
    models[2].fill(0, 512 * 1024, 1024 * 1024);
    const raw = path.join(sub, 'out.raw');
    writeFileSync(path.join(sub, 'model.raw'), models[2]);
    await exportImage(top, raw, { format: 'raw' });
    assert.ok(readFileSync(raw).equals(models[2]));
    for (const format of ['vhd-fixed', 'vhd-dynamic'] as const) {
      const out = path.join(sub, `${format}.vhd`);
      cliOk(['export', top, out, '--format', format]);
      const cmp = spawnSync('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', out, path.join(sub, 'model.raw')]);
      assert.equal(cmp.status, 0, cmp.stdout.toString() + cmp.stderr.toString());
      const info = cliJson(['info', out]);
      assert.equal(info.diskType, format === 'vhd-fixed' ? 'fixed' : 'dynamic');
      assert.equal(info.virtualSize, models[2].length);
      if (format === 'vhd-dynamic') {
        const blocks = Math.ceil(models[2].length / (512 * 1024));
        let nonZero = 0;
        for (let b = 0; b < blocks; b++) if (models[2].subarray(b * 512 * 1024, (b + 1) * 512 * 1024).some((x) => x !== 0)) nonZero++;
        assert.equal(info.allocatedBlocks, nonZero);
        assert.ok(nonZero < blocks);
      }
    }
  });

  it('export to /dev/null, to standard output and into a pipe: no truncation, every byte in order, zeros where no layer holds data', async () => {
    const sub = path.join(dir, 'export-stream');
    mkdirSync(sub);
    const img = path.join(sub, 'holes.vhd');
    const size = await createImage(img, { size: 8 * 1024 * 1024, type: 'dynamic', blockSize: 512 * 1024, exactSize: true });
    const model = Buffer.alloc(size);
    // Data in one block only: the rest of the disk is holes the pipeline never passes on.
    const data = randomBytes(rng(7), 700_000);
    const c = await openChain(img, { writable: true });
    await c.write(3 * 1024 * 1024 + 1234, data);
    await c.close();
    data.copy(model, 3 * 1024 * 1024 + 1234);
    cliOk(['export', img, '/dev/null']);
    assert.ok(cliOk(['export', img, '/dev/stdout']).equals(model), 'standard output (a pipe) carries the whole disk');
    const fifo = path.join(sub, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const reader = spawn('cat', [fifo]);
    const got: Buffer[] = [];
    reader.stdout.on('data', (b: Buffer) => got.push(b));
    const closed = new Promise((resolve) => reader.on('close', resolve));
    // Not spawnSync: the reader's output must keep being drained while the export writes.
    const exporter = spawn(process.execPath, [CLI, 'export', img, fifo], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    exporter.stderr.on('data', (b: Buffer) => { stderr += b; });
    const code = await new Promise((resolve) => exporter.on('close', resolve));
    assert.equal(code, 0, stderr);
    await closed;
    assert.ok(Buffer.concat(got).equals(model), 'a named pipe gets the whole disk');
  });
});
