// Export of a fully written 1 GiB dynamic VHDX to raw: diskimg vs qemu-img convert, same image, same run.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir, compare, fullDynamic1G, load, pairRatios, sh, timed } from './common.mjs';

export default async function ({ root }) {
  const d = benchDir(root);
  const img = join(d, 'full-1g.vhdx');
  if (!existsSync(img)) {
    fullDynamic1G(root); // makes .bench/full-1g.raw (pseudo-random, no zero block) on the way
    sh(`qemu-img convert -f raw -O vhdx -o subformat=dynamic "${join(d, 'full-1g.raw')}" "${img}"`);
  }
  const outOurs = join(d, 'export-vhdx-ours.raw');
  const outQemu = join(d, 'export-vhdx-qemu.raw');
  const cli = join(root, 'dist', 'cli.js');
  const [ours, qemu] = compare(9, [
    () => timed(cli, ['export', img, outOurs]),
    () => timed('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', img, outQemu]),
  ], () => { rmSync(outOurs, { force: true }); rmSync(outQemu, { force: true }); });
  rmSync(outOurs, { force: true });
  rmSync(outQemu, { force: true });
  console.log(`export 1 GiB dynamic VHDX: diskimg ${ours.seconds.toFixed(3)} s (peak ${ours.maxRss.toFixed(0)} MB), qemu-img convert ${qemu.seconds.toFixed(3)} s (peak ${qemu.maxRss.toFixed(0)} MB)`);
  return [{
    name: 'export 1 GiB fully written dynamic VHDX to raw',
    ours, reference: qemu, referenceName: 'qemu-img convert -f vhdx -O raw', ...pairRatios(ours, qemu),
    goal: '<= 1.0x in wall and CPU',
    note: `peak RSS ${ours.maxRss.toFixed(0)} MB (qemu-img ${qemu.maxRss.toFixed(0)} MB); ${load()}`,
  }];
}
