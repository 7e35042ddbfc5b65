// One damaged L1 or L2 entry costs only the clusters it maps: the image opens (info warns, naming
// table, index and offset), every other range reads as before (cross-checked with qemu-io on the
// same damaged file, which reads those ranges and fails the others with EIO), reads and writes that
// touch the damaged entry fail naming file, structure and offset, and check lists each entry.
import { strict as assert } from 'assert';
import { createHash } from 'crypto';
import { execFileSync, spawnSync } from 'child_process';
import { readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { checkImage } from '../../src/chain/check';
import { describeImage } from '../../src/chain/info';
import { DiskImageError } from '../../src/format/errors';
import { runCli, tempDir } from '../helpers/util';

const KiB = 1024;
const MiB = 1024 * KiB;
const CS = 4 * KiB;
/** 4 KiB clusters: an L2 table maps 512 clusters (2 MiB), so an 8 MiB image has four L1 entries. */
const L2_SPAN = 2 * MiB;

function qemuRead(img: string, offset: number, length: number, pattern: number): boolean {
  // qemu-io may exit 0 after a failed read or pattern check: its output says so.
  const r = spawnSync('qemu-io', ['-r', '-c', `read -P ${pattern} ${offset} ${length}`, img]);
  return r.status === 0 && !/fail|error/i.test(r.stdout.toString() + r.stderr.toString());
}

async function readError(img: string, offset: number, length: number): Promise<DiskImageError> {
  const chain = await openChain(img);
  try {
    await chain.readRange(offset, length);
  } catch (e) {
    if (e instanceof DiskImageError) return e;
    throw e;
  } finally {
    await chain.close();
  }
  throw new Error(`read of ${length} at ${offset} succeeded`);
}

describe('qcow2 damaged L1/L2 entries', function () {
  this.timeout(120000);
  const t = tempDir('diskimg-qcow2-damaged-');
  const img = path.join(t.dir, 'damaged.qcow2');
  let l1 = 0;
  let l2of2 = 0;
  /** Guest cluster 1029: entry 5 of the L2 table of L1 entry 2. */
  const BAD_CLUSTER = 2 * 512 + 5;
  after(() => t.cleanup());

  before(() => {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '8M']);
    execFileSync('qemu-io', ['-c', 'write -P 0x11 0 8M', img], { stdio: 'ignore' });
    const b = readFileSync(img);
    l1 = Number(b.readBigUInt64BE(40));
    l2of2 = Number(b.readBigUInt64BE(l1 + 16) & 0x00fffffffffffe00n);
    // L1 entry 1: its L2 table offset 512 bytes off a cluster boundary.
    b.writeBigUInt64BE(b.readBigUInt64BE(l1 + 8) | 0x200n, l1 + 8);
    // L2 entry of cluster 1029: its data offset 512 bytes off a cluster boundary.
    b.writeBigUInt64BE(b.readBigUInt64BE(l2of2 + 5 * 8) | 0x200n, l2of2 + 5 * 8);
    writeFileSync(img, b);
  });

  it('info opens the image and warns about each damaged entry, naming table, index and offset', async () => {
    const info = await describeImage(img);
    const w = info.warnings.filter((x) => /damaged entry/.test(x));
    assert.equal(w.length, 2, JSON.stringify(info.warnings));
    assert.match(w[0], new RegExp(`^damaged entry: L1 entry 1: L2 table offset \\d+ is not cluster aligned \\(L1 table at offset ${l1 + 8}\\)`));
    assert.match(w[1], new RegExp(`^damaged entry: cluster ${BAD_CLUSTER}: data offset \\d+ is not cluster aligned \\(L2 table at offset ${l2of2 + 40}\\)`));
    const cli = runCli(['info', img, '--json']);
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal(JSON.parse(cli.stdout.toString()).virtualSize, 8 * MiB);
  });

  it('every range clear of the damaged entries reads as before, as qemu-io reads it', async () => {
    const clear = [[0, L2_SPAN], [2 * L2_SPAN, 5 * CS], [2 * L2_SPAN + 6 * CS, L2_SPAN - 6 * CS], [3 * L2_SPAN, L2_SPAN]];
    const chain = await openChain(img);
    try {
      for (const [off, len] of clear) {
        assert.ok((await chain.readRange(off, len)).equals(Buffer.alloc(len, 0x11)), `read ${off}+${len}`);
        assert.ok(qemuRead(img, off, len, 0x11), `qemu-io read ${off}+${len}`);
      }
      // The map still covers the disk; the damaged ranges stay this layer's (nothing below shows through).
      const map = await chain.map();
      assert.equal(map.reduce((n, e) => n + e.length, 0), 8 * MiB);
      assert.ok(map.every((e) => e.depth === 0 && e.data), JSON.stringify(map));
    } finally {
      await chain.close();
    }
  });

  it('reads touching a damaged entry fail naming file, structure and offset, as qemu-io fails them', async () => {
    const a = await readError(img, L2_SPAN + 100 * CS, CS);
    assert.equal(a.code, 'EL1');
    assert.equal(a.file, img);
    assert.equal(a.structure, 'L1 table');
    assert.equal(a.offset, l1 + 8);
    assert.ok(!qemuRead(img, L2_SPAN + 100 * CS, CS, 0x11));
    // A read that starts in clear data and runs into the damaged cluster fails too.
    const b = await readError(img, 2 * L2_SPAN, 6 * CS);
    assert.equal(b.code, 'EL2');
    assert.equal(b.structure, 'L2 table');
    assert.equal(b.offset, l2of2 + 5 * 8);
    assert.match(b.message, new RegExp(`cluster ${BAD_CLUSTER}: data offset \\d+ is not cluster aligned`));
    assert.ok(!qemuRead(img, 2 * L2_SPAN + 5 * CS, CS, 0x11));
    const cli = runCli(['read', img, '--offset', String(2 * L2_SPAN + 5 * CS), '--length', '512']);
    assert.equal(cli.code, 2);
    assert.match(cli.stderr, new RegExp(`^diskimg: [^\\n]*damaged\\.qcow2: cluster ${BAD_CLUSTER}: data offset \\d+ is not cluster aligned \\(L2 table at offset ${l2of2 + 40}\\)\\n$`));
  });

  it('check reports each damaged entry as an error at its offset', async () => {
    const r = await checkImage(img);
    assert.equal(r.ok, false);
    assert.ok(r.problems.some((p) => p.severity === 'error' && p.structure === 'L1 table' && p.offset === l1 + 8 && /L1 entry 1: L2 table offset \d+ is not cluster aligned/.test(p.message)), JSON.stringify(r.problems));
    assert.ok(r.problems.some((p) => p.severity === 'error' && p.structure === 'L2 table' && p.offset === l2of2 + 40 && new RegExp(`cluster ${BAD_CLUSTER}: data offset \\d+ is not cluster aligned`).test(p.message)), JSON.stringify(r.problems));
    // The open's warnings are not listed a second time.
    assert.ok(!r.problems.some((p) => /damaged entry/.test(p.message)), JSON.stringify(r.problems));
  });

  it('a write touching a damaged entry is refused and changes nothing; a write elsewhere works', async () => {
    const copy = path.join(t.dir, 'write.qcow2');
    writeFileSync(copy, readFileSync(img));
    const sha = () => createHash('sha256').update(readFileSync(copy)).digest('hex');
    const before = sha();
    for (const off of [L2_SPAN, 2 * L2_SPAN + 5 * CS]) {
      const w = runCli(['write', copy, '--offset', String(off)], Buffer.alloc(CS, 0x99));
      assert.equal(w.code, 2, w.stderr);
      assert.match(w.stderr, /not cluster aligned \((L1|L2) table at offset \d+\)\n$/);
      assert.equal(sha(), before);
    }
    const ok = runCli(['write', copy, '--offset', String(3 * L2_SPAN + 7)], Buffer.alloc(CS, 0x99));
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(qemuRead(copy, 3 * L2_SPAN + 7, CS, 0x99));
    assert.ok(qemuRead(copy, 0, L2_SPAN, 0x11));
  });

  it('an overlay over the damaged image reads its own clusters there; only clusters it takes from the damaged range fail', async () => {
    const ov = path.join(t.dir, 'over.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', '-b', 'damaged.qcow2', '-F', 'qcow2', ov]);
    const w = runCli(['write', ov, '--offset', String(L2_SPAN)], Buffer.alloc(CS, 0x22));
    assert.equal(w.code, 0, w.stderr);
    const chain = await openChain(ov);
    try {
      assert.ok((await chain.readRange(L2_SPAN, CS)).equals(Buffer.alloc(CS, 0x22)));
      assert.ok((await chain.readRange(0, L2_SPAN)).equals(Buffer.alloc(L2_SPAN, 0x11)));
    } finally {
      await chain.close();
    }
    const e = await readError(ov, L2_SPAN + CS, CS);
    assert.equal(e.file, img);
    assert.equal(e.offset, l1 + 8);
  });

  it('many damaged entries: the first eight are listed, the rest counted', async () => {
    const many = path.join(t.dir, 'many.qcow2');
    const b = readFileSync(img);
    const l2of3 = Number(b.readBigUInt64BE(l1 + 24) & 0x00fffffffffffe00n);
    for (let j = 0; j < 512; j++) b.writeBigUInt64BE(b.readBigUInt64BE(l2of3 + j * 8) | 0x200n, l2of3 + j * 8);
    writeFileSync(many, b);
    const info = await describeImage(many);
    const w = info.warnings.filter((x) => /damaged/.test(x));
    assert.equal(w.length, 9, JSON.stringify(w));
    assert.match(w[8], /^506 more damaged L1\/L2 entries \(diskimg check reports them\)/);
    const r = await checkImage(many);
    // 1 L1 entry and 513 L2 entries: check lists 100 of a kind and counts the rest.
    assert.equal(r.problems.filter((p) => p.severity === 'error' && /L1 entry 1: L2 table offset \d+ is not cluster aligned/.test(p.message)).length, 1);
    assert.equal(r.problems.filter((p) => p.severity === 'error' && /^cluster \d+: data offset \d+ is not cluster aligned/.test(p.message)).length, 100);
    assert.ok(r.problems.some((p) => p.message === '413 more problems like the ones above are not listed'), JSON.stringify(r.problems.slice(-3)));
  });
});
