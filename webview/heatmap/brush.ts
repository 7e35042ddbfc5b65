/**
 * The Timeline heatmap's painter for a brush answer, pure: the same pixels as renderHeatmap in
 * 'timeline' mode with blockAges' ages, but its work is the written blocks, not every cell. The
 * unwritten grid (background, empty cells) is painted once per layout and copied in; then only the
 * written cells (a sorted sparse list from the host) are painted, coloured by the rank of their last
 * write through a colour table, with the 3x3 mark of sub-3-px cells stored pixel by pixel.
 */
import { mix, Palette, pack } from './colors';
import { Layout } from './layout';

export interface BrushAnswer {
  blockCount: number;
  /** Blocks written in the brushed range, ascending. */
  blocks: ArrayLike<number>;
  /** Per entry of `blocks`, its last write's rank: 0 (oldest) to RANK_MAX (newest); its colour position is rank / RANK_MAX. */
  ranks: Uint16Array;
}

const RANK_MAX = 65535;

export class BrushPainter {
  private base: Uint32Array | null = null;
  private baseKey = '';
  /** The colour of each rank (renderHeatmap's mix of its Float32 age), per palette. */
  private lut: Uint32Array | null = null;
  private lutKey = '';

  /**
   * Paints `a` into `out` (l.width × l.height). False when the blocks are not ascending (the caller
   * then paints through renderHeatmap).
   */
  paint(out: Uint32Array, l: Layout, a: BrushAnswer, p: Palette): boolean {
    const bg = pack(p.background);
    const emptyColor = pack(p.empty);
    const px = l.cellPx;
    const gap = px >= 4 ? 1 : 0;
    const w = l.width;
    const h = l.height;
    const firstRow = Math.floor(l.scrollY / px);
    const lastRow = Math.min(l.rows - 1, Math.floor((l.scrollY + h - 1) / px));
    const key = `${w},${h},${px},${l.cols},${l.blocksPerCell},${l.scrollY},${a.blockCount},${bg},${emptyColor}`;
    if (!this.base || this.baseKey !== key || this.base.length !== out.length) {
      this.base = emptyGrid(l, a.blockCount, bg, emptyColor);
      this.baseKey = key;
    }
    out.set(this.base);
    const lutKey = `${pack(p.allocated)},${pack(p.changed)}`;
    if (!this.lut || this.lutKey !== lutKey) {
      this.lut = rankColors(p);
      this.lutKey = lutKey;
    }
    const lut = this.lut;

    const bpc = l.blocksPerCell;
    const cols = l.cols;
    const blocks = a.blocks;
    const ranks = a.ranks;
    const n = blocks.length;
    // The blocks of the visible rows only.
    const firstBlock = firstRow * cols * bpc;
    const endBlock = Math.min(a.blockCount, (lastRow + 1) * cols * bpc);
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (blocks[mid] < firstBlock) lo = mid + 1;
      else hi = mid;
    }
    const hMax = h - 1;
    let prev = -1;
    for (let i = lo; i < n;) {
      const b0 = blocks[i];
      if (b0 >= endBlock) break;
      if (b0 <= prev) return false;
      // One cell: the newest age of its written blocks (renderHeatmap's max).
      const cell = bpc === 1 ? b0 : Math.floor(b0 / bpc);
      const cellEnd = Math.min(endBlock, (cell + 1) * bpc);
      let best = -1;
      for (; i < n; i++) {
        const b = blocks[i];
        if (b >= cellEnd) break;
        if (b <= prev) return false;
        prev = b;
        if (ranks[i] > best) best = ranks[i];
      }
      if (best < 0) continue;
      const color = lut[best];
      const col = cell % cols;
      const row = (cell - col) / cols;
      const x0 = col * px;
      const y0 = row * px - l.scrollY;
      if (px < 3) {
        // The 3x3 mark covers the cell's own pixels, so it is the only thing stored; marks go in
        // cell order, as renderHeatmap draws them after all cells.
        if (color === emptyColor) continue;
        const xs = x0 > 0 ? x0 - 1 : 0;
        const xe = x0 + 2 < w ? x0 + 2 : w;
        const ys = y0 > 0 ? y0 - 1 : 0;
        const ye = y0 + 1 < hMax ? y0 + 1 : hMax;
        if (xe - xs === 3 && ye - ys === 2) {
          let j = ys * w + xs;
          out[j] = color; out[j + 1] = color; out[j + 2] = color; j += w;
          out[j] = color; out[j + 1] = color; out[j + 2] = color; j += w;
          out[j] = color; out[j + 1] = color; out[j + 2] = color;
        } else {
          for (let y = ys; y <= ye; y++) for (let j = y * w + xs, e = y * w + xe; j < e; j++) out[j] = color;
        }
      } else {
        const ys = Math.max(0, y0);
        const ye = Math.min(h, y0 + px - gap);
        const xe = Math.min(w, x0 + px - gap);
        for (let y = ys; y < ye; y++) out.fill(color, y * w + x0, y * w + xe);
      }
    }
    return true;
  }
}

/** Per rank, renderHeatmap's timeline colour for the age rank / RANK_MAX (a Float32 age, as blockAges stores it). */
export function rankColors(p: Palette): Uint32Array {
  const lut = new Uint32Array(RANK_MAX + 1);
  const f = new Float32Array(1);
  for (let r = 0; r <= RANK_MAX; r++) {
    f[0] = r / RANK_MAX;
    lut[r] = pack(mix(p.allocated, p.changed, f[0]));
  }
  return lut;
}

/** renderHeatmap's picture of a grid with nothing written: background, and every cell empty. */
export function emptyGrid(l: Layout, blockCount: number, bg: number, emptyColor: number): Uint32Array {
  const w = l.width;
  const h = l.height;
  const out = new Uint32Array(w * h).fill(bg);
  const px = l.cellPx;
  const gap = px >= 4 ? 1 : 0;
  const cells = Math.ceil(blockCount / l.blocksPerCell);
  const firstRow = Math.floor(l.scrollY / px);
  const lastRow = Math.min(l.rows - 1, Math.floor((l.scrollY + h - 1) / px));
  for (let row = firstRow; row <= lastRow && row * l.cols < cells; row++) {
    const inRow = Math.min(l.cols, cells - row * l.cols);
    const y0 = row * px - l.scrollY;
    const ys = Math.max(0, y0);
    const ye = Math.min(h, y0 + px - gap);
    for (let y = ys; y < ye; y++) {
      const r = y * w;
      if (gap === 0) out.fill(emptyColor, r, r + Math.min(w, inRow * px));
      else for (let c = 0; c < inRow; c++) out.fill(emptyColor, r + c * px, r + Math.min(w, c * px + px - gap));
    }
  }
  return out;
}
