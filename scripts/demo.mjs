// The main job: `npm run demo` (after the build) generates the demo chain in .demo/ and opens it in
// a real VS Code with the extension: desktop VS Code (--extensionDevelopmentPath) when `code` is on
// the PATH, otherwise code-server in the browser (the URL is printed; Ctrl+C stops it).
//   --browser   use code-server even when `code` exists
//   --smoke     start code-server, check that the editor page answers, stop (used by the tests)
//   DEMO_PORT   port for code-server (default: 8080 when free, else any free port)
//   DEMO_DIR    where to put the demo (default .demo/ in the repository)
import { execFileSync, spawnSync } from 'node:child_process';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeDemoChain } from './makeDemoChain.mjs';
import { ensureCodeServer, freePort, packageVsix, startCodeServer } from './codeServer.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
const smoke = args.has('--smoke');
const demoDir = resolve(process.env.DEMO_DIR ?? join(root, '.demo'));
const chain = makeDemoChain(join(demoDir, 'images'));
const show = (...a) => {
  console.log(`\n$ diskimg ${a.join(' ')}`);
  console.log(execFileSync(process.execPath, [join(root, 'dist', 'cli.js'), ...a]).toString().trimEnd());
};
show('info', chain.child2);

const hasCode = !args.has('--browser') && !smoke && spawnSync('sh', ['-c', 'command -v code'], { stdio: 'ignore' }).status === 0;
if (hasCode) {
  console.log(`\nOpening ${chain.child2} in VS Code with the extension from ${root}`);
  spawnSync('code', ['--new-window', `--extensionDevelopmentPath=${root}`, join(demoDir, 'images'), chain.child2], { stdio: 'inherit' });
  process.exit(0);
}

console.log('\nStarting code-server (VS Code in the browser); the first run installs it into a cache (about a minute).');
const entry = ensureCodeServer();
const vsix = packageVsix(join(demoDir, 'vsix'));
const wanted = Number(process.env.DEMO_PORT) || await portOr(8080);
const server = await startCodeServer({ entry, home: join(demoDir, 'code-server'), folder: join(demoDir, 'images'), vsix, port: wanted });
const url = `${server.url}/?folder=${encodeURIComponent(join(demoDir, 'images'))}`;
if (smoke) {
  const page = await fetch(url);
  const ok = page.ok && (await page.text()).includes('workbench');
  await server.stop();
  console.log(ok ? `demo ok: ${url}` : 'demo failed: the workbench page did not load');
  process.exit(ok ? 0 : 1);
}
console.log(`\nOpen ${url}\nthen click child2.vhd (or any .vhd) in the explorer. Ctrl+C stops the server.`);
const stop = async () => { await server.stop(); process.exit(0); };
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
server.process.on('exit', (code) => { console.log(`code-server exited (${code})`); process.exit(code ?? 1); });

async function portOr(preferred) {
  const { createServer } = await import('node:net');
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => freePort().then(res));
    s.listen(preferred, '127.0.0.1', () => s.close(() => res(preferred)));
  });
}
