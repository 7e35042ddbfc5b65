// diskimg serve side by side with qemu-nbd on the same 1 GiB dynamic VHD (fully written):
//  - 4 KiB reads at queue depth 32 with qemu-img bench (SERVE_BENCH_COUNT requests, 200,000 by
//    default, as issue 9 states the job; the step of 1023 x 4 KiB scatters the offsets over the disk, qemu-img bench wrapping
//    them modulo its size), served by
//    `qemu-nbd -f vpc -r` and by `diskimg serve --read-only`;
//  - a sequential read of the whole disk with nbdcopy to null:, always with the same number of
//    connections on both sides: nbdcopy opens 4 to a server that advertises CAN_MULTI_CONN and 1 to
//    one that does not. Ours advertises it; `qemu-nbd -r` does not, `qemu-nbd -e 4` does. So the
//    rows are what nbdcopy does against each qemu-nbd setup, with ours given the same count:
//    `seq1` is `nbdcopy -C 1` against both (qemu-nbd's default, 1 connection), `seq4` is plain
//    nbdcopy against ours and against `qemu-nbd -e 4` (4 each). Plain nbdcopy against both (4
//    connections to ours, 1 to qemu-nbd: what a user gets out of the box, but a comparison of
//    client loads as much as of servers) is the optional row `seq`;
//  - the same 4 KiB pattern as writes (qemu-img bench -w) into an undo session
//    (`diskimg serve --session --on-exit discard`, a fresh differencing child each run) vs
//    `qemu-nbd -f qcow2` on a fresh qcow2 overlay of a qcow2 copy of the base.
// Only the client command is timed; servers start before and stop after it. Reported as every
// paired benchmark is (compare / pairRatios in common.mjs): runs interleaved, `sync` before each,
// the median of the per-pair ratios with the min beside it, in wall time and in CPU time, and the
// load. Pairs alternate which side runs first, and each read row starts with one unmeasured run
// per server (its code warmed up, the image in the page cache). On 2 CPUs shared with other work a
// 10-second run of either server swings by 2x with the neighbours (both sides alike: same
// syscalls per request run to run), so the default is 7 pairs (not 3) of the issue's 200,000
// requests: the median then stands on 7 ratios. Every pair is printed.
// The CPU time is the SERVER's (user + system, from /proc, over the client's run): the client is
// the same program on both sides, the servers are what is compared.
import { spawn, execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir, compare, fullDynamic1G, load, pairRatios, timed } from './common.mjs';

const PAIRS = Number(process.env.SERVE_BENCH_PAIRS ?? 7);
const COUNT = Number(process.env.SERVE_BENCH_COUNT ?? 200000);
/** Which jobs to run (comma-separated: reads, seq1, seq4, writes by default; seq on request). */
const ONLY = (process.env.SERVE_BENCH_ONLY ?? 'reads,seq1,seq4,writes').split(',');
const STEP = 1023 * 4096;
const CLK_TCK = 100;

const sleepMs = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/** utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat). */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

function exitedOrZombie(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}

/**
 * Starts a server and returns once `ready(output)` holds, synchronously (compare() runs its
 * contenders synchronously): the output goes to a log file that is polled.
 */
function startServer(cmd, args, ready, log, socket) {
  rmSync(log, { force: true });
  rmSync(socket, { force: true });
  const fd = openSync(log, 'w');
  const proc = spawn(cmd, args, { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const exit = { code: undefined };
  proc.on('exit', (code, sig) => { exit.code = code ?? sig; });
  const output = () => (existsSync(log) ? readFileSync(log, 'utf8') : '');
  const deadline = Date.now() + 30000;
  while (!ready(output())) {
    if (exitedOrZombie(proc.pid)) throw new Error(`${cmd} exited: ${output()}`);
    if (Date.now() > deadline) { proc.kill('SIGKILL'); throw new Error(`${cmd} not ready: ${output()}`); }
    sleepMs(20);
  }
  return {
    proc,
    exit,
    output,
    cpu: () => cpuSeconds(proc.pid),
    /** Peak RSS of the server process so far, in MB (VmHWM). */
    peakRssMb: () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${proc.pid}/status`, 'utf8'))?.[1] ?? NaN) / 1024,
    /** SIGTERM, then waits (synchronously) until the process has exited. */
    stop: () => {
      if (!exitedOrZombie(proc.pid)) proc.kill('SIGTERM');
      const until = Date.now() + 120000;
      while (!exitedOrZombie(proc.pid)) {
        if (Date.now() > until) { proc.kill('SIGKILL'); throw new Error(`${cmd} did not stop: ${output()}`); }
        sleepMs(10);
      }
    },
  };
}

/** The client's run under timed(), with `cpu` the server's CPU seconds over it (the client's in clientCpu). */
function timedAgainst(server, cmd, args) {
  const before = server.cpu();
  const r = timed(cmd, args);
  return { ...r, clientCpu: r.cpu, cpu: server.cpu() - before, serverRssMb: server.peakRssMb() };
}

/** Exit statuses arrive through the event loop: checked once compare() has returned. */
async function checkExits(servers) {
  await new Promise((r) => setTimeout(r, 100));
  for (const s of servers) {
    if (s.exit.code !== 0 && s.exit.code !== 'SIGTERM') throw new Error(`server exited ${s.exit.code}: ${s.output()}`);
  }
}

export default async function ({ root }) {
  const d = benchDir(root);
  const cli = join(root, 'dist', 'cli.js');
  const base = fullDynamic1G(root);
  const baseQcow2 = join(d, 'full-1g.qcow2');
  if (!existsSync(baseQcow2)) execFileSync('qemu-img', ['convert', '-f', 'vpc', '-O', 'qcow2', base, baseQcow2]);
  const sockOurs = join(d, 'serve-ours.sock');
  const sockQemu = join(d, 'serve-qemu.sock');
  const logOurs = join(d, 'serve-ours.log');
  const logQemu = join(d, 'serve-qemu.log');
  const sockQemu4 = join(d, 'serve-qemu4.sock');
  const logQemu4 = join(d, 'serve-qemu4.log');
  const url = (s) => `nbd+unix:///?socket=${s}`;
  const onSocket = (s) => () => existsSync(s);
  const onReadyLine = (out) => /^serving .* on nbd/m.test(out);
  for (const s of [sockOurs, sockQemu, sockQemu4]) rmSync(s, { force: true });
  const benchArgs = ['bench', '-f', 'raw', '-c', String(COUNT), '-d', '32', '-s', '4096', '-S', String(STEP)];
  const rows = [];
  const started = [];
  const peak = (res) => Math.max(...res.runs.map((r) => r.serverRssMb));
  const row = (name, ours, reference, referenceName, extra = '') => {
    const ratios = pairRatios(ours, reference);
    const note = `server CPU ${ours.cpu.toFixed(2)} s vs ${reference.cpu.toFixed(2)} s; server peak RSS ${peak(ours).toFixed(0)} MB (qemu-nbd ${peak(reference).toFixed(0)} MB)${extra}; ${load()}`;
    console.log(`${name}: diskimg serve ${ours.seconds.toFixed(3)} s (min ${ours.minSeconds.toFixed(3)}), qemu-nbd ${reference.seconds.toFixed(3)} s (min ${reference.minSeconds.toFixed(3)}); `
      + `median ratio ${ratios.median.toFixed(2)}x (min ${ratios.min.toFixed(2)}x), server CPU ${ratios.cpuMedian.toFixed(2)}x (min ${ratios.cpuMin.toFixed(2)}x); ${note}`);
    // Every pair, so a swing shows whether one side or the machine moved.
    console.log(`  pairs (ours/qemu-nbd s, server CPU s): ${ours.runs.map((r, i) => `${r.seconds.toFixed(2)}/${reference.runs[i].seconds.toFixed(2)} (${r.cpu.toFixed(2)}/${reference.runs[i].cpu.toFixed(2)})`).join(', ')}`);
    rows.push({ name, ours, reference, referenceName, ...ratios, goal: '<= 1.0x', note });
  };

  if (ONLY.includes('reads') || ONLY.includes('seq') || ONLY.includes('seq1') || ONLY.includes('seq4')) {
    // Reads: both servers stay up for all read runs.
    const ours = startServer(cli, ['serve', base, '--read-only', '--socket', sockOurs], onReadyLine, logOurs, sockOurs);
    started.push(ours);
    const qemu = startServer('qemu-nbd', ['-r', '-t', '-f', 'vpc', '-k', sockQemu, base], onSocket(sockQemu), logQemu, sockQemu);
    started.push(qemu);
    try {
      // Unmeasured: each server's first requests (JIT, page cache) are not in any pair.
      for (const [srv, sock] of [[ours, sockOurs], [qemu, sockQemu]]) timedAgainst(srv, 'nbdcopy', [url(sock), 'null:']);
      if (ONLY.includes('reads')) {
        const [o, q] = compare(PAIRS, [
          () => timedAgainst(ours, 'qemu-img', [...benchArgs, url(sockOurs)]),
          () => timedAgainst(qemu, 'qemu-img', [...benchArgs, url(sockQemu)]),
        ], undefined, { alternate: true });
        row(`serve: ${COUNT} scattered 4 KiB reads, QD32 (qemu-img bench)`, o, q, 'qemu-nbd -f vpc');
      }
      if (ONLY.includes('seq')) {
        const [o, q] = compare(PAIRS, [
          () => timedAgainst(ours, 'nbdcopy', [url(sockOurs), 'null:']),
          () => timedAgainst(qemu, 'nbdcopy', [url(sockQemu), 'null:']),
        ], undefined, { alternate: true });
        row('serve: sequential read of 1 GiB, nbdcopy\'s own choice (4 connections to ours, 1 to qemu-nbd)', o, q, 'qemu-nbd -f vpc');
      }
      // 1 connection each: what nbdcopy opens to qemu-nbd -r (no CAN_MULTI_CONN), given to ours too.
      if (ONLY.includes('seq1')) {
        const [o, q] = compare(PAIRS, [
          () => timedAgainst(ours, 'nbdcopy', ['-C', '1', url(sockOurs), 'null:']),
          () => timedAgainst(qemu, 'nbdcopy', ['-C', '1', url(sockQemu), 'null:']),
        ], undefined, { alternate: true });
        row('serve: sequential read of 1 GiB, one connection (nbdcopy -C 1 to null:)', o, q, 'qemu-nbd -f vpc');
      }
      // And 4 connections on both sides: qemu-nbd -e 4 (4 clients at once) advertises CAN_MULTI_CONN.
      if (ONLY.includes('seq4')) {
        const qemu4 = startServer('qemu-nbd', ['-r', '-t', '-e', '4', '-f', 'vpc', '-k', sockQemu4, base], onSocket(sockQemu4), logQemu4, sockQemu4);
        started.push(qemu4);
        try {
          timedAgainst(qemu4, 'nbdcopy', [url(sockQemu4), 'null:']);
          const [o, q] = compare(PAIRS, [
            () => timedAgainst(ours, 'nbdcopy', [url(sockOurs), 'null:']),
            () => timedAgainst(qemu4, 'nbdcopy', [url(sockQemu4), 'null:']),
          ], undefined, { alternate: true });
          row('serve: sequential read of 1 GiB, 4 connections on both sides (nbdcopy to null:)', o, q, 'qemu-nbd -e 4 -f vpc');
        } finally {
          qemu4.stop();
        }
      }
    } finally {
      ours.stop();
      qemu.stop();
    }
  }

  if (ONLY.includes('writes')) {
    // Writes: a fresh session child (ours) or a fresh qcow2 overlay (qemu-nbd) per run.
    const overlay = join(d, 'serve-overlay.qcow2');
    const [o, q] = compare(PAIRS, [
      () => {
        const s = startServer(cli, ['serve', base, '--session', '--on-exit', 'discard', '--socket', sockOurs], onReadyLine, logOurs, sockOurs);
        started.push(s);
        try {
          return timedAgainst(s, 'qemu-img', [...benchArgs, '-w', url(sockOurs)]);
        } finally {
          s.stop();
        }
      },
      () => {
        rmSync(overlay, { force: true });
        execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', baseQcow2, overlay]);
        const s = startServer('qemu-nbd', ['-t', '-f', 'qcow2', '-k', sockQemu, overlay], onSocket(sockQemu), logQemu, sockQemu);
        started.push(s);
        try {
          return timedAgainst(s, 'qemu-img', [...benchArgs, '-w', url(sockQemu)]);
        } finally {
          s.stop();
          rmSync(overlay, { force: true });
        }
      },
    ], undefined, { alternate: true });
    row(`serve: ${COUNT} scattered 4 KiB writes, QD32, into an undo session`, o, q, 'qemu-nbd -f qcow2 on a qcow2 overlay');
  }
  await checkExits(started);
  return rows;
}
