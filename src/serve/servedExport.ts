import { existsSync } from 'fs';
import * as nodePath from 'path';
import { Chain, MapExtent, openChain } from '../chain/chain';
import { createChild } from '../chain/createChild';
import { discardChild } from '../chain/discard';
import { mergeChild } from '../chain/merge';
import { nextSnapshotName } from '../chain/snapshot';
import { DiskImageError } from '../format/errors';
import { acquireWriteLock } from '../io/lock';
import { SharedLayers } from './sharedLayers';

export type OnExit = 'keep' | 'discard' | 'merge';

export interface SnapshotInfo {
  /** The frozen layer: its chain reads as the disk did when it was frozen. */
  path: string;
  /** When it was frozen (ISO 8601). */
  created: string;
}

export interface ExportStatus {
  name: string;
  top: string;
  chain: string[];
  clients: number;
  bytesRead: number;
  bytesWritten: number;
  snapshots: SnapshotInfo[];
  /** The image the export was started on; with a session, the image that is never written. */
  image: string;
  session: string | null;
  readOnly: boolean;
}

/** What happened to an export when the server stopped. */
export interface ExitOutcome {
  name: string;
  onExit: OnExit | null;
  /** The chain and snapshots as they were when serving stopped. */
  top: string;
  chain: string[];
  snapshots: SnapshotInfo[];
  /** keep: the top left in place; merge: the image merged into. */
  kept?: string;
  merged?: string[];
  into?: string;
  discarded?: string[];
  error?: string;
}

/** Serialises async work: each call runs after the previous one has finished. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

const ZEROS = Buffer.alloc(1024 * 1024);
const METADATA_WRITE_DELAY_MS = 1000;

/**
 * One export: a chain whose top takes the writes. Every write (and flush) goes through one queue, so
 * writes never interleave inside the core's write path (sector bitmaps, block appends); reads run
 * freely beside them. A freeze (snapshot, stop) holds new requests at the gate, waits for the ones
 * in flight, changes the chain, and lets the held requests through.
 */
export class ServedExport {
  clients = 0;
  bytesRead = 0;
  bytesWritten = 0;
  /** Writes since the top was last frozen: an automatic snapshot of an unchanged top is skipped. */
  changedSinceSnapshot = false;
  readonly snapshots: SnapshotInfo[] = [];
  private inFlight = 0;
  private drained: (() => void) | null = null;
  private gate: Promise<void> | null = null;
  private readonly writes = new Mutex();
  private readonly freezes = new Mutex();
  /** Releases of the write locks this export holds beyond its top's (the session's image, frozen snapshots). */
  private readonly locks = new Map<string, () => void>();
  private stopped = false;

  private constructor(
    readonly name: string,
    /** The image named on the command line. */
    readonly image: string,
    /** The session child created for this run, or null when the image itself is served. */
    readonly session: string | null,
    readonly readOnly: boolean,
    private chainNow: Chain,
    private readonly shared: SharedLayers,
  ) {
    this.served(chainNow);
  }

  /**
   * A chain this export writes into: its top may keep metadata updates (sector bitmaps) in memory
   * until a flush (FLUSH, FUA, a freeze, stop) or the next timed write-back, which halves the file
   * writes of small writes. Unflushed writes may be lost to a kill anyway; flushed ones never are.
   */
  private served(chain: Chain): Chain {
    if (!this.readOnly) chain.top.deferMetadataWrites?.();
    return chain;
  }

  private metadataTimer: NodeJS.Timeout | null = null;

  /** Kept-back metadata reaches the file within a second of a write, flush or not. */
  private scheduleMetadataWrite(): void {
    if (this.metadataTimer || this.stopped) return;
    this.metadataTimer = setTimeout(() => {
      this.metadataTimer = null;
      if (this.stopped) return;
      this.request((c) => this.writes.run(async () => { await c.top.writeMetadata?.(); })).catch(() => undefined);
    }, METADATA_WRITE_DELAY_MS);
    this.metadataTimer.unref();
  }

  static async open(name: string, image: string, options: { readOnly: boolean; session: boolean; shared: SharedLayers }): Promise<ServedExport> {
    const abs = nodePath.resolve(image);
    if (!options.session) {
      const chain = await openChain(abs, { writable: !options.readOnly, openAncestor: options.shared.open });
      return new ServedExport(name, abs, null, options.readOnly, chain, options.shared);
    }
    // The image is never written during the session, but `--on-exit merge` writes it at the end:
    // hold its lock from the start, so nobody else merges into it or serves it meanwhile.
    const releaseImage = acquireWriteLock(abs);
    let child: string | null = null;
    try {
      child = sessionChildName(abs);
      await createChild(abs, child);
      const chain = await openChain(child, { writable: true, openAncestor: options.shared.open });
      const exp = new ServedExport(name, abs, child, false, chain, options.shared);
      exp.locks.set(abs, releaseImage);
      return exp;
    } catch (e) {
      if (child && existsSync(child)) await discardChild(child).catch(() => undefined);
      releaseImage();
      throw e;
    }
  }

  get chain(): Chain {
    return this.chainNow;
  }

  get virtualSize(): number {
    return this.chainNow.virtualSize;
  }

  /** File name of the layer writes go to, for the trace. */
  get topName(): string {
    return nodePath.basename(this.chainNow.top.path);
  }

  status(): ExportStatus {
    return {
      name: this.name,
      top: this.chainNow.top.path,
      chain: this.chainNow.layers.map((l) => l.path),
      clients: this.clients,
      bytesRead: this.bytesRead,
      bytesWritten: this.bytesWritten,
      snapshots: this.snapshots.map((s) => ({ ...s })),
      image: this.image,
      session: this.session,
      readOnly: this.readOnly,
    };
  }

  /** Runs one request: held while a freeze is on, counted so a freeze can wait for it. */
  private async request<T>(fn: (chain: Chain) => Promise<T>): Promise<T> {
    while (this.gate) await this.gate;
    if (this.stopped) throw new DiskImageError(this.image, 'the server is shutting down', undefined, undefined, 'ESHUTDOWN');
    this.inFlight++;
    try {
      return await fn(this.chainNow);
    } finally {
      if (--this.inFlight === 0 && this.drained) this.drained();
    }
  }

  async read(offset: number, target: Buffer): Promise<void> {
    await this.request((c) => c.read(offset, target));
    this.bytesRead += target.length;
  }

  /**
   * Where one local file holds the bytes of [offset, offset+length) as the chain reads them: `send`
   * gets its descriptor and position while the chain is held open (no freeze closes it meanwhile)
   * and returns how many of those bytes it sent; null when no such run is known (read instead).
   */
  async sendFrom(offset: number, length: number, send: (fd: number, position: number) => number): Promise<number | null> {
    const sent = await this.request(async (c) => {
      const at = c.fileExtent(offset, length);
      return at ? send(at.fd, at.position) : null;
    });
    if (sent) this.bytesRead += sent;
    return sent;
  }

  async map(offset: number, length: number): Promise<MapExtent[]> {
    return this.request((c) => c.map(offset, length));
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<string> {
    return this.request((c) => this.writes.run(async () => {
      this.changedSinceSnapshot = true;
      await c.write(offset, data);
      this.bytesWritten += data.length;
      if (fua) await c.flush();
      else this.scheduleMetadataWrite();
      return nodePath.basename(c.top.path);
    }));
  }

  /** Zeros a range; without `allocate`, a range no layer holds (it reads as zeros already) is left alone. */
  async writeZeroes(offset: number, length: number, allocate: boolean, fua: boolean): Promise<string> {
    return this.request((c) => this.writes.run(async () => {
      this.changedSinceSnapshot = true;
      const end = offset + length;
      const holes = allocate ? [] : (await c.map(offset, length)).filter((e) => !e.data);
      let pos = offset;
      const zero = async (from: number, to: number) => {
        for (let p = from; p < to; p += ZEROS.length) await c.write(p, ZEROS.subarray(0, Math.min(ZEROS.length, to - p)));
      };
      for (const h of holes) {
        if (h.start > pos) await zero(pos, h.start);
        pos = Math.max(pos, h.start + h.length);
      }
      if (pos < end) await zero(pos, end);
      this.bytesWritten += length;
      if (fua) await c.flush();
      else this.scheduleMetadataWrite();
      return nodePath.basename(c.top.path);
    }));
  }

  async flush(): Promise<void> {
    await this.request((c) => this.writes.run(() => c.flush()));
  }

  /** Holds new requests, waits for those in flight, runs `fn`, then lets requests through again. */
  private freeze<T>(fn: () => Promise<T>, forever = false): Promise<T> {
    return this.freezes.run(async () => {
      let open!: () => void;
      this.gate = new Promise<void>((r) => { open = r; });
      try {
        if (this.inFlight > 0) await new Promise<void>((r) => { this.drained = r; });
        this.drained = null;
        return await fn();
      } finally {
        if (!forever) {
          this.gate = null;
          open();
        } else {
          this.stopped = true;
          this.gate = null;
          open();
        }
      }
    });
  }

  /**
   * Freezes the current top and continues in a new child of it; returns the new top. With `keep`,
   * when more than `keep` snapshots exist, the oldest is folded into the one before it. `onFrozen`
   * runs while requests are held (the trace's snapshot mark: no request lands on the wrong side).
   */
  async snapshot(keep?: number, onFrozen?: (frozen: string) => void): Promise<string> {
    if (this.readOnly) throw new DiskImageError(this.image, 'a read-only export cannot take snapshots', undefined, undefined, 'EREADONLY');
    const top = await this.freeze(async () => {
      if (this.stopped) throw new DiskImageError(this.image, 'the server is shutting down', undefined, undefined, 'ESHUTDOWN');
      const old = this.chainNow;
      await old.flush();
      const frozen = old.top.path;
      const next = nextSnapshotName(frozen);
      await createChild(frozen, next);
      // The frozen layer is written again only if --keep folds a later snapshot into it.
      const release = acquireWriteLock(frozen);
      let chain: Chain;
      try {
        chain = await openChain(next, { writable: true, openAncestor: this.shared.open });
      } catch (e) {
        release();
        await discardChild(next).catch(() => undefined);
        throw e;
      }
      this.chainNow = this.served(chain);
      this.changedSinceSnapshot = false;
      await old.close();
      this.locks.set(frozen, release);
      this.snapshots.push({ path: frozen, created: new Date().toISOString() });
      onFrozen?.(frozen);
      return next;
    });
    if (keep !== undefined) {
      while (this.snapshots.length > keep && this.snapshots.length >= 2) await this.foldOldest();
    }
    return top;
  }

  /**
   * Goes back to a snapshot: deletes every layer above it and continues in a fresh child of it, so
   * the disk reads as it did when the snapshot was taken. Refused while a client is connected (its
   * cache would hold blocks the revert takes away). Returns the new top.
   */
  async revert(snapshotPath: string): Promise<{ top: string; discarded: string[] }> {
    if (this.readOnly) throw new DiskImageError(this.image, 'a read-only export has no snapshots', undefined, undefined, 'EREADONLY');
    return this.freeze(async () => {
      if (this.stopped) throw new DiskImageError(this.image, 'the server is shutting down', undefined, undefined, 'ESHUTDOWN');
      if (this.clients > 0) throw new DiskImageError(this.image, `${this.clients} client(s) connected: disconnect them before reverting`, undefined, undefined, 'EBUSY');
      const at = this.snapshots.findIndex((s) => nodePath.resolve(s.path) === nodePath.resolve(snapshotPath));
      if (at < 0) throw new DiskImageError(this.image, `${snapshotPath} is not one of this export's snapshots`, undefined, undefined, 'EARG');
      const target = this.snapshots[at].path;
      const layers = this.chainNow.layers.map((l) => l.path);
      const above = layers.slice(0, layers.indexOf(target));
      const top = this.chainNow.top.path;
      await this.chainNow.flush();
      await this.chainNow.close();
      const discarded: string[] = [];
      try {
        for (const layer of above) {
          // Later snapshots are locked by this export: release before deleting.
          this.locks.get(layer)?.();
          this.locks.delete(layer);
          await discardChild(layer);
          discarded.push(layer);
        }
        const next = nextSnapshotName(target);
        await createChild(target, next);
        this.chainNow = this.served(await openChain(next, { writable: true, openAncestor: this.shared.open }));
      } catch (e) {
        // Continue on whatever top is left, so the export keeps serving.
        const remaining = [top, ...above.slice(discarded.length), target].find((p) => existsSync(p) && !discarded.includes(p))!;
        this.chainNow = this.served(await openChain(remaining, { writable: true, openAncestor: this.shared.open }));
        throw e;
      }
      this.snapshots.splice(at + 1);
      this.changedSinceSnapshot = false;
      return { top: this.chainNow.top.path, discarded };
    });
  }

  /**
   * Merges the second-oldest snapshot into the oldest (its parent): the oldest point in time is
   * dropped, every later one stays readable. The oldest snapshot is the served image or the session
   * child, never the session's image. The chain is closed while the merge runs (it rewrites the
   * header of the layer above), so requests wait for it.
   */
  private async foldOldest(): Promise<void> {
    await this.freeze(async () => {
      const [oldest, second] = this.snapshots;
      const top = this.chainNow.top.path;
      await this.chainNow.flush();
      await this.chainNow.close();
      let error: unknown = null;
      try {
        await mergeChild(second.path);
      } catch (e) {
        error = e;
      }
      this.chainNow = this.served(await openChain(top, { writable: true, openAncestor: this.shared.open }));
      if (error) throw error;
      this.locks.get(second.path)?.();
      this.locks.delete(second.path);
      oldest.created = second.created;
      this.snapshots.splice(1, 1);
    });
  }

  /** Waits for requests in flight, flushes and closes; then applies `onExit` to a session. */
  async stop(onExit: OnExit | null): Promise<ExitOutcome> {
    if (this.metadataTimer) clearTimeout(this.metadataTimer);
    this.metadataTimer = null;
    const layers = this.chainNow.layers.map((l) => l.path);
    const outcome: ExitOutcome = {
      name: this.name,
      onExit: this.session ? (onExit ?? 'keep') : null,
      top: layers[0],
      chain: layers,
      snapshots: this.snapshots.map((s) => ({ ...s })),
    };
    await this.freeze(async () => {
      const chain = this.chainNow;
      outcome.top = chain.top.path;
      outcome.chain = chain.layers.map((l) => l.path);
      outcome.snapshots = this.snapshots.map((s) => ({ ...s }));
      const layers = outcome.chain;
      await chain.flush().catch(() => undefined);
      await chain.close();
      try {
        if (!this.session) return;
        const created = layers.slice(0, layers.indexOf(this.session) + 1);
        if (outcome.onExit === 'keep') {
          outcome.kept = layers[0];
        } else if (outcome.onExit === 'discard') {
          outcome.discarded = [];
          for (const layer of created) {
            await discardChild(layer);
            outcome.discarded.push(layer);
          }
        } else {
          const r = await mergeChild(layers[0], { into: this.image });
          outcome.merged = r.merged;
          outcome.into = r.target;
        }
      } catch (e) {
        outcome.error = (e as Error).message;
        outcome.kept = layers[0];
      } finally {
        for (const release of this.locks.values()) release();
        this.locks.clear();
      }
    }, true);
    return outcome;
  }
}

/** `disk.vhd` -> `disk.session-20261202T040509Z.vhd` next to it (a suffix if that is taken). */
export function sessionChildName(image: string): string {
  const dir = nodePath.dirname(image);
  const ext = nodePath.extname(image) || '.vhd';
  const stem = nodePath.basename(image, nodePath.extname(image));
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  let candidate = nodePath.join(dir, `${stem}.session-${stamp}${ext}`);
  for (let n = 2; existsSync(candidate); n++) candidate = nodePath.join(dir, `${stem}.session-${stamp}.${n}${ext}`);
  return candidate;
}
