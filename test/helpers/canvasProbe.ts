import type { Frame, Page } from 'playwright-core';

/**
 * Reads the colour at the centre of each block's cell from a heatmap canvas, using the geometry the
 * canvas publishes in its data attributes (cols, cellPx, blocksPerCell, scrollY). Blocks whose cell
 * is off screen come back as null.
 */
export async function sampleBlocks(target: Page | Frame, selector: string, blocks: number[]): Promise<Array<[number, number, number] | null>> {
  return target.evaluate(({ selector, blocks }) => {
    const c = document.querySelector(selector) as HTMLCanvasElement;
    const d = c.dataset;
    const cols = Number(d.cols); const px = Number(d.cellPx); const bpc = Number(d.blocksPerCell); const sy = Number(d.scrollY);
    const ctx = c.getContext('2d')!;
    return blocks.map((b) => {
      const cell = Math.floor(b / bpc);
      const x = (cell % cols) * px + Math.floor((px - 1) / 2);
      const y = Math.floor(cell / cols) * px - sy + Math.floor((px - 1) / 2);
      if (y < 0 || y >= c.height) return null;
      const p = ctx.getImageData(x, y, 1, 1).data;
      return [p[0], p[1], p[2]] as [number, number, number];
    });
  }, { selector, blocks });
}

export function parseHex(c: string): [number, number, number] {
  const h = c.trim().replace('#', '');
  return [parseInt(h.slice(0, 2), 16), parseInt(h.slice(2, 4), 16), parseInt(h.slice(4, 6), 16)];
}

export function sameColor(a: [number, number, number] | null, b: [number, number, number], tolerance = 3): boolean {
  return a !== null && Math.abs(a[0] - b[0]) <= tolerance && Math.abs(a[1] - b[1]) <= tolerance && Math.abs(a[2] - b[2]) <= tolerance;
}
