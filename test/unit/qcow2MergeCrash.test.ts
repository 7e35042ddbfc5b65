// Merging a qcow2 overlay into its qcow2 base survives kill -9 at any point, as for VHD (harness:
// test/helpers/mergeCrash.ts); after every kill `qemu-img check` finds at most leaked clusters.
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { mkdtempSync, readFileSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import { createImage } from '../../src/format/registry';
import { describeMergeCrash } from '../helpers/mergeCrash';

function qemuCheck(file: string, what: string): void {
  const r = spawnSync('qemu-img', ['check', '-f', 'qcow2', file]);
  const out = r.stdout.toString() + r.stderr.toString();
  // 0: clean; 3: leaked clusters only (what a kill between counting and linking leaves).
  assert.ok(r.status === 0 || r.status === 3, `${what}: qemu-img check ${file}: ${out}`);
  assert.doesNotMatch(out, /ERROR/, `${what}: ${file}`);
}

describeMergeCrash({
  title: 'qcow2 merge survives kill -9 at any point',
  tempPrefix: 'diskimg-qcow2-crash-',
  base: 'base.qcow2', child: 'child.qcow2', grand: 'grand.qcow2', grand2: 'grand2.qcow2',
  isImage: (n) => n.endsWith('.qcow2'),
  // Small clusters: many of them, so kills land between data, refcount and L2 writes.
  createBase: (file) => createImage(file, { size: 40 * 1024 * 1024, blockSize: 4096 }),
  seed: 1313,
  writes: [[15, 1 << 20], [50, 1 << 20], [10, 200000]],
  kills: 12, tries: 40, killSeed: 17,
  crossCheck: qemuCheck,
});

// The same with an internal snapshot in the base: the child's clusters over the snapshot's data are
// copied on write (in batches); after every kill the snapshot still reads as when it was taken.
const snapDir = mkdtempSync(path.join(tmpdir(), 'diskimg-qcow2-snapcrash-'));
after(() => rmSync(snapDir, { recursive: true, force: true }));
const snapshotRaw = (file: string, out: string) => {
  const r = spawnSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', '-l', 'snapshot.name=before', file, out]);
  assert.equal(r.status, 0, r.stderr.toString());
};
describeMergeCrash({
  title: 'qcow2 merge into a base with an internal snapshot survives kill -9 at any point',
  tempPrefix: 'diskimg-qcow2-snap-crash-',
  base: 'base.qcow2', child: 'child.qcow2', grand: 'grand.qcow2', grand2: 'grand2.qcow2',
  isImage: (n) => n.endsWith('.qcow2'),
  createBase: (file) => createImage(file, { size: 40 * 1024 * 1024, blockSize: 4096 }),
  seed: 2727,
  // The base holds much of the disk, so the child's writes land on clusters the snapshot shares.
  writes: [[40, 1 << 20], [50, 1 << 20], [10, 200000]],
  afterBaseWrites: (file) => {
    const r = spawnSync('qemu-img', ['snapshot', '-c', 'before', file]);
    assert.equal(r.status, 0, r.stderr.toString());
    snapshotRaw(file, path.join(snapDir, 'expected.raw'));
  },
  kills: 12, tries: 40, killSeed: 29,
  crossCheck: (file, what) => {
    qemuCheck(file, what);
    if (path.basename(file) !== 'base.qcow2') return;
    const got = path.join(snapDir, 'got.raw');
    snapshotRaw(file, got);
    assert.ok(readFileSync(got).equals(readFileSync(path.join(snapDir, 'expected.raw'))), `${what}: the snapshot in ${file} reads as when it was taken`);
  },
});
