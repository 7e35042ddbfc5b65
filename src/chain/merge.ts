import { closeSync, fsyncSync, openSync, readFileSync, unlinkSync, writeFileSync, renameSync, existsSync, statSync } from 'fs';
import * as nodePath from 'path';
import { CommitStaged, DiskImage } from '../format/diskImage';
import { DiskImageError } from '../format/errors';
import { getFormat, openImage } from '../format/registry';
import { acquireWriteLock } from '../io/lock';
import { allowWriteBehind, setDirectWriteBehind, setDirectWrites, setSynchronousIo, setSynchronousReadLimit, writeBehindDone, writeBehindPending } from '../io/imageFile';
import { isRemoteLocation } from '../io/byteSource';
import { alignedBuffer } from '../io/alignedBuffer';
import { Chain, MapExtent, openChain, readThrough } from './chain';
import { findChildren, realPath } from './findChildren';
import { OperationOptions, throwIfCancelled } from './progress';

const READ_AHEAD = 3;
/**
 * Direct writes of the copy in flight at once (see setDirectWriteBehind); DISKIMG_MERGE_BEHIND=N
 * sets it, 0 turns it off (measuring only). A kill with writes in flight can leave a qcow2 target's
 * refcounts covering clusters past the end of the file (the refcount write landed, the data write
 * had not): only leaks, since qcow2 allocation never hands out a counted cluster
 * (Qcow2Image.firstFreeRun); before it did, a re-run allocated them again (refcount 2).
 */
const WRITE_BEHIND = process.env.DISKIMG_MERGE_BEHIND ? Math.max(0, Math.min(8, Number(process.env.DISKIMG_MERGE_BEHIND) || 0)) : 2;
const MiB = 1024 * 1024;
/** Whether the copy's aligned data goes to the disk around the page cache (see setDirectWrites); DISKIMG_MERGE_DIRECT=0 turns it off (measuring only). */
const DIRECT = process.env.DISKIMG_MERGE_DIRECT !== '0';
/**
 * Bytes copied per window (DISKIMG_MERGE_WINDOW_MIB for measuring). Direct writes: 16 MiB, fewer
 * and larger stages, and so fewer of the small buffered metadata writes that wait for the whole
 * direct write in flight on the same file (ext4's inode lock): 512 MiB merged in a median 0.91 s
 * against 1.23 s with 2 MiB windows (VHD), 0.83 against 0.85 s (VHDX), 0.89 against 0.95 s (qcow2),
 * 4-5 alternating rounds each, 2026-12-03. Buffered: 2 MiB, so the bytes are still in the CPU cache
 * when the write copies them into the page cache (8 MiB windows made that copy memory-bound: 2-3x
 * the system time).
 */
const MIN_WINDOW = (Number(process.env.DISKIMG_MERGE_WINDOW_MIB) || (DIRECT ? 16 : 2)) * MiB;
/** Window buffers in all (read ahead, in flight, being staged): at most this much memory. */
const BUFFER_BYTES = 64 * MiB;
/** Staged data between two barriers (one flush, then the metadata of everything before it). */
const BARRIER_BYTES = 128 * 1024 * 1024;
/** Reads up to this long are made synchronously during the copy (see where it is set). */
const SMALL_READ_BYTES = 64 * 1024;

export interface MergeOptions extends OperationOptions {
  /** Merge down to this ancestor (default: the child's parent). */
  into?: string;
  /** Merge even though other images use the target (or a merged layer) as their parent. */
  force?: boolean;
  /** More folders to scan for children, beyond those of the images involved. */
  search?: string[];
}

export interface MergePlan {
  child: string;
  target: string;
  /** Layers whose data goes into the target and which are removed afterwards, newest first. */
  merged: string[];
  /** Children of the merged child, re-linked to the target afterwards. */
  relink: string[];
  /** Other children of the target or of an intermediate layer: they read differently after the merge. */
  siblings: string[];
  /** Intermediate layers kept because a sibling still uses them (only with --force). */
  kept: string[];
}

export interface MergeResult extends MergePlan {
  bytesWritten: number;
}

interface Journal {
  /** The merged child's UUID: a journal left by another image of the same name is ignored. */
  child: string;
  target: string;
  relinked: string[];
}

/** A small journal next to the child records which children were re-linked, so a re-run after a crash completes the same merge. */
function journalPath(child: string): string {
  return nodePath.join(nodePath.dirname(child), `.${nodePath.basename(child)}.diskimg-merge`);
}

function readJournal(child: string): Journal | null {
  try {
    return JSON.parse(readFileSync(journalPath(child), 'utf8')) as Journal;
  } catch {
    return null;
  }
}

function writeDurably(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, text);
  const fd = openSync(tmp, 'r');
  try { fsyncSync(fd); } finally { closeSync(fd); }
  renameSync(tmp, path);
  syncDir(nodePath.dirname(path));
}

function syncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch {
    // Some file systems refuse fsync on directories; the data files are already durable.
  }
}

function targetIndex(chain: Chain, into: string | undefined): number {
  const child = chain.top;
  if (child.diskType !== 'differencing') {
    const at = child.locate('diskType');
    throw new DiskImageError(child.path, `is a ${child.diskType} image: only a differencing image can be merged into a parent`, at.structure, at.offset, 'ENOTDIFF');
  }
  if (into === undefined) return 1;
  const want = realPath(into);
  const i = chain.layers.findIndex((l, k) => k > 0 && realPath(l.path) === want);
  if (i < 0) {
    throw new DiskImageError(child.path, `${into} is not an ancestor of this image (chain: ${chain.layers.map((l) => nodePath.basename(l.path)).join(' -> ')})`, undefined, undefined, 'EARG');
  }
  return i;
}

async function makePlan(chain: Chain, options: MergeOptions): Promise<MergePlan> {
  const t = targetIndex(chain, options.into);
  const layers = chain.layers;
  const merged = layers.slice(0, t).map((l) => l.path);
  const target = layers[t].path;
  if (isRemoteLocation(target)) {
    throw new DiskImageError(layers[0].path, `cannot merge into ${target}: writes never go to a parent on a server (other clients read it as it is); merge into a local copy (diskimg export the parent, then reparent), or export the chain`, undefined, undefined, 'EREMOTEWRITE');
  }
  for (const l of layers.slice(1, t + 1)) {
    // A raw target's size may end mid-sector; its child is that size rounded up to a sector.
    const roundedRaw = l.format === 'raw' && Math.ceil(l.virtualSize / 512) * 512 === layers[0].virtualSize;
    if (l.virtualSize !== layers[0].virtualSize && !roundedRaw) {
      throw new DiskImageError(layers[0].path, `virtual size ${layers[0].virtualSize} differs from ${l.path}'s ${l.virtualSize}: refusing to merge`, undefined, undefined, 'ESIZE');
    }
  }
  const dirs = [...new Set([...merged, target].map((p) => nodePath.dirname(p)).concat(options.search ?? []))];
  const children = await findChildren([...merged, target], dirs);
  const mergedReal = new Set(merged.map(realPath));
  const journal = readJournal(layers[0].path);
  const ours = journal && journal.child === layers[0].uuid && realPath(journal.target) === realPath(target);
  const journaled = new Set((ours ? journal.relinked : []).map(realPath));
  const relink = (children.get(realPath(merged[0])) ?? []).filter((c) => !mergedReal.has(c));
  const siblings: string[] = [];
  const kept: string[] = [];
  for (const p of [...merged.slice(1), target]) {
    const others = (children.get(realPath(p)) ?? []).filter((c) => !mergedReal.has(c) && !journaled.has(c));
    siblings.push(...others);
    if (others.length > 0 && p !== target) kept.push(p);
  }
  return { child: layers[0].path, target, merged, relink: [...relink, ...journaled].filter((v, i, a) => a.indexOf(v) === i), siblings, kept };
}

/** What a merge would do (for confirmations that name every file changed or deleted). */
export async function planMerge(childPath: string, options: MergeOptions = {}): Promise<MergePlan> {
  const chain = await openChain(childPath);
  try {
    return await makePlan(chain, options);
  } finally {
    await chain.close();
  }
}

/** Layer extents that the merged layers (depth < t) supply, for one window. */
async function ownedExtents(layers: DiskImage[], t: number, offset: number, length: number): Promise<MapExtent[]> {
  const out: MapExtent[] = [];
  const walk = async (depth: number, o: number, l: number): Promise<void> => {
    for (const run of await layers[depth].runs(o, l)) {
      if (run.present) {
        const last = out[out.length - 1];
        if (last && last.depth === depth && last.start + last.length === run.offset) last.length += run.length;
        else out.push({ start: run.offset, length: run.length, depth, data: true });
      } else if (depth + 1 < t) {
        await walk(depth + 1, run.offset, run.length);
      }
    }
  };
  await walk(0, offset, length);
  return out;
}

/**
 * Merges a differencing child (and, with `into`, every layer down to that ancestor) into the
 * target, newest layer winning. Crash-safe at every instant: the target only gains sectors that the
 * merged layers still own, so the child's chain reads the same throughout; the target is flushed
 * before any child is re-linked, and merged files are deleted last. Running it again completes it.
 */
export async function mergeChild(childPath: string, options: MergeOptions = {}): Promise<MergeResult> {
  // Header, table and lock reads and writes, the folder scan's and the metadata's, are small
  // page-cache copies: synchronous for the whole merge (the copy's reads excepted: they run ahead
  // in the pool). DISKIMG_MERGE_IO=pool|writes|sync compares the choices (measuring only).
  const ioMode = process.env.DISKIMG_MERGE_IO ?? 'writes';
  const restore = ioMode === 'pool' ? () => undefined : setSynchronousIo({ writes: true, reads: true });
  try {
    return await mergeWithIo(childPath, options, ioMode);
  } finally {
    restore();
  }
}

async function mergeWithIo(childPath: string, options: MergeOptions, ioMode: string): Promise<MergeResult> {
  // The child is opened for writing so nobody writes to it while its data moves (write lock).
  phase('start');
  const chain = await openChain(childPath, { writable: true });
  phase('opened');
  const releases: Array<() => void> = [];
  let target: DiskImage | null = null;
  try {
    const plan = await makePlan(chain, options);
    phase('planned');
    if (plan.siblings.length > 0 && !options.force) {
      throw new DiskImageError(plan.child, `refusing to merge: ${plan.siblings.length} other image(s) use ${plan.kept.length ? 'a merged layer or ' : ''}the target as parent and would read differently: ${plan.siblings.join(', ')} (use --force)`, undefined, undefined, 'ESIBLINGS');
    }
    const t = plan.merged.length;
    if (statSync(plan.target).isBlockDevice() && !options.force) {
      throw new DiskImageError(plan.child, `refusing to merge into the block device ${plan.target} without --force: its sectors are overwritten in place`, undefined, undefined, 'EDEVICE');
    }
    // The target opens as the format the chain found it to be (a raw parent has no signature).
    target = await getFormat(chain.layers[t].format).open(plan.target, { writable: true });
    // A target whose identity changes on its first write (VHDX's DataWriteGuid) names the new one
    // now; the layer above it accepts both before the copy starts, so its link holds throughout.
    const nextIdentity = target.reserveNextIdentity?.() ?? null;
    if (nextIdentity) {
      const above = t === 1 ? chain.layers[0] : await openImage(plan.merged[t - 1], { writable: true });
      try {
        await above.acceptParentIdentity?.(chain.layers[t], nextIdentity);
      } finally {
        if (above !== chain.layers[0]) await above.close();
      }
    }
    for (const p of plan.merged.slice(1)) releases.push(acquireWriteLock(p));
    const layers = chain.layers;
    const below = (o: number, buf: Buffer) => readThrough(layers, t + 1, o, buf);
    const size = layers[0].virtualSize;
    // Windows of MIN_WINDOW (see there); blocks larger than a window (VHDX's 32 MiB) are copied in
    // window pieces.
    // A differencing target keeps whole blocks a window: its bulk path takes new blocks whole only
    // (a piece of one would change its sector bitmap, which goes through write()).
    // Small disks keep at least 16 windows, so progress (and cancellation) still comes in steps.
    const largest = Math.max(...layers.slice(0, t).map((l) => l.blockSize));
    const block = target.diskType === 'differencing' ? Math.max(largest, target.blockSize) : Math.min(MIN_WINDOW, largest);
    const window = Math.max(block, Math.floor(Math.min(MIN_WINDOW, layers[0].virtualSize / 16) / block) * block);
    let bytesWritten = 0;
    // Window buffers are reused, not allocated per extent: fresh memory costs a page fault per 4 KiB
    // (system time on every byte copied). They are bounded to BUFFER_BYTES (at least two): one being
    // staged, up to WRITE_BEHIND whose direct writes are in flight, the rest read ahead (16 MiB
    // windows: 1 + 2 + 1; 2 MiB: 1 + 2 + READ_AHEAD; a differencing target's 32 MiB VHDX blocks:
    // 1 + 0 + 1, writes one at a time).
    const allocated = new AllocationCursor(layers.slice(0, t));
    const buffers = Math.max(2, Math.floor(BUFFER_BYTES / window));
    const behind = Math.min(WRITE_BEHIND, buffers - 2);
    const readAhead = Math.max(1, Math.min(READ_AHEAD, buffers - 1 - behind));
    // Page aligned: reads from the page cache into malloc'd Buffers stall on 4K aliasing (alignedBuffer.ts).
    // `behind` more: a window's buffer stays with its direct writes until they are done.
    const free: Buffer[] = [];
    for (let i = 0; i <= readAhead + behind; i++) {
      const b = alignedBuffer(window);
      allowWriteBehind(b);
      free.push(b);
    }
    const writing: Buffer[] = [];
    // Buffers whose writes are done go back to the free list; with none free, wait for the oldest.
    const recycle = async () => {
      while (writing.length > 0 && (free.length === 0 || !writeBehindPending(writing[0]))) {
        await writeBehindDone(writing[0]);
        free.push(writing.shift()!);
      }
    };
    type Window = { buffer: Buffer | null; pieces: Array<{ start: number; data: Buffer }> };
    // Reads of the next window overlap the (ordered) writes of the current one.
    const readWindow = async (pos: number, buffer: Buffer): Promise<Window> => {
      const len = Math.min(window, size - pos);
      // Cost follows the data: a window no merged layer has allocated is skipped on the BAT alone.
      if (!allocated.any(pos, len)) return { buffer, pieces: [] };
      const pieces: Array<{ start: number; data: Buffer }> = [];
      for (const e of await ownedExtents(layers, t, pos, len)) {
        const data = buffer.subarray(e.start - pos, e.start - pos + e.length);
        await layers[e.depth].readOwn(e.start, data);
        pieces.push({ start: e.start, data });
      }
      return { buffer, pieces };
    };
    const ahead = (pos: number, buffer: Buffer) => {
      const p = readWindow(pos, buffer);
      p.catch(() => undefined); // a cancelled loop must not leave an unhandled rejection behind
      return p;
    };
    // A few windows are read ahead (bounded memory: readAhead + 1 window buffers) while writes stay in order.
    const queue: Array<Promise<Window>> = [];
    let nextPos = 0;
    const fill = () => {
      while (queue.length < readAhead && nextPos < size && free.length > 0) {
        queue.push(ahead(nextPos, free.pop()!));
        nextPos += window;
      }
    };
    // Formats with a bulk path write each window's data where nothing points at it yet and record
    // the metadata (BAT, L2, bitmaps) only after a flush made that data durable: one barrier per
    // BARRIER_BYTES instead of one per block, and it runs while the next windows are copied (the
    // early flush also starts writeback while the copy goes on). Commits go in order.
    const tgt = target;
    let staged: CommitStaged[] = [];
    let stagedBytes = 0;
    let inFlight: { barrier: Promise<void>; commits: CommitStaged[] } | null = null;
    // Kill points inside the copy (tests): data staged (written, direct where aligned) but not yet
    // flushed or recorded, and the first batch recorded before the target's last flush.
    let stagedOnce = false;
    let committedOnce = false;
    const settle = async () => {
      if (!inFlight) return;
      const f = inFlight;
      inFlight = null;
      await f.barrier;
      // The newest stage's commit records the earlier ones with it (one log entry for VHDX).
      await f.commits[f.commits.length - 1]();
      if (!committedOnce) { committedOnce = true; failpoint('committed-one'); }
    };
    const barrier = async () => {
      if (staged.length === 0) return;
      const f = { barrier: tgt.flush(), commits: staged };
      f.barrier.catch(() => undefined);
      staged = [];
      stagedBytes = 0;
      await settle();
      inFlight = f;
    };
    // The copy's writes are page-cache copies made synchronously (see setSynchronousIo) while the
    // next windows are read in the pool; a turn of the event loop per window lets progress and
    // cancellation through.
    const syncIo = ioMode !== 'pool';
    const restoreIo = syncIo ? setSynchronousIo({ writes: true, reads: ioMode === 'sync' }) : () => undefined;
    // The read-ahead's small reads (a VHD child's 512-byte sector bitmap per block, table pages)
    // are page-cache copies of microseconds: synchronous, not a pool round trip each (252 of them
    // per 512 MiB VHD merge, with two futex wake-ups apiece). The window reads stay in the pool.
    const restoreSmallReads = syncIo ? setSynchronousReadLimit(SMALL_READ_BYTES) : () => undefined;
    // The copy's data goes to the disk around the page cache where it is page aligned (VHDX and
    // qcow2 blocks; see setDirectWrites). DISKIMG_MERGE_DIRECT=0 turns it off (measuring only).
    const restoreDirect = setDirectWrites(DIRECT);
    // The copy's direct writes stay in flight while the next window is staged (see setDirectWriteBehind).
    const restoreBehind = setDirectWriteBehind(behind);
    try {
    for (let pos = 0; pos < size; pos += window) {
      if (syncIo) await new Promise((resolve) => setImmediate(resolve));
      throwIfCancelled(options.signal, plan.child);
      await recycle();
      fill();
      const current = await queue.shift()!;
      await recycle();
      fill();
      const pieces = current.pieces.map((p) => ({ offset: p.start, data: p.data }));
      const bytes = pieces.reduce((n, p) => n + p.data.length, 0);
      const commit = pieces.length > 0 && target.stageWrites ? await target.stageWrites(pieces, below) : null;
      if (commit) {
        staged.push(commit);
        if (!stagedOnce) { stagedOnce = true; failpoint('staged-one'); }
        stagedBytes += bytes;
        if (stagedBytes >= BARRIER_BYTES) await barrier();
      } else if (pieces.length > 0) {
        // Plain writes see the target as committed: everything staged goes in first.
        await barrier();
        await settle();
        for (const p of pieces) await target.write(p.offset, p.data, below);
      }
      bytesWritten += bytes;
      if (current.buffer) writing.push(current.buffer);
      options.onProgress?.(Math.min(pos + window, size), size);
    }
    await barrier();
    await settle();
    } finally {
      restoreBehind();
      restoreDirect();
      restoreSmallReads();
      restoreIo();
    }
    phase('copied');
    // The target must be durable before anything points at it or anything is deleted.
    await target.flush();
    failpoint('flushed');
    await target.close();
    target = null;
    if (plan.relink.length > 0) {
      writeDurably(journalPath(plan.child), JSON.stringify({ child: layers[0].uuid, target: plan.target, relinked: plan.relink } satisfies Journal));
      failpoint('journaled');
      // The target as it is now: its identity may have changed with the copy (VHDX).
      const targetImage = await getFormat(layers[t].format).open(plan.target, { linkOnly: true });
      try {
        for (const c of plan.relink) {
          const img = await openImage(c, { writable: true });
          try {
            await img.writeParentLink(targetImage);
            failpoint('relinked-one');
          } finally {
            await img.close();
          }
        }
      } finally {
        await targetImage.close();
      }
    }
    // Delete newest first: if we stop midway, what is left still reads (re-linked children point at the target).
    for (const p of plan.merged) {
      if (plan.kept.includes(p)) continue;
      unlinkSync(p);
      failpoint('deleted-one');
    }
    if (existsSync(journalPath(plan.child))) unlinkSync(journalPath(plan.child));
    for (const d of new Set(plan.merged.map((p) => nodePath.dirname(p)))) syncDir(d);
    phase('done');
    return { ...plan, bytesWritten };
  } finally {
    if (target) await target.close().catch(() => undefined);
    await chain.close();
    for (const r of releases) r();
  }
}

/** With DISKIMG_MERGE_PHASES set, each phase's end is logged to stderr (ms since start, CPU ms): for measuring only. */
const phaseLog = process.env.DISKIMG_MERGE_PHASES ? { t0: performance.now(), c0: process.cpuUsage() } : null;
function phase(name: string): void {
  if (!phaseLog) return;
  const c = process.cpuUsage(phaseLog.c0);
  process.stderr.write(`merge phase ${name}: ${(performance.now() - phaseLog.t0).toFixed(0)} ms, cpu ${((c.user + c.system) / 1000).toFixed(0)} ms (sys ${(c.system / 1000).toFixed(0)})\n`);
}

/**
 * Crash points for the kill tests: with DISKIMG_FAILPOINT=<name> in the environment the process
 * kills itself (SIGKILL, like a crash) when it reaches that point. Unset, it costs one lookup.
 */
function failpoint(name: string): void {
  phase(name);
  if (process.env.DISKIMG_FAILPOINT === name) process.kill(process.pid, 'SIGKILL');
}

/**
 * Whether a merged layer holds any block of a window. The windows are asked in order and the
 * merged layers do not change (write locked), so each layer's next allocated block is looked up
 * once per allocated run, not once per block per window (qcow2: thousands of clusters).
 */
class AllocationCursor {
  private readonly next: number[];

  constructor(private readonly layers: DiskImage[]) {
    this.next = layers.map(() => -1);
  }

  /** Whether any merged layer holds a block of [offset, offset + length). */
  any(offset: number, length: number): boolean {
    for (let d = 0; d < this.layers.length; d++) if (this.holds(d, offset, length)) return true;
    return false;
  }

  private holds(depth: number, offset: number, length: number): boolean {
    const layer = this.layers[depth];
    const first = Math.floor(offset / layer.blockSize);
    const last = Math.floor((offset + length - 1) / layer.blockSize);
    if (!layer.nextAllocatedBlock) {
      for (let b = first; b <= last; b++) if (layer.isBlockAllocated(b)) return true;
      return false;
    }
    if (this.next[depth] < first) {
      const n = layer.nextAllocatedBlock(first);
      this.next[depth] = n < 0 ? Infinity : n;
    }
    return this.next[depth] <= last;
  }
}
