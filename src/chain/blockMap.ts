import { DiskImageError } from '../format/errors';
import { countSetBits } from '../format/bitmap';
import { DiskImage } from '../format/diskImage';
import { Chain } from './chain';
import { OperationOptions, throwIfCancelled } from './progress';

/** More cells than this are only allowed when the top's BAT really has that many entries. */
const MAX_CELLS = 1 << 21;

/** `owner` value for a block that no layer holds (it reads as zeros). */
export const NO_OWNER = 0xffff;

/**
 * Per-block facts about a chain, on the grid of the top image's blocks, as flat typed arrays so that a
 * 2 TiB image (1,048,576 blocks) costs 4 MiB and can be posted to the editor's webview as is.
 */
export interface BlockMap {
  virtualSize: number;
  blockSize: number;
  blockCount: number;
  sectorsPerBlock: number;
  layerCount: number;
  /** 1 where the top image's BAT has the block allocated (fixed images: every block). */
  allocated: Uint8Array;
  /**
   * How much of the block the top image itself holds, scaled to 0..255: its sector-bitmap fill for a
   * differencing image (rounded up, so one sector out of 4096 is 1, not 0), 255 for an allocated block
   * of a dynamic or fixed image (their bitmaps are not consulted when reading), 0 when not allocated.
   */
  fill: Uint8Array;
  /**
   * The owning layer: index (0 = top) of the topmost layer that holds at least one sector of the block,
   * which is the layer a read of the block's first held sector comes from. NO_OWNER when no layer
   * holds any of it. Sectors the owner lacks may still come from layers further down.
   */
  owner: Uint16Array;
  /**
   * Where the owning layer keeps the block's data, in 512-byte sectors from the start of its file
   * (after the block's sector bitmap; fixed images: the block's own place). NO_SECTOR when no layer
   * owns the block, or when the owner's block size differs from the top's.
   */
  ownerSector: Uint32Array;
  /**
   * Top-image blocks per cell: 1 normally; more when the image has more blocks than MAX_CELLS (a
   * 2 TiB qcow2 of 64 KiB clusters), so the map stays bounded; `blockSize` is then the cell's size.
   */
  blocksPerCell?: number;
  /** 1 where the owning layer holds the cell as zeros without data (qcow2 zero clusters). */
  zero?: Uint8Array;
}

export const NO_SECTOR = 0xffffffff;

/**
 * Builds the block map. Only BATs (already in memory) and the bitmaps of allocated blocks of
 * differencing layers are read, so time and memory follow what is allocated, not the virtual size.
 * A layer whose block size differs from the top's is asked through its run list instead.
 */
export async function buildBlockMap(chain: Chain, options: OperationOptions = {}): Promise<BlockMap> {
  const top = chain.top;
  const topBlocks = Math.ceil(top.virtualSize / top.blockSize);
  // A damaged size far beyond what the BAT describes must not size the arrays (a 300 KB file
  // claiming 2 TiB in 4 KiB blocks would ask for 2 GiB). A real image that big has a BAT that big.
  if (topBlocks > MAX_CELLS && topBlocks > top.blockCount) {
    const at = top.locate('blockCount');
    throw new DiskImageError(top.path, `virtual size ${top.virtualSize} needs ${topBlocks} blocks of ${top.blockSize} bytes but the BAT has ${top.blockCount} entries: too many to map`,
      at.structure, at.offset, 'ETOOBIG');
  }
  // Aggregate: more blocks than MAX_CELLS share cells (a power of two of them).
  let blocksPerCell = 1;
  while (topBlocks / blocksPerCell > MAX_CELLS) blocksPerCell *= 2;
  const cellSize = top.blockSize * blocksPerCell;
  const blockCount = Math.ceil(top.virtualSize / cellSize);
  const allocated = new Uint8Array(blockCount);
  const zero = new Uint8Array(blockCount);
  const fill = new Uint8Array(blockCount);
  const owner = new Uint16Array(blockCount).fill(NO_OWNER);
  const ownerSector = new Uint32Array(blockCount).fill(NO_SECTOR);
  const layers = chain.layers;
  for (let depth = 0; depth < layers.length; depth++) {
    throwIfCancelled(options.signal, top.path);
    const layer = layers[depth];
    const isTop = depth === 0;
    if (blocksPerCell > 1) {
      scanCoarse(layer, cellSize, blockCount, isTop, depth, allocated, fill, owner, zero);
    } else if (layer.blockSize === top.blockSize) {
      await scanSameGrid(layer, blockCount, isTop, depth, allocated, fill, owner, ownerSector, zero);
    } else {
      await scanOtherGrid(layer, top.blockSize, blockCount, depth, owner);
    }
    options.onProgress?.(depth + 1, layers.length);
  }
  return {
    virtualSize: top.virtualSize,
    blockSize: cellSize,
    blockCount,
    sectorsPerBlock: cellSize / 512,
    layerCount: layers.length,
    allocated,
    fill,
    owner,
    ownerSector,
    blocksPerCell,
    zero,
  };
}

/**
 * Cells of several blocks: a cell's fill is the share of its blocks the top holds, its owner the
 * first layer holding any of them (bitmaps are not read: the cell is coarse anyway).
 */
function scanCoarse(layer: DiskImage, cellSize: number, cells: number, isTop: boolean, depth: number,
  allocated: Uint8Array, fill: Uint8Array, owner: Uint16Array, zero: Uint8Array): void {
  const per = Math.max(1, cellSize / layer.blockSize);
  // Allocated blocks come in ascending order, so each cell's counts are complete when the next cell
  // starts: no per-cell count arrays (a 2 TiB qcow2 has 2,097,152 cells; fresh arrays cost page faults).
  let cell = -1;
  let count = 0;
  let zeros = 0;
  const finish = () => {
    if (cell < 0) return;
    if (isTop) { allocated[cell] = 1; fill[cell] = fillLevel(count, per); }
    if (owner[cell] === NO_OWNER) {
      owner[cell] = depth;
      // Zero only when every block this layer holds in the cell is a zero block.
      if (zeros > 0 && zeros === count) zero[cell] = 1;
    }
  };
  const next = allocatedAfter(layer);
  for (let b = next(0); b >= 0; b = next(b + 1)) {
    const c = Math.floor((b * layer.blockSize) / cellSize);
    if (c >= cells) break;
    if (c !== cell) { finish(); cell = c; count = 0; zeros = 0; }
    count++;
    if (layer.isBlockZero?.(b)) zeros++;
  }
  finish();
}

/** Scales `set` of `total` sectors to 0..255, any non-zero count giving at least 1. */
export function fillLevel(set: number, total: number): number {
  if (set <= 0) return 0;
  if (set >= total) return 255;
  return Math.max(1, Math.min(254, Math.round((set * 255) / total)));
}

async function scanSameGrid(layer: DiskImage, blockCount: number, isTop: boolean, depth: number,
  allocated: Uint8Array, fill: Uint8Array, owner: Uint16Array, ownerSector: Uint32Array, zero: Uint8Array): Promise<void> {
  const n = Math.min(blockCount, layer.blockCount);
  const spb = layer.blockSize / layer.sectorSize;
  const sparseBitmaps = layer.diskType === 'differencing';
  const next = allocatedAfter(layer);
  for (let b = next(0); b >= 0 && b < n; b = next(b + 1)) {
    // Below the top, only blocks not yet owned matter: skip the bitmap read when one is.
    if (!isTop && owner[b] !== NO_OWNER) continue;
    let level = 255;
    if (sparseBitmaps) {
      const bitmap = await layer.readBlockBitmap(b);
      level = bitmap ? fillLevel(countSetBits(bitmap, spb), spb) : 0;
    }
    if (isTop) {
      allocated[b] = 1;
      fill[b] = level;
    }
    if (level > 0 && owner[b] === NO_OWNER) {
      owner[b] = depth;
      if (layer.isBlockZero?.(b)) zero[b] = 1;
      const at = layer.blockFileOffset(b);
      ownerSector[b] = at === null ? NO_SECTOR : at / 512;
    }
  }
}

async function scanOtherGrid(layer: DiskImage, topBlockSize: number, blockCount: number, depth: number, owner: Uint16Array): Promise<void> {
  const size = layer.virtualSize;
  const next = allocatedAfter(layer);
  // Each top block that one of the layer's allocated blocks touches, once, asked through its runs.
  let lastTop = -1;
  for (let lb = next(0); lb >= 0; lb = next(lb + 1)) {
    const from = lb * layer.blockSize;
    if (from >= size) break;
    const to = Math.min(size, from + layer.blockSize);
    const first = Math.max(lastTop + 1, Math.floor(from / topBlockSize));
    const last = Math.min(blockCount - 1, Math.floor((to - 1) / topBlockSize));
    for (let b = first; b <= last; b++) {
      if (owner[b] !== NO_OWNER) continue;
      const start = b * topBlockSize;
      const runs = await layer.runs(start, Math.min(topBlockSize, size - start));
      if (runs.some((r) => r.present)) owner[b] = depth;
    }
    lastTop = Math.max(lastTop, last);
  }
}

/**
 * `next(from)`: the layer's first allocated block at or after `from`, or -1. Through the format's
 * own table scan when it has one (empty stretches skipped without a call per block).
 */
function allocatedAfter(layer: DiskImage): (from: number) => number {
  if (layer.nextAllocatedBlock) return (from) => layer.nextAllocatedBlock!(from);
  return (from) => {
    for (let b = from; b < layer.blockCount; b++) if (layer.isBlockAllocated(b)) return b;
    return -1;
  };
}

/** Counts of blocks owned by each layer (and by none, last), for legends and summaries. */
export function ownerCounts(map: BlockMap): number[] {
  const counts = new Array<number>(map.layerCount + 1).fill(0);
  for (let i = 0; i < map.blockCount; i++) {
    const o = map.owner[i];
    counts[o === NO_OWNER ? map.layerCount : o]++;
  }
  return counts;
}
