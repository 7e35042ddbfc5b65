// Merging a qcow2 overlay into its qcow2 base survives kill -9 at any point, as for VHD (harness:
// test/helpers/mergeCrash.ts); after every kill `qemu-img check` finds at most leaked clusters.
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
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
