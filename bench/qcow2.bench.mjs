// qcow2: export of a fully written 1 GiB qcow2 to raw against qemu-img convert, and diff of two
// qcow2 chains (1 GiB of data, one overlay differing in 64 MiB) against qemu-img compare.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir, compare, fullDynamic1G, load, pairRatios, sh, timed } from './common.mjs';

export default async function ({ root }) {
  const d = benchDir(root);
  const img = join(d, 'full-1g.qcow2');
  const raw = join(d, 'full-1g.raw');
  if (!existsSync(img)) {
    fullDynamic1G(root); // makes .bench/full-1g.raw on the way
    sh(`qemu-img convert -f raw -O qcow2 "${raw}" "${img}"`);
  }
  // Two chains over the same base: a 64 MiB overlay each, one of them differing.
  const ovA = join(d, 'qcow2-ov-a.qcow2');
  const ovB = join(d, 'qcow2-ov-b.qcow2');
  if (!existsSync(ovB)) {
    sh(`qemu-img create -q -f qcow2 -b full-1g.qcow2 -F qcow2 "${ovA}"`);
    sh(`qemu-img create -q -f qcow2 -b full-1g.qcow2 -F qcow2 "${ovB}"`);
    sh(`qemu-io -c "write -P 0x11 256M 64M" "${ovA}" >/dev/null`);
    sh(`qemu-io -c "write -P 0x11 256M 64M" -c "write -P 0x22 900M 4k" "${ovB}" >/dev/null`);
  }
  const cli = join(root, 'dist', 'cli.js');
  const outOurs = join(d, 'export-qcow2-ours.raw');
  const outQemu = join(d, 'export-qcow2-qemu.raw');
  const [ours, qemu] = compare(9, [
    () => timed(cli, ['export', img, outOurs]),
    () => timed('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', img, outQemu]),
  ], () => { rmSync(outOurs, { force: true }); rmSync(outQemu, { force: true }); });
  rmSync(outOurs, { force: true });
  rmSync(outQemu, { force: true });
  const er = pairRatios(ours, qemu);
  const [diffOurs, diffQemu] = compare(9, [
    () => timed(cli, ['diff', ovA, ovB]),
    () => timed('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', ovA, ovB]),
  ]);
  const dr = pairRatios(diffOurs, diffQemu);
  console.log(`export 1 GiB qcow2: diskimg ${ours.seconds.toFixed(3)} s, qemu-img convert ${qemu.seconds.toFixed(3)} s, median ratio ${er.median.toFixed(2)} (min ${er.min.toFixed(2)}; CPU ${er.cpuMedian.toFixed(2)}), ${load()}`);
  console.log(`diff qcow2 chains: diskimg ${diffOurs.seconds.toFixed(3)} s, qemu-img compare ${diffQemu.seconds.toFixed(3)} s, median ratio ${dr.median.toFixed(2)} (min ${dr.min.toFixed(2)}; CPU ${dr.cpuMedian.toFixed(2)}), ${load()}`);
  return [{
    name: 'export 1 GiB fully written qcow2 to raw',
    ours, reference: qemu, referenceName: 'qemu-img convert -f qcow2 -O raw', ...er,
    goal: '<= 1.0x in wall and CPU',
    note: `peak RSS ${ours.maxRss.toFixed(0)} MB (qemu-img ${qemu.maxRss.toFixed(0)} MB); ${load()}`,
  }, {
    name: 'diff two qcow2 chains over a 1 GiB base (64 MiB overlays, one 4 KiB apart)',
    ours: diffOurs, reference: diffQemu, referenceName: 'qemu-img compare', ...dr,
    goal: '<= 1.0x',
    note: `peak RSS ${diffOurs.maxRss.toFixed(0)} MB (qemu-img ${diffQemu.maxRss.toFixed(0)} MB); ${load()}`,
  }];
}
