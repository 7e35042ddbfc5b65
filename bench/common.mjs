// Shared helpers for benchmarks: timing real processes, peak memory, cached inputs in .bench/.
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { cpus, loadavg } from 'node:os';

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
 * Runs each contender n times, interleaved (A B A B ...) so both see the same machine state, with
 * `before` (e.g. deleting outputs) and a `sync` outside the timing so earlier runs' writeback does
 * not land on the next one. Each contender gets every run (`runs`), its median and min wall time
 * (`seconds` is the median), median CPU time and peak RSS over all runs. Compare two with `pairRatios`:
 * the median of the per-pair ratios is what a user waits on a machine as busy as this one; best-of
 * would hide that.
 */
export function compare(n, contenders, before = () => {}, { alternate = false } = {}) {
  const runs = contenders.map(() => []);
  for (let i = 0; i < n; i++) {
    // With `alternate`, odd rounds run the contenders in reverse (A B, B A, ...): whatever the
    // first run of a round pays or leaves behind (a warmer cache, a neighbour's burst) falls on each side alike.
    const order = contenders.map((_, k) => (alternate && i % 2 === 1 ? contenders.length - 1 - k : k));
    order.forEach((k) => {
      const fn = contenders[k];
      before();
      spawnSync('sync');
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

