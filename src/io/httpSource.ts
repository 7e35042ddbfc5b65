// A parent image behind an HTTP(S) server, read with range requests.
import type * as http from 'http';
import type * as https from 'https';
import { DiskImageError } from '../format/errors';
import { alignedBuffer, isPageAligned } from './alignedBuffer';
import { ByteSource } from './byteSource';
import { WireBroken, WirePool, WireUnsupported } from './httpWire';

import { HTTP_CHUNK } from './byteSource';
import { trustedCa } from './trustedCa';

export { HTTP_CHUNK };
/** Longest single request (consecutive missing chunks are coalesced up to this). */
const MAX_REQUEST = 4 * HTTP_CHUNK;
/** Chunks kept in memory (oldest first out): a full sequential read stays bounded. */
const MEMORY_CHUNKS = 40;
/**
 * Chunks fetched ahead of a sequential reader: with 4 MiB requests that is six requests in flight,
 * so a server's per-request latency is paid once, not once per request. On the bench's server
 * (20 ms per request, load ~5) 12 → 24 took a 128 MiB first read from 0.78 to 0.68 s; 8 or 16 MiB
 * requests cost more CPU (fresh body memory to fault in) than they saved in round trips.
 */
const READ_AHEAD_CHUNKS = 24;
/** Sockets per server: one per request in flight. */
const MAX_SOCKETS = 6;
/** Used body buffers kept for reuse. */
const SPARE_BODIES = 8;
/** Answers handed to `onReceived` (a cache storing them) and not yet stored: no more requests start past this. */
const MAX_STORING = 6;
const TRIES = 5;
/**
 * The opening request asks for the first chunk, kept as chunk 0: the format probe reads it next,
 * so it costs no second round trip. Without `prefetch` (a cache likely holds it) only the first
 * sector: not one byte, since busybox httpd reads `bytes=0-0` as "from 0 to the end".
 */
const PROBE_SECTOR = 512;

function envNumber(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

/**
 * Node's HTTP(S) client, loaded on first use: plain http:// is read by httpWire.ts, so Node's http,
 * https and tls modules (~20 ms of CPU to load, mostly tls) are only loaded for https:// or for a
 * server that client does not speak to. Shared by a source and the probe that opened it.
 */
class NodeClient {
  private agentMemo: http.Agent | null = null;

  constructor(private readonly secure: boolean) {}

  get module(): typeof http | typeof https {
    return this.secure ? (require('https') as typeof https) : (require('http') as typeof http);
  }

  get agent(): http.Agent {
    this.agentMemo ??= new this.module.Agent({ keepAlive: true, maxSockets: MAX_SOCKETS });
    return this.agentMemo;
  }

  destroy(): void {
    this.agentMemo?.destroy();
    this.agentMemo = null;
  }
}

/** A failure worth another try (the server or the network hiccupped), with its one-line reason. */
class Transient extends Error {}

/**
 * One answered request's body as the socket delivered it (no joining copy): the pieces and where
 * each starts, so a read copies straight from them into its target.
 */
class Body {
  /** Chunks in the memory map that point into this body; at 0 its buffer can be used again. */
  holders = 0;
  /** Settles once `onReceived` has stored the body (its buffer is not reused before). */
  stored: Promise<void> | null = null;
  /** True once `stored` has settled: the cache answers for this body's chunks from then on. */
  storedDone = false;

  constructor(readonly pieces: Buffer[], readonly starts: number[], readonly length: number) {}

  /** Copies body bytes [from, from + target.length) into target. */
  copyTo(target: Uint8Array, from: number): void {
    // The piece holding `from` (binary search: a 4 MiB body is ~64 pieces).
    let lo = 0;
    let hi = this.pieces.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= from) lo = mid; else hi = mid - 1;
    }
    let done = 0;
    for (let i = lo; done < target.length; i++) {
      const p = this.pieces[i];
      const at = from + done - this.starts[i];
      const n = Math.min(p.length - at, target.length - done);
      target.set(at === 0 && n === p.length ? p : p.subarray(at, at + n), done);
      done += n;
    }
  }
}

/** What a checked head says: the file's size, the answered length, the validators. */
interface Head { total: number; length: number; etag?: string; lastModified?: string }

/** A checked answer: its body and what the head said. */
interface Answer { body: Body; total: number; etag?: string; lastModified?: string }

/** Where a chunk's bytes are: a body and the chunk's offset in it. */
interface HeldChunk { body: Body; at: number; length: number }

export class HttpSource implements ByteSource {
  readonly kind: string;
  requests = 0;
  private readonly client: NodeClient;
  private readonly chunks = new Map<number, HeldChunk>();
  /** Buffers of bodies no longer held, for the next requests. */
  private readonly spare: Buffer[] = [];
  private readonly inflight = new Map<number, Promise<void>>();
  /** Last chunk read; -2 at first, so the first read (a format probe at 0) starts no read-ahead. */
  private lastChunk = -2;
  isHeld?: (offset: number) => boolean;
  onReceived?: (offset: number, pieces: Buffer[]) => Promise<void>;
  /** Bodies being stored by onReceived. */
  private readonly storing = new Set<Promise<void>>();
  private closed = false;
  private readonly ca: Array<string | Buffer> | undefined;
  /** The plain-HTTP client that reads bodies in place (null for https, or once a server needed Node's). */
  private wire: WirePool | null;

  private constructor(
    readonly location: string,
    private readonly url: URL,
    readonly size: number,
    readonly validator: string,
    readonly mtime: Date | null,
    client: NodeClient,
  ) {
    this.kind = url.protocol.replace(':', '');
    this.client = client;
    this.ca = url.protocol === 'https:' ? trustedCa() : undefined;
    this.wire = url.protocol === 'http:' && !process.env.DISKIMG_HTTP_NODE_CLIENT ? new WirePool(url) : null;
  }

  /**
   * Learns size and validator with a range request (so servers without ranges are refused now).
   * With `prefetch` it asks for the first chunk and starts fetching the last: format probes read
   * both ends first.
   */
  static async open(location: string, prefetch = true): Promise<HttpSource> {
    const url = new URL(location);
    const client = new NodeClient(url.protocol === 'https:');
    const probe = new HttpSource(location, url, 0, '', null, client);
    try {
      const r = await probe.withRetries(() => probe.request(0, prefetch ? HTTP_CHUNK : PROBE_SECTOR, null));
      const total = r.total;
      const validator = r.etag ?? r.lastModified ?? '';
      const mtime = r.lastModified ? new Date(r.lastModified) : null;
      const source = new HttpSource(location, url, total, validator, mtime && !Number.isNaN(mtime.getTime()) ? mtime : null, client);
      source.requests = probe.requests;
      // The probe's connection is the source's first.
      source.wire?.close();
      source.wire = probe.wire;
      if (prefetch && total > 0) {
        source.remember(0, { body: r.body, at: 0, length: Math.min(r.body.length, HTTP_CHUNK) });
        source.fetchMissing(Math.floor((total - 1) / HTTP_CHUNK), Math.floor((total - 1) / HTTP_CHUNK));
      }
      return source;
    } catch (e) {
      probe.wire?.close();
      client.destroy();
      throw e;
    }
  }

  async read(offset: number, target: Uint8Array): Promise<number> {
    const end = Math.min(offset + target.length, this.size);
    if (end <= offset) return 0;
    const first = Math.floor(offset / HTTP_CHUNK);
    const last = Math.floor((end - 1) / HTTP_CHUNK);
    // A reader going forward gets the next chunks fetched while it works on these.
    this.readAhead(first, last);
    this.fetchMissing(first, last);
    for (let c = first; c <= last; c++) {
      let held = this.chunks.get(c);
      while (!held) {
        const pending = this.inflight.get(c);
        if (pending) await pending.catch(() => undefined);
        else this.fetchMissing(c, c);
        held = this.chunks.get(c);
        if (!held && !this.inflight.has(c)) {
          // The fetch failed: fetch again in this call so its error (after retries) reaches the reader.
          await this.fetchRun(c, c);
          held = this.chunks.get(c);
        }
      }
      const chunkStart = c * HTTP_CHUNK;
      const from = Math.max(offset, chunkStart);
      const to = Math.min(end, chunkStart + held.length);
      held.body.copyTo(target.subarray(from - offset, to - offset), held.at + from - chunkStart);
      if (to === chunkStart + held.length) this.consumed(c, held);
    }
    return end - offset;
  }

  /** True while the chunk holding `offset` is in memory: a read of it costs a copy, no request and no disk read. */
  holds(offset: number): boolean {
    return this.chunks.has(Math.floor(offset / HTTP_CHUNK));
  }

  /**
   * A cache answers a read from its file: the read still counts as the reader's, so a sequential
   * reader's read-ahead keeps going while the cache serves what it has (else it would stall for a
   * round trip where the cached run ends).
   */
  advise(offset: number, length: number): void {
    const end = Math.min(offset + length, this.size);
    if (end > offset) this.readAhead(Math.floor(offset / HTTP_CHUNK), Math.floor((end - 1) / HTTP_CHUNK));
  }

  /** Notes a read of chunks first..last; for a reader going forward starts fetching the next ones. */
  private readAhead(first: number, last: number): void {
    const sequential = first === this.lastChunk || first === this.lastChunk + 1;
    this.lastChunk = last;
    if (!sequential) return;
    const ahead = Math.min(last + READ_AHEAD_CHUNKS, Math.floor((this.size - 1) / HTTP_CHUNK));
    // Chunks a cache already holds are not fetched again; the ones between are.
    let c = last + 1;
    while (c <= ahead) {
      while (c <= ahead && this.isHeld?.(c * HTTP_CHUNK)) c++;
      let e = c;
      while (e + 1 <= ahead && !this.isHeld?.((e + 1) * HTTP_CHUNK)) e++;
      if (c <= ahead) this.fetchMissing(c, e);
      c = e + 1;
    }
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
      // A cache that stores slower than the server sends holds the next request back (memory stays bounded).
      while (this.storing.size >= MAX_STORING) await Promise.race(this.storing);
      const r = await this.withRetries(() => this.request(start, end - start, this.validator));
      if (this.onReceived) {
        const body = r.body;
        const stored = this.onReceived(start, body.pieces).catch(() => undefined).then(() => { body.storedDone = true; }); // the cache reports its own failures
        body.stored = stored;
        this.storing.add(stored);
        void stored.then(() => this.storing.delete(stored));
      }
      for (let c = first; c <= last; c++) {
        const at = c * HTTP_CHUNK - start;
        this.remember(c, { body: r.body, at, length: Math.min(r.body.length - at, HTTP_CHUNK) });
      }
    } finally {
      for (let c = first; c <= last; c++) this.inflight.delete(c);
    }
  }

  /**
   * A chunk read to its end, held in a cache too, need not stay in memory: a second read of it is
   * answered by the cache. Dropping it once stored gives its body back for the next request, so a
   * full read reuses a few bodies instead of faulting in fresh memory for every one held behind
   * the reader (a page fault per 4 KiB: ~10% of a first read's CPU). Without a cache, or before
   * the store is done, the chunk stays (a re-read must not fetch it twice).
   */
  private consumed(chunk: number, held: HeldChunk): void {
    const body = held.body;
    if (!body.stored) return;
    const drop = () => { if (this.chunks.get(chunk) === held && this.isHeld?.(chunk * HTTP_CHUNK)) this.forget(chunk); };
    if (body.storedDone) drop();
    else void body.stored.then(drop);
  }

  private remember(chunk: number, held: HeldChunk): void {
    this.forget(chunk);
    this.chunks.set(chunk, held);
    held.body.holders++;
    while (this.chunks.size > MEMORY_CHUNKS) this.forget(this.chunks.keys().next().value!);
  }

  /**
   * Drops a chunk from memory; a body no chunk points into gives its buffer back for the next
   * request. Reads copy out of a body synchronously right after looking it up, so none is using it.
   */
  private forget(chunk: number): void {
    const held = this.chunks.get(chunk);
    if (!held) return;
    this.chunks.delete(chunk);
    if (--held.body.holders === 0 && held.body.pieces.length === 1) {
      const piece = held.body.pieces[0];
      // A body of any length from one of our request-sized buffers gives the whole buffer back.
      if (piece.byteOffset !== 0 || piece.buffer.byteLength !== MAX_REQUEST || !isPageAligned(piece)) return;
      const b = Buffer.from(piece.buffer, 0, MAX_REQUEST);
      const reuse = () => { if (!this.closed && this.spare.length < SPARE_BODIES) this.spare.push(b); };
      if (held.body.stored) void held.body.stored.then(reuse);
      else reuse();
    }
  }

  /**
   * A buffer for a body: a used one when there is one. Fresh memory costs a page fault per 4 KiB
   * on first touch (the kernel's receive copy takes them), which on a virtual machine cost more
   * than the copy itself. Page aligned, so a cache can write it with O_DIRECT.
   */
  private bodyBuffer(length: number): Buffer {
    if (length < HTTP_CHUNK || length > MAX_REQUEST) return length >= HTTP_CHUNK ? alignedBuffer(length) : Buffer.allocUnsafeSlow(length);
    // Every body from a chunk to a request long comes out of a request-sized buffer, so the short
    // ones (a run's first request, the parent's last chunk) are reused too; pages a body does not
    // reach are never touched, so cost nothing.
    return (this.spare.pop() ?? alignedBuffer(MAX_REQUEST)).subarray(0, length);
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
  private request(offset: number, length: number, validator: string | null): Promise<Answer> {
    this.requests++;
    const timeout = envNumber('DISKIMG_HTTP_TIMEOUT_MS', 15000);
    if (!this.wire) return this.requestNode(offset, length, validator, timeout);
    return this.requestWire(this.wire, offset, length, validator, timeout).catch((e) => {
      if (!(e instanceof WireUnsupported)) throw e;
      // A server this small client does not speak to (chunked answers…): Node's client from now on.
      this.wire?.close();
      this.wire = null;
      return this.requestNode(offset, length, validator, timeout);
    });
  }

  /**
   * The head's verdict: an error to throw (retried or not), or what the answer says. Shared by both
   * clients so their errors read the same.
   */
  private checkHead(status: number, statusMessage: string, header: (name: string) => string | undefined, offset: number, length: number, validator: string | null): Error | Head {
    if (status >= 500 || status === 408 || status === 429) return new Transient(`server answered ${status} ${statusMessage}`.trim());
    if (status === 200) return new DiskImageError(this.location, 'the server does not answer range requests (200 instead of 206)', undefined, undefined, 'EREMOTE');
    if (status !== 206) return new DiskImageError(this.location, `server answered ${status} ${statusMessage}`.trim(), undefined, undefined, 'EREMOTE');
    const range = header('content-range') ?? '';
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(range);
    // The opening probe (no validator yet) may ask past the end of a small file.
    const total = m ? Number(m[3]) : 0;
    const last = (validator === null ? Math.min(offset + length, total) : offset + length) - 1;
    if (!m || Number(m[1]) !== offset || Number(m[2]) !== last || last < offset) {
      return new DiskImageError(this.location, `Content-Range '${range}' does not answer bytes ${offset}-${offset + length - 1}`, undefined, undefined, 'EREMOTE');
    }
    const etag = header('etag');
    const lastModified = header('last-modified');
    const now = etag ?? lastModified ?? '';
    if (validator !== null && (now !== validator || total !== this.size)) {
      return new DiskImageError(this.location, `parent changed on the server (${etag ? 'ETag' : 'Last-Modified'} was ${validator || 'none'}, now ${now || 'none'}; size ${this.size}, now ${total})`, undefined, undefined, 'ECHANGED');
    }
    return { total, length: last - offset + 1, etag, lastModified };
  }

  private async requestWire(wire: WirePool, offset: number, length: number, validator: string | null, timeout: number): Promise<Answer> {
    let verdict: Error | Head | null = null;
    let answer;
    try {
      answer = await wire.get(offset, length, timeout, (head, bodyLength) => {
        const v = this.checkHead(head.status, head.statusMessage, (n) => head.headers[n], offset, length, validator);
        verdict = v;
        if (v instanceof Error) return null;
        if (bodyLength !== v.length) {
          verdict = bodyLength > v.length
            ? new DiskImageError(this.location, `server sent more than the ${v.length} bytes asked for`, undefined, undefined, 'EREMOTE')
            : new Transient(`short body: ${bodyLength} of ${v.length} bytes`);
          return null;
        }
        return this.bodyBuffer(v.length);
      });
    } catch (e) {
      if (e instanceof WireBroken) throw new Transient(e.code === 'ETIMEDOUT' && e.message === 'timeout' ? `no answer within ${timeout} ms` : describeNetError(e));
      throw e;
    }
    const v = verdict as Error | Head | null;
    if (v instanceof Error) throw v;
    if (!v || !answer.body) throw new Transient('answer without a body');
    return { body: new Body([answer.body], [0], v.length), ...v };
  }

  private requestNode(offset: number, length: number, validator: string | null, timeout: number): Promise<Answer> {
    const mod = this.client.module;
    return new Promise((resolve, reject) => {
      let settled = false;
      const done = (f: () => void) => { if (!settled) { settled = true; f(); } };
      const req = mod.request(this.url, {
        agent: this.client.agent,
        headers: { Range: `bytes=${offset}-${offset + length - 1}`, 'Accept-Encoding': 'identity' },
        ...(this.ca ? { ca: this.ca } : {}),
      }, (res) => {
        const fail = (e: Error) => { res.resume(); done(() => reject(e)); };
        const verdict = this.checkHead(res.statusCode ?? 0, res.statusMessage ?? '', (n) => {
          const v = res.headers[n];
          return Array.isArray(v) ? v.join(', ') : v;
        }, offset, length, validator);
        if (verdict instanceof Error) return fail(verdict);
        const want = verdict.length;
        const parts: Buffer[] = [];
        const starts: number[] = [];
        let got = 0;
        res.on('data', (b: Buffer) => {
          if (got + b.length > want) { req.destroy(); done(() => reject(new DiskImageError(this.location, `server sent more than the ${want} bytes asked for`, undefined, undefined, 'EREMOTE'))); return; }
          starts.push(got);
          parts.push(b);
          got += b.length;
        });
        res.on('end', () => {
          if (got < want) done(() => reject(new Transient(`short body: ${got} of ${want} bytes`)));
          else done(() => resolve({ body: new Body(parts, starts, got), ...verdict }));
        });
        res.on('error', (e) => done(() => reject(new Transient(describeNetError(e)))));
        res.on('aborted', () => done(() => reject(new Transient(`connection dropped after ${got} of ${want} bytes`))));
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
    this.spare.length = 0;
    this.wire?.close();
    this.client.destroy();
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
