import { existsSync, realpathSync } from 'fs';
import { isRemoteLocation, setRemoteOptions } from '../io/byteSource';
import { parentCachePath } from '../io/parentCache';
import { DiskImage } from '../format/diskImage';
import { DiskImageError } from '../format/errors';
import { openImage, OpenOptions } from '../format/registry';
import { ParentResolution, resolveParent } from './resolveParent';

export const MAX_CHAIN_DEPTH = 256;

/** How one layer is linked to its parent, for info, check and the editor's chain view. */
export interface ChainLink {
  /** Index of the child layer in the chain. */
  depth: number;
  resolution: ParentResolution;
  /** Null when no parent could be opened. */
  uuidMatches: boolean | null;
  timestampMatches: boolean | null;
  problem: string | null;
}

export interface OpenChainOptions {
  /** Open the top image for writing (ancestors are always read-only). */
  writable?: boolean;
  /** Stop at the first broken link with a warning instead of throwing (info, the editor). */
  tolerant?: boolean;
  /**
   * Opens each ancestor (never the top) instead of opening it directly, e.g. to share one open
   * parent between several chains. Chain.close() calls close() on what it returns.
   */
  openAncestor?: (path: string, options?: OpenOptions) => Promise<DiskImage>;
  /**
   * Keep what is read from a parent on a server in `.<child>.parent-cache` next to the child that
   * names it (default: as set by useParentCache; a cache that exists is always used).
   */
  cache?: boolean;
}

let cacheByDefault = false;

/** `--cache`, and `serve` and the editor by default: remote parents are read through a local cache. */
export function useParentCache(on: boolean): void {
  cacheByDefault = on;
}

/** Rewrites a remote parent's failure as `<child>: parent <url>: …`, the one line the user sees. */
function asParentError(child: DiskImage, e: unknown): unknown {
  if (!(e instanceof DiskImageError) || !isRemoteLocation(e.file)) return e;
  return new DiskImageError(child.path, `parent ${e.message}`, undefined, undefined, e.code);
}

/** One range of the virtual disk and the layer that supplies it (`data` false: reads as zeros). */
export interface MapExtent {
  start: number;
  length: number;
  depth: number;
  data: boolean;
  /** Held by layer `depth` as zeros without data (qcow2 zero clusters): data is false. Absent otherwise. */
  zero?: true;
}

export class Chain {
  constructor(
    readonly layers: DiskImage[],
    readonly links: ChainLink[],
    readonly warnings: string[],
    /** False when tolerant opening stopped at a broken link. */
    readonly complete: boolean,
  ) {}

  get top(): DiskImage {
    return this.layers[0];
  }

  get virtualSize(): number {
    return this.top.virtualSize;
  }

  /** Fills `target` with the virtual disk's bytes at `offset`; past the end reads as zeros. */
  async read(offset: number, target: Buffer): Promise<void> {
    this.requireComplete();
    try {
      await readThrough(this.layers, 0, offset, target);
    } catch (e) {
      throw asParentError(this.top, e);
    }
  }

  /**
   * The local file bytes that [offset, offset+length) of the virtual disk reads as, when one layer
   * supplies the whole range from one contiguous run of its file (see DiskImage.fileExtent), else
   * null (zeros, several layers or runs, or not known without I/O: read it).
   */
  fileExtent(offset: number, length: number): { fd: number; position: number } | null {
    if (!this.complete) return null;
    for (const layer of this.layers) {
      if (offset + length > layer.virtualSize) return null;
      const at = layer.fileExtent?.(offset, length) ?? null;
      if (at !== 'none') return at;
      if (layer.diskType !== 'differencing') return null;
    }
    return null;
  }

  /** Reads the layers below the top (the top's parent as the child sees it): `cache --fill`. */
  async readParent(offset: number, target: Buffer): Promise<void> {
    this.requireComplete();
    try {
      await readThrough(this.layers, 1, offset, target);
    } catch (e) {
      throw asParentError(this.top, e);
    }
  }

  async readRange(offset: number, length: number): Promise<Buffer> {
    const b = Buffer.alloc(length);
    await this.read(offset, b);
    return b;
  }

  /** Writes into the top layer; partial sectors are completed from the layers below. */
  async write(offset: number, data: Buffer): Promise<void> {
    this.requireComplete();
    await this.top.write(offset, data, (o, t) => readThrough(this.layers, 1, o, t));
  }

  /** Which layer supplies each range, at sector granularity, adjacent equal ranges merged. */
  async map(offset = 0, length = this.virtualSize - offset, onExtent?: (e: MapExtent) => void): Promise<MapExtent[]> {
    this.requireComplete();
    const out: MapExtent[] = [];
    let pending: MapExtent | null = null;
    const push = (e: MapExtent) => {
      if (pending && pending.depth === e.depth && pending.data === e.data && pending.zero === e.zero && pending.start + pending.length === e.start) {
        pending.length += e.length;
        return;
      }
      if (pending) { if (onExtent) onExtent(pending); else out.push(pending); }
      pending = { ...e };
    };
    // Windows keep the run lists short however fragmented the image is.
    // At most ~4096 windows, so a huge sparse disk with tiny blocks maps in bounded time.
    const blocks = this.top.blockSize;
    const window = Math.max(256 * blocks, Math.ceil(length / 4096 / blocks) * blocks);
    for (let pos = offset; pos < offset + length; pos += window) {
      await mapThrough(this.layers, 0, pos, Math.min(window, offset + length - pos), push);
    }
    if (pending) { if (onExtent) onExtent(pending); else out.push(pending); }
    return out;
  }

  async flush(): Promise<void> {
    await this.top.flush();
  }

  async close(): Promise<void> {
    for (const l of this.layers) await l.close().catch(() => undefined);
  }

  private requireComplete(): void {
    if (!this.complete) {
      const broken = this.links.find((l) => l.problem !== null);
      const child = this.layers[this.layers.length - 1];
      const at = child.locate('parentLink');
      throw new DiskImageError(child.path, broken?.problem ?? 'parent chain is incomplete', at.structure, at.offset, 'ENOPARENT');
    }
  }
}

/** Reads through layers[depth..]: each range from the first layer that holds it, zeros if none does. */
export async function readThrough(layers: DiskImage[], depth: number, offset: number, target: Buffer): Promise<void> {
  if (depth >= layers.length) {
    target.fill(0);
    return;
  }
  const layer = layers[depth];
  const inside = Math.max(0, Math.min(target.length, layer.virtualSize - offset));
  if (inside < target.length) target.fill(0, inside);
  if (inside === 0) return;
  for (const run of await layer.runs(offset, inside)) {
    const slice = target.subarray(run.offset - offset, run.offset - offset + run.length);
    if (run.present) await layer.readOwn(run.offset, slice);
    else if (layer.diskType === 'differencing') await readThrough(layers, depth + 1, run.offset, slice);
    else slice.fill(0);
  }
}

async function mapThrough(layers: DiskImage[], depth: number, offset: number, length: number, push: (e: MapExtent) => void): Promise<void> {
  const layer = layers[depth];
  const inside = Math.max(0, Math.min(length, layer.virtualSize - offset));
  for (const run of await layer.runs(offset, inside)) {
    if (run.present && layer.zeroRuns) {
      for (const z of layer.zeroRuns(run.offset, run.length)) push(z.zero ? { start: z.offset, length: z.length, depth, data: false, zero: true } : { start: z.offset, length: z.length, depth, data: true });
    } else if (run.present) push({ start: run.offset, length: run.length, depth, data: true });
    else if (layer.diskType === 'differencing' && depth + 1 < layers.length) await mapThrough(layers, depth + 1, run.offset, run.length, push);
    else push({ start: run.offset, length: run.length, depth, data: false });
  }
  if (inside < length) push({ start: offset + inside, length: length - inside, depth, data: false });
}

/** Opens an image and every ancestor, checking each link (identity, timestamp, size, cycles). */
export async function openChain(path: string, options: OpenChainOptions = {}): Promise<Chain> {
  const top = await openImage(path, { writable: options.writable });
  const layers: DiskImage[] = [top];
  const links: ChainLink[] = [];
  const warnings: string[] = [...top.warnings];
  const seen = new Set<string>([safeRealpath(path)]);
  const openAncestor = options.openAncestor ?? ((p: string, o?: OpenOptions) => openImage(p, o));
  let complete = true;
  try {
    while (layers[layers.length - 1].diskType === 'differencing') {
      const child = layers[layers.length - 1];
      const depth = layers.length - 1;
      const linkAt = child.locate('parentLink');
      const resolution = resolveParent(child);
      const link: ChainLink = { depth, resolution, uuidMatches: null, timestampMatches: null, problem: null };
      links.push(link);
      const fail = (err: DiskImageError) => {
        link.problem = err.message;
        if (!options.tolerant) throw err;
        warnings.push(err.message);
        complete = false;
      };
      if (!resolution.resolvedPath) {
        fail(new DiskImageError(child.path, `parent '${child.parent?.name ?? ''}' not found; tried ${resolution.tried.join('; ')}`, linkAt.structure, linkAt.offset, 'ENOPARENT'));
        break;
      }
      const real = safeRealpath(resolution.resolvedPath);
      if (seen.has(real)) {
        fail(new DiskImageError(child.path, `parent chain loops back to ${resolution.resolvedPath}`, linkAt.structure, linkAt.offset, 'ECYCLE'));
        break;
      }
      if (layers.length >= MAX_CHAIN_DEPTH) {
        fail(new DiskImageError(child.path, `parent chain is deeper than ${MAX_CHAIN_DEPTH} images`, linkAt.structure, linkAt.offset, 'EDEPTH'));
        break;
      }
      seen.add(real);
      let parent: DiskImage;
      if (isRemoteLocation(resolution.resolvedPath)) {
        const cachePath = parentCachePath(child.path);
        const cache = (options.cache ?? cacheByDefault) || existsSync(cachePath);
        setRemoteOptions(resolution.resolvedPath, { cachePath: cache ? cachePath : null });
      }
      try {
        parent = await openAncestor(resolution.resolvedPath, { rawFallback: recordsRawParent(child) });
      } catch (e) {
        const err = asParentError(child, e);
        if (err instanceof DiskImageError) { fail(err); break; }
        throw err;
      }
      let check: ReturnType<DiskImage['checkParent']>;
      try {
        check = child.checkParent(parent);
      } catch (e) {
        await parent.close().catch(() => undefined);
        throw e;
      }
      link.uuidMatches = check.idMatches;
      if (!check.idMatches) {
        await parent.close();
        fail(new DiskImageError(child.path, `parent ${check.idName} mismatch: the child expects ${check.expected} but ${resolution.resolvedPath} is ${check.found}`, check.idLocation.structure, check.idLocation.offset, 'EUUID'));
        break;
      }
      link.timestampMatches = check.timestampMatches;
      if (check.timestampProblem) warnings.push(`${child.path}: ${check.timestampProblem}`);
      // A raw parent's size may end mid-sector; its child has that size rounded up to a sector.
      if (Math.ceil(parent.virtualSize / 512) * 512 !== child.virtualSize) {
        warnings.push(`${child.path}: virtual size ${child.virtualSize} differs from its parent's ${parent.virtualSize}`);
      }
      warnings.push(...parent.warnings.map((w) => `${parent.path}: ${w}`));
      layers.push(parent);
    }
  } catch (e) {
    for (const l of layers) await l.close().catch(() => undefined);
    throw e;
  }
  return new Chain(layers, links, warnings, complete);
}

/** Xen vhd-util's convention: a child that records the nil UUID as its parent's identity has a raw parent. */
export function recordsRawParent(child: DiskImage): boolean {
  return child.parent !== null && /^[0-]+$/.test(child.parent.uuid);
}

function safeRealpath(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}
