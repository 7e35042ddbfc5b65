// Bundles the extension host, the CLI and the webview (script and styles) with esbuild.
import { build } from 'esbuild';
import { chmodSync, existsSync, readFileSync } from 'node:fs';

const common = { bundle: true, define: { DISKIMG_VERSION: JSON.stringify(JSON.parse(readFileSync('package.json', 'utf8')).version) }, sourcemap: true, logLevel: 'warning', minify: process.env.MINIFY === '1' };

await build({ ...common, entryPoints: ['src/extension/extension.ts'], outfile: 'dist/extension.js',
  platform: 'node', format: 'cjs', target: 'node18', external: ['vscode'] });
// The CLI is two files: cli.js, the tiny executable (thread pool, --version, code cache), and
// cliMain.js, the command line it loads through V8's code cache.

// cli.js is a sh/JS polyglot. Run as a program, sh reads line 2 (JavaScript sees a string and a
// comment) and starts Node without NODE_EXTRA_CA_CERTS, which Node would parse at every start
// (~70 ms of CPU for Debian's bundle); the name travels as DISKIMG_EXTRA_CA_CERTS and
// src/io/trustedCa.ts reads the bundle on the first TLS connection. `node dist/cli.js` works too.
const launcher = [
  '#!/bin/sh',
  '":" //; if [ -n "$NODE_EXTRA_CA_CERTS" ]; then DISKIMG_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS; export DISKIMG_EXTRA_CA_CERTS; unset NODE_EXTRA_CA_CERTS; fi; exec node "$0" "$@"',
].join('\n');
await build({ ...common, entryPoints: ['src/cli/entry.ts'], outfile: 'dist/cli.js', sourcemap: false,
  platform: 'node', format: 'cjs', target: 'node20', banner: { js: launcher },
});
// PLAIN=1 leaves cliMain.js unminified, so CPU profiles name functions (measuring only).
await build({ ...common, entryPoints: ['src/cli/main.ts'], outfile: 'dist/cliMain.js',
  platform: 'node', format: 'cjs', target: 'node20', minify: process.env.PLAIN !== '1',
  alias: { 'node:child_process': './src/cli/lazyChildProcess.ts' } });
chmodSync('dist/cli.js', 0o755);
if (existsSync('webview/main.ts')) {
  // The page's bundles and styles are minified in every build, not only when packaging: the first
  // bundle and the styles are inline in the editor's HTML, parsed and compiled before the first draw
  // (43 KB -> 24 KB of script). Source maps still name the sources.
  await build({ ...common, entryPoints: ['webview/main.ts'], outfile: 'dist/webview.js',
    platform: 'browser', format: 'iife', target: 'es2020', minify: true });
  // The second bundle (toolkit and the views past the overview), loaded by the first once it has drawn.
  await build({ ...common, entryPoints: ['webview/rest.ts'], outfile: 'dist/webview-rest.js',
    platform: 'browser', format: 'iife', target: 'es2020', globalName: '__diskimgRest', minify: true });
}
if (existsSync('media/editor.css')) {
  await build({ ...common, entryPoints: ['media/editor.css'], outfile: 'dist/webview.css', sourcemap: false, minify: true });
}
