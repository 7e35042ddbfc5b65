// Merge of a child holding 512 MiB into its dynamic parent (VHD, VHDX and qcow2), side by side with
// the tool that does the same job: `qemu-img commit` of a qcow2 overlay holding the same 512 MiB over
// a qcow2 base (for qcow2, `diskimg merge` of a copy of that very overlay). Both are durable (our
// merge fsyncs the target before the child goes; qemu-img flushes on close), both leave the data in
// the base. Working copies are made outside the timing, in a folder of their own (bench/.bench/merge)
// emptied before each run: merge scans the target's folder for other children of it (the sibling
// check), and .bench holds the other benchmarks' ten differencing images, which cost that scan
// 36-59 ms against 5-9 ms for a folder holding only the chain (2026-12-03); a VM's folder is the case
// measured, the scan's cost per candidate is in docs/benchmarks.md.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir, compare, load, pairRatios, sh, timed } from './common.mjs';

export default async function ({ root }) {
  const d = benchDir(root);
  const cli = join(root, 'dist', 'cli.js');
  const raw = join(d, 'data-512m.raw');
  if (!existsSync(raw)) sh(`openssl enc -aes-128-ctr -pass pass:merge -nosalt -pbkdf2 </dev/zero 2>/dev/null | head -c 536870912 > "${raw}"`);
  const work = join(d, 'merge');
  mkdirSync(work, { recursive: true });
  const templates = {};
  for (const ext of ['vhd', 'vhdx']) {
    const tBase = join(d, `merge-base.tmpl.${ext}`);
    const tChild = join(d, `merge-child.tmpl.${ext === 'vhd' ? 'vhd' : 'avhdx'}`);
    if (!existsSync(tChild)) {
      rmSync(tBase, { force: true });
      execFileSync(process.execPath, [cli, 'create', tBase, '--size', '1G']);
      execFileSync(process.execPath, [cli, 'child', tBase, tChild]);
      execFileSync(process.execPath, [cli, 'write', tChild, '--offset', '268435456', '--input', raw]);
    }
    templates[ext] = { tBase, tChild, base: join(work, `merge-base.${ext}`), child: join(work, `merge-child.${ext === 'vhd' ? 'vhd' : 'avhdx'}`) };
  }
  const qBaseT = join(d, 'commit-base.tmpl.qcow2');
  const qTopT = join(d, 'commit-top.tmpl.qcow2');
  if (!existsSync(qTopT)) {
    rmSync(qBaseT, { force: true });
    sh(`qemu-img create -q -f qcow2 "${qBaseT}" 1G`);
    sh(`qemu-img create -q -f qcow2 -u -b commit-base.qcow2 -F qcow2 "${qTopT}" 1G`);
    // The overlay names its base relatively: write through a working copy pair, then keep the overlay.
    copyFileSync(qBaseT, join(d, 'commit-base.qcow2'));
    sh(`qemu-io -f qcow2 -c "write -s ${raw} 256M 512M" "${qTopT}" >/dev/null`);
    rmSync(join(d, 'commit-base.qcow2'), { force: true });
  }
  const qBase = join(work, 'commit-base.qcow2');
  const qTop = join(work, 'commit-top.qcow2');
  // diskimg's copy of the same qcow2 pair, its overlay re-pointed at its own base (no sibling).
  const mBase = join(work, 'merge-qbase.qcow2');
  const mTop = join(work, 'merge-qtop.qcow2');
  // Working copies, made outside the timing, each contender only its own (then a sync, so their
  // writeback does not land on the timed run). The VHD/VHDX copies keep the template's relative
  // link: re-link each to its own base; diskimg's qcow2 overlay is re-pointed at its own base.
  // The folder is emptied first: each run sees only its own chain.
  const fresh = (run) => () => {
    for (const f of readdirSync(work)) rmSync(join(work, f), { force: true });
    run();
    spawnSync('sync');
  };
  const prepare = {
    vhd: fresh(() => { const t = templates.vhd; copyFileSync(t.tBase, t.base); copyFileSync(t.tChild, t.child); execFileSync(process.execPath, [cli, 'reparent', t.child, t.base]); }),
    vhdx: fresh(() => { const t = templates.vhdx; copyFileSync(t.tBase, t.base); copyFileSync(t.tChild, t.child); execFileSync(process.execPath, [cli, 'reparent', t.child, t.base]); }),
    qcow2: fresh(() => { copyFileSync(qBaseT, mBase); copyFileSync(qTopT, mTop); execFileSync('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-b', 'merge-qbase.qcow2', '-F', 'qcow2', mTop]); }),
    qemu: fresh(() => { copyFileSync(qBaseT, qBase); copyFileSync(qTopT, qTop); }),
  };
  const commit = () => { prepare.qemu(); return timed('qemu-img', ['commit', '-q', '-f', 'qcow2', qTop]); };
  // Each of ours is paired with a qemu-img commit run right after it (interleaved, same machine state).
  const [vhd, qemuA, vhdx, qemuB, qcow2, qemuC] = compare(7, [
    () => { prepare.vhd(); return timed(cli, ['merge', templates.vhd.child]); },
    commit,
    () => { prepare.vhdx(); return timed(cli, ['merge', templates.vhdx.child]); },
    commit,
    () => { prepare.qcow2(); return timed(cli, ['merge', mTop]); },
    commit,
  ]);
  for (const f of [qBase, qTop, mBase, mTop, ...Object.values(templates).flatMap((t) => [t.base, t.child])]) rmSync(f, { force: true });
  console.log(`merge 512 MiB: diskimg VHD ${vhd.seconds.toFixed(3)} s (peak ${vhd.maxRss.toFixed(0)} MB), VHDX ${vhdx.seconds.toFixed(3)} s (peak ${vhdx.maxRss.toFixed(0)} MB), qcow2 ${qcow2.seconds.toFixed(3)} s (peak ${qcow2.maxRss.toFixed(0)} MB), qemu-img commit ${qemuA.seconds.toFixed(3)} / ${qemuB.seconds.toFixed(3)} / ${qemuC.seconds.toFixed(3)} s`);
  return [
    { name: 'merge a VHD child holding 512 MiB into its dynamic parent (durable)', ours: vhd, reference: qemuA, referenceName: 'qemu-img commit of a qcow2 overlay holding 512 MiB', ...pairRatios(vhd, qemuA), goal: '<= 1.0x', note: `peak RSS ${vhd.maxRss.toFixed(0)} MB; ${load()}` },
    { name: 'merge a VHDX child holding 512 MiB into its dynamic parent (durable)', ours: vhdx, reference: qemuB, referenceName: 'qemu-img commit of a qcow2 overlay holding 512 MiB', ...pairRatios(vhdx, qemuB), goal: '<= 1.0x', note: `peak RSS ${vhdx.maxRss.toFixed(0)} MB; ${load()}` },
    { name: 'merge a qcow2 overlay holding 512 MiB into its qcow2 base (durable)', ours: qcow2, reference: qemuC, referenceName: 'qemu-img commit of the same overlay', ...pairRatios(qcow2, qemuC), goal: '<= 1.0x', note: `peak RSS ${qcow2.maxRss.toFixed(0)} MB; ${load()}` },
  ];
}
