// Bundles the extension host, the CLI and the webview (script and styles) with esbuild.
import { build } from 'esbuild';
import { chmodSync, existsSync } from 'node:fs';

const common = { bundle: true, sourcemap: true, logLevel: 'warning', minify: process.env.MINIFY === '1' };

await build({ ...common, entryPoints: ['src/extension/extension.ts'], outfile: 'dist/extension.js',
  platform: 'node', format: 'cjs', target: 'node18', external: ['vscode'] });
await build({ ...common, entryPoints: ['src/cli/main.ts'], outfile: 'dist/cli.js',
  platform: 'node', format: 'cjs', target: 'node20', banner: { js: '#!/usr/bin/env node' } });
chmodSync('dist/cli.js', 0o755);
if (existsSync('webview/main.ts')) {
  await build({ ...common, entryPoints: ['webview/main.ts'], outfile: 'dist/webview.js',
    platform: 'browser', format: 'iife', target: 'es2020' });
}
if (existsSync('media/editor.css')) {
  await build({ ...common, entryPoints: ['media/editor.css'], outfile: 'dist/webview.css', sourcemap: false });
}
