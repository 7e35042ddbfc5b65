// Start-up: `diskimg --version`, `diskimg info` on a small image and `diskimg --help` against a bare
// `node -e 0`, interleaved; reported as the median (and min) of the per-pair differences in ms.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { benchDir, compare, load, median, timed } from './common.mjs';

export default async function ({ root }) {
  const cli = join(root, 'dist', 'cli.js');
  const img = join(benchDir(root), 'startup-small.vhd');
  if (!existsSync(img)) execFileSync(process.execPath, [cli, 'create', img, '--size', '64M']);
  // One run first so that the code cache exists, as it does for every run after a user's first.
  execFileSync(process.execPath, [cli, 'info', img]);
  const [bare, version, info, help] = compare(21, [
    () => timed(process.execPath, ['-e', '0']),
    () => timed(process.execPath, [cli, '--version']),
    () => timed(process.execPath, [cli, 'info', img]),
    () => timed(process.execPath, [cli, '--help']),
  ]);
  const over = (x) => {
    const d = x.runs.map((r, i) => (r.seconds - bare.runs[i].seconds) * 1000);
    const cpu = x.runs.map((r, i) => (r.cpu - bare.runs[i].cpu) * 1000);
    return { ms: median(d), minMs: Math.min(...d), cpuMs: median(cpu) };
  };
  const rows = [['diskimg --version', version, '<= +10 ms'], ['diskimg info (64 MiB image)', info, undefined], ['diskimg --help', help, undefined]];
  console.log(`node -e 0: median ${(bare.seconds * 1000).toFixed(1)} ms (min ${(bare.minSeconds * 1000).toFixed(1)})`);
  return rows.map(([name, x, goal]) => {
    const o = over(x);
    console.log(`${name}: median +${o.ms.toFixed(1)} ms over node -e 0 (min +${o.minMs.toFixed(1)}, CPU +${o.cpuMs.toFixed(0)} ms)`);
    return {
      name: `start-up: ${name}`, ours: x, reference: bare, referenceName: 'node -e 0',
      goal: goal ?? 'measured',
      note: `median of paired differences +${o.ms.toFixed(1)} ms (min +${o.minMs.toFixed(1)} ms), CPU +${o.cpuMs.toFixed(0)} ms; ${load()}`,
    };
  });
}
