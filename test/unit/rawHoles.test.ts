import { strict as assert } from 'assert';
import { execFileSync, spawnSync } from 'child_process';
import { closeSync, openSync, writeSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { buildBlockMap, NO_OWNER } from '../../src/chain/blockMap';
import { RawImage } from '../../src/format/raw/rawImage';
import { holesDetectable } from '../../src/io/seekHole';
import { CLI, tempDir } from '../helpers/util';

const MiB = 1024 * 1024;

/** Data extents as Python's os.lseek(SEEK_DATA/SEEK_HOLE) walks them: the reference. */
function pythonExtents(file: string): Array<[number, number]> {
  const py = [
    'import os, sys, json',
    'fd = os.open(sys.argv[1], os.O_RDONLY); size = os.fstat(fd).st_size; out = []; pos = 0',
    'while pos < size:',
    '    try: d = os.lseek(fd, pos, os.SEEK_DATA)',
    '    except OSError: break',
    '    h = os.lseek(fd, d, os.SEEK_HOLE); out.append([d, h - d]); pos = h',
    'print(json.dumps(out))',
  ].join('\n');
  return JSON.parse(execFileSync('python3', ['-c', py, file]).toString());
}

describe('raw holes: map and heatmap of a sparse raw file follow SEEK_DATA/SEEK_HOLE', function () {
  this.timeout(60000);
  const t = tempDir('remote-holes-');
  after(() => t.cleanup());

  before(function () {
    if (!holesDetectable()) {
      // Counted as not run: the addon (native/, built by npm install) is missing.
      console.log('    skipped: native/build/Release/seek_hole.node not built (node scripts/build-native.mjs)');
      this.skip();
    }
  });

  /** truncate + a few writes: data at 1 MiB (4 KiB), 5 MiB + 100 (1 byte), 9..11 MiB, the last 4 KiB. */
  function sparseFile(name: string, size: number): string {
    const f = path.join(t.dir, name);
    execFileSync('truncate', ['-s', String(size), f]);
    const fd = openSync(f, 'r+');
    try {
      writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 1 * MiB);
      writeSync(fd, Buffer.alloc(1, 2), 0, 1, 5 * MiB + 100);
      writeSync(fd, Buffer.alloc(2 * MiB, 3), 0, 2 * MiB, 9 * MiB);
      writeSync(fd, Buffer.alloc(4096, 4), 0, 4096, size - 4096);
    } finally {
      closeSync(fd);
    }
    spawnSync('sync', [f]);
    return f;
  }

  it('the raw layer: its runs are exactly the file system\'s data extents (python os.lseek), holes read as zeros; blocks with data match', async () => {
    const size = 16 * MiB;
    const f = sparseFile('alone.img', size);
    const want = pythonExtents(f);
    assert.ok(want.length >= 3 && want.reduce((s, e) => s + e[1], 0) < size / 2, `the file is sparse here: ${JSON.stringify(want)}`);
    const raw = await RawImage.open(f);
    try {
      const runs = await raw.runs(0, size);
      assert.deepEqual(runs.filter((r) => r.present).map((r) => [r.offset, r.length]), want);
      assert.equal(runs.reduce((s, r) => s + r.length, 0), size, 'runs cover the range');
      assert.equal(raw.allocatedBlockCount(), blocksOf(want).size);
      for (let b = 0; b < raw.blockCount; b++) assert.equal(raw.isBlockAllocated(b), blocksOf(want).has(b), `block ${b}`);
      // Everything read, holes as zeros, data as written.
      const all = Buffer.alloc(size, 0xcc);
      for (const r of runs) {
        const slice = all.subarray(r.offset, r.offset + r.length);
        if (r.present) await raw.readOwn(r.offset, slice); else slice.fill(0);
      }
      const expect = Buffer.alloc(size);
      expect.fill(1, MiB, MiB + 4096);
      expect[5 * MiB + 100] = 2;
      expect.fill(3, 9 * MiB, 11 * MiB);
      expect.fill(4, size - 4096);
      assert.ok(all.equals(expect));
    } finally {
      await raw.close();
    }
    // filefrag agrees on how many bytes are mapped (its extents are physical, so compare totals).
    const ff = spawnSync('filefrag', ['-b1', '-e', f]);
    if (ff.status === 0) {
      const lens = [...ff.stdout.toString().matchAll(/^\s*\d+:\s+\d+\.\.\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+):/gm)].map((m) => Number(m[1]));
      if (lens.length > 0) assert.equal(lens.reduce((a, b) => a + b, 0), want.reduce((s, e) => s + e[1], 0));
    }
  });

  it('as a chain\'s base: the child\'s own blocks over it, the base\'s holes are no data', async () => {
    const size = 16 * MiB;
    const f = sparseFile('base.img', size);
    const want = pythonExtents(f);
    const child = path.join(t.dir, 'child.vhd');
    await createChild(f, child);
    const chain = await openChain(child, { writable: true });
    try {
      await chain.write(13 * MiB, Buffer.alloc(512, 9));
      const map = await chain.map();
      const fromBase = map.filter((e) => e.data && e.depth === 1).map((e) => [e.start, e.length]);
      assert.deepEqual(fromBase, want);
      const own = map.filter((e) => e.data && e.depth === 0);
      assert.deepEqual(own.map((e) => [e.start, e.length]), [[13 * MiB, 512]]);
      assert.ok((await chain.readRange(5 * MiB, 200)).equals(Buffer.concat([Buffer.alloc(100), Buffer.from([2]), Buffer.alloc(99)])));
      // Heatmap: blocks owned by the base are those with data; holes are nobody's.
      const bm = await buildBlockMap(chain);
      const base = blocksOf(want);
      for (let b = 0; b < bm.blockCount; b++) {
        const expected = b === Math.floor((13 * MiB) / (2 * MiB)) ? 0 : base.has(b) ? 1 : NO_OWNER;
        assert.equal(bm.owner[b], expected, `owner of block ${b}`);
      }
    } finally {
      await chain.close();
    }
    const info = JSON.parse(execFileSync(process.execPath, [CLI, 'info', '--json', child]).toString());
    assert.match(String(info.chain[1].holes), /SEEK_DATA/);
  });

  it('without the addon (DISKIMG_NO_SEEK_HOLE): every byte of the base counts as data, reads unchanged', () => {
    const f = sparseFile('plain.img', 16 * MiB);
    const child = path.join(t.dir, 'plain-child.vhd');
    execFileSync(process.execPath, [CLI, 'child', f, child]);
    const env = { ...process.env, DISKIMG_NO_SEEK_HOLE: '1' };
    const r = JSON.parse(execFileSync(process.execPath, [CLI, 'info', '--json', child], { env }).toString());
    assert.match(String(r.chain[1].holes), /not detected/);
    const map = JSON.parse(execFileSync(process.execPath, [CLI, 'map', '--json', child], { env }).toString());
    const data = (Array.isArray(map) ? map : map.extents).filter((e: { data: boolean }) => e.data);
    assert.equal(data.reduce((s: number, e: { length: number }) => s + e.length, 0), 16 * MiB);
  });
});

function blocksOf(extents: Array<[number, number]>): Set<number> {
  const s = new Set<number>();
  for (const [o, l] of extents) for (let b = Math.floor(o / (2 * MiB)); b <= Math.floor((o + l - 1) / (2 * MiB)); b++) s.add(b);
  return s;
}
