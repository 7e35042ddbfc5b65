/**
 * Heatmap geometry, pure (no DOM): blocks are grouped into cells of `blocksPerCell` consecutive
 * blocks, cells are laid out row-major, `cols` per row, each `cellPx` device pixels square. Zooming
 * out past one pixel per block aggregates consecutive blocks into one cell, so a 1,048,576-block
 * image is drawn with about one cell per pixel and never more work than the pixels on screen.
 */
export interface Layout {
  blockCount: number;
  blocksPerCell: number;
  cellPx: number;
  cols: number;
  rows: number;
  /** Vertical scroll, in device pixels. */
  scrollY: number;
  width: number;
  height: number;
}

export const MAX_CELL_PX = 40;

export function cellCount(blockCount: number, blocksPerCell: number): number {
  return Math.ceil(blockCount / blocksPerCell);
}

export function makeLayout(blockCount: number, width: number, height: number, blocksPerCell: number, cellPx: number, scrollY = 0): Layout {
  const cols = Math.max(1, Math.floor(width / cellPx));
  const rows = Math.ceil(cellCount(blockCount, blocksPerCell) / cols);
  const layout = { blockCount, blocksPerCell, cellPx, cols, rows, scrollY: 0, width, height };
  layout.scrollY = clampScroll(layout, scrollY);
  return layout;
}

export function contentHeight(l: Layout): number {
  return l.rows * l.cellPx;
}

export function clampScroll(l: Layout, y: number): number {
  return Math.max(0, Math.min(y, contentHeight(l) - l.height));
}

/** The largest cells (up to MAX_CELL_PX) that show every block at once; aggregates when needed. */
export function fitLayout(blockCount: number, width: number, height: number, maxCellPx = MAX_CELL_PX): Layout {
  const n = Math.max(1, blockCount);
  const fits = (bpc: number, px: number) => Math.ceil(cellCount(n, bpc) / Math.max(1, Math.floor(width / px))) * px <= height;
  let px = Math.min(maxCellPx, Math.max(1, Math.floor(Math.sqrt((width * height) / n))));
  while (px > 1 && !fits(1, px)) px--;
  if (fits(1, px)) return makeLayout(blockCount, width, height, 1, px);
  let bpc = Math.max(1, Math.ceil(n / (Math.max(1, width) * Math.max(1, height))));
  while (!fits(bpc, 1)) bpc++;
  return makeLayout(blockCount, width, height, bpc, 1);
}

/** One zoom step in (factor > 1) or out, keeping the block under (x, y) where it is. */
export function zoom(l: Layout, zoomIn: boolean, x: number, y: number): Layout {
  const anchor = blockAt(l, x, y) ?? 0;
  let { blocksPerCell: bpc, cellPx: px } = l;
  if (zoomIn) {
    if (bpc > 1) bpc = Math.max(1, Math.floor(bpc / 2));
    else px = Math.min(MAX_CELL_PX * 2, px < 2 ? 2 : Math.round(px * 1.5));
  } else {
    if (px > 1) px = Math.max(1, Math.floor(px / 1.5));
    else bpc = Math.min(Math.max(1, l.blockCount), bpc * 2);
  }
  const next = makeLayout(l.blockCount, l.width, l.height, bpc, px);
  const cell = Math.floor(anchor / bpc);
  const rowTop = Math.floor(cell / next.cols) * px;
  next.scrollY = clampScroll(next, rowTop - y);
  return next;
}

/** The first block of the cell at device pixel (x, y) of the canvas, or null outside the map. */
export function blockAt(l: Layout, x: number, y: number): number | null {
  if (x < 0 || y < 0 || x >= l.cols * l.cellPx || y >= l.height) return null;
  const col = Math.floor(x / l.cellPx);
  const row = Math.floor((y + l.scrollY) / l.cellPx);
  const cell = row * l.cols + col;
  const block = cell * l.blocksPerCell;
  return block < l.blockCount ? block : null;
}

/** The blocks a cell covers: [first, end). */
export function cellBlocks(l: Layout, cell: number): { first: number; end: number } {
  const first = cell * l.blocksPerCell;
  return { first, end: Math.min(l.blockCount, first + l.blocksPerCell) };
}

/** Top-left device pixel of the cell holding `block` (y may be off screen). */
export function cellOrigin(l: Layout, block: number): { x: number; y: number } {
  const cell = Math.floor(block / l.blocksPerCell);
  return { x: (cell % l.cols) * l.cellPx, y: Math.floor(cell / l.cols) * l.cellPx - l.scrollY };
}

/** Scrolls so `block` is visible (centred when it was not). */
export function reveal(l: Layout, block: number): Layout {
  const o = cellOrigin(l, block);
  if (o.y >= 0 && o.y + l.cellPx <= l.height) return l;
  return { ...l, scrollY: clampScroll(l, o.y + l.scrollY - l.height / 2) };
}

/** Describes a block for the hover line: indices and byte/LBA ranges. */
export function blockRanges(block: number, blockSize: number, virtualSize: number): { firstLba: number; lastLba: number; start: number; end: number } {
  const start = block * blockSize;
  const end = Math.min(virtualSize, start + blockSize);
  return { firstLba: start / 512, lastLba: Math.ceil(end / 512) - 1, start, end };
}
