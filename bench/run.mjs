// Runs every bench/*.bench.mjs in name order (or those named on the command line) and prints
// their result lines; each benchmark runs the reference tool side by side in the same run.
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { load } from './common.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = readdirSync(here).filter((f) => f.endsWith('.bench.mjs')).sort()
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)));
const results = [];
console.log(`load at the start: ${load()}`);
for (const f of files) {
  console.log(`\n== ${f}`);
  const mod = await import(pathToFileURL(join(here, f)).href);
  const rows = await mod.default({ root: resolve(here, '..') });
  const loadAfter = load();
  for (const r of rows ?? []) results.push({ bench: f, load: loadAfter, ...r });
}
console.log(`\n== summary (${new Date().toISOString().slice(0, 10)}, ${load()} at the end)`);
// Medians of paired, interleaved runs, min beside them: what a user waits, not the best case.
const secs = (x) => (typeof x === 'number' ? x : x.seconds);
const minOf = (x) => (typeof x === 'number' ? '' : ` (min ${x.minSeconds.toFixed(3)})`);
for (const r of results) {
  const ratio = r.median !== undefined
    ? `median ratio ${r.median.toFixed(2)}x (min ${r.min.toFixed(2)}x, ${r.pairs} pairs; CPU ${r.cpuMedian.toFixed(2)}x)`
    : r.ratio !== undefined ? `ratio ${r.ratio.toFixed(2)}x` : '';
  const goal = r.goal !== undefined ? ` (goal ${r.goal})` : '';
  const ref = r.reference !== undefined ? `${secs(r.reference).toFixed(3)} s${minOf(r.reference)} ${r.referenceName}` : '-';
  console.log(`${r.name}: ${secs(r.ours).toFixed(3)} s${minOf(r.ours)} ours vs ${ref}; ${ratio}${goal}${r.note ? ' — ' + r.note : ''}`);
}

// The same rows as a Markdown table (README "Benchmarks" takes it as it is), also kept in
// .bench/results-<time>.md: median (min) of each side, the median (min) of the per-pair ratios in
// wall and CPU time, the load when the benchmark ended.
const ms = (x) => (typeof x === 'number' ? `${x.toFixed(3)} s` : `${x.seconds.toFixed(3)} s (${x.minSeconds.toFixed(3)})`);
const cell = (t) => String(t).replace(/\|/g, '\\|');
const lines = [
  `Run of ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC${only.length ? ` (${only.join(', ')})` : ''}; load ${results.length ? results[0].load.replace(/^load /, '') : '-'} after the first benchmark, ${load().replace(/^load /, '')} at the end.`,
  '',
  '| benchmark | diskimg median (min) | reference median (min) | wall ratio median (min) | CPU ratio median (min) | load | goal |',
  '|---|---|---|---|---|---|---|',
];
for (const r of results) {
  const ours = ms(r.ours) + (r.ours.maxRss ? `, peak ${Math.round(r.ours.maxRss)} MB` : '');
  const ref = r.reference !== undefined ? `${r.referenceName}: ${ms(r.reference)}` : '-';
  const wall = r.median !== undefined ? `${r.median.toFixed(2)}× (${r.min.toFixed(2)}×)` : r.ratio !== undefined ? `${r.ratio.toFixed(2)}×` : '-';
  const cpu = r.cpuMedian !== undefined ? `${r.cpuMedian.toFixed(2)}× (${r.cpuMin.toFixed(2)}×)` : '-';
  const extra = r.median === undefined && r.note ? ` — ${r.note}` : '';
  lines.push(`| ${cell(r.name + extra)} | ${cell(ours)} | ${cell(ref)} | ${wall} | ${cpu} | ${r.load.replace(/^load /, '').replace(/ on \d+ CPUs/, '')} | ${cell(r.goal ?? '')} |`);
}
const md = lines.join('\n') + '\n';
console.log(`\n== markdown\n${md}`);
const dir = join(resolve(here, '..'), '.bench');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, `results-${new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19)}.md`), md);
