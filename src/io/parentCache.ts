// The local cache of a remote parent: every byte read once is kept in a sparse file next to the child.
import { closeSync, existsSync, fsyncSync, openSync, readSync, unlinkSync, writeSync, ftruncateSync, statSync } from 'fs';
import * as nodePath from 'path';
import { DiskImageError } from '../format/errors';
import { ByteSource } from './byteSource';
import { HTTP_CHUNK } from './httpSource';

/**
 * Layout: a 4 KiB header (magic line, then JSON: location, size, validator, chunk size), the chunk
 * bitmap (one bit per chunk, padded to 4 KiB), then the parent's bytes at their own offsets past
 * that, as a sparse file. A chunk's bit is set only after its data is durable (fsync), so a crash
 * loses at most chunks that are fetched again, never marks bytes that are not there.
 */
const MAGIC = 'diskimg parent cache 1\n';
const HEADER = 4096;
/** Set bits are written after this many new chunks (and on close): one fsync per batch. */
const PERSIST_EVERY = 16;

export interface CacheHeader {
  location: string;
  size: number;
  validator: string;
  chunk: number;
}

export interface CacheStatus extends CacheHeader {
  path: string;
  chunks: number;
  cachedChunks: number;
  cachedBytes: number;
}

/** `.<child>.parent-cache` next to the child. */
export function parentCachePath(childPath: string): string {
  return nodePath.join(nodePath.dirname(childPath), `.${nodePath.basename(childPath)}.parent-cache`);
}

function bitmapBytes(size: number, chunk: number): number {
  const bytes = Math.ceil(Math.ceil(size / chunk) / 8);
  return Math.ceil(bytes / 4096) * 4096 || 4096;
}

function readHeader(fd: number, path: string): { header: CacheHeader; bitmap: Buffer } | null {
  const h = Buffer.alloc(HEADER);
  if (readSync(fd, h, 0, HEADER, 0) < HEADER || h.toString('latin1', 0, MAGIC.length) !== MAGIC) return null;
  let header: CacheHeader;
  try {
    header = JSON.parse(h.toString('utf8', MAGIC.length).replace(/\0+$/, '')) as CacheHeader;
  } catch {
    return null;
  }
  if (typeof header.location !== 'string' || !Number.isSafeInteger(header.size) || header.size < 0 || header.size > 2 ** 50
    || header.chunk !== HTTP_CHUNK || typeof header.validator !== 'string') return null;
  const bitmap = Buffer.alloc(bitmapBytes(header.size, header.chunk));
  if (readSync(fd, bitmap, 0, bitmap.length, HEADER) < bitmap.length) return null;
  void path;
  return { header, bitmap };
}

/** Reads the cache's header and fill without touching the server; null when there is no valid cache. */
export function cacheStatus(path: string): CacheStatus | null {
  if (!existsSync(path)) return null;
  const fd = openSync(path, 'r');
  try {
    const r = readHeader(fd, path);
    if (!r) return null;
    const chunks = Math.ceil(r.header.size / r.header.chunk);
    let cached = 0;
    let bytes = 0;
    for (let c = 0; c < chunks; c++) {
      if (r.bitmap[c >> 3] & (1 << (c & 7))) {
        cached++;
        bytes += Math.min(r.header.chunk, r.header.size - c * r.header.chunk);
      }
    }
    return { ...r.header, path, chunks, cachedChunks: cached, cachedBytes: bytes };
  } finally {
    closeSync(fd);
  }
}

/**
 * A ByteSource that answers from the cache file where it can and asks the remote source for the
 * rest, keeping what it gets. With a cache already there, the server is not contacted until a byte
 * is missing: a fully cached parent reads with zero requests. The first time the server is
 * contacted its validator must equal the cache's: a parent that changed is an error naming it.
 */
export class CachedSource implements ByteSource {
  private remote: ByteSource | null = null;
  private opening: Promise<ByteSource> | null = null;
  private pendingBits: number[] = [];
  private readonly dataOffset: number;

  private constructor(
    private readonly path: string,
    private readonly fd: number,
    private readonly header: CacheHeader,
    private readonly bitmap: Buffer,
    private readonly openRemote: () => Promise<ByteSource>,
  ) {
    this.dataOffset = HEADER + bitmap.length;
  }

  get location(): string { return this.header.location; }
  get kind(): string { return this.remote?.kind ?? new URL(this.header.location).protocol.replace(':', ''); }
  get size(): number { return this.header.size; }
  get validator(): string { return this.header.validator; }
  get mtime(): Date | null { return this.remote?.mtime ?? null; }
  get requests(): number { return this.remote?.requests ?? 0; }

  static async open(path: string, location: string, openRemote: () => Promise<ByteSource>): Promise<CachedSource> {
    let fd: number;
    try {
      fd = openSync(path, existsSync(path) ? 'r+' : 'w+');
    } catch (e) {
      throw new DiskImageError(path, `cannot open the parent cache: ${(e as Error).message}`, undefined, undefined, 'EOPEN');
    }
    try {
      const existing = statSync(path).size > 0 ? readHeader(fd, path) : null;
      if (existing && existing.header.location === location) {
        return new CachedSource(path, fd, existing.header, existing.bitmap, openRemote);
      }
      if (existing) {
        throw new DiskImageError(path, `the parent cache is of ${existing.header.location}, not ${location} (diskimg cache <child> --drop)`, undefined, undefined, 'ECACHE');
      }
      // A new cache: the server tells size and validator now.
      const remote = await openRemote();
      const header: CacheHeader = { location, size: remote.size, validator: remote.validator, chunk: HTTP_CHUNK };
      const bitmap = Buffer.alloc(bitmapBytes(header.size, header.chunk));
      const h = Buffer.alloc(HEADER);
      h.write(MAGIC, 0, 'latin1');
      h.write(JSON.stringify(header), MAGIC.length, 'utf8');
      ftruncateSync(fd, 0);
      writeSync(fd, h, 0, HEADER, 0);
      writeSync(fd, bitmap, 0, bitmap.length, HEADER);
      ftruncateSync(fd, HEADER + bitmap.length + header.size);
      fsyncSync(fd);
      const source = new CachedSource(path, fd, header, bitmap, openRemote);
      source.remote = remote;
      return source;
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  private has(c: number): boolean {
    return (this.bitmap[c >> 3] & (1 << (c & 7))) !== 0;
  }

  private async server(): Promise<ByteSource> {
    if (this.remote) return this.remote;
    this.opening ??= this.openRemote().then(async (r) => {
      if (r.validator !== this.header.validator || r.size !== this.header.size) {
        await r.close();
        throw new DiskImageError(this.header.location, `parent changed on the server since it was cached (validator ${this.header.validator || 'none'}, now ${r.validator || 'none'}; size ${this.header.size}, now ${r.size}); cache ${this.path}`, undefined, undefined, 'ECHANGED');
      }
      this.remote = r;
      return r;
    });
    try {
      return await this.opening;
    } catch (e) {
      this.opening = null;
      throw e;
    }
  }

  async read(offset: number, target: Uint8Array): Promise<number> {
    const end = Math.min(offset + target.length, this.size);
    if (end <= offset) return 0;
    const chunk = this.header.chunk;
    let pos = offset;
    while (pos < end) {
      const c = Math.floor(pos / chunk);
      const cached = this.has(c);
      // The run of chunks with the same state.
      let runEnd = Math.min(end, (c + 1) * chunk);
      while (runEnd < end && this.has(Math.floor(runEnd / chunk)) === cached) runEnd = Math.min(end, runEnd + chunk);
      const slice = target.subarray(pos - offset, runEnd - offset);
      if (cached) {
        readSync(this.fd, slice, 0, slice.length, this.dataOffset + pos);
      } else {
        // Whole chunks are fetched and kept, so a chunk's bit always means all of it is here.
        const from = Math.floor(pos / chunk) * chunk;
        const to = Math.min(this.size, Math.ceil(runEnd / chunk) * chunk);
        const buf = Buffer.allocUnsafe(to - from);
        const remote = await this.server();
        const n = await remote.read(from, buf);
        if (n < buf.length) throw new DiskImageError(this.location, `short read: ${n} of ${buf.length} bytes at ${from}`, undefined, undefined, 'EREMOTE');
        writeSync(this.fd, buf, 0, buf.length, this.dataOffset + from);
        for (let k = from / chunk; k * chunk < to; k++) this.pendingBits.push(k);
        Buffer.from(slice.buffer, slice.byteOffset, slice.length).set(buf.subarray(pos - from, runEnd - from));
        if (this.pendingBits.length >= PERSIST_EVERY) this.persist();
      }
      pos = runEnd;
    }
    return end - offset;
  }

  /** Data first (fsync), then the bits that say it is there. */
  private persist(): void {
    if (this.pendingBits.length === 0) return;
    fsyncSync(this.fd);
    const touched = new Set<number>();
    for (const c of this.pendingBits) {
      this.bitmap[c >> 3] |= 1 << (c & 7);
      touched.add(c >> 12 << 9); // the 512-byte piece of the bitmap holding this bit
    }
    this.pendingBits = [];
    for (const at of touched) writeSync(this.fd, this.bitmap, at, Math.min(512, this.bitmap.length - at), HEADER + at);
  }

  async close(): Promise<void> {
    try {
      this.persist();
    } finally {
      closeSync(this.fd);
      await this.remote?.close();
    }
  }
}

/** `cache --drop`: removes the cache file (true when there was one). */
export function dropCache(path: string): boolean {
  if (!existsSync(path)) return false;
  unlinkSync(path);
  return true;
}
