// Shared helpers for benchmarks: timing real processes, peak memory, cached inputs in .bench/.
import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

export function benchDir(root) {
  const d = join(root, '.bench');
  mkdirSync(d, { recursive: true });
  return d;
}

/** Runs a command under /usr/bin/time; returns wall seconds and peak RSS in MB. */
export function timed(cmd, args, opts = {}) {
  const t0 = process.hrtime.bigint();
  const useTime = existsSync('/usr/bin/time');
  const r = useTime
    ? spawnSync('/usr/bin/time', ['-f', '%M', cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'], ...opts })
    : spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], ...opts });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const err = r.stderr.toString();
  const lines = err.trim().split('\n');
  const rssMb = useTime ? Number(lines[lines.length - 1]) / 1024 : NaN;
  return { seconds, rssMb, status: r.status, stderr: err };
}

/**
 * Runs each contender n times, interleaved (A B A B ...) so both see the same machine state, with
 * `before` (e.g. deleting outputs) and a `sync` outside the timing so earlier runs' writeback does
 * not land on the next one. Returns the best (minimum) time of each and its peak RSS over all runs.
 */
export function compare(n, contenders, before = () => {}) {
  const bestRuns = contenders.map(() => null);
  for (let i = 0; i < n; i++) {
    contenders.forEach((fn, k) => {
      before();
      spawnSync('sync');
      const r = fn();
      if (r.status !== 0 && r.status !== 1) throw new Error(`benchmark command failed (${r.status}): ${r.stderr}`);
      const b = bestRuns[k];
      if (!b || r.seconds < b.seconds) bestRuns[k] = { ...r, maxRss: Math.max(r.rssMb, b?.maxRss ?? 0) };
      else b.maxRss = Math.max(b.maxRss, r.rssMb);
    });
  }
  return bestRuns;
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
