// Export of a fully written 1 GiB dynamic VHD to raw: diskimg vs qemu-img convert, same image, same run.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir, compare, fullDynamic1G, load, pairRatios, timed } from './common.mjs';

export default async function ({ root }) {
  const img = fullDynamic1G(root);
  const d = benchDir(root);
  const outOurs = join(d, 'export-ours.raw');
  const outQemu = join(d, 'export-qemu.raw');
  const cli = join(root, 'dist', 'cli.js');
  const [ours, qemu] = compare(9, [
    () => timed(cli, ['export', img, outOurs]),
    () => timed('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img, outQemu]),
  ], () => { rmSync(outOurs, { force: true }); rmSync(outQemu, { force: true }); });
  rmSync(outOurs, { force: true });
  rmSync(outQemu, { force: true });
  console.log(`export 1 GiB dynamic: diskimg ${ours.seconds.toFixed(3)} s (peak ${ours.maxRss.toFixed(0)} MB), qemu-img convert ${qemu.seconds.toFixed(3)} s (peak ${qemu.maxRss.toFixed(0)} MB)`);
  return [{
    name: 'export 1 GiB fully written dynamic VHD to raw',
    ours, reference: qemu, referenceName: 'qemu-img convert -f vpc -O raw', ...pairRatios(ours, qemu),
    goal: '<= 1.0x in wall and CPU, peak < 150 MB',
    note: `peak RSS ${ours.maxRss.toFixed(0)} MB (qemu-img ${qemu.maxRss.toFixed(0)} MB); ${load()}`,
  }];
}
