/** Paints the heatmap into a pixel buffer, pure (the view copies it into the canvas's ImageData). */
import { mix, ownerColor, pack, Palette } from './colors';
import { Layout } from './layout';

export type Mode = 'allocated' | 'fill' | 'owner' | 'changed' | 'timeline';
export const NO_OWNER = 0xffff;

export interface HeatmapData {
  blockCount: number;
  allocated: Uint8Array;
  fill: Uint8Array;
  owner: Uint16Array;
  /** 1 where the owning layer holds the block as zeros without data (qcow2 zero clusters); absent: none. */
  zero?: Uint8Array | null;
  /** 1 where a diff found the block different; null before any diff. */
  changed: Uint8Array | null;
  /** Timeline mode: per block, when it was last written in the brushed range, 0 (oldest) to 1 (newest); -1 not written. */
  age?: Float32Array | null;
  /** Layers in the chain: lets owner mode find owned blocks layer by layer with native searches. */
  layerCount?: number;
  /**
   * The first message's owner map as runs [first, end, owner | zero << 16] (src/extension/model.ts
   * firstBlocks), `owner` then empty: owner mode draws from the runs, no per-block array is built.
   */
  ownerRuns?: Uint32Array | null;
}

/**
 * Owner mode from runs over cells [firstCell, endCell): each cell's topmost owner, and whether all
 * of that owner's blocks in the cell are zero blocks (cellColor's rule), in time proportional to
 * the runs and the cells they cover.
 */
export function cellOwnersFromRuns(runs: Uint32Array, blockCount: number, blocksPerCell: number, firstCell: number, endCell: number): { owners: Uint16Array; zero: Uint8Array; owned: ArrayLike<number> & Iterable<number> } {
  const count = Math.max(0, endCell - firstCell);
  const owners = new Uint16Array(count).fill(NO_OWNER);
  // 1: the cell's best owner has a block with data there (so the cell is not "zero").
  const data = new Uint8Array(count);
  const zero = new Uint8Array(count);
  const cellsOf = (k: number): [number, number] => {
    const first = Math.min(runs[k], blockCount);
    const end = Math.min(runs[k + 1], blockCount);
    if (end <= first) return [0, -1];
    return [Math.max(firstCell, Math.floor(first / blocksPerCell)) - firstCell, Math.min(endCell - 1, Math.floor((end - 1) / blocksPerCell)) - firstCell];
  };
  // Only the cells the runs cover are visited (not every visible cell: on the first draw this code
  // runs cold, and a loop over the 200,000+ cells of a 2 TiB map was most of the draw).
  const owned: number[] = [];
  for (let k = 0; k + 2 < runs.length; k += 3) {
    const layer = runs[k + 2] & 0xffff;
    const [c0, c1] = cellsOf(k);
    for (let c = c0; c <= c1; c++) {
      if (owners[c] === NO_OWNER) owned.push(c);
      if (layer < owners[c]) owners[c] = layer;
    }
  }
  for (let k = 0; k + 2 < runs.length; k += 3) {
    if (runs[k + 2] >>> 16) continue;
    const layer = runs[k + 2] & 0xffff;
    const [c0, c1] = cellsOf(k);
    for (let c = c0; c <= c1; c++) if (owners[c] === layer) data[c] = 1;
  }
  for (const c of owned) zero[c] = data[c] ? 0 : 1;
  // Runs come layer by layer: cell order (as the plain loop paints, marks overlapping alike) by a native sort.
  return { owners, zero, owned: Uint32Array.from(owned).sort() };
}

/**
 * Owner mode over cells [firstCell, endCell): each cell's topmost owner, found per layer with the
 * typed array's native indexOf, so the empty stretches of a sparse 2 TiB map (1,048,576+ blocks)
 * cost no JavaScript per block on the first draw, before the JIT has warmed up. Null when the
 * layer count is unknown or the map is dense enough that the plain loop is as fast.
 */
export function cellOwners(d: HeatmapData, blocksPerCell: number, firstCell: number, endCell: number): { owners: Uint16Array; owned: number[] } | null {
  if (!d.layerCount || d.layerCount > 64) return null;
  const out = new Uint16Array(Math.max(0, endCell - firstCell)).fill(NO_OWNER);
  // The cells (relative to firstCell) that got an owner, ascending.
  const owned: number[] = [];
  const from = firstCell * blocksPerCell;
  const to = Math.min(d.blockCount, endCell * blocksPerCell);
  let budget = Math.max(64, (to - from) >> 4);
  for (let layer = 0; layer < d.layerCount; layer++) {
    for (let i = d.owner.indexOf(layer, from); i >= 0 && i < to; i = d.owner.indexOf(layer, i + 1)) {
      if (--budget < 0) return null;
      const c = Math.floor(i / blocksPerCell) - firstCell;
      if (out[c] === NO_OWNER) owned.push(c);
      if (layer < out[c]) out[c] = layer;
    }
  }
  owned.sort((a, b) => a - b);
  return { owners: out, owned };
}

/** The packed colour of the cell covering blocks [first, end). */
export function cellColor(d: HeatmapData, mode: Mode, first: number, end: number, p: Palette): number {
  const n = end - first;
  switch (mode) {
    case 'allocated': {
      let count = 0;
      for (let i = first; i < end; i++) count += d.allocated[i];
      if (count > 0 && allZero(d, first, end, (i) => d.allocated[i] === 1 && d.owner[i] === 0)) return pack(p.zero);
      return pack(count === 0 ? p.empty : mix(p.empty, p.allocated, 0.45 + (0.55 * count) / n));
    }
    case 'fill': {
      let sum = 0;
      let any = 0;
      for (let i = first; i < end; i++) { sum += d.fill[i]; any |= d.allocated[i]; }
      if (sum === 0) return pack(any ? mix(p.empty, p.allocated, 0.15) : p.empty);
      return pack(mix(p.empty, p.allocated, 0.25 + (0.75 * sum) / (255 * n)));
    }
    case 'owner': {
      let best = NO_OWNER;
      for (let i = first; i < end; i++) if (d.owner[i] < best) best = d.owner[i];
      if (best !== NO_OWNER && allZero(d, first, end, (i) => d.owner[i] === best)) return pack(p.zero);
      return pack(best === NO_OWNER ? p.empty : ownerColor(p, best));
    }
    case 'timeline': {
      let best = -1;
      if (d.age) for (let i = first; i < end; i++) if (d.age[i] > best) best = d.age[i];
      return pack(best < 0 ? p.empty : mix(p.allocated, p.changed, best));
    }
    case 'changed': {
      if (!d.changed) return pack(p.empty);
      for (let i = first; i < end; i++) if (d.changed[i]) return pack(p.changed);
      return pack(p.empty);
    }
  }
}

/** Blocks whose owning layer holds them as zeros without data (the legend's "zero" count). */
export function zeroBlockCount(d: { blockCount: number; owner: Uint16Array; zero?: Uint8Array | null }): number {
  if (!d.zero) return 0;
  let n = 0;
  for (let i = 0; i < d.blockCount; i++) if (d.zero[i] && d.owner[i] !== NO_OWNER) n++;
  return n;
}

/** True when every block of [first, end) that `counts` is a zero block (and there is one). */
function allZero(d: HeatmapData, first: number, end: number, counts: (i: number) => boolean): boolean {
  const z = d.zero;
  if (!z) return false;
  let any = false;
  for (let i = first; i < end; i++) {
    if (!counts(i)) continue;
    if (!z[i]) return false;
    any = true;
  }
  return any;
}

/**
 * Fills `out` (layout.width × layout.height pixels, row-major) with the visible cells. Cells of 4 px
 * and more keep a 1 px gap of background so single blocks stand apart. `flash` marks blocks to
 * highlight (changed on disk a moment ago).
 */
export function renderHeatmap(out: Uint32Array, l: Layout, d: HeatmapData, mode: Mode, p: Palette, flash?: Uint8Array | null): void {
  const bg = pack(p.background);
  out.fill(bg);
  const px = l.cellPx;
  const gap = px >= 4 ? 1 : 0;
  const flashColor = pack(p.flash);
  // Cells under 3 px: a lone painted cell would be one invisible dot, so painted cells also get a
  // 3x3 mark around them (drawn after all cells), which keeps sparse data visible when zoomed out.
  const emptyColor = pack(p.empty);
  const marks: number[] = [];
  const firstRow = Math.floor(l.scrollY / px);
  const lastRow = Math.min(l.rows - 1, Math.floor((l.scrollY + l.height - 1) / px));
  const runs = d.ownerRuns && d.owner.length < d.blockCount ? d.ownerRuns : null;
  const fromRuns = mode === 'owner' && runs ? cellOwnersFromRuns(runs, d.blockCount, l.blocksPerCell, firstRow * l.cols, (lastRow + 1) * l.cols) : null;
  const found = fromRuns ?? (mode === 'owner' ? cellOwners(d, l.blocksPerCell, firstRow * l.cols, (lastRow + 1) * l.cols) : null);
  const owners = found?.owners ?? null;
  // An owned cell's colour (rc: its index from the first visible row's first cell), as cellColor gives it.
  const ownedColor = (rc: number, first: number, end: number) => fromRuns
    ? pack(fromRuns.zero[rc] ? p.zero : ownerColor(p, fromRuns.owners[rc]))
    : cellColor(d, mode, first, end, p);
  const paintCell = (col: number, row: number, color: number) => {
    const x0 = col * px;
    const y0 = row * px - l.scrollY;
    const ys = Math.max(0, y0);
    const ye = Math.min(l.height, y0 + px - gap);
    const xe = Math.min(l.width, x0 + px - gap);
    if (px < 3) {
      // 1–2 px cells: plain stores (a fill call per pixel row costs more than the pixels).
      for (let y = ys; y < ye; y++) for (let i = y * l.width + x0, e = y * l.width + xe; i < e; i++) out[i] = color;
      if (color !== emptyColor) marks.push(x0, y0, color);
      return;
    }
    for (let y = ys; y < ye; y++) out.fill(color, y * l.width + x0, y * l.width + xe);
  };
  if (found && gap === 0 && !flash) {
    // Cells without gaps: each row of cells is one band, painted empty with a native fill per pixel
    // row; then only the owned cells, in cell order (their marks overlap as the plain loop's do).
    const firstCell = firstRow * l.cols;
    const cells = Math.ceil(d.blockCount / l.blocksPerCell);
    for (let row = firstRow; row <= lastRow && row * l.cols < cells; row++) {
      const xe = Math.min(l.width, Math.min(l.cols, cells - row * l.cols) * px);
      const y0 = row * px - l.scrollY;
      for (let y = Math.max(0, y0); y < Math.min(l.height, y0 + px); y++) out.fill(emptyColor, y * l.width, y * l.width + xe);
    }
    // An owned cell's colour as the plain loop gives it (its owner's, or "zero").
    for (const rc of found.owned) {
      const cell = firstCell + rc;
      const first = cell * l.blocksPerCell;
      paintCell(cell % l.cols, Math.floor(cell / l.cols), ownedColor(rc, first, Math.min(d.blockCount, first + l.blocksPerCell)));
    }
  } else for (let row = firstRow; row <= lastRow; row++) {
    for (let col = 0; col < l.cols; col++) {
      const cell = row * l.cols + col;
      const first = cell * l.blocksPerCell;
      if (first >= d.blockCount) { row = lastRow; break; }
      const end = Math.min(d.blockCount, first + l.blocksPerCell);
      let color: number;
      if (owners && owners[cell - firstRow * l.cols] === NO_OWNER) {
        color = emptyColor;
      } else {
        color = owners ? ownedColor(cell - firstRow * l.cols, first, end) : cellColor(d, mode, first, end, p);
      }
      if (flash) {
        for (let i = first; i < end; i++) if (flash[i]) { color = flashColor; break; }
      }
      paintCell(col, row, color);
    }
  }
  // 3x3 marks with plain stores: hundreds of thousands of them on a brushed 2 TiB grid, where a
  // fill call per 3-pixel row was most of the redraw.
  const w = l.width;
  const hMax = l.height - 1;
  for (let i = 0; i < marks.length; i += 3) {
    const cx = marks[i]; const cy = marks[i + 1]; const color = marks[i + 2];
    const xs = cx > 0 ? cx - 1 : 0;
    const xe = cx + 2 < w ? cx + 2 : w;
    const ye = cy + 1 < hMax ? cy + 1 : hMax;
    for (let y = cy > 0 ? cy - 1 : 0; y <= ye; y++) {
      for (let j = y * w + xs, e = y * w + xe; j < e; j++) out[j] = color;
    }
  }
}

/** Row segments (device pixels) covering blocks [first, end), for partition and selection overlays. */
export function rangeSegments(l: Layout, first: number, end: number): Array<{ x: number; y: number; w: number }> {
  const segs: Array<{ x: number; y: number; w: number }> = [];
  if (end <= first) return segs;
  const c0 = Math.floor(first / l.blocksPerCell);
  const c1 = Math.floor((end - 1) / l.blocksPerCell);
  let c = c0;
  while (c <= c1) {
    const row = Math.floor(c / l.cols);
    const rowEnd = Math.min(c1, (row + 1) * l.cols - 1);
    segs.push({ x: (c % l.cols) * l.cellPx, y: row * l.cellPx - l.scrollY, w: (rowEnd - c + 1) * l.cellPx });
    c = rowEnd + 1;
  }
  return segs;
}
