// Runs every bench/*.bench.mjs in name order (or those named on the command line) and prints
// their result lines; each benchmark runs the reference tool side by side in the same run.
import { readdirSync } from 'node:fs';
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
  for (const r of rows ?? []) results.push({ bench: f, ...r });
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
