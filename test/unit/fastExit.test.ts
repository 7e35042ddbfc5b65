// The CLI's fast exit (src/cli/fastExit.ts, native/fastExit.c): the process ends with the command's
// status and every byte of its output, its 'exit' listeners (the code cache) run once, and it only
// ends early when nothing else is left to do.
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { closeSync, openSync, writeSync, writeFileSync, ftruncateSync } from 'fs';
import * as path from 'path';
import { loadAddon } from '../../src/io/nativeAddon';
import { CLI, ROOT, tempDir } from '../helpers/util';

const ADDON = path.join(ROOT, 'native', 'build', 'Release', 'fast_exit.node');
const FAST_EXIT = path.join(ROOT, 'src', 'cli', 'fastExit.ts');

/** Runs a script under tsx (the sources, as the tests do) and returns its status and output. */
function script(dir: string, name: string, body: string): { status: number | null; out: string } {
  const file = path.join(dir, name);
  // The body runs once tsx's own start-up requests are done (they would count as work left).
  const [imports, rest] = [body.split('\n').filter((l) => /^\s*import /.test(l)), body.split('\n').filter((l) => !/^\s*import /.test(l))];
  writeFileSync(file, `${imports.join('\n')}\nsetTimeout(() => {\n${rest.join('\n')}\n}, 300);\n`);
  const r = spawnSync(process.execPath, ['--require', 'tsx/cjs', file], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, DISKIMG_NO_FAST_EXIT: '' } });
  return { status: r.status, out: r.stdout + r.stderr };
}

describe('fast exit of the CLI (src/cli/fastExit.ts)', function () {
  this.timeout(60000);
  const t = tempDir('diskimg-fastexit-');
  after(() => t.cleanup());

  before(function () {
    if (process.platform !== 'linux' || !loadAddon('fast_exit', 'DISKIMG_NO_FAST_EXIT_TEST')) this.skip();
  });

  it('the addon ends the process at once with the status given: Node\'s exit listeners do not run', () => {
    const r = spawnSync(process.execPath, ['-e', `process.on('exit', () => console.log('listener')); console.log('before'); require(${JSON.stringify(ADDON)}).exitNow(3); console.log('after')`], { encoding: 'utf8' });
    assert.equal(r.status, 3);
    assert.equal(r.stdout, 'before\n');
  });

  it('with nothing left to do it exits with the code, after the exit listeners ran once; an unref\'d timer does not hold it', () => {
    const r = script(t.dir, 'idle.ts', `
      import { exitWhenIdle } from ${JSON.stringify(FAST_EXIT)};
      let n = 0;
      process.on('exit', (c) => { n++; process.stdout.write('exit listener ' + n + ' code ' + c + '\\n'); });
      setTimeout(() => process.stdout.write('late timer\\n'), 300).unref();
      exitWhenIdle(5);
    `);
    assert.equal(r.status, 5);
    assert.equal(r.out, 'exit listener 1 code 5\n');
  });

  it('a timer or a file request still active: the process ends the usual way, after them', () => {
    const r = script(t.dir, 'busy.ts', `
      import { exitWhenIdle } from ${JSON.stringify(FAST_EXIT)};
      import { promises as fsp } from 'fs';
      let n = 0;
      process.on('exit', () => { n++; process.stdout.write('exit listener ' + n + '\\n'); });
      setTimeout(() => process.stdout.write('timer ran\\n'), 200);
      fsp.readFile(${JSON.stringify(__filename)}).then(() => process.stdout.write('read done\\n'));
      exitWhenIdle(6);
    `);
    assert.equal(r.status, 0);
    assert.equal(r.out, 'read done\ntimer ran\nexit listener 1\n');
  });

  it('a close still on its way is waited for, then the process ends at once', () => {
    const r = script(t.dir, 'closing.ts', `
      import { exitWhenIdle } from ${JSON.stringify(FAST_EXIT)};
      import { promises as fsp } from 'fs';
      (async () => {
        const fh = await fsp.open(${JSON.stringify(__filename)}, 'r');
        void fh.close().then(() => process.stdout.write('closed\\n'));
        setTimeout(() => process.stdout.write('late timer\\n'), 500).unref();
        exitWhenIdle(7);
      })();
    `);
    assert.equal(r.status, 7, r.out);
    assert.equal(r.out, 'closed\n');
  });

  it('the CLI: the same status and every byte of a large output through a pipe read late, with and without the fast exit', () => {
    // A raw file with 2,048 data runs: map --json prints ~230 KB, more than a pipe holds.
    const raw = path.join(t.dir, 'holes.raw');
    const fd = openSync(raw, 'w');
    ftruncateSync(fd, 128 * 1024 * 1024);
    const page = Buffer.alloc(4096, 0x5a);
    for (let at = 0; at < 128 * 1024 * 1024; at += 64 * 1024) writeSync(fd, page, 0, page.length, at);
    closeSync(fd);
    // A real pipe (sh's), its reader starting late: the CLI fills it and waits for the reader.
    const run = (fast: boolean) => {
      const r = spawnSync('sh', ['-c', `"$0" map "$1" --json | (sleep 0.3; cat)`, CLI, raw], { env: { ...process.env, DISKIMG_NO_FAST_EXIT: fast ? '' : '1' }, maxBuffer: 16 * 1024 * 1024 });
      const status = spawnSync('sh', ['-c', `"$0" map "$1" --json >/dev/null; echo $?`, CLI, raw], { env: { ...process.env, DISKIMG_NO_FAST_EXIT: fast ? '' : '1' }, encoding: 'utf8' }).stdout.trim();
      return { code: Number(status), out: r.stdout };
    };
    const fast = run(true);
    const usual = run(false);
    assert.equal(fast.code, 0);
    assert.equal(usual.code, 0);
    assert.ok(fast.out.length > 200000, `${fast.out.length} bytes`);
    assert.ok(fast.out.equals(usual.out), 'outputs differ');
    const extents = JSON.parse(fast.out.toString()) as Array<{ data: boolean }>;
    assert.equal(extents.filter((e) => e.data).length, 2048);
    // An error keeps its status and its one line.
    const bad = spawnSync(CLI, ['info', path.join(t.dir, 'missing.vhd')], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /^diskimg: .*missing\.vhd.*\n$/);
  });
});
