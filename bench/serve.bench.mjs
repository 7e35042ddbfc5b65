// diskimg serve side by side with qemu-nbd on the same 1 GiB dynamic VHD (fully written):
//  - 4 KiB reads at queue depth 32 with qemu-img bench (200,000 requests; the step of 1023 x 4 KiB
//    scatters the offsets over the disk, qemu-img bench wrapping them modulo its size), served by
//    `qemu-nbd -f vpc -r` and by `diskimg serve --read-only`;
//  - a sequential read of the whole disk with `nbdcopy <URL> null:`;
//  - the same 4 KiB pattern as writes (qemu-img bench -w) into an undo session
//    (`diskimg serve --session --on-exit discard`, a fresh differencing child each run) vs
//    `qemu-nbd -f qcow2` on a fresh qcow2 overlay of a qcow2 copy of the base.
// Only the client command is timed; servers start before and stop after it. Reported per the
// project's rule: median of the paired ratios, min beside it, and the load average.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir, fullDynamic1G, pairedNote, pairedRuns, timed } from './common.mjs';

const PAIRS = Number(process.env.SERVE_BENCH_PAIRS ?? 3);
const COUNT = 200000;
const STEP = 1023 * 4096;

/** Starts a server and resolves once `ready()` holds; stop() sends SIGTERM and awaits the exit. */
async function startServer(cmd, args, ready) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => { out += d; });
  proc.stderr.on('data', (d) => { out += d; });
  const exited = new Promise((resolve) => proc.on('exit', (code, sig) => resolve(code ?? sig)));
  const deadline = Date.now() + 30000;
  while (!ready(out)) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${cmd} exited: ${out}`);
    if (Date.now() > deadline) { proc.kill('SIGKILL'); throw new Error(`${cmd} not ready: ${out}`); }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    /** Peak RSS of the server process so far, in MB (VmHWM). */
    peakRssMb: () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${proc.pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const code = await exited;
      if (code !== 0 && code !== 'SIGTERM') throw new Error(`${cmd} exited ${code}: ${out}`);
    },
  };
}

export default async function ({ root }) {
  const d = benchDir(root);
  const cli = join(root, 'dist', 'cli.js');
  const base = fullDynamic1G(root);
  const baseQcow2 = join(d, 'full-1g.qcow2');
  if (!existsSync(baseQcow2)) execFileSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'qcow2', base, baseQcow2]);
  const sockOurs = join(d, 'serve-ours.sock');
  const sockQemu = join(d, 'serve-qemu.sock');
  const url = (s) => `nbd+unix:///?socket=${s}`;
  const onSocket = (s) => () => existsSync(s);
  const onReadyLine = (out) => /^serving .* on nbd/m.test(out);
  for (const s of [sockOurs, sockQemu]) rmSync(s, { force: true });

  // Reads: both servers stay up for all read runs.
  const ours = await startServer(process.execPath, [cli, 'serve', base, '--read-only', '--socket', sockOurs], onReadyLine);
  const qemu = await startServer('qemu-nbd', ['-r', '-t', '-f', 'vpc', '-k', sockQemu, base], onSocket(sockQemu));
  const benchArgs = ['bench', '-f', 'raw', '-c', String(COUNT), '-d', '32', '-s', '4096', '-S', String(STEP)];
  let random, seq, oursReadRss;
  try {
    random = await pairedRuns(PAIRS,
      () => timed('qemu-img', [...benchArgs, url(sockOurs)]),
      () => timed('qemu-img', [...benchArgs, url(sockQemu)]));
    seq = await pairedRuns(PAIRS,
      () => timed('nbdcopy', [url(sockOurs), 'null:']),
      () => timed('nbdcopy', [url(sockQemu), 'null:']));
    oursReadRss = ours.peakRssMb();
  } finally {
    await ours.stop();
    await qemu.stop();
  }

  // Writes: a fresh session child (ours) or a fresh qcow2 overlay (qemu-nbd) per run.
  const overlay = join(d, 'serve-overlay.qcow2');
  let oursWriteRss = 0;
  const writes = await pairedRuns(PAIRS,
    async () => {
      const s = await startServer(process.execPath, [cli, 'serve', base, '--session', '--on-exit', 'discard', '--socket', sockOurs], onReadyLine);
      try {
        return timed('qemu-img', [...benchArgs, '-w', url(sockOurs)]);
      } finally {
        oursWriteRss = Math.max(oursWriteRss, s.peakRssMb());
        await s.stop();
      }
    },
    async () => {
      rmSync(overlay, { force: true });
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', baseQcow2, overlay]);
      const s = await startServer('qemu-nbd', ['-t', '-f', 'qcow2', '-k', sockQemu, overlay], onSocket(sockQemu));
      try {
        return timed('qemu-img', [...benchArgs, '-w', url(sockQemu)]);
      } finally {
        await s.stop();
        rmSync(overlay, { force: true });
      }
    });

  const line = (name, p) => console.log(`${name}: diskimg serve ${p.ours.toFixed(3)} s, qemu-nbd ${p.reference.toFixed(3)} s; ratio ${p.ratio.toFixed(2)}x (${pairedNote(p)})`);
  line('random 4 KiB reads QD32', random);
  line('sequential read 1 GiB', seq);
  line('random 4 KiB writes QD32 into an undo session', writes);
  return [
    { name: `serve: ${COUNT} scattered 4 KiB reads, QD32 (qemu-img bench)`, ours: random.ours, reference: random.reference, referenceName: 'qemu-nbd -f vpc', ratio: random.ratio, goal: '<= 1.0x', note: `${pairedNote(random)}; server peak RSS ${oursReadRss.toFixed(0)} MB` },
    { name: 'serve: sequential read of 1 GiB (nbdcopy to null:)', ours: seq.ours, reference: seq.reference, referenceName: 'qemu-nbd -f vpc', ratio: seq.ratio, goal: '<= 1.0x', note: pairedNote(seq) },
    { name: `serve: ${COUNT} scattered 4 KiB writes, QD32, into an undo session`, ours: writes.ours, reference: writes.reference, referenceName: 'qemu-nbd -f qcow2 on a qcow2 overlay', ratio: writes.ratio, goal: '<= 1.0x', note: `${pairedNote(writes)}; server peak RSS ${oursWriteRss.toFixed(0)} MB` },
  ];
}
