import { strict as assert } from 'assert';
import { execFileSync, spawnSync } from 'child_process';
import { closeSync, openSync, readFileSync, writeSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { diffImages, diffLayers, DiffRange, DiffResult } from '../../src/chain/diff';
import { createImage } from '../../src/format/vhd/create';
import { checkImage } from '../../src/chain/check';
import { repairImage } from '../../src/chain/repair';
import { DiskImageError } from '../../src/format/errors';
import { VhdImage } from '../../src/format/vhd/vhdImage';
import { hasTool, randomBytes, rng, runCli, tempDir } from '../helpers/util';

const KiB = 1024;
const MiB = 1024 * KiB;

/** One image and what it must read as: a flat model, and which sectors its own layer holds. */
interface Node {
  file: string;
  kind: 'dynamic' | 'fixed' | 'differencing';
  model: Buffer;
  owned: Uint8Array;
  blockSize: number;
  parent: Node | null;
}

async function write(node: Node, offset: number, data: Buffer): Promise<void> {
  const chain = await openChain(node.file, { writable: true });
  try {
    await chain.write(offset, data);
    await chain.flush();
  } finally {
    await chain.close();
  }
  data.copy(node.model, offset);
  for (let s = Math.floor(offset / 512); s < Math.ceil((offset + data.length) / 512); s++) node.owned[s] = 1;
}

/** Random writes: odd offsets and lengths, whole blocks, zeros over data, single sectors. */
async function randomWrites(node: Node, r: () => number, count: number): Promise<void> {
  const size = node.model.length;
  for (let i = 0; i < count; i++) {
    const kind = r();
    let off: number;
    let data: Buffer;
    if (kind < 0.3) {
      const len = 1 + Math.floor(r() * 20000);
      off = Math.floor(r() * (size - len));
      data = randomBytes(r, len);
    } else if (kind < 0.5) {
      off = Math.floor(r() * (size / 512)) * 512;
      data = randomBytes(r, 512);
    } else if (kind < 0.65) {
      // Zeros over whatever is there (a written sector that reads like an unwritten one).
      const len = 512 * (1 + Math.floor(r() * 16));
      off = Math.floor(r() * ((size - len) / 512)) * 512;
      data = Buffer.alloc(len);
    } else if (kind < 0.8) {
      // The same bytes the image already shows (owned but unchanged).
      const len = 512 * (1 + Math.floor(r() * 8));
      off = Math.floor(r() * ((size - len) / 512)) * 512;
      data = Buffer.from(node.model.subarray(off, off + len));
    } else {
      const len = Math.min(size, 64 * KiB + Math.floor(r() * 300 * KiB));
      off = Math.floor(r() * (size - len));
      data = randomBytes(r, len);
    }
    await write(node, off, data);
  }
}

/** Sector-granular differing ranges of two flat models, the shorter read as zeros past its end. */
function expectedRanges(a: Buffer, b: Buffer, mask?: Uint8Array): DiffRange[] {
  const size = Math.max(a.length, b.length);
  const za = Buffer.alloc(size);
  const zb = Buffer.alloc(size);
  a.copy(za);
  b.copy(zb);
  const out: DiffRange[] = [];
  for (let st = 0; st < size; st += 512) {
    if (mask && !mask[st / 512]) continue;
    const en = Math.min(size, st + 512);
    if (za.subarray(st, en).equals(zb.subarray(st, en))) continue;
    const last = out[out.length - 1];
    if (last && last.start + last.length === st) last.length += en - st;
    else out.push({ start: st, length: en - st });
  }
  return out;
}

function blocksOf(ranges: DiffRange[], grid: number): number[] {
  const out: number[] = [];
  for (const r of ranges) {
    for (let b = Math.floor(r.start / grid); b <= Math.floor((r.start + r.length - 1) / grid); b++) if (out[out.length - 1] !== b) out.push(b);
  }
  return out;
}

function assertDiff(r: DiffResult, expected: DiffRange[], grid: number, what: string): void {
  assert.deepEqual(r.ranges, expected, what);
  assert.equal(r.identical, expected.length === 0, what);
  assert.equal(r.differingBytes, expected.reduce((n, x) => n + x.length, 0), what);
  assert.deepEqual(r.blocks, blocksOf(expected, grid), what);
  assert.equal(r.blockSize, grid, what);
}

describe('diff (randomised against a flat model)', function () {
  this.timeout(120000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-diff-')));
  after(() => cleanup());
  const qemu = hasTool('qemu-img');

  async function base(name: string, kind: 'dynamic' | 'fixed', size: number, blockSize: number): Promise<Node> {
    const file = path.join(dir, name);
    const real = await createImage(file, { size, type: kind, blockSize: kind === 'dynamic' ? blockSize : undefined });
    return { file, kind, model: Buffer.alloc(real), owned: new Uint8Array(Math.ceil(real / 512)), blockSize: kind === 'dynamic' ? blockSize : 2 * MiB, parent: null };
  }

  async function child(parent: Node, name: string): Promise<Node> {
    const file = path.join(dir, name);
    await createChild(parent.file, file);
    return { file, kind: 'differencing', model: Buffer.from(parent.model), owned: new Uint8Array(parent.owned.length), blockSize: parent.blockSize, parent };
  }

  for (const seed of [1, 2, 3, 4, 5, 6]) {
    it(`seed ${seed}: every pair of a random chain tree, its siblings and independent images, plus --layers, matches the model`, async () => {
      const r = rng(seed * 7919);
      const sizes = [5 * MiB, 8 * MiB, 9 * MiB + 3 * 512];
      const bss = [64 * KiB, 512 * KiB, 2 * MiB];
      const size = sizes[seed % 3];
      const bs = bss[Math.floor(r() * 3)];
      const p = `s${seed}-`;
      const root = await base(`${p}base.vhd`, seed % 4 === 0 ? 'fixed' : 'dynamic', size, bs);
      await randomWrites(root, r, 12);
      const c1 = await child(root, `${p}c1.vhd`);
      const sib = await child(root, `${p}sib.vhd`);
      await randomWrites(c1, r, 10);
      await randomWrites(sib, r, 4);
      const c2 = await child(c1, `${p}c2.vhd`);
      await randomWrites(c2, r, 8);
      // Independent images: another block size holding the root's content with a few changes; an
      // untouched one; a longer one (tail), all dynamic.
      const otherBs = bss[(bss.indexOf(bs) + 1) % 3];
      const other = await base(`${p}other.vhd`, 'dynamic', size, otherBs);
      for (let off = 0; off < size; off += 256 * KiB) {
        const piece = root.model.subarray(off, Math.min(size, off + 256 * KiB));
        if (piece.some((x) => x !== 0)) await write(other, off, Buffer.from(piece));
      }
      await randomWrites(other, r, 3);
      const empty = await base(`${p}empty.vhd`, 'dynamic', size, bs);
      const longer = await base(`${p}longer.vhd`, 'dynamic', size + 3 * MiB, bs);
      await write(longer, 0, Buffer.from(root.model));
      if (seed % 2 === 0) await write(longer, size + MiB + 512 * Math.floor(r() * 100), randomBytes(r, 700));

      const nodes = [root, c1, sib, c2, other, empty, longer];
      for (let i = 0; i < nodes.length; i++) {
        for (let j = i; j < nodes.length; j++) {
          const a = nodes[i];
          const b = nodes[j];
          const res = await diffImages(a.file, b.file);
          const what = `${path.basename(a.file)} vs ${path.basename(b.file)}`;
          assertDiff(res, expectedRanges(a.model, b.model), Math.max(a.blockSize, b.blockSize), what);
          assert.deepEqual(res.sizes, { a: a.model.length, b: b.model.length });
          if (a.model.length !== b.model.length) {
            assert.ok(res.tail, what);
            assert.equal(res.tail!.allZero, !res.ranges.some((x) => x.start + x.length > Math.min(a.model.length, b.model.length)), what);
          } else {
            assert.equal(res.tail, null);
          }
          // qemu-img reads dynamic and fixed images (not differencing): its verdict must agree.
          if (qemu && a.kind !== 'differencing' && b.kind !== 'differencing') {
            const q = spawnSync('qemu-img', ['compare', '-q', '-f', 'vpc', '-F', 'vpc', a.file, b.file]);
            assert.equal(q.status, res.identical ? 0 : 1, `qemu-img compare ${what}: ${q.stderr}`);
          }
        }
      }

      // Siblings over one parent: blocks neither child holds are not read (shared parent).
      const sibRes = await diffImages(c1.file, sib.file);
      const touched = new Set<number>();
      const cbs = c1.blockSize;
      for (const n of [c1, sib]) n.owned.forEach((o, s) => { if (o) touched.add(Math.floor((s * 512) / cbs)); });
      assert.ok(sibRes.comparedBytes <= touched.size * cbs, `compared ${sibRes.comparedBytes} > ${touched.size} blocks`);
      const self = await diffImages(c2.file, c2.file);
      assert.equal(self.comparedBytes, 0);
      assert.ok(self.identical);

      // --layers: sectors a child holds whose content differs from its parent's view.
      for (const n of [c1, sib, c2]) {
        const res = await diffLayers(n.file);
        assertDiff(res, expectedRanges(n.model, n.parent!.model, n.owned), n.blockSize, `${path.basename(n.file)} --layers`);
        assert.equal(res.ownedBytes, Array.from(n.owned).reduce((x, o, s) => x + (o ? Math.min(512, size - s * 512) : 0), 0));
      }
    });
  }

  it('the CLI: exit 0 identical / 1 different / 2 error; --json is the core result; text names the ranges and the tail', async () => {
    const a = await base('cli-a.vhd', 'dynamic', 4 * MiB, 512 * KiB);
    const b = await base('cli-b.vhd', 'dynamic', 4 * MiB, 2 * MiB);
    await write(a, 1000, Buffer.from('hello'));
    await write(b, 1000, Buffer.from('hello'));
    let r = runCli(['diff', a.file, b.file]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout.toString(), /^identical: /);
    await write(b, 3 * MiB + 5, Buffer.from('x'));
    r = runCli(['diff', a.file, b.file, '--json']);
    assert.equal(r.code, 1, r.stderr);
    const json = JSON.parse(r.stdout.toString());
    assert.deepEqual(json, JSON.parse(JSON.stringify(await diffImages(a.file, b.file))));
    for (const k of ['identical', 'virtualSize', 'blockSize', 'differingBytes', 'ranges', 'blocks']) assert.ok(k in json, k);
    assert.deepEqual(json.ranges, [{ start: 3 * MiB, length: 512 }]);
    assert.deepEqual(json.blocks, [1]);
    r = runCli(['diff', a.file, b.file]);
    assert.equal(r.code, 1);
    assert.match(r.stdout.toString(), /^differ: .* 512 B \(512 bytes\) in 1 range, 1 block of 2(\.00)? MiB/);
    assert.match(r.stdout.toString(), new RegExp(`\\n\\s+${3 * MiB}\\s+512\\s+${3 * MiB + 512}\\n`));
    const long = await base('cli-long.vhd', 'dynamic', 6 * MiB, 2 * MiB);
    await write(long, 1000, Buffer.from('hello'));
    r = runCli(['diff', a.file, long.file]);
    assert.equal(r.code, 0);
    assert.match(r.stdout.toString(), /sizes differ: .* is all zeros, which counts as equal/);
    await write(long, 5 * MiB, Buffer.from('tail'));
    r = runCli(['diff', a.file, long.file, '--json']);
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.stdout.toString()).tail, { start: a.model.length, length: long.model.length - a.model.length, longer: 'b', allZero: false });
    const c = await child(a, 'cli-c.vhd');
    await write(c, 1000, Buffer.from('hello')); // owned, unchanged
    r = runCli(['diff', c.file, '--layers']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout.toString(), /no changes/);
    await write(c, 2000, Buffer.from('world'));
    r = runCli(['diff', c.file, '--layers', '--json']);
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.stdout.toString()).ranges, [{ start: 1536, length: 512 }]);
    assert.equal(runCli(['diff', a.file, '--layers']).code, 2);
    assert.equal(runCli(['diff', a.file]).code, 2);
    r = runCli(['diff', a.file, path.join(dir, 'nope.vhd')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^diskimg: .*nope\.vhd: cannot open: no such file/);
  });

  it('images written by qemu-io: ranges match a byte compare of qemu-img convert output; verdicts match qemu-img compare', async function () {
    if (!qemu) this.skip();
    const r = rng(31337);
    const imgs: string[] = [];
    const raws: Buffer[] = [];
    for (let i = 0; i < 4; i++) {
      const f = path.join(dir, `q${i}.vhd`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', f, '6M']);
      imgs.push(f);
    }
    // Shared writes into all, then a few of each image's own (image 3 gets none: equals image 0 only if 0 gets none).
    const cmds = (n: number) => Array.from({ length: n }, () => {
      const len = 1 + Math.floor(r() * 200000);
      return `write -P ${1 + Math.floor(r() * 254)} ${Math.floor(r() * (6 * MiB - len))} ${len}`;
    });
    const shared = cmds(8);
    const own = [cmds(3), cmds(1), cmds(5), []];
    imgs.forEach((f, i) => {
      for (const c of [...shared, ...own[i]]) execFileSync('qemu-io', ['-f', 'vpc', '-c', c, f], { stdio: 'ignore' });
      const raw = path.join(dir, `q${i}.raw`);
      execFileSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', f, raw]);
      raws.push(readFileSync(raw));
    });
    const q0copy = path.join(dir, 'q0copy.vhd');
    execFileSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'vpc', '-o', 'subformat=dynamic', imgs[3], q0copy]);
    imgs.push(q0copy);
    raws.push(raws[3]);
    for (let i = 0; i < imgs.length; i++) {
      for (let j = i + 1; j < imgs.length; j++) {
        const res = await diffImages(imgs[i], imgs[j]);
        // qemu sizes these by CHS, we by the footer: compare over the common (CHS) part, the rest is zeros on both.
        const n = Math.min(raws[i].length, raws[j].length);
        const expected = expectedRanges(raws[i].subarray(0, n), raws[j].subarray(0, n));
        assert.deepEqual(res.ranges.filter((x) => x.start < n), expected, `q${i} vs q${j}`);
        const q = spawnSync('qemu-img', ['compare', '-q', '-f', 'vpc', '-F', 'vpc', imgs[i], imgs[j]]);
        assert.equal(q.status, res.identical ? 0 : 1, `qemu-img compare q${i} q${j}`);
      }
    }
  });

  it('progress reaches the total, and an aborted signal stops diff, --layers, check and repair with ECANCELLED', async () => {
    const a = await base('prog-a.vhd', 'dynamic', 12 * MiB, 512 * KiB);
    const b = await base('prog-b.vhd', 'dynamic', 12 * MiB, 512 * KiB);
    await write(a, 0, randomBytes(rng(1), 12 * MiB));
    await write(b, 0, Buffer.from(a.model));
    const seen: Array<[number, number]> = [];
    const res = await diffImages(a.file, b.file, { onProgress: (d, t) => seen.push([d, t]) });
    assert.ok(res.identical);
    assert.ok(seen.length > 2);
    assert.deepEqual(seen[seen.length - 1], [a.model.length, a.model.length]);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i][0] >= seen[i - 1][0]);
    const c = await child(a, 'prog-c.vhd');
    await write(c, 5 * MiB, randomBytes(rng(2), 3 * MiB));
    const ac = new AbortController();
    ac.abort();
    for (const run of [() => diffImages(a.file, b.file, { signal: ac.signal }), () => diffLayers(c.file, { signal: ac.signal }),
      () => checkImage(a.file, { signal: ac.signal }), () => repairImage(a.file, { signal: ac.signal })]) {
      await assert.rejects(run(), (e: unknown) => e instanceof DiskImageError && e.code === 'ECANCELLED');
    }
    // Aborting half-way through a diff stops it between segments.
    const mid = new AbortController();
    await assert.rejects(diffImages(a.file, b.file, { signal: mid.signal, onProgress: (d) => { if (d > 4 * MiB) mid.abort(); } }), /operation cancelled/);
  });

  it('a block that cannot be read, several segments ahead, fails the diff with a DiskImageError naming the BAT entry (no crash)', async () => {
    const a = await base('bad-a.vhd', 'dynamic', 16 * MiB, 512 * KiB);
    const b = await base('bad-b.vhd', 'dynamic', 16 * MiB, 512 * KiB);
    for (const n of [a, b]) await write(n, 0, randomBytes(rng(3), 6 * MiB));
    // Block 9 of b points far past the end of the file.
    const img = await VhdImage.open(b.file);
    const to = img.layout.tableOffset!;
    await img.close();
    const fd = openSync(b.file, 'r+');
    const e = Buffer.alloc(4);
    e.writeUInt32BE(0x00200000);
    writeSync(fd, e, 0, 4, to + 9 * 4);
    closeSync(fd);
    await assert.rejects(diffImages(a.file, b.file), (err: unknown) => err instanceof DiskImageError
      && err.structure === 'BAT entry' && err.offset === to + 36 && /block 9 .* runs past the end of the file/.test(err.message));
    const r = runCli(['diff', a.file, b.file]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^diskimg: .*bad-b\.vhd: block 9 .*\(BAT entry at offset \d+\)\n$/);
  });

  it('two sparse 2 TiB images: only allocated blocks are read, memory flat', async function () {
    const a = path.join(dir, 'big-a.vhd');
    const b = path.join(dir, 'big-b.vhd');
    const size = await createImage(a, { size: 2 * 1024 * 1024 * MiB - 4 * MiB, type: 'dynamic' });
    await createImage(b, { size, type: 'dynamic' });
    const r = rng(99);
    const chains = [await openChain(a, { writable: true }), await openChain(b, { writable: true })];
    const spots = [0, 1 << 30, 777 * 1024 * MiB, size - 2 * MiB];
    for (const off of spots) {
      const data = randomBytes(r, 4096);
      for (const c of chains) await c.write(off, data);
    }
    await chains[1].write(777 * 1024 * MiB + 4096 + 512 * 3, Buffer.from('different'));
    for (const c of chains) await c.close();
    const t0 = Date.now();
    const res = await diffImages(a, b);
    const ms = Date.now() - t0;
    assert.deepEqual(res.ranges, [{ start: 777 * 1024 * MiB + 4096 + 512 * 3, length: 512 }]);
    assert.equal(res.comparedBytes, spots.length * 2 * MiB);
    // A hang guard only (a quiet machine takes about 0.1 s); the speed is in npm run bench.
    assert.ok(ms < 30_000, `took ${ms} ms`);
  });
});
