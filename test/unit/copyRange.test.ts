import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { closeSync, openSync, readFileSync, statSync, writeFileSync } from 'fs';
import * as path from 'path';
import { copyRanges, nativeCopyAvailable } from '../../src/io/copyRange';
import { randomBytes, rng, tempDir } from '../helpers/util';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Allocated bytes of a file (st_blocks), to tell holes from written zeros. */
const allocated = (p: string) => statSync(p).blocks * 512;

describe('native file-to-file copy (native/copyRange.c, io/copyRange.ts)', function () {
  this.timeout(60000);
  const dirs: Array<{ cleanup: () => void }> = [];
  const temp = () => { const t = tempDir(); dirs.push(t); return t.dir; };
  before(function () {
    if (!nativeCopyAvailable()) this.skip();
  });
  after(() => dirs.forEach((t) => t.cleanup()));

  it('copy_file_range mode (grain 0) copies every byte of several ranges at any offsets, and only them', async () => {
    const d = temp();
    const src = path.join(d, 'src'), dst = path.join(d, 'dst');
    const data = randomBytes(rng(1), 5 * MiB + 123);
    writeFileSync(src, data);
    writeFileSync(dst, Buffer.alloc(6 * MiB, 0xee));
    const ranges = [{ from: 7, to: 1, length: 1 * MiB + 5 }, { from: 3 * MiB + 1, to: 2 * MiB + 4093, length: 2 * MiB + 122 }, { from: 0, to: 5 * MiB, length: 0 }];
    const inFd = openSync(src, 'r'), outFd = openSync(dst, 'r+');
    try {
      assert.equal(await copyRanges(inFd, outFd, ranges, 0), 3 * MiB + 127);
    } finally { closeSync(inFd); closeSync(outFd); }
    const want = Buffer.alloc(6 * MiB, 0xee);
    for (const r of ranges) data.copy(want, r.to, r.from, r.from + r.length);
    assert.ok(readFileSync(dst).equals(want));
  });

  it('sparse mode writes only grains holding a non-zero byte (zero runs stay holes, cut at multiples of the grain in the output)', async () => {
    const d = temp();
    const src = path.join(d, 'src'), dst = path.join(d, 'dst');
    // 16 MiB (more than one 8 MiB mapping): data, 1 MiB of zeros, data with one non-zero byte in a zero MiB, 64 KiB - 1 zeros inside data.
    const data = randomBytes(rng(2), 16 * MiB);
    data.fill(0, 2 * MiB, 3 * MiB);
    data.fill(0, 9 * MiB, 10 * MiB);
    data[9 * MiB + 300 * KiB] = 1;
    data.fill(0, 12 * MiB + 5, 12 * MiB + 5 + 64 * KiB - 1);
    data.fill(0, 15 * MiB, 16 * MiB);
    writeFileSync(src, data);
    writeFileSync(dst, '');
    const inFd = openSync(src, 'r'), outFd = openSync(dst, 'r+');
    let n: number | null;
    try {
      // Source offset not page aligned: the mapping starts on the page below.
      n = await copyRanges(inFd, outFd, [{ from: 100, to: 0, length: 16 * MiB - 100 }], 64 * KiB);
    } finally { closeSync(inFd); closeSync(outFd); }
    spawnSync('truncate', ['-s', String(16 * MiB - 100), dst]);
    const out = readFileSync(dst);
    assert.ok(out.equals(data.subarray(100)), 'bytes as the source');
    // Skipped: the zero MiB at 2 MiB (source) is output 2 MiB - 100 .. 3 MiB - 100: 15 whole grains;
    // 9-10 MiB: 15 whole grains, one of them holding the non-zero byte; 15-16 MiB: 15 whole grains + the last partial one.
    const skipped = (15 + 14 + 15) * 64 * KiB + (64 * KiB - 100);
    assert.equal(n, 16 * MiB - 100 - skipped);
    assert.ok(allocated(dst) <= 16 * MiB - skipped + 64 * KiB, `holes left (${allocated(dst)} bytes allocated)`);
  });

  it('reports "unsupported" (null) for a pipe, a range past the source end, and a bad descriptor; the output is untouched', async () => {
    const d = temp();
    const src = path.join(d, 'src'), dst = path.join(d, 'dst');
    writeFileSync(src, randomBytes(rng(3), 1 * MiB));
    writeFileSync(dst, Buffer.alloc(2 * MiB, 7));
    const inFd = openSync(src, 'r'), outFd = openSync(dst, 'r+'), nul = openSync('/dev/null', 'w');
    try {
      for (const grain of [0, 64 * KiB]) {
        assert.equal(await copyRanges(inFd, outFd, [{ from: 512 * KiB, to: 0, length: 1 * MiB }], grain), null);
        assert.equal(await copyRanges(inFd, nul, [{ from: 0, to: 0, length: 4096 }], grain), null);
        assert.equal(await copyRanges(9999, outFd, [{ from: 0, to: 0, length: 4096 }], grain), null);
      }
    } finally { closeSync(inFd); closeSync(outFd); closeSync(nul); }
    assert.ok(readFileSync(dst).equals(Buffer.alloc(2 * MiB, 7)));
  });

  it('a write failure is an error naming the errno (EFBIG: past the file system\'s largest file)', async () => {
    const d = temp();
    const src = path.join(d, 'src'), dst = path.join(d, 'dst');
    writeFileSync(src, randomBytes(rng(4), 256 * KiB));
    writeFileSync(dst, '');
    const inFd = openSync(src, 'r'), outFd = openSync(dst, 'r+');
    try {
      // Sparse mode writes with pwrite: the file system's limit is a real failure, not "unsupported".
      const r = await copyRanges(inFd, outFd, [{ from: 0, to: 2 ** 53 - MiB, length: 256 * KiB }], 64 * KiB).then((v) => v, (e: NodeJS.ErrnoException) => e.code);
      assert.equal(r, 'EFBIG');
    } finally { closeSync(inFd); closeSync(outFd); }
  });
});
