import { existsSync, lstatSync, unlinkSync } from 'fs';
import { connect, createServer, Server, Socket } from 'net';
import { OnExit } from './servedExport';

/**
 * `--control PATH`: a Unix socket taking one JSON request a line and answering each with one JSON
 * line. Requests: `{"command":"status"}`, `{"command":"snapshot"[, "export": name]}`,
 * `{"command":"stop"[, "onExit": "keep"|"discard"|"merge"]}`, `{"command":"revert","snapshot":path[, "export": name]}`. Errors come back as `{"error": text}`.
 */
export interface ControlHandlers {
  status(): unknown;
  snapshot(exportName?: string): Promise<Array<{ name: string; top: string }>>;
  stop(onExit?: OnExit): Promise<unknown>;
  /** Back to a snapshot (a path from status): the layers above it are deleted. */
  revert?(snapshotPath: string, exportName?: string): Promise<{ top: string; discarded: string[] }>;
}

const MAX_LINE = 64 * 1024;
const ON_EXIT = ['keep', 'discard', 'merge'];

export class ControlServer {
  /** Each client with the promise of its last queued reply. */
  private readonly clients = new Map<Socket, () => Promise<void>>();

  private constructor(private readonly server: Server, readonly path: string) {}

  static async start(path: string, handlers: ControlHandlers): Promise<ControlServer> {
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket()) throw new Error(`${path}: exists and is not a socket; choose another --control`);
      unlinkSync(path);
    }
    let self!: ControlServer;
    const server = createServer((socket) => {
      let queue: Promise<void> = Promise.resolve();
      self.clients.set(socket, () => queue);
      socket.on('close', () => self.clients.delete(socket));
      socket.on('error', () => undefined);
      let buffered = '';
      socket.on('data', (d) => {
        buffered += d.toString('utf8');
        if (buffered.length > MAX_LINE && !buffered.includes('\n')) {
          socket.end(`${JSON.stringify({ error: 'request line too long' })}\n`);
          return;
        }
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (!line) continue;
          queue = queue.then(async () => {
            const reply = await answer(line, handlers);
            if (!socket.destroyed) socket.write(`${JSON.stringify(reply)}\n`);
          });
        }
      });
    });
    self = new ControlServer(server, path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => { server.removeListener('error', reject); resolve(); });
    });
    return self;
  }

  async close(): Promise<void> {
    // Stops listening now; the callback would wait for every client to hang up.
    this.server.close();
    // Hang up once each client's pending replies (the stop reply among them) are written; not awaited,
    // because the stop request's reply waits for this close.
    for (const [c, queue] of this.clients) void queue().then(() => c.end());
    try { unlinkSync(this.path); } catch { /* gone */ }
  }
}

/** A request is a JSON object naming its command (`command`, or `cmd`/`op`), or the bare word. */
function parseRequest(line: string): Record<string, unknown> {
  let req: unknown;
  try {
    req = JSON.parse(line);
  } catch {
    req = line;
  }
  if (typeof req === 'string') return { command: req };
  if (!req || typeof req !== 'object' || Array.isArray(req)) throw new Error('a request is a JSON object like {"command":"status"}');
  const r = req as Record<string, unknown>;
  return { ...r, command: r.command ?? r.cmd ?? r.op };
}

async function answer(line: string, handlers: ControlHandlers): Promise<unknown> {
  try {
    const req = parseRequest(line);
    switch (req.command) {
      case 'status':
        return handlers.status();
      case 'snapshot': {
        const name = typeof req.export === 'string' ? req.export : undefined;
        const tops = await handlers.snapshot(name);
        return { top: tops[0].top, tops };
      }
      case 'revert': {
        if (!handlers.revert) throw new Error('this server cannot revert');
        if (typeof req.snapshot !== 'string') throw new Error('revert needs "snapshot": the path of a snapshot from status');
        return await handlers.revert(req.snapshot, typeof req.export === 'string' ? req.export : undefined);
      }
      case 'stop': {
        const onExit = req.onExit ?? req.on_exit;
        if (onExit !== undefined && (typeof onExit !== 'string' || !ON_EXIT.includes(onExit))) {
          throw new Error(`onExit must be one of ${ON_EXIT.join(', ')}`);
        }
        const outcomes = await handlers.stop(onExit as OnExit | undefined);
        return { stopped: true, exports: outcomes };
      }
      default:
        throw new Error(`unknown command ${JSON.stringify(req.command)}: use status, snapshot, revert or stop`);
    }
  } catch (e) {
    return { error: (e as Error).message };
  }
}

/** Sends one request to a control socket and resolves with the JSON reply. */
export function controlRequest(path: string, request: Record<string, unknown>, timeoutMs = 600_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let buffered = '';
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`${path}: no reply within ${timeoutMs / 1000} s`)); }, timeoutMs);
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('data', (d) => {
      buffered += d.toString('utf8');
      const nl = buffered.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        socket.end();
        try {
          resolve(JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>);
        } catch (e) {
          reject(new Error(`${path}: the reply is not JSON: ${(e as Error).message}`));
        }
      }
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(`${path}: cannot reach the control socket: ${e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? 'no server is listening there' : e.message}`));
    });
    socket.on('close', () => {
      clearTimeout(timer);
      if (!buffered.includes('\n')) reject(new Error(`${path}: the server closed the connection without a reply`));
    });
  });
}
