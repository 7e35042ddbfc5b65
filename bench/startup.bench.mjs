// Start-up: `diskimg --version`, `diskimg info` on a small image and `diskimg --help` against a bare
// `node -e 0`, interleaved; reported as the median (and min) of the per-pair differences in ms.
// `diskimg` is dist/cli.js run as a program, as a user runs it (its sh launcher starts Node without
// NODE_EXTRA_CA_CERTS). Where that variable is set, `node -e 0` pays for parsing the bundle and
// diskimg does not, so a bare `node -e 0` without the variable is measured beside it too.
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
  const noCa = { ...process.env };
  delete noCa.NODE_EXTRA_CA_CERTS;
  const caSet = Boolean(process.env.NODE_EXTRA_CA_CERTS);
  const [bare, bareNoCa, version, info, help] = compare(21, [
    () => timed(process.execPath, ['-e', '0']),
    () => timed(process.execPath, ['-e', '0'], { env: noCa }),
    () => timed(cli, ['--version']),
    () => timed(cli, ['info', img]),
    () => timed(cli, ['--help']),
  ]);
  const over = (x, base = bare) => {
    const d = x.runs.map((r, i) => (r.seconds - base.runs[i].seconds) * 1000);
    const cpu = x.runs.map((r, i) => (r.cpu - base.runs[i].cpu) * 1000);
    return { ms: median(d), minMs: Math.min(...d), cpuMs: median(cpu) };
  };
  const fmt = (v) => `${v >= 0 ? '+' : ''}${v.toFixed(1)}`;
  const rows = [['diskimg --version', version, '<= +10 ms'], ['diskimg info (64 MiB image)', info, undefined], ['diskimg --help', help, undefined]];
  console.log(`node -e 0: median ${(bare.seconds * 1000).toFixed(1)} ms (min ${(bare.minSeconds * 1000).toFixed(1)})` +
    (caSet ? `; without NODE_EXTRA_CA_CERTS: ${(bareNoCa.seconds * 1000).toFixed(1)} ms (min ${(bareNoCa.minSeconds * 1000).toFixed(1)})` : ''));
  return rows.map(([name, x, goal]) => {
    const o = over(x);
    const n = over(x, bareNoCa);
    const alsoNoCa = caSet ? `; over node -e 0 without NODE_EXTRA_CA_CERTS ${fmt(n.ms)} ms (min ${fmt(n.minMs)}, CPU ${fmt(n.cpuMs)} ms)` : '';
    console.log(`${name}: median ${fmt(o.ms)} ms over node -e 0 (min ${fmt(o.minMs)}, CPU ${fmt(o.cpuMs)} ms)${alsoNoCa}`);
    return {
      name: `start-up: ${name}`, ours: x, reference: bare, referenceName: 'node -e 0',
      goal: goal ?? 'measured',
      note: `median of paired differences ${fmt(o.ms)} ms (min ${fmt(o.minMs)} ms), CPU ${fmt(o.cpuMs)} ms${alsoNoCa}; ${load()}`,
    };
  });
}
