// Builds native/seek_hole.node (lseek SEEK_DATA/SEEK_HOLE for raw files' holes),
// native/send_file.node (the NBD server's sendfile replies) and native/fast_exit.node (the CLI's
// exit without the V8 platform's shutdown wait) with node-gyp.
// Never fails the install: without them, raw files read every byte as data (see src/io/seekHole.ts)
// the server replies through buffers (src/io/sendFile.ts) and the CLI exits the usual way (src/cli/fastExit.ts).
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
const addons = [['seek_hole.node', 'seekHole.c'], ['send_file.node', 'sendFile.c'], ['fast_exit.node', 'fastExit.c']];
const upToDate = () => addons.every(([node, source]) => {
  const built = join(native, 'build', 'Release', node);
  return existsSync(built) && [source, 'binding.gyp'].every((f) => statSync(join(native, f)).mtimeMs <= statSync(built).mtimeMs);
});
if (process.argv.includes('--if-missing') && upToDate()) {
  console.log('seek_hole, send_file, fast_exit: up to date');
} else if (!gyp) {
  console.log('seek_hole, send_file, fast_exit: node-gyp not found; raw files will count every byte as data, serve replies through buffers, the CLI exits the usual way');
} else {
  const r = spawnSync(process.execPath, [gyp, 'rebuild', ...(nodedir ? [`--nodedir=${nodedir}`] : [])], { cwd: native, stdio: 'inherit' });
  console.log(r.status === 0 ? 'seek_hole, send_file, fast_exit: built' : `seek_hole, send_file, fast_exit: build failed (${r.status}); raw files will count every byte as data, serve replies through buffers, the CLI exits the usual way`);
}
