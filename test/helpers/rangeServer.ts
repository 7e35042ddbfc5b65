// A local HTTP server with range support for remote-parent tests: latency, bandwidth cap, faults.
import { createReadStream, statSync } from 'fs';
import * as http from 'http';
import { AddressInfo } from 'net';

export type Fault = 'drop' | '500' | '503' | 'short' | 'stall' | 'no-range' | 'bad-range';

export interface RangeServerOptions {
  /** Delay before each answer (ms). */
  latencyMs?: number;
  /**
   * Bytes per second for the whole server, shared by the responses in flight (0: unlimited): a
   * client that opens more connections gets no more bandwidth, as on a real link.
   */
  bytesPerSecond?: number;
  /** Decides a fault for request number n (1-based) or none. */
  fault?: (n: number, range: string | undefined) => Fault | null;
  /** An ETag override per request (a file "changed" between requests). */
  etag?: (n: number) => string;
}

export interface RangeServer {
  url: (name: string) => string;
  requests: number;
  /** Requests with their Range headers, in order. */
  log: string[];
  close: () => Promise<void>;
}

/** Serves files of `dir` at /name with single byte ranges (206), ETag and Last-Modified. */
export async function startRangeServer(dir: string, options: RangeServerOptions = {}): Promise<RangeServer> {
  const state = { requests: 0, log: [] as string[], linkFree: 0 };
  const sockets = new Set<import('net').Socket>();
  const server = http.createServer((req, res) => {
    const n = ++state.requests;
    const range = req.headers.range;
    state.log.push(`${req.method} ${req.url} ${range ?? '-'}`);
    const fault = options.fault?.(n, range) ?? null;
    const go = () => {
      const file = `${dir}/${decodeURIComponent((req.url ?? '/').slice(1))}`;
      let size: number;
      let mtime: Date;
      try {
        const st = statSync(file);
        size = st.size;
        mtime = st.mtime;
      } catch {
        res.writeHead(404).end();
        return;
      }
      if (fault === 'drop') { req.socket.destroy(); return; }
      if (fault === '500' || fault === '503') { res.writeHead(Number(fault)).end('busy'); return; }
      if (fault === 'stall') return; // never answers
      const etag = options.etag ? options.etag(n) : `"${size}-${mtime.getTime()}"`;
      const m = /^bytes=(\d+)-(\d+)?$/.exec(range ?? '');
      if (!m || fault === 'no-range') {
        res.writeHead(200, { 'Content-Length': size, ETag: etag });
        createReadStream(file).pipe(res);
        return;
      }
      const start = Number(m[1]);
      const end = Math.min(size - 1, m[2] !== undefined ? Number(m[2]) : size - 1);
      if (start >= size) { res.writeHead(416, { 'Content-Range': `bytes */${size}` }).end(); return; }
      const shown = fault === 'bad-range' ? `bytes ${start + 512}-${end + 512}/${size}` : `bytes ${start}-${end}/${size}`;
      const length = end - start + 1;
      res.writeHead(206, { 'Content-Range': shown, 'Content-Length': length, ETag: etag, 'Last-Modified': mtime.toUTCString(), 'Accept-Ranges': 'bytes' });
      if (fault === 'short' && length < 2) { req.socket.destroy(); return; }
      const stream = createReadStream(file, { start, end: fault === 'short' ? start + Math.floor(length / 2) - 1 : end });
      if (fault === 'short') {
        // Half the body, then the connection ends: the client sees a short body.
        stream.on('data', (b) => res.write(b));
        stream.on('end', () => req.socket.destroy());
        return;
      }
      const rate = options.bytesPerSecond ?? 0;
      if (!rate) { stream.pipe(res); return; }
      // Paced: each piece takes its share of the link after the pieces already sent (by any
      // response); the stream pauses until then.
      stream.on('data', (b: Buffer | string) => {
        stream.pause();
        const now = Date.now();
        state.linkFree = Math.max(now, state.linkFree) + (b.length / rate) * 1000;
        const wait = state.linkFree - now;
        res.write(b, () => setTimeout(() => stream.resume(), wait));
      });
      stream.on('end', () => res.end());
    };
    if (options.latencyMs) setTimeout(go, options.latencyMs); else go();
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.keepAliveTimeout = 30000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: (name) => `http://127.0.0.1:${port}/${encodeURIComponent(name)}`,
    get requests() { return state.requests; },
    set requests(v: number) { state.requests = v; },
    log: state.log,
    close: () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); }),
  };
}
