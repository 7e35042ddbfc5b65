import { useParentCache } from '../../chain/chain';
import { syncCachesOnClose } from '../../io/parentCache';
import { Command, Option } from 'commander';
import * as nodePath from 'path';
import { setSynchronousReadLimit, setSynchronousWriteLimit } from '../../io/imageFile';
import { parseDuration } from '../../serve/duration';
import type { ExitOutcome, OnExit } from '../../serve/servedExport';
import type { ExportSpec } from '../../serve/server';

const out = (s: string) => process.stdout.write(s);
/** Reads up to this long are synchronous in the server (see setSynchronousReadLimit). */
const SYNC_READ_LIMIT = 1024 * 1024;
const SYNC_WRITE_LIMIT = 256 * 1024;
const note = (s: string) => process.stderr.write(`${s}\n`);

export { parseDuration } from '../../serve/duration';

/** `HOST:PORT`, `:PORT`, `PORT`, `[::1]:PORT`; the host defaults to 127.0.0.1. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*))?:?(\d+)$/.exec(text.trim());
  if (!m) throw new Error(`--listen: '${text}' is not HOST:PORT`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`--listen: port ${port} is out of range`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function exportSpecs(image: string | undefined, exports: string[]): ExportSpec[] {
  const specs: ExportSpec[] = [];
  if (image) specs.push({ name: nodePath.basename(image, nodePath.extname(image)), image });
  for (const e of exports) {
    const eq = e.indexOf('=');
    if (eq <= 0 || eq === e.length - 1) throw new Error(`--export: '${e}' is not NAME=IMAGE`);
    specs.push({ name: e.slice(0, eq), image: e.slice(eq + 1) });
  }
  return specs;
}

function describeOutcome(o: ExitOutcome): void {
  const label = o.name;
  if (o.error) note(`${label}: on exit (${o.onExit}) failed: ${o.error}; the session is kept`);
  if (o.kept) {
    note(`${label}: kept ${o.kept}`);
    out(`${o.kept}\n`);
  }
  if (o.discarded) note(`${label}: discarded ${o.discarded.join(', ')}; the image is as before`);
  if (o.merged) note(`${label}: merged ${o.merged.join(', ')} into ${o.into}`);
}

export function register(program: Command): void {
  program.command('serve')
    .argument('[image]', 'the image to serve (the default export); more with --export')
    .option('--socket <path>', 'Unix socket to listen on (default <image>.nbd.sock)')
    .option('--listen <host:port>', 'listen on TCP instead (default host 127.0.0.1)')
    .option('--export <name=image>', 'another export (repeatable); exports sharing parents open them once', collect, [] as string[])
    .option('--read-only', 'refuse writes')
    .option('--session', 'undo session: write into a fresh child of each image; the image is never written')
    .addOption(new Option('--on-exit <what>', 'at the end of a session: keep the child, discard it, or merge it into the image').choices(['keep', 'discard', 'merge']))
    .option('--snapshot-every <duration>', 'freeze the top and continue in a new child this often (ms, s, m, h)')
    .option('--keep <n>', 'automatic snapshots to keep; the oldest is merged into its parent beyond that')
    .option('--trace <file>', 'append one JSON line per request')
    .option('--control <path>', 'Unix socket for `diskimg ctl`')
    .option('--tls-cert <file>', 'server certificate (PEM): clients must negotiate TLS (STARTTLS)')
    .option('--tls-key <file>', 'the certificate\'s private key (PEM)')
    .option('--tls-ca <file>', 'CA (PEM) whose client certificates are required')
    .description('serve a chain over NBD (qemu, nbd tools); prints "serving <exports> on <url>" when ready')
    .action(async (image: string | undefined, opts: {
      socket?: string; listen?: string; export: string[]; readOnly?: boolean; session?: boolean; onExit?: OnExit;
      snapshotEvery?: string; keep?: string; trace?: string; control?: string;
      tlsCert?: string; tlsKey?: string; tlsCa?: string;
    }) => {
      if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined)) throw new Error('--tls-cert and --tls-key go together');
      if (opts.tlsCa !== undefined && opts.tlsCert === undefined) throw new Error('--tls-ca needs --tls-cert and --tls-key');
      setSynchronousReadLimit(SYNC_READ_LIMIT);
      setSynchronousWriteLimit(SYNC_WRITE_LIMIT);
      // Many clients over one parent on a server: its bytes are fetched once and kept next to each child.
      useParentCache(true);
      syncCachesOnClose(true);
      if (opts.onExit && !opts.session) throw new Error('--on-exit applies to an undo session: add --session');
      if (opts.keep !== undefined && opts.snapshotEvery === undefined) throw new Error('--keep goes with --snapshot-every');
      if (opts.socket && opts.listen) throw new Error('--socket and --listen are alternatives: give one');
      const keep = opts.keep !== undefined ? Number(opts.keep) : undefined;
      if (keep !== undefined && (!Number.isInteger(keep) || keep < 1)) throw new Error(`--keep: '${opts.keep}' is not a whole number of at least 1`);
      // Loaded when used: the server pulls in net and tls, which other commands need not pay for.
      const { startServer } = await import('../../serve/server');
      const server = await startServer({
        exports: exportSpecs(image, opts.export),
        socket: opts.socket,
        listen: opts.listen ? parseListen(opts.listen) : undefined,
        readOnly: opts.readOnly,
        session: opts.session,
        onExit: opts.onExit,
        snapshotEvery: opts.snapshotEvery !== undefined ? parseDuration(opts.snapshotEvery, '--snapshot-every') : undefined,
        keep,
        trace: opts.trace,
        control: opts.control,
        log: note,
        tls: opts.tlsCert && opts.tlsKey ? { cert: opts.tlsCert, key: opts.tlsKey, ca: opts.tlsCa } : undefined,
      });
      for (const e of server.exports) {
        const label = e.name;
        if (e.session) note(`${label}: undo session: writes go to ${e.session}; ${e.image} is not written (on exit: ${opts.onExit ?? 'keep'})`);
        else if (e.readOnly) note(`${label}: serving ${e.image} read-only`);
        else note(`${label}: writing in place into ${e.chain.top.path}${e.chain.layers.length > 1 ? ` (its ${e.chain.layers.length - 1} ancestor(s) are only read)` : ''}`);
      }
      out(`serving ${server.exports.map((e) => e.name).join(', ')} on ${server.url}\n`);
      const onSignal = () => { void server.stop(); };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const outcomes = await server.stopped;
        for (const o of outcomes) describeOutcome(o);
        if (outcomes.some((o) => o.error)) process.exitCode = 1;
      } finally {
        process.removeListener('SIGINT', onSignal);
        process.removeListener('SIGTERM', onSignal);
      }
    });

  program.command('ctl')
    .argument('<control-socket>')
    .argument('<command>', 'status, snapshot or stop')
    .addOption(new Option('--on-exit <what>', 'with stop: what to do with the session').choices(['keep', 'discard', 'merge']))
    .option('--export <name>', 'with snapshot: only this export')
    .option('--json', 'print the JSON reply')
    .description('talk to a running `diskimg serve --control`')
    .action(async (socket: string, command: string, opts: { onExit?: OnExit; export?: string; json?: boolean }) => {
      if (!['status', 'snapshot', 'stop'].includes(command)) throw new Error(`unknown ctl command '${command}': use status, snapshot or stop`);
      const request: Record<string, unknown> = { command };
      if (opts.onExit) request.onExit = opts.onExit;
      if (opts.export !== undefined) request.export = opts.export;
      const { controlRequest } = await import('../../serve/control');
      const reply = await controlRequest(socket, request);
      if (typeof reply.error === 'string') throw new Error(`${socket}: ${reply.error}`);
      if (opts.json) {
        out(`${JSON.stringify(reply)}\n`);
        return;
      }
      if (command === 'snapshot') {
        for (const t of reply.tops as Array<{ top: string }>) out(`${t.top}\n`);
      } else if (command === 'stop') {
        for (const o of reply.exports as ExitOutcome[]) {
          if (o.error) out(`${o.name}: ${o.error}; kept ${o.kept}\n`);
          else if (o.kept) out(`${o.name}: kept ${o.kept}\n`);
          else if (o.discarded) out(`${o.name}: discarded ${o.discarded.join(', ')}\n`);
          else if (o.merged) out(`${o.name}: merged ${o.merged.join(', ')} into ${o.into}\n`);
          else out(`${o.name}: stopped\n`);
        }
      } else {
        for (const e of (reply as { exports: Array<Record<string, unknown>> }).exports) {
          out(`export ${e.name || '(default)'}: top ${e.top}\n`);
          out(`  chain: ${(e.chain as string[]).join(' <- ')}\n`);
          out(`  clients ${e.clients}, read ${e.bytesRead} bytes, written ${e.bytesWritten} bytes\n`);
          for (const s of e.snapshots as Array<{ path: string; created: string }>) out(`  snapshot ${s.created}  ${s.path}\n`);
        }
      }
    });
}
