// Runs every bench/*.bench.mjs in name order (or those named on the command line) and prints
// their result lines; each benchmark runs the reference tool side by side in the same run.
import { readdirSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = readdirSync(here).filter((f) => f.endsWith('.bench.mjs')).sort()
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)));
const results = [];
for (const f of files) {
  console.log(`\n== ${f}`);
  const mod = await import(pathToFileURL(join(here, f)).href);
  const rows = await mod.default({ root: resolve(here, '..') });
  for (const r of rows ?? []) results.push({ bench: f, ...r });
}
console.log('\n== summary');
for (const r of results) {
  const ratio = r.ratio !== undefined ? `ratio ${r.ratio.toFixed(2)}x` : '';
  const goal = r.goal !== undefined ? ` (goal ${r.goal})` : '';
  console.log(`${r.name}: ${r.ours.toFixed(3)} s ours vs ${r.reference !== undefined ? r.reference.toFixed(3) + ' s ' + r.referenceName : '-'}; ${ratio}${goal}${r.note ? ' — ' + r.note : ''}`);
}
