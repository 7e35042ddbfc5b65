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
  // A third contender: our export with buffered writes (no O_DIRECT), to show what direct writes buy
  // on this machine in its present state (they bypass the page-cache copy but wait for the device).
  const buffered = { env: { ...process.env, DISKIMG_EXPORT_DIRECT: '0' } };
  const [ours, qemu, oursBuffered] = compare(9, [
    () => timed(process.execPath, [cli, 'export', img, outOurs]),
    () => timed('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img, outQemu]),
    () => timed(process.execPath, [cli, 'export', img, outOurs], buffered),
  ], () => { rmSync(outOurs, { force: true }); rmSync(outQemu, { force: true }); });
  rmSync(outOurs, { force: true });
  rmSync(outQemu, { force: true });
  console.log(`export 1 GiB dynamic: diskimg ${ours.seconds.toFixed(3)} s (peak ${ours.maxRss.toFixed(0)} MB), qemu-img convert ${qemu.seconds.toFixed(3)} s (peak ${qemu.maxRss.toFixed(0)} MB), diskimg buffered ${oursBuffered.seconds.toFixed(3)} s`);
  return [{
    name: 'export 1 GiB fully written dynamic VHD to raw',
    ours, reference: qemu, referenceName: 'qemu-img convert -f vpc -O raw', ...pairRatios(ours, qemu),
    goal: '<= 1.0x in wall and CPU, peak < 150 MB',
    note: `peak RSS ${ours.maxRss.toFixed(0)} MB (qemu-img ${qemu.maxRss.toFixed(0)} MB); ${load()}`,
  }, {
    name: 'export 1 GiB dynamic VHD to raw with buffered writes (DISKIMG_EXPORT_DIRECT=0)',
    ours: oursBuffered, reference: qemu, referenceName: 'qemu-img convert -f vpc -O raw', ...pairRatios(oursBuffered, qemu),
    goal: 'measured (direct writes are the default)',
    note: load(),
  }];
}
