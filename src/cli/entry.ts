// The `diskimg` executable (dist/cli.js): a few hundred bytes that size the I/O thread pool, answer
// --version without loading anything, and load the command line (dist/cliMain.js) through a V8 code
// cache so that every later run skips compiling it.
// Node's built-in modules are required inside loadMain, not imported at the top: `--version` then
// loads none of them (vm, module and os are not in Node's start-up snapshot; ~10 ms of CPU).
import type * as FsModule from 'fs';
import type * as NodeModuleModule from 'module';
import type * as OsModule from 'os';
import type * as PathModule from 'path';
import type * as VmModule from 'vm';

declare const DISKIMG_VERSION: string;

// Reads, zero checks and writes overlap in libuv's pool; it is sized once, here, before its first
// use (for every command, serve too). Four threads (libuv's default) starve the pipeline when two
// files are read and one written. serve sends only reads over 1 MiB and fsyncs there (shorter
// reads are synchronous): 2 MiB reads over 4 connections, 5 interleaved runs, load 2.3-2.9,
// median 1.06 s with 4 threads, 0.95 s with 8, 1.21 s with 16, server CPU alike.
process.env.UV_THREADPOOL_SIZE ??= '8';

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  process.stdout.write(`${DISKIMG_VERSION}\n`);
} else {
  loadMain().run(args);
}

interface CliMain { run(args: string[]): void }

/**
 * Requires dist/cliMain.js, compiled from a code cache in the temporary folder when one matches
 * (Node 22's module.enableCompileCache does the same; Node 20 lacks it). Any problem with the cache
 * falls back to a plain require: the cache is only ever a speed-up.
 */
function loadMain(): CliMain {
  const fs = require('fs') as typeof FsModule;
  const nodeModule = require('module') as typeof NodeModuleModule;
  const os = require('os') as typeof OsModule;
  const path = require('path') as typeof PathModule;
  const vm = require('vm') as typeof VmModule;
  const file = path.join(__dirname, 'cliMain.js');
  const enable = (nodeModule as unknown as { enableCompileCache?: (dir?: string) => unknown }).enableCompileCache;
  if (typeof enable === 'function' || process.env.DISKIMG_NO_CODE_CACHE) {
    try { enable?.(); } catch { /* the cache is optional */ }
    return require(file) as CliMain;
  }
  let source: string;
  let cacheFile: string;
  try {
    const st = fs.statSync(file);
    source = fs.readFileSync(file, 'utf8');
    const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
    cacheFile = path.join(os.tmpdir(), `diskimg-code-cache-${uid}`, `${process.version}-${st.size}-${Math.floor(st.mtimeMs)}.bin`);
  } catch {
    return require(file) as CliMain;
  }
  let cachedData: Buffer | undefined;
  try { cachedData = fs.readFileSync(cacheFile); } catch { cachedData = undefined; }
  const wrapper = `(function (exports, require, module, __filename, __dirname) {${source}\n})`;
  const script = new vm.Script(wrapper, { filename: file, cachedData });
  const mod = { exports: {} as CliMain };
  const fn = script.runInThisContext() as (e: unknown, r: NodeRequire, m: unknown, f: string, d: string) => void;
  fn.call(mod.exports, mod.exports, nodeModule.createRequire(file), mod, file, path.dirname(file));
  if (cachedData === undefined || script.cachedDataRejected) {
    // Written when the process exits, so it holds every function this command compiled (290 KB
    // against 233 KB right after loading: 5-9 ms less per later export); atomic rename.
    process.once('exit', () => {
      try {
        fs.mkdirSync(path.dirname(cacheFile), { recursive: true, mode: 0o700 });
        const tmp = `${cacheFile}.${process.pid}`;
        fs.writeFileSync(tmp, script.createCachedData());
        fs.renameSync(tmp, cacheFile);
      } catch { /* a read-only or full temp folder only costs the speed-up */ }
    });
  }
  return mod.exports;
}
