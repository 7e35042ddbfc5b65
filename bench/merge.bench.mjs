// Merge of a child holding 512 MiB into a dynamic parent, side by side with cp of a 512 MiB file.
// The merge ends with an fsync of the parent (it must be durable before the child is deleted), so
// cp is measured both plain and followed by `sync FILE`; the ratio against cp+sync is the fair one.
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir, compare, load, pairRatios, sh, timed } from './common.mjs';

export default async function ({ root }) {
  const d = benchDir(root);
  const cli = join(root, 'dist', 'cli.js');
  const raw = join(d, 'data-512m.raw');
  if (!existsSync(raw)) sh(`openssl enc -aes-128-ctr -pass pass:merge -nosalt -pbkdf2 </dev/zero 2>/dev/null | head -c 536870912 > "${raw}"`);
  const tBase = join(d, 'merge-base.tmpl.vhd');
  const tChild = join(d, 'merge-child.tmpl.vhd');
  if (!existsSync(tChild)) {
    rmSync(tBase, { force: true });
    execFileSync(process.execPath, [cli, 'create', tBase, '--size', '1G']);
    execFileSync(process.execPath, [cli, 'child', tBase, tChild]);
    execFileSync(process.execPath, [cli, 'write', tChild, '--offset', '268435456', '--input', raw]);
  }
  const base = join(d, 'merge-base.vhd');
  const child = join(d, 'merge-child.vhd');
  const cpOut = join(d, 'cp-512m.out');
  // The working copies keep the template names' relative link: re-link the copy to its own base.
  const prepare = () => {
    copyFileSync(tBase, base);
    copyFileSync(tChild, child);
    execFileSync(process.execPath, [cli, 'reparent', child, base]);
    rmSync(cpOut, { force: true });
  };
  const [ours, cp, cpSync] = compare(7, [
    () => timed(process.execPath, [cli, 'merge', child]),
    () => timed('cp', [raw, cpOut]),
    () => timed('sh', ['-c', `cp "${raw}" "${cpOut}" && sync "${cpOut}"`]),
  ], prepare);
  for (const f of [base, child, cpOut]) rmSync(f, { force: true });
  console.log(`merge 512 MiB: diskimg ${ours.seconds.toFixed(3)} s (peak ${ours.maxRss.toFixed(0)} MB), cp ${cp.seconds.toFixed(3)} s, cp+sync ${cpSync.seconds.toFixed(3)} s`);
  return [
    { name: 'merge child holding 512 MiB into dynamic parent (durable)', ours, reference: cpSync, referenceName: 'cp + sync of 512 MiB', ...pairRatios(ours, cpSync), goal: '<= 1.5x', note: `peak RSS ${ours.maxRss.toFixed(0)} MB; ${load()}` },
    { name: 'merge child holding 512 MiB into dynamic parent vs plain cp', ours, reference: cp, referenceName: 'cp of 512 MiB (no sync)', ...pairRatios(ours, cp), goal: '<= 1.5x', note: load() },
  ];
}
