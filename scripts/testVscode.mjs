// `npm run test:vscode`: the integration suite (test/integration) in a real desktop VS Code through
// @vscode/test-electron. The VS Code binary comes from VSCODE_TEST_BINARY (the Electron executable,
// e.g. /usr/share/code/code) or a usual install location; nothing is downloaded. Without one it says
// so in one line and exits 0 having run nothing (no test is reported as passed).
import { build } from 'esbuild';
import { existsSync, realpathSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTests } from '@vscode/test-electron';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const candidates = [process.env.VSCODE_TEST_BINARY, '/usr/share/code/code', '/usr/lib/code/code', '/opt/visual-studio-code/code',
  '/snap/code/current/usr/share/code/code', '/Applications/Visual Studio Code.app/Contents/MacOS/Electron'].filter(Boolean);
const binary = candidates.find((p) => existsSync(p));
if (!binary) {
  console.log('test:vscode: NOT RUN — no VS Code binary found (set VSCODE_TEST_BINARY to the VS Code executable); 0 tests run.');
  process.exit(0);
}
const out = join(root, 'out', 'integration');
await build({ entryPoints: [join(root, 'test/integration/index.ts'), join(root, 'test/integration/editor.test.ts')], outdir: out,
  bundle: true, platform: 'node', format: 'cjs', target: 'node18', external: ['vscode', 'mocha'], sourcemap: true, logLevel: 'warning' });
const code = await runTests({
  vscodeExecutablePath: realpathSync(binary),
  extensionDevelopmentPath: root,
  extensionTestsPath: join(out, 'index.js'),
  launchArgs: ['--disable-extensions', '--disable-workspace-trust', '--skip-welcome', '--skip-release-notes'],
}).catch((e) => { console.error(`test:vscode: ${e.message ?? e}`); return 1; });
process.exit(code);
