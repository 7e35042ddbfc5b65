import { closeSync, constants as fsc, openSync, promises as fsp, readSync, readvSync, write as fsWrite, writev as fsWritev, writeSync, writevSync } from 'fs';
import { DiskImageError } from '../format/errors';
import { blockDeviceSize, mountsOf } from './blockDevice';
import { ByteSource, isRemoteLocation, remoteOptionsFor } from './byteSource';
import { CachedSource } from './parentCache';
import { acquireWriteLock } from './lock';
import { isPageAligned, PAGE } from './alignedBuffer';

let syncReadLimit = 0;

/**
 * Reads up to `bytes` long are made synchronously from then on (0: never). The NBD server turns this
 * on: a page-cache hit then costs a few microseconds instead of a thread-pool round trip of tens,
 * which is most of the time of a small read; long reads keep going through the pool.
 */
export function setSynchronousReadLimit(bytes: number): () => void {
  const before = syncReadLimit;
  syncReadLimit = bytes;
  return () => {
    syncReadLimit = before;
  };
}

let syncWriteLimit = 0;

/** The same for positioned writes (not vectored appends): a small write into the page cache. */
export function setSynchronousWriteLimit(bytes: number): void {
  syncWriteLimit = bytes;
}

let syncAll = false;
let syncAllWrites = false;

/**
 * Local writes (and with `reads`, reads too) synchronous whatever their length, vectored ones too,
 * until the returned function restores the previous setting: merge. Such a call is a page-cache
 * copy; through the pool it also costs two thread hand-offs (futex wake-ups, and the wait for the
 * woken thread on a busy machine). Flushes stay in the pool, so they still overlap the copy.
 */
export function setSynchronousIo(on: { writes: boolean; reads: boolean }): () => void {
  const before = { writes: syncAllWrites, reads: syncAll };
  syncAllWrites = on.writes;
  syncAll = on.reads;
  return () => {
    syncAllWrites = before.writes;
    syncAll = before.reads;
  };
}

let directWrites = false;

/**
 * Until the returned function restores the previous setting, writes of whole pages from
 * page-aligned buffers (alignedBuffer) at page-aligned offsets go to the disk through a second,
 * O_DIRECT descriptor of the same file; every other write stays buffered. Merge turns it on for
 * its copy. Why: a merge must be durable, so its data goes to the disk before it ends anyway; a
 * buffered write first copies every byte into new page-cache pages (system time that swung 0.2-2 s
 * per 512 MiB with the machine's load, and more while a flush of the same file ran beside it),
 * then the flush waits for all of it at the end. A direct 2 MiB write hands our buffer to the disk
 * while the next windows are read: 512 MiB took 0.52-0.72 s with 0.06-0.10 s of CPU, durable
 * after a flush that has only metadata left (2026-12-03, load 3-4). The kernel keeps buffered and
 * direct views of the file coherent; a file system that refuses O_DIRECT gets buffered writes.
 */
export function setDirectWrites(on: boolean): () => void {
  const before = directWrites;
  directWrites = on;
  return () => {
    directWrites = before;
  };
}

let behindDepth = 0;
/** Memory whose direct writes may complete after the write call returns (see setDirectWriteBehind). */
const behindMemory = new WeakSet<ArrayBufferLike>();
/** Direct writes still in flight, by the memory they read from. */
const behindByMemory = new Map<ArrayBufferLike, Set<Promise<void>>>();

/**
 * Until the returned function restores the previous setting, a direct write (see setDirectWrites)
 * from memory given to allowWriteBehind returns once it is issued, up to `depth` of them in flight
 * per file; the caller keeps that memory unchanged until writeBehindDone says so. Why: a synchronous
 * direct write holds the merge's thread for the disk's time (2-3 ms per 2 MiB), and the window's
 * CPU work waited behind it; in flight, the disk and the CPU work at once. A file's sync() and
 * close() first wait for its writes in flight (and report their errors); reads and writes that
 * overlap one wait for it.
 */
export function setDirectWriteBehind(depth: number): () => void {
  const before = behindDepth;
  behindDepth = Math.max(0, depth);
  return () => {
    behindDepth = before;
  };
}

/** Lets direct writes from `buf`'s memory complete in the background (see setDirectWriteBehind). */
export function allowWriteBehind(buf: Uint8Array): void {
  behindMemory.add(buf.buffer);
}

/** Whether a direct write from `buf`'s memory is still in flight. */
export function writeBehindPending(buf: Uint8Array): boolean {
  return (behindByMemory.get(buf.buffer)?.size ?? 0) > 0;
}

/** Resolves when no direct write from `buf`'s memory is in flight (errors go to the file's next sync). */
export async function writeBehindDone(buf: Uint8Array): Promise<void> {
  const pending = behindByMemory.get(buf.buffer);
  if (pending && pending.size > 0) await Promise.all([...pending]);
}

/**
 * Remote sources closed by a format probe, kept for the open that follows it: opening a chain
 * probes the parent's format, closes it and opens it again, and each open of a far server costs a
 * connection and a probe request. Taken by the next open of the same URL with the same cache, or
 * closed after a moment (an unref'd timer: a process that ends first only loses the probe's
 * uncommitted cache bits, which are fetched again).
 */
const parked = new Map<string, { source: ByteSource; timer: NodeJS.Timeout }>();
const PARK_MS = 2000;

/**
 * Positioned reads and writes on one image file: the only place that touches file contents.
 * Reads never go past what is asked; callers decide how much to ask for, bounded by the file size.
 */
export class ImageFile {
  /** Set by openForProbe: a remote source is parked for the next open instead of closed. */
  private parkOnClose = false;
  /** Remote files: the URL and cache a parked source is filed under. */
  private parkKey = '';
  /** Writes made through this object (a count), and how many of them the last completed sync covered. */
  private written = 0;
  private synced = 0;
  /** The O_DIRECT descriptor (see setDirectWrites): undefined until first needed, null where refused. */
  private directFd: number | null | undefined = undefined;
  /** Direct writes in flight (see setDirectWriteBehind): their byte ranges and completions (which never reject). */
  private behind: Array<{ start: number; end: number; done: Promise<void> }> = [];
  /** The first error of a write in flight, reported by the next sync, close or write. */
  private behindError: unknown = null;
  /** A direct descriptor the file system refused while writes were in flight on it: closed once they are done. */
  private refusedDirectFd: number | null = null;

  private constructor(
    readonly path: string,
    private readonly handle: fsp.FileHandle | null,
    readonly writable: boolean,
    private currentSize: number,
    /** Releases the advisory write lock (writable files only). */
    private readonly unlock: () => void = () => undefined,
    /** A block device (a raw parent): its size comes from sysfs and never changes. */
    readonly isBlockDevice = false,
    /** A parent on a server (read-only, always): reads go to it (through its cache, if any). */
    readonly remote: ByteSource | null = null,
  ) {}

  /** A remote parent: `http(s)://` (or `nbd://` when a client is there), through its cache when the chain set one. */
  private static async openRemote(location: string): Promise<ImageFile> {
    const open = (prefetch = true): Promise<ByteSource> => {
      // Required here, not imported: Node's http, https, net and tls cost every command 15-25 ms
      // of start-up, and only a chain with a remote parent needs them.
      if (/^https?:/i.test(location)) return (require('./httpSource') as typeof import('./httpSource')).HttpSource.open(location, prefetch);
      if (/^nbds?(\+unix)?:/i.test(location)) return (require('./nbdSource') as typeof import('./nbdSource')).NbdSource.open(location);
      throw new DiskImageError(location, 'no client for this kind of URL', undefined, undefined, 'EREMOTE');
    };
    const { cachePath } = remoteOptionsFor(location);
    const key = `${cachePath ?? ''}\n${location}`;
    const kept = parked.get(key);
    if (kept) {
      clearTimeout(kept.timer);
      parked.delete(key);
    }
    const source = kept?.source ?? (cachePath ? await CachedSource.open(cachePath, location, open) : await open());
    const file = new ImageFile(location, null, false, source.size, () => undefined, false, source);
    file.parkKey = key;
    return file;
  }

  /** Opens read-only to probe the format; the open of the same file that follows reuses a remote connection. */
  static async openForProbe(path: string): Promise<ImageFile> {
    const file = await ImageFile.open(path);
    file.parkOnClose = file.remote !== null;
    return file;
  }

  /**
   * Opens an image. Writable opens first take the advisory write lock (see lock.ts): a second writer
   * gets `in use by pid … (command)`. The open is non-blocking so a FIFO or device named as an image
   * is refused instead of hanging.
   */
  static async open(path: string, writable = false): Promise<ImageFile> {
    if (isRemoteLocation(path)) {
      if (writable) throw new DiskImageError(path, 'a parent on a server is never written: merge into a local copy of it, or export the chain', undefined, undefined, 'EREMOTEWRITE');
      return ImageFile.openRemote(path);
    }
    if (writable) {
      const dev = await fsp.stat(path).catch(() => null);
      if (dev?.isBlockDevice()) return ImageFile.openBlockDevice(path, true);
    }
    if (writable) {
      // Refuse what cannot be an image before a lock file is made next to it (no lock in /dev).
      const st = await fsp.stat(path).catch((e) => {
        throw new DiskImageError(path, `cannot open: ${describeFsError(e)}`, undefined, undefined, 'EOPEN');
      });
      if (!st.isFile()) throw new DiskImageError(path, st.isDirectory() ? 'is a directory' : 'is not a regular file', undefined, undefined, 'EOPEN');
    }
    const unlock = writable ? acquireWriteLock(path) : () => undefined;
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(path, (writable ? fsc.O_RDWR : fsc.O_RDONLY) | (fsc.O_NONBLOCK ?? 0));
    } catch (e) {
      unlock();
      throw new DiskImageError(path, `cannot open: ${describeFsError(e)}`, undefined, undefined, 'EOPEN');
    }
    const st = await handle.stat().catch(async (e) => {
      await handle.close().catch(() => undefined);
      unlock();
      throw new DiskImageError(path, `cannot open: ${describeFsError(e)}`, undefined, undefined, 'EOPEN');
    });
    if (st.isBlockDevice() && !writable) {
      const size = blockDeviceSize(Number(st.rdev));
      if (size === null) {
        await handle.close();
        throw new DiskImageError(path, 'block device whose size cannot be read from /sys/dev/block', undefined, undefined, 'EOPEN');
      }
      return new ImageFile(path, handle, false, size, unlock, true);
    }
    if (!st.isFile()) {
      await handle.close();
      unlock();
      throw new DiskImageError(path, st.isDirectory() ? 'is a directory' : 'is not a regular file', undefined, undefined, 'EOPEN');
    }
    return new ImageFile(path, handle, writable, st.size, unlock);
  }

  /**
   * A block device for writing (merge into a raw parent device): refused while the device or a
   * partition of it is mounted; O_EXCL makes the kernel refuse it too while anyone holds it
   * exclusively (a mounted file system, device-mapper). No lock file is made in /dev.
   */
  private static async openBlockDevice(path: string, writable: boolean): Promise<ImageFile> {
    const st = await fsp.stat(path);
    const mounts = mountsOf(Number(st.rdev));
    if (mounts.length > 0) {
      throw new DiskImageError(path, `block device is mounted (${mounts.join(', ')}): refusing to write to it`, undefined, undefined, 'EMOUNTED');
    }
    const size = blockDeviceSize(Number(st.rdev));
    if (size === null) throw new DiskImageError(path, 'block device whose size cannot be read from /sys/dev/block', undefined, undefined, 'EOPEN');
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(path, (writable ? fsc.O_RDWR | fsc.O_EXCL : fsc.O_RDONLY));
    } catch (e) {
      throw new DiskImageError(path, `cannot open: ${describeFsError(e)}`, undefined, undefined, 'EOPEN');
    }
    return new ImageFile(path, handle, writable, size, () => undefined, true);
  }

  /** Creates (or truncates) a file for writing, under the write lock (taken before any truncation). */
  static async create(path: string, exclusive = true): Promise<ImageFile> {
    // Only regular files are locked: an export to /dev/null makes no lock file in /dev.
    const existing = await fsp.stat(path).catch(() => null);
    const unlock = existing && !existing.isFile() ? () => undefined : acquireWriteLock(path);
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(path, exclusive ? 'wx+' : 'w+');
    } catch (e) {
      unlock();
      throw new DiskImageError(path, `cannot create: ${describeFsError(e)}`, undefined, undefined, 'ECREATE');
    }
    return new ImageFile(path, handle, true, 0, unlock);
  }

  get size(): number {
    return this.currentSize;
  }

  /** The descriptor of a local regular file (a raw layer asks it where its holes are), else null. */
  get localFd(): number | null {
    return this.handle && !this.isBlockDevice ? this.handle.fd : null;
  }

  async refreshSize(): Promise<number> {
    if (this.isBlockDevice || !this.handle) return this.currentSize;
    this.currentSize = (await this.handle.stat()).size;
    return this.currentSize;
  }

  async mtime(): Promise<Date> {
    if (!this.handle) return this.remote?.mtime ?? new Date(0);
    return (await this.handle.stat()).mtime;
  }

  /** Reads up to target.length bytes at pos; returns how many were read (less only at end of file). */
  async readInto(target: Uint8Array, pos: number): Promise<number> {
    if (!this.handle) return this.remote!.read(pos, target);
    if (this.behind.length > 0) await this.waitBehind(pos, pos + target.length);
    let done = 0;
    while (done < target.length) {
      const want = target.length - done;
      const bytesRead = want <= syncReadLimit || syncAll
        ? readSync(this.handle.fd, target, done, want, pos + done)
        : (await this.handle.read(target, done, want, pos + done)).bytesRead;
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  }

  /**
   * Reads back-to-back file bytes into several buffers in one call (preadv: one request for
   * blocks that lie one after another, gaps going to a scratch buffer); returns the bytes read.
   */
  async readvInto(parts: Uint8Array[], pos: number): Promise<number> {
    const total = parts.reduce((n, b) => n + b.length, 0);
    if (!this.handle) {
      // A remote source has no vectored read: part by part (its own read-ahead coalesces them).
      let done = 0;
      for (const b of parts) {
        const got = await this.readInto(b, pos + done);
        done += got;
        if (got < b.length) break;
      }
      return done;
    }
    if (this.behind.length > 0) await this.waitBehind(pos, pos + total);
    let bytesRead = syncAll ? readvSync(this.handle.fd, parts, pos) : (await this.handle.readv(parts, pos)).bytesRead;
    if (bytesRead < total && bytesRead > 0) {
      // A short vectored read (a signal, or the end of the file): finish part by part.
      let skip = bytesRead;
      for (const b of parts) {
        if (skip >= b.length) { skip -= b.length; continue; }
        const want = b.length - skip;
        const got = await this.readInto(b.subarray(skip), pos + bytesRead);
        bytesRead += got;
        if (got < want) break;
        skip = 0;
      }
    }
    return bytesRead;
  }

  /** Reads exactly `length` bytes or throws an error naming the structure being read. */
  async readExact(pos: number, length: number, structure: string): Promise<Buffer> {
    const b = Buffer.alloc(length);
    const n = await this.readInto(b, pos);
    if (n < length) {
      throw new DiskImageError(this.path, `file ends after ${n} of ${length} bytes`, structure, pos, 'ETRUNC');
    }
    return b;
  }

  /** Whether page-aligned writes to this file go direct now (see setDirectWrites): a layout can then align its data. */
  get writesDirect(): boolean {
    return directWrites && this.writable && this.handle !== null && !this.isBlockDevice && this.directFd !== null;
  }

  /**
   * Whether a write of `parts` at `pos` would go direct (see setDirectWrites): every part a whole
   * number of pages of page-aligned memory, at a page-aligned offset of a regular local file.
   */
  takesDirect(parts: Uint8Array[], pos: number): boolean {
    if (!this.writesDirect || pos % PAGE !== 0) return false;
    for (const p of parts) if (p.length === 0 || p.length % PAGE !== 0 || !isPageAligned(p)) return false;
    return true;
  }

  /** Writes `parts` through the O_DIRECT descriptor; false (nothing written) where the file system refuses it. */
  private async writeDirect(parts: Uint8Array[], pos: number): Promise<boolean> {
    if (this.directFd === undefined) {
      try {
        this.directFd = openSync(this.path, fsc.O_WRONLY | (fsc.O_DIRECT ?? 0));
      } catch {
        this.directFd = null;
        return false;
      }
    }
    const fd = this.directFd!;
    const total = parts.reduce((n, b) => n + b.length, 0);
    if (behindDepth > 0 && parts.every((b) => behindMemory.has(b.buffer))) {
      await this.issueBehind(fd, parts, pos, total);
      return true;
    }
    let written: number;
    try {
      written = syncAllWrites
        ? (parts.length === 1 ? writeSync(fd, parts[0], 0, total, pos) : writevSync(fd, parts, pos))
        : await new Promise<number>((resolve, reject) => {
          const done = (e: NodeJS.ErrnoException | null, n: number) => (e ? reject(e) : resolve(n));
          if (parts.length === 1) fsWrite(fd, parts[0], 0, total, pos, done);
          else fsWritev(fd, parts, pos, done);
        });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
      // The file system takes no direct writes after all: buffered from now on.
      this.closeDirect();
      return false;
    }
    // A short direct write (disk full, a signal): the rest buffered, which reports the error if any.
    if (written < total) await this.writeRest(parts, written, pos);
    if (pos + total > this.currentSize) this.currentSize = pos + total;
    this.written++;
    return true;
  }

  /** A direct write left in flight (see setDirectWriteBehind), once fewer than the depth are and none overlaps it. */
  private async issueBehind(fd: number, parts: Uint8Array[], pos: number, total: number): Promise<void> {
    await this.waitBehind(pos, pos + total);
    while (this.behind.length >= behindDepth) await Promise.race(this.behind.map((w) => w.done));
    this.throwBehindError();
    const entry = { start: pos, end: pos + total, done: Promise.resolve() };
    const memory = [...new Set(parts.map((b) => b.buffer))];
    entry.done = (async () => {
      try {
        const written = await new Promise<number>((resolve, reject) => {
          const done = (e: NodeJS.ErrnoException | null, n: number) => (e ? reject(e) : resolve(n));
          if (parts.length === 1) fsWrite(fd, parts[0], 0, total, pos, done);
          else fsWritev(fd, parts, pos, done);
        });
        if (written < total) await this.writeRest(parts, written, pos);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EINVAL') {
          // The file system takes no direct writes after all: this one and all later ones buffered;
          // the descriptor closes once the writes still in flight on it are done.
          if (this.directFd === fd) {
            this.directFd = null;
            this.refusedDirectFd = fd;
          }
          try { await this.writeRest(parts, 0, pos); } catch (e2) { this.behindError ??= e2; }
        } else {
          this.behindError ??= e;
        }
      } finally {
        this.behind.splice(this.behind.indexOf(entry), 1);
        for (const m of memory) {
          const set = behindByMemory.get(m)!;
          set.delete(entry.done);
          if (set.size === 0) behindByMemory.delete(m);
        }
        if (this.behind.length === 0 && this.refusedDirectFd !== null) {
          closeSync(this.refusedDirectFd);
          this.refusedDirectFd = null;
        }
      }
    })();
    this.behind.push(entry);
    for (const m of memory) {
      let set = behindByMemory.get(m);
      if (!set) behindByMemory.set(m, (set = new Set()));
      set.add(entry.done);
    }
    if (pos + total > this.currentSize) this.currentSize = pos + total;
    this.written++;
  }

  /** Waits for the direct writes in flight that overlap [start, end) (all of them: end Infinity). */
  private async waitBehind(start: number, end: number): Promise<void> {
    if (this.behind.length === 0) return;
    const overlapping = this.behind.filter((w) => w.start < end && start < w.end).map((w) => w.done);
    if (overlapping.length > 0) await Promise.all(overlapping);
  }

  private throwBehindError(): void {
    if (this.behindError === null) return;
    const e = this.behindError;
    this.behindError = null;
    throw e;
  }

  /** After a short write of `parts` at `pos`: the bytes past the first `done`, buffered, one part at a time. */
  private async writeRest(parts: Uint8Array[], done: number, pos: number): Promise<void> {
    let skip = done;
    let at = pos + done;
    for (const b of parts) {
      if (skip >= b.length) { skip -= b.length; continue; }
      await this.writeBuffered(b.subarray(skip), at);
      at += b.length - skip;
      skip = 0;
    }
  }

  private closeDirect(): void {
    const fd = this.directFd;
    this.directFd = null;
    if (typeof fd === 'number') closeSync(fd);
  }

  async writeAt(data: Uint8Array, pos: number): Promise<void> {
    if (!this.writable) throw new DiskImageError(this.path, 'opened read-only', undefined, undefined, 'EREADONLY');
    if (this.behind.length > 0) await this.waitBehind(pos, pos + data.length);
    this.throwBehindError();
    if (this.takesDirect([data], pos) && await this.writeDirect([data], pos)) return;
    await this.writeBuffered(data, pos);
  }

  private async writeBuffered(data: Uint8Array, pos: number): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const want = data.length - done;
      done += want <= syncWriteLimit || syncAllWrites
        ? writeSync(this.handle!.fd, data, done, want, pos + done)
        : (await this.handle!.write(data, done, want, pos + done)).bytesWritten;
    }
    if (pos + data.length > this.currentSize) this.currentSize = pos + data.length;
    this.written++;
  }

  /** Writes at the descriptor's own position (a pipe or a character device, which have no offsets). */
  async writeNext(data: Uint8Array): Promise<void> {
    if (!this.writable) throw new DiskImageError(this.path, 'opened read-only', undefined, undefined, 'EREADONLY');
    for (let done = 0; done < data.length;) done += (await this.handle!.write(data, done, data.length - done, null)).bytesWritten;
  }

  /** Writes several buffers back to back in one call (no copy into a joined buffer). */
  async writevAt(parts: Uint8Array[], pos: number): Promise<void> {
    if (!this.writable) throw new DiskImageError(this.path, 'opened read-only', undefined, undefined, 'EREADONLY');
    const total = parts.reduce((n, b) => n + b.length, 0);
    if (this.behind.length > 0) await this.waitBehind(pos, pos + total);
    this.throwBehindError();
    if (this.takesDirect(parts, pos) && await this.writeDirect(parts, pos)) return;
    const bytesWritten = syncAllWrites ? writevSync(this.handle!.fd, parts, pos) : (await this.handle!.writev(parts, pos)).bytesWritten;
    // A short vectored write (rare on regular files): finish the rest with plain writes.
    if (bytesWritten < total) await this.writeRest(parts, bytesWritten, pos);
    if (pos + total > this.currentSize) this.currentSize = pos + total;
    this.written++;
  }

  async truncate(length: number): Promise<void> {
    if (this.behind.length > 0) await this.waitBehind(0, Infinity);
    this.throwBehindError();
    await this.handle!.truncate(length);
    this.currentSize = length;
    this.written++;
  }

  /**
   * Makes every write made through this object durable (fdatasync: the data and what reading it
   * needs, such as the size; not the timestamps). Nothing written since the last completed sync:
   * nothing to do (a merge's last flush, then the close's, cost a journal commit each otherwise).
   */
  async sync(): Promise<void> {
    if (!this.writable) return;
    const upTo = this.written;
    // The direct writes in flight when the sync was asked for: done before the disk's cache is flushed.
    if (this.behind.length > 0) await this.waitBehind(0, Infinity);
    this.throwBehindError();
    if (upTo === this.synced) return;
    await this.handle!.datasync();
    if (upTo > this.synced) this.synced = upTo;
  }

  /** True when the file has no name left (a merged child deleted while still open). */
  async unlinked(): Promise<boolean> {
    if (!this.handle) return false;
    return (await this.handle.stat()).nlink === 0;
  }

  private park(): void {
    const source = this.remote!;
    const key = this.parkKey;
    const before = parked.get(key);
    if (before) {
      clearTimeout(before.timer);
      void before.source.close().catch(() => undefined);
    }
    const timer = setTimeout(() => {
      if (parked.get(key)?.source === source) parked.delete(key);
      void source.close().catch(() => undefined);
    }, PARK_MS);
    timer.unref();
    parked.set(key, { source, timer });
  }

  async close(): Promise<void> {
    try {
      if (this.behind.length > 0) await this.waitBehind(0, Infinity);
      this.closeDirect();
      if (this.handle) await this.handle.close();
      else if (this.parkOnClose) this.park();
      else await this.remote!.close();
      // A write in flight that failed and that no sync reported: the caller must not take the file as written.
      this.throwBehindError();
    } finally {
      this.unlock();
    }
  }
}

export function describeFsError(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  switch (err?.code) {
    case 'ENOENT': return 'no such file';
    case 'EACCES': case 'EPERM': return 'permission denied';
    case 'EISDIR': return 'is a directory';
    case 'ELOOP': return 'too many levels of symbolic links';
    case 'EEXIST': return 'file already exists';
    case 'EBUSY': return 'file is busy';
    default: return err?.message ?? String(e);
  }
}
