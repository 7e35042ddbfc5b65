// Shared helpers for benchmarks: timing real processes, peak memory, cached inputs in .bench/.
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cpus, loadavg, tmpdir } from 'node:os';

export function benchDir(root) {
  const d = join(root, '.bench');
  mkdirSync(d, { recursive: true });
  return d;
}

/** Runs a command under /usr/bin/time; returns wall seconds, CPU seconds (user + system) and peak RSS in MB. */
export function timed(cmd, args, opts = {}) {
  const t0 = process.hrtime.bigint();
  const useTime = existsSync('/usr/bin/time');
  const r = useTime
    ? spawnSync('/usr/bin/time', ['-f', '%M %U %S', cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'], ...opts })
    : spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], ...opts });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const err = r.stderr.toString();
  const lines = err.trim().split('\n');
  const [rss, user, sys] = useTime ? lines[lines.length - 1].split(' ').map(Number) : [NaN, NaN, NaN];
  return { seconds, cpu: user + sys, rssMb: rss / 1024, status: r.status, stderr: err };
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * BENCH_SETTLE_MS=3000 waits that long after the `sync` before each run. On a virtual machine with
 * free page reporting (this one) memory freed in the last ~2 s is still the guest's, older free
 * memory was handed back to the host and faults in again when written: a page-cache write of
 * 1 GiB costs ~0.4 s of system time in the first case and ~4 s in the second. Without the wait a
 * run usually writes into the pages the other contender's deleted output just freed, so its cost
 * depends on the run before it; with it every run meets reported memory, as an export does when
 * nothing freed a GiB just before. Default 0 (as before).
 */
const SETTLE_MS = Math.max(0, Number(process.env.BENCH_SETTLE_MS) || 0);

/**
 * BENCH_WARM_MB=1100 is the opposite state: right before each run (after its `sync`) a scratch file
 * of that many MiB is written and deleted, so the run writes into memory freed a moment ago, which
 * the host has not taken back yet (page-cache writes at their cheapest). Default 0.
 */
const WARM_MB = Math.max(0, Math.floor(Number(process.env.BENCH_WARM_MB) || 0));

function warmPages() {
  const scratch = join(tmpdir(), `bench-warm-${process.pid}`);
  spawnSync('dd', ['if=/dev/zero', `of=${scratch}`, 'bs=4M', `count=${Math.ceil(WARM_MB / 4)}`, 'status=none']);
  rmSync(scratch, { force: true });
}

/**
 * Runs each contender n times, interleaved (A B A B ...) so both see the same machine state, with
 * `before` (e.g. deleting outputs) and a `sync` outside the timing so earlier runs' writeback does
 * not land on the next one. Each contender gets every run (`runs`), its median and min wall time
 * (`seconds` is the median), median CPU time and peak RSS over all runs. Compare two with `pairRatios`:
 * the median of the per-pair ratios is what a user waits on a machine as busy as this one; best-of
 * would hide that.
 */
export function compare(n, contenders, before = () => {}, { alternate = false } = {}) {
  if (SETTLE_MS > 0) console.log(`each run starts ${SETTLE_MS} ms after its sync (BENCH_SETTLE_MS)`);
  if (WARM_MB > 0) console.log(`each run starts right after ${WARM_MB} MiB were written and deleted (BENCH_WARM_MB)`);
  const runs = contenders.map(() => []);
  for (let i = 0; i < n; i++) {
    // With `alternate`, odd rounds run the contenders in reverse (A B, B A, ...): whatever the
    // first run of a round pays or leaves behind (a warmer cache, a neighbour's burst) falls on each side alike.
    const order = contenders.map((_, k) => (alternate && i % 2 === 1 ? contenders.length - 1 - k : k));
    order.forEach((k) => {
      const fn = contenders[k];
      before();
      spawnSync('sync');
      if (SETTLE_MS > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, SETTLE_MS);
      if (WARM_MB > 0) warmPages();
      const r = fn();
      if (r.status !== 0 && r.status !== 1) throw new Error(`benchmark command failed (${r.status}): ${r.stderr}`);
      runs[k].push(r);
    });
  }
  return runs.map((rs) => ({
    runs: rs,
    seconds: median(rs.map((r) => r.seconds)),
    minSeconds: Math.min(...rs.map((r) => r.seconds)),
    cpu: median(rs.map((r) => r.cpu)),
    maxRss: Math.max(...rs.map((r) => r.rssMb)),
  }));
}

/** Per-pair ratios of two `compare` results (run i of one against run i of the other): median and min, in wall and CPU time. */
export function pairRatios(a, b) {
  const wall = a.runs.map((r, i) => r.seconds / b.runs[i].seconds);
  const cpu = a.runs.map((r, i) => r.cpu / b.runs[i].cpu);
  return { median: median(wall), min: Math.min(...wall), cpuMedian: median(cpu), cpuMin: Math.min(...cpu), pairs: wall.length };
}

/** The 1-minute load average and the CPU count, for every reported figure. */
export function load() {
  return `load ${loadavg()[0].toFixed(2)} on ${cpus().length} CPUs`;
}

export function sh(cmd) {
  execFileSync('sh', ['-c', cmd], { stdio: 'inherit' });
}

/** A fully written 1 GiB dynamic VHD (pseudo-random data so no block is zero), made once by qemu-img. */
export function fullDynamic1G(root, name = 'full-1g.vhd') {
  const d = benchDir(root);
  const img = join(d, name);
  if (!existsSync(img)) {
    const raw = join(d, 'full-1g.raw');
    if (!existsSync(raw)) sh(`openssl enc -aes-128-ctr -pass pass:diskimg -nosalt -pbkdf2 </dev/zero 2>/dev/null | head -c 1073741824 > "${raw}"`);
    sh(`qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "${raw}" "${img}"`);
  }
  return img;
}

