// Builds native/seek_hole.node (lseek SEEK_DATA/SEEK_HOLE for raw files' holes) with node-gyp.
// Never fails the install: without it, raw files read every byte as data (see src/io/seekHole.ts).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const native = join(dirname(fileURLToPath(import.meta.url)), '..', 'native');
// npm ships node-gyp; headers come from the installed Node (`/usr/include/node`) when present, so no download.
const gyp = [join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'), process.env.npm_config_node_gyp].find((p) => p && existsSync(p));
const nodedir = [process.env.npm_config_nodedir, join(dirname(process.execPath), '..')].find((d) => d && existsSync(join(d, 'include', 'node', 'node_api.h')));
if (!gyp) {
  console.log('seek_hole: node-gyp not found; raw files will count every byte as data');
} else {
  const r = spawnSync(process.execPath, [gyp, 'rebuild', ...(nodedir ? [`--nodedir=${nodedir}`] : [])], { cwd: native, stdio: 'inherit' });
  console.log(r.status === 0 ? 'seek_hole: built' : `seek_hole: build failed (${r.status}); raw files will count every byte as data`);
}
