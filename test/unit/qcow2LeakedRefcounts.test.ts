// Clusters past the end of a qcow2 file may already be counted: a kill can land a refcount write
// before the data write it counts (merge's writes in flight), and other tools can leave the same.
// New space must never be a cluster whose refcount is not 0 (qemu's rule): here images made by
// qemu get refcounts of 1 past their end, then are written through DiskImage.write and merged into
// through the bulk path (stageWrites); qemu-img check must find no corruption (a refcount of 2 with
// OFLAG_COPIED set is one), only the leaks, and the content must be what was written.
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { openSync, closeSync, readSync, writeSync, statSync, readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { mergeChild } from '../../src/chain/merge';
import { getRefcount, lastNonZeroRefcount, refcountBlockEntries, setRefcount } from '../../src/format/qcow2/refcountTable';
import { qemuIo } from '../helpers/qemuIo';
import { rng, randomBytes, tempDir } from '../helpers/util';

function qemu(args: string[]): { code: number; out: string; stdout: string } {
  const r = spawnSync('qemu-img', args);
  return { code: r.status ?? -1, out: r.stdout.toString() + r.stderr.toString(), stdout: r.stdout.toString() };
}

function readAt(fd: number, at: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  assert.equal(readSync(fd, b, 0, n, at), n);
  return b;
}

/**
 * Sets the refcounts of host clusters from the cluster-aligned end of the file to 1, in the
 * refcount blocks that exist (none is made): `count` of them, or up to the end of the refcount
 * block holding the end of the file ('block', the next block must not exist yet), or up to the end
 * of what the refcount table reaches ('table', every block on the way must exist). Returns the
 * first cluster and how many were set.
 */
function leakPastEnd(file: string, how: number | 'block' | 'table'): { from: number; set: number } {
  const fd = openSync(file, 'r+');
  try {
    const h = readAt(fd, 0, 104);
    const clusterBits = h.readUInt32BE(20);
    const cs = 2 ** clusterBits;
    const tableAt = Number(h.readBigUInt64BE(48));
    const tableClusters = h.readUInt32BE(56);
    const order = h.readUInt32BE(96);
    assert.ok(order >= 3, 'whole-byte refcounts only');
    const width = (1 << order) / 8;
    const perBlock = cs / width;
    const table = readAt(fd, tableAt, tableClusters * cs);
    const from = Math.ceil(statSync(file).size / cs);
    const blockOf = (ti: number) => ((ti + 1) * 8 > table.length ? 0 : Number(table.readBigUInt64BE(ti * 8)));
    const reach = (table.length / 8) * perBlock;
    let to: number;
    if (how === 'block') {
      const ti = Math.floor(from / perBlock);
      assert.ok(blockOf(ti) !== 0 && (ti + 2) * perBlock <= reach && blockOf(ti + 1) === 0, `setup: the refcount block after the one holding the end of the file (cluster ${from}) is within the table and does not exist`);
      to = (ti + 1) * perBlock;
    } else if (how === 'table') {
      for (let ti = Math.floor(from / perBlock); ti * perBlock < reach; ti++) assert.ok(blockOf(ti) !== 0, `setup: refcount block ${ti} exists (the end of the file, cluster ${from}, is near the end of the table's reach, ${reach})`);
      to = reach;
    } else {
      to = from + how;
    }
    assert.ok(to > from, 'setup: something to leak');
    let set = 0;
    for (let c = from; c < to; c++) {
      const ti = Math.floor(c / perBlock);
      const blockAt = blockOf(ti);
      if (blockAt === 0) continue;
      const one = Buffer.alloc(width);
      one[width - 1] = 1;
      writeSync(fd, one, 0, width, blockAt + (c % perBlock) * width);
      set++;
    }
    return { from, set };
  } finally {
    closeSync(fd);
  }
}

/** qemu-img check: no corruption (leaks allowed); returns the leaked cluster count. */
function checkNoCorruption(file: string, what: string): number {
  const r = qemu(['check', '-f', 'qcow2', '--output=json', file]);
  const text = () => qemu(['check', '-f', 'qcow2', file]).out;
  assert.ok(r.code === 0 || r.code === 3, `${what}: qemu-img check exit ${r.code}: ${text()}`);
  const j = JSON.parse(r.stdout);
  assert.equal(j['check-errors'], 0, `${what}: ${text()}`);
  assert.equal(j.corruptions ?? 0, 0, `${what}: ${text()}`);
  return j.leaks ?? 0;
}

/** The refcount table's size in clusters (header field). */
function refcountTableClusters(file: string): number {
  const fd = openSync(file, 'r');
  try { return readAt(fd, 56, 4).readUInt32BE(0); } finally { closeSync(fd); }
}

function compareRaw(file: string, raw: string, what: string): void {
  const r = qemu(['compare', '-f', 'qcow2', '-F', 'raw', file, raw]);
  assert.equal(r.code, 0, `${what}: qemu-img compare: ${r.out}`);
}

interface Geometry {
  name: string;
  clusterSize: number;
  refcountBits: number;
  size: string;
  /** What qemu-io writes into the base first (its length sets where the file ends). */
  baseWrite: string;
  /** Clusters leaked past the end of the file (see leakPastEnd). */
  leak: number | 'block' | 'table';
}

const MiB = 1024 * 1024;

const GEOMETRIES: Geometry[] = [
  // 64 KiB clusters, 16-bit counts: the leak lies in the one refcount block.
  { name: '64 KiB clusters, 40 leaked clusters in an existing refcount block', clusterSize: 65536, refcountBits: 16, size: '64M', baseWrite: 'write -P 11 0 3M', leak: 40 },
  // 512-byte clusters with 64-bit counts: a block covers 64 clusters, the table (one cluster) 4096.
  // With qemu 7.2 the file ends at cluster 3928 and blocks exist up to 3968: the leak (40 clusters)
  // ends at that block's end and the free clusters after it have no refcount block yet.
  { name: '512-byte clusters, a leak up to the end of the last refcount block (the next has none yet)', clusterSize: 512, refcountBits: 64, size: '8M', baseWrite: 'write -P 11 0 1900k', leak: 'block' },
  // With qemu 7.2 the file ends at cluster 4052 and blocks exist for the table's whole reach (4096):
  // the leak (44 clusters) fills it, so the first free cluster is past the table and allocating it
  // grows the table.
  { name: '512-byte clusters, a leak up to the end of the refcount table\'s reach (the table grows)', clusterSize: 512, refcountBits: 64, size: '8M', baseWrite: 'write -P 11 0 1960k', leak: 'table' },
];

describe('qcow2: lastNonZeroRefcount', () => {
  it('finds the last counted entry of a range as a per-entry scan does, for every refcount width', () => {
    const r = rng(4242);
    for (let order = 0; order <= 6; order++) {
      const entries = refcountBlockEntries(9, order);
      for (let round = 0; round < 200; round++) {
        const block = Buffer.alloc(512);
        // A few counts (none, most often only outside the range asked about).
        for (let n = Math.floor(r() * 4); n > 0; n--) setRefcount(block, Math.floor(r() * entries), order, 1 + Math.floor(r() * Math.min(3, 2 ** (1 << order) - 1)));
        const from = Math.floor(r() * entries);
        const to = from + Math.floor(r() * (entries - from + 1));
        let want = -1;
        for (let i = to - 1; i >= from; i--) if (getRefcount(block, i, order) !== 0) { want = i; break; }
        assert.equal(lastNonZeroRefcount(block, from, to, order), want, `order ${order}, [${from}, ${to})`);
      }
    }
  });
});

describe('qcow2: clusters counted past the end of the file are never allocated again', function () {
  this.timeout(120000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-qcow2-leaked-')));
  after(() => cleanup());

  function makeBase(g: Geometry, file: string): void {
    const r = qemu(['create', '-f', 'qcow2', '-o', `cluster_size=${g.clusterSize},refcount_bits=${g.refcountBits}`, file, g.size]);
    assert.equal(r.code, 0, r.out);
    qemuIo(file, [g.baseWrite]);
    assert.equal(checkNoCorruption(file, 'base as qemu made it'), 0);
  }

  /** Leaks as the geometry says; returns how many clusters. */
  function leak(g: Geometry, file: string): number {
    const { set } = leakPastEnd(file, g.leak);
    assert.ok(set > 0, 'leaked refcounts written');
    // qemu-img check looks at the clusters up to the end of the file only: these pass unseen.
    assert.equal(checkNoCorruption(file, 'base with refcounts past its end'), 0);
    return set;
  }

  function toRaw(file: string, raw: string): Buffer {
    const r = qemu(['convert', '-f', 'qcow2', '-O', 'raw', file, raw]);
    assert.equal(r.code, 0, r.out);
    return readFileSync(raw);
  }

  GEOMETRIES.forEach((g, n) => {
    it(`${g.name}: writes through DiskImage.write allocate past the leak`, async () => {
      const base = path.join(dir, `w${n}.qcow2`);
      const raw = path.join(dir, `w${n}.raw`);
      makeBase(g, base);
      const model = toRaw(base, raw);
      const leaked = leak(g, base);
      const r = rng(100 + n);
      const chain = await openChain(base, { writable: true });
      // Unaligned pieces over new clusters (each a cluster of its own, a refcount each), one over
      // the base's data (in place) and one over a new L2 table's range.
      const writes: Array<[number, number]> = [[4 * MiB + 123, 5000], [5 * MiB, 3 * g.clusterSize], [4096, 700], [7 * MiB + 77, 2 * g.clusterSize + 1]];
      for (const [off, len] of writes) {
        const data = randomBytes(r, len);
        await chain.write(off, data);
        data.copy(model, off);
      }
      await chain.close();
      writeFileSync(raw, model);
      const leaks = checkNoCorruption(base, 'after writes');
      assert.equal(leaks, leaked, 'the leaked clusters stay leaked (qemu-img check sees them now that the file reaches past them); nothing else leaks');
      if (g.leak === 'table') assert.ok(refcountTableClusters(base) > 1, 'the refcount table grew');
      compareRaw(base, raw, 'after writes');
    });

    it(`${g.name}: a merge (bulk path) allocates past the leak`, async () => {
      const base = path.join(dir, `m${n}.qcow2`);
      const child = path.join(dir, `m${n}-child.qcow2`);
      const raw = path.join(dir, `m${n}.raw`);
      makeBase(g, base);
      const c = qemu(['create', '-f', 'qcow2', '-o', `cluster_size=${g.clusterSize}`, '-b', base, '-F', 'qcow2', child]);
      assert.equal(c.code, 0, c.out);
      // New clusters in the target (batches of them), and some over the base's data (in place).
      qemuIo(child, ['write -P 21 3M 1M', 'write -P 22 5M 640k', 'write -P 23 64k 128k', 'write -P 24 7M 4k']);
      toRaw(child, raw);
      const leaked = leak(g, base);
      await mergeChild(child);
      const leaks = checkNoCorruption(base, 'after merge');
      assert.equal(leaks, leaked, 'the leaked clusters stay leaked (qemu-img check sees them now that the file reaches past them); nothing else leaks');
      if (g.leak === 'table') assert.ok(refcountTableClusters(base) > 1, 'the refcount table grew');
      compareRaw(base, raw, 'after merge');
    });
  });
});
