// The local cache of a remote parent: every byte read once is kept in a sparse file next to the child.
import { closeSync, constants as fsConstants, existsSync, fdatasync, linkSync, openSync, readdirSync, readFileSync, readSync, renameSync, unlinkSync, write, writev, writeSync, ftruncateSync, statSync } from 'fs';
import * as nodePath from 'path';
import { promisify } from 'util';
import { DiskImageError } from '../format/errors';
import { crc32cUpdate } from '../format/vhdx/crc32c';
import { isPageAligned, PAGE } from './alignedBuffer';
import { ByteSource, HTTP_CHUNK } from './byteSource';

/**
 * Layout: a 4 KiB header (magic line, then JSON: location, size, validator, chunk size), two
 * metadata slots, then the parent's bytes at their own offsets past those, as a sparse file.
 *
 * A slot holds a generation, a checksum, the boot it was written in and two chunk bitmaps:
 * `present` (the chunk's bytes were written to this file before the slot was) and `durable` (they
 * were also fsynced before the slot was written). Data is never fsynced per chunk: a chunk's bit
 * is only set in a slot written after its data write returned, so a killed process leaves at most
 * data without bits (fetched again), never bits without data. A crash of the machine can lose
 * unsynced data, so a slot read after a reboot (another boot id) counts only its `durable` chunks.
 * Slots alternate (the newer generation wins); a torn slot fails its checksum and the other one is
 * used; a cache with no valid slot or header is dropped and started again, never read.
 */
const MAGIC = 'diskimg parent cache 2\n';
const HEADER = 4096;
const SLOT_MAGIC = 'DIMS';
/** Slot head: magic, generation, checksum of the rest, 4 spare bytes, the boot id (36 bytes). */
const SLOT_HEAD = 64;
/** New chunks are recorded in a slot after this many (and on close). */
const COMMIT_EVERY = 16;

const writeAsync = promisify(write);
const writevAsync = promisify(writev);
const fdatasyncAsync = promisify(fdatasync);

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

let durableOnClose = false;

/**
 * Commands that warm a cache on purpose (`cache --fill`) or run long (`serve`) fsync its data on
 * close so that it survives a reboot; a plain read leaves that to the page cache.
 */
export function syncCachesOnClose(on: boolean): void {
  durableOnClose = on;
}

let bootIdMemo: string | null = null;
/** This boot's id: page-cache contents written in it are there for every reader until the next boot. */
function bootId(): string {
  if (bootIdMemo === null) {
    // DISKIMG_BOOT_ID stands for the kernel's (tests play a reboot with it).
    if (process.env.DISKIMG_BOOT_ID !== undefined) return process.env.DISKIMG_BOOT_ID.slice(0, 36);
    try {
      bootIdMemo = readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim().slice(0, 36);
    } catch {
      bootIdMemo = ''; // unknown: only fsynced chunks count
    }
  }
  return bootIdMemo;
}

function bitmapBytes(size: number, chunk: number): number {
  return Math.ceil(Math.ceil(size / chunk) / 8);
}

function slotSize(bitmap: number): number {
  return Math.ceil((SLOT_HEAD + 2 * bitmap) / 4096) * 4096;
}

interface SlotState { generation: number; present: Buffer; durable: Buffer }

function readHeader(fd: number): CacheHeader | null {
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
  return header;
}

/**
 * The newest slot whose checksum holds, with the chunks it may vouch for in this boot; null when
 * neither slot is whole (the cache is torn).
 */
function readSlots(fd: number, header: CacheHeader): SlotState | null {
  const bytes = bitmapBytes(header.size, header.chunk);
  const size = slotSize(bytes);
  let best: SlotState | null = null;
  for (let i = 0; i < 2; i++) {
    const b = Buffer.alloc(size);
    if (readSync(fd, b, 0, size, HEADER + i * size) < size) continue;
    if (b.toString('latin1', 0, 4) !== SLOT_MAGIC) continue;
    if (b.readUInt32LE(8) !== crc32cUpdate(0, b.subarray(12, SLOT_HEAD + 2 * bytes))) continue;
    const generation = b.readUInt32LE(4);
    if (best && best.generation >= generation) continue;
    const boot = b.toString('latin1', 16, 52).replace(/\0+$/, '');
    const durable = Buffer.from(b.subarray(SLOT_HEAD + bytes, SLOT_HEAD + 2 * bytes));
    // Written in another boot (or one we cannot name): unsynced chunks may not have reached the disk.
    const present = boot !== '' && boot === bootId() ? Buffer.from(b.subarray(SLOT_HEAD, SLOT_HEAD + bytes)) : Buffer.from(durable);
    best = { generation, present, durable };
  }
  return best;
}

function encodeSlot(state: SlotState): Buffer {
  const bytes = state.present.length;
  const b = Buffer.alloc(slotSize(bytes));
  b.write(SLOT_MAGIC, 0, 'latin1');
  b.writeUInt32LE(state.generation >>> 0, 4);
  b.write(bootId(), 16, 36, 'latin1');
  state.present.copy(b, SLOT_HEAD);
  state.durable.copy(b, SLOT_HEAD + bytes);
  b.writeUInt32LE(crc32cUpdate(0, b.subarray(12, SLOT_HEAD + 2 * bytes)), 8);
  return b;
}

function countBits(bitmap: Buffer, header: CacheHeader): { chunks: number; bytes: number } {
  const chunks = Math.ceil(header.size / header.chunk);
  let cached = 0;
  let bytes = 0;
  for (let c = 0; c < chunks; c++) {
    if (bitmap[c >> 3] & (1 << (c & 7))) {
      cached++;
      bytes += Math.min(header.chunk, header.size - c * header.chunk);
    }
  }
  return { chunks: cached, bytes };
}

/** Reads the cache's header and fill without touching the server; null when there is no valid cache. */
export function cacheStatus(path: string): CacheStatus | null {
  if (!existsSync(path)) return null;
  const fd = openSync(path, 'r');
  try {
    const header = readHeader(fd);
    const slot = header && readSlots(fd, header);
    if (!header || !slot) return null;
    const n = countBits(slot.present, header);
    return { ...header, path, chunks: Math.ceil(header.size / header.chunk), cachedChunks: n.chunks, cachedBytes: n.bytes };
  } finally {
    closeSync(fd);
  }
}

/**
 * Another child's cache of the same parent in the same directory (same URL, same validator): a
 * new cache becomes a second name (hard link) of it, so two children of one URL fetch each byte once.
 */
function siblingCache(path: string, location: string, validator: string | null): string | null {
  const dir = nodePath.dirname(path);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return null;
  }
  for (const name of names) {
    if (!name.startsWith('.') || !name.endsWith('.parent-cache')) continue;
    const other = nodePath.join(dir, name);
    if (other === path) continue;
    let fd: number;
    try {
      fd = openSync(other, 'r');
    } catch {
      continue;
    }
    try {
      const h = readHeader(fd);
      // (validator null: any cache of that URL, before the server was asked)
      if (h && h.location === location && (validator === null || h.validator === validator) && readSlots(fd, h)) return other;
    } finally {
      closeSync(fd);
    }
  }
  return null;
}

/** Writes a new empty cache at `path` (made aside, then renamed in, so no reader sees it half made). */
function createCache(path: string, header: CacheHeader): void {
  const tmp = `${path}.${process.pid}.new`;
  const fd = openSync(tmp, 'w+');
  try {
    const h = Buffer.alloc(HEADER);
    h.write(MAGIC, 0, 'latin1');
    h.write(JSON.stringify(header), MAGIC.length, 'utf8');
    writeSync(fd, h, 0, HEADER, 0);
    const bytes = bitmapBytes(header.size, header.chunk);
    const slot = encodeSlot({ generation: 1, present: Buffer.alloc(bytes), durable: Buffer.alloc(bytes) });
    writeSync(fd, slot, 0, slot.length, HEADER + (1 % 2) * slot.length); // generation n lives in slot n % 2
    ftruncateSync(fd, HEADER + 2 * slot.length + header.size);
    // No fsync: an empty cache vouches for nothing. After a machine crash it is whole, torn (no
    // valid header or slot: started again) or missing; a journal commit here cost a first read a
    // wait of 5 ms to tens of ms on a disk busy with other writes.
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
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
  /** Chunks whose data write returned (their bits are set in memory) not yet recorded in a slot. */
  private uncommitted = 0;
  /** Slot writes, one after another. */
  private committing: Promise<void> = Promise.resolve();
  private wrote = false;
  /**
   * The same file opened with O_DIRECT, for page-aligned received bodies: the disk takes them
   * from our buffer, no copy into the page cache (null where the file system refuses O_DIRECT).
   */
  private directFd: number | null = null;
  /** Received bodies being stored (onReceived), awaited before the last commit. */
  private readonly storing = new Set<Promise<void>>();
  /** Chunks a store is writing now: a read that fetched them leaves the writing to it. */
  private readonly storingChunks = new Set<number>();
  /** The first failed store (disk full…): reported by the next read, since the store ran in the background. */
  private storeError: Error | null = null;
  private closing = false;
  private readonly dataOffset: number;
  private readonly slotBytes: number;

  private constructor(
    private readonly path: string,
    private readonly fd: number,
    private readonly header: CacheHeader,
    private readonly state: SlotState,
    private readonly openRemote: (prefetch: boolean) => Promise<ByteSource>,
  ) {
    this.slotBytes = slotSize(state.present.length);
    this.dataOffset = HEADER + 2 * this.slotBytes;
    try {
      this.directFd = openSync(path, fsConstants.O_RDWR | fsConstants.O_DIRECT);
    } catch {
      this.directFd = null;
    }
  }

  get location(): string { return this.header.location; }
  get kind(): string { return this.remote?.kind ?? new URL(this.header.location).protocol.replace(':', ''); }
  get size(): number { return this.header.size; }
  get validator(): string { return this.header.validator; }
  get mtime(): Date | null { return this.remote?.mtime ?? null; }
  get requests(): number { return this.remote?.requests ?? 0; }

  /** `openRemote(prefetch)`: prefetch the parent's ends only when no cache is likely to hold them. */
  static async open(path: string, location: string, openRemote: (prefetch: boolean) => Promise<ByteSource>): Promise<CachedSource> {
    let remote: ByteSource | null = null;
    try {
      let existing: { header: CacheHeader; state: SlotState } | null = null;
      if (existsSync(path)) {
        const fd = openSync(path, 'r');
        try {
          const header = readHeader(fd);
          const state = header && readSlots(fd, header);
          if (header && state) existing = { header, state };
        } finally {
          closeSync(fd);
        }
        if (existing && existing.header.location !== location) {
          throw new DiskImageError(path, `the parent cache is of ${existing.header.location}, not ${location} (diskimg cache <child> --drop)`, undefined, undefined, 'ECACHE');
        }
        // No valid header or slot: torn or not a cache of ours; it is started again below.
      }
      if (!existing) {
        // A new cache: the server tells size and validator now.
        remote = await openRemote(!siblingCache(path, location, null));
        const header: CacheHeader = { location, size: remote.size, validator: remote.validator, chunk: HTTP_CHUNK };
        const sibling = siblingCache(path, location, remote.validator);
        let linked = false;
        if (sibling) {
          try {
            if (existsSync(path)) unlinkSync(path);
            linkSync(sibling, path);
            linked = true;
          } catch {
            linked = false;
          }
        }
        if (!linked) createCache(path, header);
      }
      const fd = openSync(path, 'r+');
      const header = readHeader(fd);
      const state = header && readSlots(fd, header);
      if (!header || !state) {
        closeSync(fd);
        throw new DiskImageError(path, 'the parent cache changed while it was opened', undefined, undefined, 'ECACHE');
      }
      const source = new CachedSource(path, fd, header, state, openRemote);
      if (remote && remote.validator === header.validator && remote.size === header.size) {
        source.remote = remote;
        source.attach(remote);
      }
      else await remote?.close();
      return source;
    } catch (e) {
      await remote?.close().catch(() => undefined);
      if (e instanceof DiskImageError) throw e;
      throw new DiskImageError(path, `cannot open the parent cache: ${(e as Error).message}`, undefined, undefined, 'EOPEN');
    }
  }

  /** Read-ahead skips what is here; whatever arrives is stored from the buffer it arrived in. */
  private attach(r: ByteSource): void {
    r.isHeld = (offset) => this.has(Math.floor(offset / this.header.chunk));
    r.onReceived = (offset, pieces) => this.store(offset, pieces);
  }

  /**
   * Writes bytes the server sent (from `offset`, a chunk boundary) into the data area and then
   * marks their whole chunks present. A page-aligned single buffer goes through O_DIRECT except an
   * unaligned tail (the parent's last bytes), which goes through the page cache.
   */
  private store(offset: number, pieces: Buffer[]): Promise<void> {
    const chunk = this.header.chunk;
    const length = pieces.reduce((n, p) => n + p.length, 0);
    if (this.closing || length === 0 || offset % chunk !== 0) return Promise.resolve();
    const first = offset / chunk;
    const last = Math.floor((offset + length - 1) / chunk);
    const whole = (k: number) => (k + 1) * chunk <= offset + length || offset + length === this.size;
    for (let k = first; k <= last; k++) if (whole(k)) this.storingChunks.add(k);
    const at = this.dataOffset + offset;
    const write = async () => {
      const b = pieces[0];
      if (pieces.length === 1 && this.directFd !== null && isPageAligned(b)) {
        const direct = length - (length % PAGE);
        try {
          if (direct > 0) await writeAsync(this.directFd, b, 0, direct, at);
          if (direct < length) await writeAsync(this.fd, b, direct, length - direct, at + direct);
          return;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
          // This file system takes no O_DIRECT writes after all: the page cache from now on.
          closeSync(this.directFd);
          this.directFd = null;
        }
      }
      await writevAsync(this.fd, pieces, at);
    };
    const stored = write().then(() => {
      this.wrote = true;
      for (let k = first; k <= last; k++) {
        if (!whole(k)) continue;
        this.state.present[k >> 3] |= 1 << (k & 7);
        this.uncommitted++;
      }
      if (this.uncommitted >= COMMIT_EVERY) void this.commit().catch(() => undefined);
    }, (e: Error) => {
      this.storeError ??= new DiskImageError(this.path, `cannot write the parent cache at ${at}: ${e.message}`, undefined, undefined, 'EIO');
    }).finally(() => {
      for (let k = first; k <= last; k++) this.storingChunks.delete(k);
      this.storing.delete(stored);
    });
    this.storing.add(stored);
    return stored;
  }

  private has(c: number): boolean {
    return (this.state.present[c >> 3] & (1 << (c & 7))) !== 0;
  }

  private async server(): Promise<ByteSource> {
    if (this.remote) return this.remote;
    this.opening ??= this.openRemote(false).then(async (r) => {
      this.attach(r);
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
    // A chunk read ahead is usually stored before the reader gets to it: while the source still
    // holds it in memory it is copied from there, not read back from the file (written with
    // O_DIRECT, so that is a synchronous disk read).
    const fromFile = (k: number) => this.has(k) && !this.remote?.holds?.(k * chunk);
    while (pos < end) {
      const c = Math.floor(pos / chunk);
      const cached = fromFile(c);
      // The run of chunks with the same state.
      let runEnd = Math.min(end, (c + 1) * chunk);
      while (runEnd < end && fromFile(Math.floor(runEnd / chunk)) === cached) runEnd = Math.min(end, runEnd + chunk);
      const slice = target.subarray(pos - offset, runEnd - offset);
      if (cached) {
        readSync(this.fd, slice, 0, slice.length, this.dataOffset + pos);
        this.remote?.advise?.(pos, slice.length);
      } else {
        // Whole chunks are fetched and kept, so a chunk's bit always means all of it is here.
        const from = Math.floor(pos / chunk) * chunk;
        const to = Math.min(this.size, Math.ceil(runEnd / chunk) * chunk);
        // A read of whole chunks lands in the caller's buffer; otherwise in one of our own.
        const direct = from === pos && to === runEnd;
        const buf = direct ? slice : Buffer.allocUnsafe(to - from);
        const remote = await this.server();
        const n = await remote.read(from, buf);
        if (n < buf.length) throw new DiskImageError(this.location, `short read: ${n} of ${buf.length} bytes at ${from}`, undefined, undefined, 'EREMOTE');
        if (this.storeError) throw this.storeError;
        // Chunks the source did not hand to store() (a source without onReceived): written here,
        // from the thread pool, awaited before the buffer goes back to the caller.
        let k = from / chunk;
        while (k * chunk < to) {
          if (this.has(k) || this.storingChunks.has(k)) { k++; continue; }
          const runFrom = k;
          while (k * chunk < to && !this.has(k) && !this.storingChunks.has(k)) k++;
          const a = runFrom * chunk;
          const b = Math.min(to, k * chunk);
          await writeAsync(this.fd, buf, a - from, b - a, this.dataOffset + a);
          this.wrote = true;
          for (let j = runFrom; j < k; j++) {
            this.state.present[j >> 3] |= 1 << (j & 7);
            this.uncommitted++;
          }
        }
        if (!direct) slice.set(buf.subarray(pos - from, runEnd - from));
        if (this.uncommitted >= COMMIT_EVERY) void this.commit().catch(() => undefined);
      }
      pos = runEnd;
    }
    return end - offset;
  }

  /** Records the chunks written so far in the older slot (after their data: see the layout note). */
  private commit(durable = false): Promise<void> {
    this.committing = this.committing.then(async () => {
      if (this.uncommitted === 0 && !durable) return;
      this.uncommitted = 0;
      if (durable) {
        const known = Buffer.from(this.state.present);
        await fdatasyncAsync(this.fd);
        for (let i = 0; i < known.length; i++) this.state.durable[i] |= known[i];
      }
      // Another child's process may share this file (a hard link): keep what it recorded too.
      const disk = readSlots(this.fd, this.header);
      if (disk) {
        for (let i = 0; i < disk.present.length; i++) {
          this.state.present[i] |= disk.present[i];
          this.state.durable[i] |= disk.durable[i];
        }
        this.state.generation = Math.max(this.state.generation, disk.generation);
      }
      this.state.generation++;
      const slot = encodeSlot(this.state);
      await writeAsync(this.fd, slot, 0, slot.length, HEADER + (this.state.generation % 2) * this.slotBytes);
    });
    return this.committing;
  }

  async close(): Promise<void> {
    this.closing = true;
    try {
      // No more answers arrive once the source is closed; the ones received are stored first.
      await this.remote?.close();
      await Promise.all(this.storing);
      const unsynced = this.wrote || this.state.present.some((b, i) => (b & ~this.state.durable[i]) !== 0);
      await this.commit(unsynced && (durableOnClose || bootId() === ''));
    } finally {
      closeSync(this.fd);
      if (this.directFd !== null) closeSync(this.directFd);
    }
  }
}

/** `cache --drop`: removes the cache file (true when there was one). */
export function dropCache(path: string): boolean {
  if (!existsSync(path)) return false;
  unlinkSync(path);
  return true;
}
