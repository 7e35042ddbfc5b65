import type * as CliProgress from 'cli-progress';

/** A progress bar on stderr when it is a terminal; silent otherwise (scripts, CI, JSON output). */
export function progressReporter(label: string): { update: (done: number, total: number) => void; stop: () => void } {
  if (!process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  // Required only for a terminal: cli-progress loads readline (not in Node's start-up snapshot).
  const { SingleBar, Presets } = require('cli-progress') as typeof CliProgress;
  const bar = new SingleBar({
    format: `${label} [{bar}] {percentage}% | {done}/{totalMiB} MiB | ETA {eta}s`,
    stream: process.stderr,
    hideCursor: true,
  }, Presets.shades_classic);
  let started = false;
  return {
    update: (done, total) => {
      const payload = { done: (done / 1048576).toFixed(0), totalMiB: (total / 1048576).toFixed(0) };
      if (!started) { bar.start(total, done, payload); started = true; } else bar.update(done, payload);
    },
    stop: () => { if (started) bar.stop(); },
  };
}
