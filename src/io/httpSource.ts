// A parent image behind an HTTP(S) server, read with range requests.
import * as http from 'http';
import * as https from 'https';
import { DiskImageError } from '../format/errors';
import { ByteSource } from './byteSource';

/** Reads are fetched in aligned runs of this size: small reads of a chain become ≥ 1 MiB requests. */
export const HTTP_CHUNK = 1024 * 1024;
/** Longest single request (consecutive missing chunks are coalesced up to this). */
const MAX_REQUEST = 8 * HTTP_CHUNK;
/** Chunks kept in memory (most recent first out): a full sequential read stays bounded. */
const MEMORY_CHUNKS = 32;
/** Chunks fetched ahead of a sequential reader. */
const READ_AHEAD_CHUNKS = 8;
const TRIES = 5;

function envNumber(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

/** A failure worth another try (the server or the network hiccupped), with its one-line reason. */
class Transient extends Error {}

export class HttpSource implements ByteSource {
  readonly kind: string;
  requests = 0;
  private readonly agent: http.Agent;
  private readonly chunks = new Map<number, Buffer>();
  private readonly inflight = new Map<number, Promise<void>>();
  private lastChunk = -1;
  private closed = false;

  private constructor(
    readonly location: string,
    private readonly url: URL,
    readonly size: number,
    readonly validator: string,
    readonly mtime: Date | null,
    agent: http.Agent,
  ) {
    this.kind = url.protocol.replace(':', '');
    this.agent = agent;
  }

  /** Learns size and validator with a one-byte range request (so servers without ranges are refused now). */
  static async open(location: string): Promise<HttpSource> {
    const url = new URL(location);
    const Agent = url.protocol === 'https:' ? https.Agent : http.Agent;
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    const probe = new HttpSource(location, url, 0, '', null, agent);
    try {
      const r = await probe.withRetries(() => probe.request(0, 1, null));
      const total = r.total;
      const validator = r.etag ?? r.lastModified ?? '';
      const mtime = r.lastModified ? new Date(r.lastModified) : null;
      const source = new HttpSource(location, url, total, validator, mtime && !Number.isNaN(mtime.getTime()) ? mtime : null, agent);
      source.requests = probe.requests;
      return source;
    } catch (e) {
      agent.destroy();
      throw e;
    }
  }

  async read(offset: number, target: Uint8Array): Promise<number> {
    const end = Math.min(offset + target.length, this.size);
    if (end <= offset) return 0;
    const first = Math.floor(offset / HTTP_CHUNK);
    const last = Math.floor((end - 1) / HTTP_CHUNK);
    // A reader going forward gets the next chunks fetched while it works on these.
    const sequential = first === this.lastChunk || first === this.lastChunk + 1;
    this.lastChunk = last;
    const want = sequential ? Math.min(last + READ_AHEAD_CHUNKS, Math.floor((this.size - 1) / HTTP_CHUNK)) : last;
    this.fetchMissing(first, want);
    for (let c = first; c <= last; c++) {
      let data = this.chunks.get(c);
      while (!data) {
        const pending = this.inflight.get(c);
        if (pending) await pending;
        else this.fetchMissing(c, c);
        data = this.chunks.get(c);
        if (!data && !this.inflight.has(c)) {
          // The fetch failed: fetch again in this call so its error (after retries) reaches the reader.
          await this.fetchRun(c, c);
          data = this.chunks.get(c);
        }
      }
      const chunkStart = c * HTTP_CHUNK;
      const from = Math.max(offset, chunkStart);
      const to = Math.min(end, chunkStart + data.length);
      Buffer.from(target.buffer, target.byteOffset, target.length).set(data.subarray(from - chunkStart, to - chunkStart), from - offset);
    }
    return end - offset;
  }

  /** Starts requests for chunks first..last not held nor in flight, consecutive ones coalesced. */
  private fetchMissing(first: number, last: number): void {
    let runStart = -1;
    const flush = (upTo: number) => {
      if (runStart < 0) return;
      for (let s = runStart; s <= upTo; s += MAX_REQUEST / HTTP_CHUNK) {
        const e = Math.min(upTo, s + MAX_REQUEST / HTTP_CHUNK - 1);
        const p = this.fetchRun(s, e);
        p.catch(() => undefined); // a reader that needs it awaits it and sees the error
        for (let c = s; c <= e; c++) this.inflight.set(c, p);
      }
      runStart = -1;
    };
    for (let c = first; c <= last; c++) {
      if (this.chunks.has(c) || this.inflight.has(c)) { flush(c - 1); continue; }
      if (runStart < 0) runStart = c;
    }
    flush(last);
  }

  private async fetchRun(first: number, last: number): Promise<void> {
    const start = first * HTTP_CHUNK;
    const end = Math.min(this.size, (last + 1) * HTTP_CHUNK);
    try {
      const r = await this.withRetries(() => this.request(start, end - start, this.validator));
      for (let c = first; c <= last; c++) {
        const s = c * HTTP_CHUNK - start;
        this.remember(c, r.body.subarray(s, Math.min(r.body.length, s + HTTP_CHUNK)));
      }
    } finally {
      for (let c = first; c <= last; c++) this.inflight.delete(c);
    }
  }

  private remember(chunk: number, data: Buffer): void {
    this.chunks.delete(chunk);
    this.chunks.set(chunk, data);
    while (this.chunks.size > MEMORY_CHUNKS) this.chunks.delete(this.chunks.keys().next().value!);
  }

  /** Runs `attempt` up to 5 times with backoff; the last failure becomes one clear line. */
  private async withRetries<T>(attempt: () => Promise<T>): Promise<T> {
    const tries = envNumber('DISKIMG_HTTP_TRIES', TRIES);
    const backoff = envNumber('DISKIMG_HTTP_BACKOFF_MS', 100);
    let last = '';
    for (let i = 0; i < tries; i++) {
      if (this.closed) throw new DiskImageError(this.location, 'closed', undefined, undefined, 'EREMOTE');
      try {
        return await attempt();
      } catch (e) {
        if (!(e instanceof Transient)) throw e;
        last = e.message;
        if (i + 1 < tries) await new Promise((r) => setTimeout(r, backoff * 2 ** i));
      }
    }
    throw new DiskImageError(this.location, `${last} after ${tries} tries`, undefined, undefined, 'EREMOTE');
  }

  /** One range request: the bytes, checked against Content-Range, the length and the validator. */
  private request(offset: number, length: number, validator: string | null): Promise<{ body: Buffer; total: number; etag?: string; lastModified?: string }> {
    this.requests++;
    const timeout = envNumber('DISKIMG_HTTP_TIMEOUT_MS', 15000);
    const mod = this.url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      let settled = false;
      const done = (f: () => void) => { if (!settled) { settled = true; f(); } };
      const req = mod.request(this.url, {
        agent: this.agent,
        headers: { Range: `bytes=${offset}-${offset + length - 1}`, 'Accept-Encoding': 'identity' },
        ...(process.env.DISKIMG_CA_FILE ? { ca: require('fs').readFileSync(process.env.DISKIMG_CA_FILE) } : {}),
      }, (res) => {
        const status = res.statusCode ?? 0;
        const fail = (e: Error) => { res.resume(); done(() => reject(e)); };
        if (status >= 500 || status === 408 || status === 429) return fail(new Transient(`server answered ${status} ${res.statusMessage ?? ''}`.trim()));
        if (status === 200) return fail(new DiskImageError(this.location, 'the server does not answer range requests (200 instead of 206)', undefined, undefined, 'EREMOTE'));
        if (status !== 206) return fail(new DiskImageError(this.location, `server answered ${status} ${res.statusMessage ?? ''}`.trim(), undefined, undefined, 'EREMOTE'));
        const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(res.headers['content-range'] ?? ''));
        if (!m || Number(m[1]) !== offset || Number(m[2]) !== offset + length - 1) {
          return fail(new DiskImageError(this.location, `Content-Range '${res.headers['content-range'] ?? ''}' does not answer bytes ${offset}-${offset + length - 1}`, undefined, undefined, 'EREMOTE'));
        }
        const total = Number(m[3]);
        const etag = res.headers.etag;
        const lastModified = res.headers['last-modified'];
        const now = etag ?? lastModified ?? '';
        if (validator !== null && (now !== validator || total !== this.size)) {
          return fail(new DiskImageError(this.location, `parent changed on the server (${etag ? 'ETag' : 'Last-Modified'} was ${validator || 'none'}, now ${now || 'none'}; size ${this.size}, now ${total})`, undefined, undefined, 'ECHANGED'));
        }
        const parts: Buffer[] = [];
        let got = 0;
        res.on('data', (b: Buffer) => {
          got += b.length;
          if (got > length) { req.destroy(); done(() => reject(new DiskImageError(this.location, `server sent more than the ${length} bytes asked for`, undefined, undefined, 'EREMOTE'))); return; }
          parts.push(b);
        });
        res.on('end', () => {
          if (got < length) done(() => reject(new Transient(`short body: ${got} of ${length} bytes`)));
          else done(() => resolve({ body: Buffer.concat(parts, got), total, etag, lastModified }));
        });
        res.on('error', (e) => done(() => reject(new Transient(describeNetError(e)))));
        res.on('aborted', () => done(() => reject(new Transient(`connection dropped after ${got} of ${length} bytes`))));
      });
      req.setTimeout(timeout, () => {
        req.destroy();
        done(() => reject(new Transient(`no answer within ${timeout} ms`)));
      });
      req.on('error', (e) => done(() => reject(new Transient(describeNetError(e)))));
      req.end();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.chunks.clear();
    this.agent.destroy();
  }
}

function describeNetError(e: Error): string {
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ECONNREFUSED': return 'connection refused';
    case 'ECONNRESET': return 'connection reset';
    case 'ENOTFOUND': return 'host not found';
    case 'ETIMEDOUT': return 'connection timed out';
    case 'EPIPE': return 'connection closed';
    default: return e.message || String(code);
  }
}
