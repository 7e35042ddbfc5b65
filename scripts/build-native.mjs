// Builds native/seek_hole.node (lseek SEEK_DATA/SEEK_HOLE for raw files' holes) with node-gyp.
// Never fails the install: without it, raw files read every byte as data (see src/io/seekHole.ts).
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const native = join(dirname(fileURLToPath(import.meta.url)), '..', 'native');
// npm ships node-gyp; headers come from the installed Node (`/usr/include/node`) when present, so no download.
const gyp = [join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'), process.env.npm_config_node_gyp].find((p) => p && existsSync(p));
const nodedir = [process.env.npm_config_nodedir, join(dirname(process.execPath), '..')].find((d) => d && existsSync(join(d, 'include', 'node', 'node_api.h')));
// Packaging (`vscode:prepublish`) ships the addon built at install: N-API is ABI-stable across Node
// and Electron, so one build serves the CLI and VS Code on this platform; built again only when missing or older than its source.
const built = join(native, 'build', 'Release', 'seek_hole.node');
const upToDate = () => existsSync(built) && ['seekHole.c', 'binding.gyp'].every((f) => statSync(join(native, f)).mtimeMs <= statSync(built).mtimeMs);
if (process.argv.includes('--if-missing') && upToDate()) {
  console.log('seek_hole: up to date');
} else if (!gyp) {
  console.log('seek_hole: node-gyp not found; raw files will count every byte as data');
} else {
  const r = spawnSync(process.execPath, [gyp, 'rebuild', ...(nodedir ? [`--nodedir=${nodedir}`] : [])], { cwd: native, stdio: 'inherit' });
  console.log(r.status === 0 ? 'seek_hole: built' : `seek_hole: build failed (${r.status}); raw files will count every byte as data`);
}
