// qcow2 merge into a base that holds an internal snapshot: every cluster the overlay writes is shared
// with the snapshot (refcount 2), so it is copied on write, never overwritten in place. diskimg merge
// against qemu-img commit on fresh copies of the same pair each run, in a folder of their own emptied
// before each run (merge scans the target's folder for other children of it; see merge.bench.mjs).
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir, compare, load, pairRatios, sh, timed } from './common.mjs';

export default async function ({ root }) {
  const d = benchDir(root);
  const base = join(d, 'snap-base.qcow2');
  const ov = join(d, 'snap-ov.qcow2');
  if (!existsSync(ov)) {
    sh(`qemu-img create -q -f qcow2 "${base}" 512M`);
    sh(`qemu-io -c "write -P 0x31 0 256M" "${base}" >/dev/null`);
    sh(`qemu-img snapshot -c before "${base}"`);
    sh(`qemu-img create -q -f qcow2 -b snap-base.qcow2 -F qcow2 "${ov}"`);
    // 128 MiB over the shared data (unaligned edges), 64 MiB past it.
    sh(`qemu-io -c "write -P 0x52 1000k 128M" -c "write -P 0x53 300M 64M" "${ov}" >/dev/null`);
  }
  const cli = join(root, 'dist', 'cli.js');
  const folder = join(d, 'snap');
  mkdirSync(folder, { recursive: true });
  const work = (who) => ({ base: join(folder, `snap-run-${who}-base.qcow2`), ov: join(folder, `snap-run-${who}-ov.qcow2`) });
  const fresh = (who) => {
    for (const f of readdirSync(folder)) rmSync(join(folder, f), { force: true });
    const w = work(who);
    copyFileSync(base, w.base);
    copyFileSync(ov, w.ov);
    sh(`qemu-img rebase -q -u -f qcow2 -b "snap-run-${who}-base.qcow2" -F qcow2 "${w.ov}"`);
    return w;
  };
  const ours = work('ours');
  const qemu = work('qemu');
  const [o, q] = compare(5, [
    () => timed(cli, ['merge', ours.ov]),
    () => timed('qemu-img', ['commit', '-q', '-f', 'qcow2', qemu.ov]),
  ], (() => { let k = 0; return () => { fresh(k++ % 2 === 0 ? 'ours' : 'qemu'); }; })());
  for (const w of [ours, qemu]) { rmSync(w.base, { force: true }); rmSync(w.ov, { force: true }); }
  const r = pairRatios(o, q);
  const l = load();
  console.log(`merge 192 MiB into a qcow2 base with an internal snapshot: diskimg ${o.seconds.toFixed(3)} s (min ${o.minSeconds.toFixed(3)}), qemu-img commit ${q.seconds.toFixed(3)} s (min ${q.minSeconds.toFixed(3)}), median ratio ${r.median.toFixed(2)} (min ${r.min.toFixed(2)}), CPU ${r.cpuMedian.toFixed(2)}x, ${l}`);
  return [{
    name: 'merge 192 MiB into a qcow2 base with an internal snapshot (copy on write)',
    ours: o, reference: q, referenceName: 'qemu-img commit',
    ...r,
    note: `peak RSS ${o.maxRss.toFixed(0)} MB (qemu-img ${q.maxRss.toFixed(0)} MB); ${l}`,
  }];
}
