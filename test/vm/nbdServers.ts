// Starting and stopping NBD servers as real processes for the VM, fuzz and serve tests: qemu-nbd
// (the reference) and, when built, `diskimg serve`.
import { ChildProcess, spawn } from 'child_process';
import { existsSync } from 'fs';

export interface RunningServer {
  url: string;
  socket: string;
  proc: ChildProcess;
  output: () => string;
  /** Sends `signal` and waits for the process to exit; resolves with its exit code (or signal name). */
  stop: (signal?: NodeJS.Signals) => Promise<number | string>;
}

function waitExit(proc: ChildProcess): Promise<number | string> {
  if (proc.exitCode !== null) return Promise.resolve(proc.exitCode);
  if (proc.signalCode !== null) return Promise.resolve(proc.signalCode);
  return new Promise((resolve) => proc.once('exit', (code, sig) => resolve(code ?? sig ?? -1)));
}

/** Spawns `cmd args` and waits until `ready(output)` holds (or the socket exists), at most `timeoutMs`. */
export async function startServer(
  cmd: string,
  args: string[],
  socket: string,
  opts: { ready?: (output: string) => boolean; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<RunningServer> {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
  let out = '';
  proc.stdout!.on('data', (d) => { out += d.toString(); if (out.length > 1 << 20) out = out.slice(-(1 << 19)); });
  proc.stderr!.on('data', (d) => { out += d.toString(); if (out.length > 1 << 20) out = out.slice(-(1 << 19)); });
  const ready = opts.ready ?? (() => existsSync(socket));
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  while (!ready(out)) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${cmd} exited before it was ready: ${out}`);
    if (Date.now() > deadline) { proc.kill('SIGKILL'); throw new Error(`${cmd} not ready after ${opts.timeoutMs ?? 20_000} ms: ${out}`); }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    url: `nbd+unix:///?socket=${socket}`,
    socket,
    proc,
    output: () => out,
    stop: (signal = 'SIGTERM') => {
      const done = waitExit(proc);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return done;
    },
  };
}

/** qemu-nbd serving `image` (format `format`) on a Unix socket, for any number of clients in turn. */
export function startQemuNbd(image: string, format: string, socket: string, extra: string[] = []): Promise<RunningServer> {
  return startServer('qemu-nbd', ['--persistent', '--shared=8', '--socket', socket, '--format', format, '--cache=writeback', ...extra, image], socket);
}
