import { realpathSync, statSync } from 'fs';
import { DiskImage } from '../format/diskImage';
import { DiskImageError } from '../format/errors';
import { dateToVhdTimestamp, vhdTimestampToIso } from '../format/vhd/timestamp';
import { formatUuid } from '../format/vhd/uuid';
import { VhdImage } from '../format/vhd/vhdImage';
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
  /** Opens each ancestor (read-only) instead of opening it afresh: a server shares one open parent among chains. */
  openAncestor?: (path: string) => Promise<DiskImage>;
}

/** One range of the virtual disk and the layer that supplies it (`data` false: reads as zeros). */
export interface MapExtent {
  start: number;
  length: number;
  depth: number;
  data: boolean;
}

export class Chain {
  constructor(
    readonly layers: VhdImage[],
    readonly links: ChainLink[],
    readonly warnings: string[],
    /** False when tolerant opening stopped at a broken link. */
    readonly complete: boolean,
  ) {}

  get top(): VhdImage {
    return this.layers[0];
  }

  get virtualSize(): number {
    return this.top.virtualSize;
  }

  /** Fills `target` with the virtual disk's bytes at `offset`; past the end reads as zeros. */
  async read(offset: number, target: Buffer): Promise<void> {
    this.requireComplete();
    await readThrough(this.layers, 0, offset, target);
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
      if (pending && pending.depth === e.depth && pending.data === e.data && pending.start + pending.length === e.start) {
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
      throw new DiskImageError(child.path, broken?.problem ?? 'parent chain is incomplete', 'parent locators', (child.layout.headerOffset ?? 0) + 576, 'ENOPARENT');
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
    if (run.present) push({ start: run.offset, length: run.length, depth, data: true });
    else if (layer.diskType === 'differencing' && depth + 1 < layers.length) await mapThrough(layers, depth + 1, run.offset, run.length, push);
    else push({ start: run.offset, length: run.length, depth, data: false });
  }
  if (inside < length) push({ start: offset + inside, length: length - inside, depth, data: false });
}

/** Opens an image and every ancestor, checking each link (UUID, timestamp, size, cycles). */
export async function openChain(path: string, options: OpenChainOptions = {}): Promise<Chain> {
  const top = await VhdImage.open(path, { writable: options.writable });
  const layers: VhdImage[] = [top];
  const links: ChainLink[] = [];
  const warnings: string[] = [...top.warnings];
  const seen = new Set<string>([safeRealpath(path)]);
  let complete = true;
  try {
    while (layers[layers.length - 1].diskType === 'differencing') {
      const child = layers[layers.length - 1];
      const depth = layers.length - 1;
      const headerOffset = child.layout.headerOffset!;
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
        fail(new DiskImageError(child.path, `parent '${child.parent?.name ?? ''}' not found; tried ${resolution.tried.join('; ')}`, 'parent locators', headerOffset + 576, 'ENOPARENT'));
        break;
      }
      const real = safeRealpath(resolution.resolvedPath);
      if (seen.has(real)) {
        fail(new DiskImageError(child.path, `parent chain loops back to ${resolution.resolvedPath}`, 'parent locators', headerOffset + 576, 'ECYCLE'));
        break;
      }
      if (layers.length >= MAX_CHAIN_DEPTH) {
        fail(new DiskImageError(child.path, `parent chain is deeper than ${MAX_CHAIN_DEPTH} images`, 'parent locators', headerOffset + 576, 'EDEPTH'));
        break;
      }
      seen.add(real);
      let parent: VhdImage;
      try {
        parent = options.openAncestor
          ? (await options.openAncestor(resolution.resolvedPath)) as VhdImage
          : await VhdImage.open(resolution.resolvedPath);
      } catch (e) {
        if (e instanceof DiskImageError) { fail(e); break; }
        throw e;
      }
      const expected = formatUuid(child.header!.parentUniqueId);
      link.uuidMatches = expected === parent.uuid;
      if (!link.uuidMatches) {
        await parent.close();
        fail(new DiskImageError(child.path, `parent UUID mismatch: the child expects ${expected} but ${resolution.resolvedPath} is ${parent.uuid}`, 'dynamic header', headerOffset + 40, 'EUUID'));
        break;
      }
      const mtime = dateToVhdTimestamp(statSync(resolution.resolvedPath).mtime);
      const stored = child.header!.parentTimestamp;
      link.timestampMatches = stored === parent.footer.timestamp || stored === mtime;
      if (!link.timestampMatches) {
        warnings.push(`${child.path}: parent timestamp ${vhdTimestampToIso(stored)} matches neither the parent's creation time ${vhdTimestampToIso(parent.footer.timestamp)} nor its modification time ${vhdTimestampToIso(mtime)}`);
      }
      if (parent.virtualSize !== child.virtualSize) {
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

function safeRealpath(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}
