// Ending the command line's process without Node's shutdown wait. When a command is done, Node
// first waits for every V8 background task (DrainTasks, then the platform's join): on this 2-core
// machine that is an optimizing compile of code that will never run again, 30-40 ms after the last
// output of a 4 MiB merge (strace: the main thread in a futex wait on the compiler's thread). The
// native addon's _exit() skips it, but only when nothing else is left to do.
import { loadAddon } from '../io/nativeAddon';

/** What may still be open when the process ends at once: standard output and error, which Linux writes synchronously. */
const STDIO = new Set(['TTYWrap', 'PipeWrap']);

/** Tools that write their results at Node's own exit (coverage, profiles, reports) need it. */
const TOOLING = /--(cpu-prof|heap-prof|prof|report|diagnostic|inspect|trace-)/;

/**
 * Ends the process with `code` now if it would end anyway: no file request, timer, socket or child
 * still active, nothing queued on standard output or error, no tool that writes at exit. The
 * process's 'exit' listeners (the code cache) run first. Otherwise (or without the addon:
 * DISKIMG_NO_FAST_EXIT=1 or not built) it returns and the process ends the usual way.
 */
export function exitWhenIdle(code: number): void {
  if (process.platform !== 'linux' || process.env.NODE_V8_COVERAGE) return;
  if (TOOLING.test(process.execArgv.join(' ')) || TOOLING.test(process.env.NODE_OPTIONS ?? '')) return;
  const addon = loadAddon<{ exitNow(code: number): never }>('fast_exit', 'DISKIMG_NO_FAST_EXIT');
  if (!addon) return;
  // A file's close may still be on its way (a FileHandle's close request): checked again after
  // each turn of the event loop, for up to WAIT_MS (then the usual exit waits for what is left).
  const until = performance.now() + WAIT_MS;
  const attempt = () => {
    const idle = process.stdout.writableLength === 0 && process.stderr.writableLength === 0
      && process.getActiveResourcesInfo().every((r) => STDIO.has(r) || r === 'Immediate');
    if (!idle) {
      if (performance.now() < until) setImmediate(attempt);
      return;
    }
    process.exitCode = code;
    process.emit('exit', code);
    addon.exitNow(code);
  };
  attempt();
}

const WAIT_MS = 50;
