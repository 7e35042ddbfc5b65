import * as tls from 'tls';
import { readFileSync as readTlsFile } from 'fs';
import { existsSync, lstatSync, unlinkSync } from 'fs';
import { createServer, Server, Socket } from 'net';
import * as nodePath from 'path';
import { DiskImageError } from '../format/errors';
import { serveConnection } from './connection';
import { ControlServer } from './control';
import { ExitOutcome, ExportStatus, OnExit, ServedExport } from './servedExport';
import { realKey, SharedLayers } from './sharedLayers';
import { TraceLog } from './trace';

export interface ExportSpec {
  name: string;
  image: string;
}

export interface ServeOptions {
  /** The first is the default export (the one the empty name reaches). */
  exports: ExportSpec[];
  /** Unix socket path (default `<first image>.nbd.sock`); ignored with `listen`. */
  socket?: string;
  /** TCP instead of a Unix socket; port 0 picks a free one. */
  listen?: { host: string; port: number };
  readOnly?: boolean;
  /** Serve a fresh differencing child of each image; the images are never written. */
  session?: boolean;
  onExit?: OnExit;
  /** Milliseconds between automatic snapshots. */
  snapshotEvery?: number;
  /** Automatic snapshots kept before the oldest is folded into its parent. */
  keep?: number;
  trace?: string;
  control?: string;
  /** Informational lines (what is written where, bad clients). */
  log?: (line: string) => void;
  /** PEM files: with cert and key every client must negotiate STARTTLS; with ca, client certificates signed by it are required. */
  tls?: { cert: string; key: string; ca?: string };
}

export interface StatusReply {
  exports: ExportStatus[];
}

export interface RunningServer {
  /** The NBD URL of the default export. */
  url: string;
  /** Unix socket path, or null for TCP. */
  socketPath: string | null;
  /** The TCP port, or null for a Unix socket. */
  port: number | null;
  exports: ServedExport[];
  status(): StatusReply;
  /** Snapshots one export (by name) or every export; returns the new tops. */
  snapshot(exportName?: string): Promise<Array<{ name: string; top: string }>>;
  /** Stops serving and applies `onExit` (default: the one given at start) to sessions; once. */
  stop(onExit?: OnExit): Promise<ExitOutcome[]>;
  close(): Promise<ExitOutcome[]>;
  /** Resolves when the server has stopped (by stop(), close() or `ctl stop`). */
  stopped: Promise<ExitOutcome[]>;
}

/** `nbd+unix:///?socket=/x.sock`, `nbd://127.0.0.1:10809/`, with an export name when not the default. */
export function nbdUrl(where: { socket?: string; host?: string; port?: number }, exportName = ''): string {
  const name = encodeURIComponent(exportName);
  if (where.socket) return `nbd+unix:///${name}?socket=${where.socket}`;
  const host = where.host!.includes(':') ? `[${where.host}]` : where.host;
  return `nbd://${host}:${where.port}/${name}`;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Starts an NBD server over one or more chains; resolves once it accepts connections. */
export async function startServer(options: ServeOptions): Promise<RunningServer> {
  const log = options.log ?? (() => undefined);
  if (options.exports.length === 0) throw new Error('nothing to serve: give an image or --export NAME=IMAGE');
  const names = new Set<string>();
  for (const e of options.exports) {
    if (names.has(e.name)) throw new Error(`export name '${e.name}' is given twice`);
    names.add(e.name);
  }
  if (options.session && options.readOnly) throw new Error('--session and --read-only do not go together (a session writes into its own child)');
  if (options.keep !== undefined && (!Number.isInteger(options.keep) || options.keep < 1)) throw new Error('--keep must be a whole number of at least 1');

  const shared = new SharedLayers();
  const exports: ServedExport[] = [];
  const closeAll = async () => {
    for (const e of exports) await e.stop('discard').catch(() => undefined);
  };
  try {
    for (const spec of options.exports) {
      exports.push(await ServedExport.open(spec.name, spec.image, { readOnly: !!options.readOnly, session: !!options.session, shared }));
    }
    checkNoOverlap(exports);
  } catch (e) {
    await closeAll();
    throw e;
  }

  const trace = options.trace ? new TraceLog(nodePath.resolve(options.trace)) : null;
  const sockets = new Set<Socket>();
  const byName = new Map(exports.map((e) => [e.name, e]));
  const host = {
    findExport: (name: string) => (name === '' ? exports[0] : byName.get(name)),
    exportNames: () => exports.map((e) => e.name),
    trace,
    log,
    tls: options.tls ? {
      context: tls.createSecureContext({
        cert: readTlsFile(options.tls.cert),
        key: readTlsFile(options.tls.key),
        ca: options.tls.ca ? readTlsFile(options.tls.ca) : undefined,
      }),
      verifyClient: options.tls.ca !== undefined,
    } : undefined,
  };
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    void serveConnection(socket, host);
  });
  server.maxConnections = 256;

  let socketPath: string | null = null;
  let port: number | null = null;
  let url: string;
  try {
    if (options.listen) {
      const { host: h, port: p } = options.listen;
      await listen(server, { host: h, port: p });
      port = (server.address() as { port: number }).port;
      url = nbdUrl({ host: h, port });
      if (!isLoopback(h) && !options.tls) log(`warning: listening on ${h}: NBD has no authentication without TLS; anyone who can reach this port can read and write the disk`);
    } else {
      socketPath = nodePath.resolve(options.socket ?? `${exports[0].image}.nbd.sock`);
      removeStaleSocket(socketPath);
      await listen(server, { path: socketPath });
      url = nbdUrl({ socket: socketPath });
    }
    // With TLS the URL says so (nbds://): clients that speak plaintext are refused.
    if (options.tls) url = url.replace(/^nbd/, 'nbds');
  } catch (e) {
    await closeAll();
    await trace?.close();
    throw e;
  }

  let timer: NodeJS.Timeout | null = null;
  let snapshotting: Promise<unknown> = Promise.resolve();
  const snapshot = async (exportName?: string, onlyChanged = false) => {
    const targets = exportName === undefined ? exports : [host.findExport(exportName)].filter((e): e is ServedExport => !!e);
    if (targets.length === 0) throw new Error(`no export named '${exportName}'`);
    const run = snapshotting.then(async () => {
      const out: Array<{ name: string; top: string }> = [];
      for (const e of targets) {
        if (onlyChanged && !e.changedSinceSnapshot) continue;
        out.push({ name: e.name, top: await e.snapshot(options.keep, (frozen) => trace?.record(e.name, 'snapshot', 0, 0, nodePath.basename(frozen))) });
      }
      return out;
    });
    snapshotting = run.catch(() => undefined);
    return run;
  };
  if (options.snapshotEvery !== undefined && !options.readOnly) {
    timer = setInterval(() => {
      // An export nobody wrote to since its last snapshot keeps its top (no empty layers).
      snapshot(undefined, true).then(
        (tops) => tops.length > 0 && log(`snapshot: ${tops.map((t) => `${t.name || '(default)'} continues in ${t.top}`).join('; ')}`),
        (e) => log(`snapshot failed: ${(e as Error).message}`),
      );
    }, options.snapshotEvery);
  }

  const status = (): StatusReply => ({ exports: exports.map((e) => e.status()) });
  let control: ControlServer | null = null;
  let stopping: Promise<ExitOutcome[]> | null = null;
  let resolveStopped!: (o: ExitOutcome[]) => void;
  const stopped = new Promise<ExitOutcome[]>((r) => { resolveStopped = r; });
  const stop = (onExit?: OnExit): Promise<ExitOutcome[]> => {
    if (stopping) return stopping;
    stopping = (async () => {
      if (timer) clearInterval(timer);
      server.close(); // no new connections; the callback would wait for the open ones

      await snapshotting;
      const outcomes: ExitOutcome[] = [];
      // Drain and close every export first (their requests finish), then hang up on the clients.
      for (const e of exports) outcomes.push(await e.stop(onExit ?? options.onExit ?? null));
      for (const s of sockets) s.destroy();
      if (socketPath) { try { unlinkSync(socketPath); } catch { /* gone */ } }
      await trace?.close();
      await control?.close();
      resolveStopped(outcomes);
      return outcomes;
    })();
    return stopping;
  };

  if (options.control) {
    try {
      control = await ControlServer.start(nodePath.resolve(options.control), {
        status,
        snapshot: (name) => snapshot(name),
        revert: (snapshotPath, name) => {
          const e = name === undefined ? exports.find((x) => x.snapshots.some((s) => nodePath.resolve(s.path) === nodePath.resolve(snapshotPath))) : host.findExport(name);
          if (!e) throw new Error(`no export has the snapshot ${snapshotPath}`);
          const run = snapshotting.then(() => e.revert(snapshotPath));
          snapshotting = run.catch(() => undefined);
          return run;
        },
        stop: (onExit) => {
          if (onExit && !exports.some((e) => e.session) && onExit !== 'keep') {
            throw new Error(`--on-exit ${onExit} applies to an undo session (--session); this server writes in place`);
          }
          return stop(onExit);
        },
      });
    } catch (e) {
      await stop('discard');
      throw e;
    }
  }

  return { url, socketPath, port, exports, status, snapshot, stop, close: () => stop(), stopped };
}

/** An image written through one export must not be read as an ancestor by another (or written twice). */
function checkNoOverlap(exports: ServedExport[]): void {
  for (const a of exports) {
    if (a.readOnly) continue;
    const top = realKey(a.chain.top.path);
    for (const b of exports) {
      if (a === b) continue;
      const hit = b.chain.layers.findIndex((l) => realKey(l.path) === top);
      if (hit >= 0) {
        throw new DiskImageError(a.chain.top.path, hit === 0
          ? `is served by both export '${a.name}' and export '${b.name}'`
          : `is written by export '${a.name}' and is an ancestor of export '${b.name}': writes would show through`, undefined, undefined, 'EOVERLAP');
      }
    }
  }
}

function listen(server: Server, where: { path?: string; host?: string; port?: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    server.once('error', onError);
    server.listen(where, () => {
      server.removeListener('error', onError);
      resolve();
    });
  });
}

/** A socket file left by a server that was killed: the write locks already say nobody serves these images. */
function removeStaleSocket(path: string): void {
  if (!existsSync(path)) return;
  const st = lstatSync(path);
  if (!st.isSocket()) throw new Error(`${path}: exists and is not a socket; choose another --socket`);
  unlinkSync(path);
}
