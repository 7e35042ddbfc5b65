/** The heatmap canvas: draws through render.ts, handles zoom, pan, hover and click. */
import { makePalette, ownerColor, Palette, partitionColor, toCss } from './colors';
import { blockAt, clampScroll, fitLayout, Layout, makeLayout, reveal, zoom } from './layout';
import { HeatmapData, Mode, rangeSegments, renderHeatmap } from './render';

export interface Overlay { first: number; end: number; colorIndex: number }

const COMPACT_MAX_HEIGHT = 260;

export interface HeatmapState { blocksPerCell: number; cellPx: number; scrollY: number; fitted: boolean }

export class HeatmapView {
  readonly canvas: HTMLCanvasElement;
  private readonly ctx: CanvasRenderingContext2D;
  private data: HeatmapData | null = null;
  private mode: Mode = 'owner';
  private layout: Layout | null = null;
  private fitted = true;
  private palette: Palette;
  private selected: number | null = null;
  private overlays: Overlay[] = [];
  private flashMask: Uint8Array | null = null;
  /** Paints the cells instead of renderHeatmap while set (the Timeline's brush: work per written block, not per cell). */
  private painter: ((out: Uint32Array, l: Layout, p: Palette) => void) | null = null;
  private flashTimer: number | undefined;
  private pending = false;
  /** Something changed since the last draw (a scheduled frame with nothing new does not redraw). */
  private dirty = false;
  private drag: { y: number; scroll: number; moved: boolean } | null = null;
  private hoverFn: (block: number | null, ev: MouseEvent) => void = () => undefined;
  private clickFn: (block: number) => void = () => undefined;
  private drawnFn: () => void = () => undefined;
  private readonly dpr = Math.max(1, Math.round(window.devicePixelRatio || 1));

  constructor(readonly container: HTMLElement, private readonly interactive: boolean) {
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'heatmap-canvas';
    this.canvas.setAttribute('role', 'img');
    this.canvas.tabIndex = interactive ? 0 : -1;
    container.appendChild(this.canvas);
    this.ctx = this.canvas.getContext('2d', { alpha: false })!;
    this.palette = readPalette();
    new ResizeObserver(() => this.resize()).observe(container);
    new MutationObserver(() => { this.palette = readPalette(); this.schedule(); }).observe(document.body, { attributes: true, attributeFilter: ['class'] });
    this.canvas.addEventListener('mousemove', (ev) => this.onMove(ev));
    this.canvas.addEventListener('mouseleave', (ev) => this.hoverFn(null, ev));
    if (interactive) {
      this.canvas.addEventListener('wheel', (ev) => this.onWheel(ev), { passive: false });
      this.canvas.addEventListener('mousedown', (ev) => { this.drag = { y: ev.clientY, scroll: this.layout?.scrollY ?? 0, moved: false }; });
      window.addEventListener('mouseup', () => { setTimeout(() => { this.drag = null; }, 0); });
    }
    this.canvas.addEventListener('click', (ev) => {
      if (this.drag?.moved) return;
      const b = this.hit(ev);
      if (b !== null) this.clickFn(b);
    });
  }

  onHover(fn: (block: number | null, ev: MouseEvent) => void): void { this.hoverFn = fn; }
  onClick(fn: (block: number) => void): void { this.clickFn = fn; }
  onDrawn(fn: () => void): void { this.drawnFn = fn; }

  setData(data: HeatmapData): void {
    const gridChanged = !this.data || this.data.blockCount !== data.blockCount;
    this.data = data;
    if (gridChanged) this.layout = null;
    this.schedule();
  }

  setMode(mode: Mode): void { this.mode = mode; this.schedule(); }
  setPainter(fn: ((out: Uint32Array, l: Layout, p: Palette) => void) | null): void { this.painter = fn; this.schedule(); }
  setOverlays(o: Overlay[]): void { this.overlays = o; this.schedule(); }

  select(block: number | null): void {
    this.selected = block;
    if (block !== null && this.layout) this.layout = reveal(this.layout, block);
    this.schedule();
  }

  /** Highlights blocks for a second (changed on disk). */
  flash(blocks: ArrayLike<number>): void {
    if (!this.data || blocks.length === 0) return;
    const mask = new Uint8Array(this.data.blockCount);
    for (let i = 0; i < blocks.length; i++) if (blocks[i] < mask.length) mask[blocks[i]] = 1;
    this.flashMask = mask;
    this.canvas.dataset.flashing = String(blocks.length);
    window.clearTimeout(this.flashTimer);
    this.flashTimer = window.setTimeout(() => { this.flashMask = null; delete this.canvas.dataset.flashing; this.schedule(); }, 1000);
    this.schedule();
  }

  state(): HeatmapState | null {
    return this.layout ? { blocksPerCell: this.layout.blocksPerCell, cellPx: this.layout.cellPx, scrollY: this.layout.scrollY, fitted: this.fitted } : null;
  }

  restore(s: HeatmapState | null | undefined): void {
    if (!s || s.fitted) return;
    this.fitted = false;
    this.restoreState = s;
    this.layout = null;
    this.schedule();
  }
  private restoreState: HeatmapState | null = null;

  zoomBy(zoomIn: boolean): void {
    if (!this.layout) return;
    this.layout = zoom(this.layout, zoomIn, this.layout.width / 2, this.layout.height / 2);
    this.fitted = false;
    this.schedule();
  }

  fit(): void { this.fitted = true; this.layout = null; this.schedule(); }

  /** Device-pixel geometry, for tests that check painted pixels. */
  describe(): Layout | null { return this.layout; }

  ownerCss(layer: number): string { return toCss(ownerColor(this.palette, layer)); }
  zeroCss(): string { return toCss(this.palette.zero); }
  partitionCss(index: number): string { return toCss(partitionColor(this.palette, index)); }

  private resize(): void { this.schedule(); }

  private schedule(): void {
    this.dirty = true;
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; if (this.dirty) this.draw(); });
  }

  /** Draws now, in this task (the first paint: no wait for the next frame's callbacks). */
  drawNow(): void {
    this.draw();
  }

  private ensureLayout(): Layout | null {
    if (!this.data) return null;
    const w = Math.max(1, Math.floor(this.container.clientWidth * this.dpr));
    if (!this.interactive) return this.ensureCompactLayout(w);
    const h = Math.max(1, Math.floor(this.container.clientHeight * this.dpr));
    if (this.layout && this.layout.width === w && this.layout.height === h) return this.layout;
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
      this.canvas.style.width = `${w / this.dpr}px`;
      this.canvas.style.height = `${h / this.dpr}px`;
    }
    const r = this.restoreState;
    if (!this.fitted && r) {
      this.layout = makeLayout(this.data.blockCount, w, h, r.blocksPerCell, r.cellPx, r.scrollY);
      this.restoreState = null;
    } else if (!this.fitted && this.layout) {
      this.layout = makeLayout(this.data.blockCount, w, h, this.layout.blocksPerCell, this.layout.cellPx, this.layout.scrollY);
    } else {
      this.layout = fitLayout(this.data.blockCount, w, h, this.interactive ? 40 : 24);
    }
    return this.layout;
  }

  /** The compact (overview) map shows every block and is only as tall as it needs to be. */
  private ensureCompactLayout(w: number): Layout {
    if (this.layout && this.layout.width === w) return this.layout;
    const fit = fitLayout(this.data!.blockCount, w, Math.floor(COMPACT_MAX_HEIGHT * this.dpr), 24);
    const h = Math.max(1, Math.min(fit.height, fit.rows * fit.cellPx));
    this.layout = makeLayout(fit.blockCount, w, h, fit.blocksPerCell, fit.cellPx);
    this.canvas.width = w;
    this.canvas.height = h;
    this.canvas.style.width = `${w / this.dpr}px`;
    this.canvas.style.height = `${h / this.dpr}px`;
    this.container.style.height = `${Math.ceil(h / this.dpr) + 2}px`;
    return this.layout;
  }

  private draw(): void {
    this.dirty = false;
    const l = this.ensureLayout();
    if (!l || !this.data) return;
    const img = this.ctx.createImageData(l.width, l.height);
    if (this.painter) this.painter(new Uint32Array(img.data.buffer), l, this.palette);
    else renderHeatmap(new Uint32Array(img.data.buffer), l, this.data, this.mode, this.palette, this.flashMask);
    this.ctx.putImageData(img, 0, 0);
    // Partition overlays: a bar along the bottom of each row segment.
    const bar = Math.max(2, Math.floor(l.cellPx / 6));
    for (const o of this.overlays) {
      this.ctx.fillStyle = toCss(partitionColor(this.palette, o.colorIndex));
      for (const s of rangeSegments(l, o.first, o.end)) {
        if (s.y + l.cellPx < 0 || s.y > l.height) continue;
        this.ctx.fillRect(s.x, s.y + l.cellPx - bar, s.w, bar);
      }
    }
    if (this.selected !== null) {
      this.ctx.strokeStyle = toCss(this.palette.selection);
      this.ctx.lineWidth = Math.max(2, this.dpr * 2);
      for (const s of rangeSegments(l, this.selected, this.selected + 1)) {
        const size = Math.max(l.cellPx, 6);
        this.ctx.strokeRect(s.x + 1 - (size - l.cellPx) / 2, s.y + 1 - (size - l.cellPx) / 2, size - 2, size - 2);
      }
    }
    const c = this.canvas.dataset;
    c.cols = String(l.cols); c.cellPx = String(l.cellPx); c.blocksPerCell = String(l.blocksPerCell);
    c.scrollY = String(l.scrollY); c.dpr = String(this.dpr); c.mode = this.mode; c.drawn = String((Number(c.drawn) || 0) + 1);
    this.drawnFn();
  }

  private hit(ev: MouseEvent): number | null {
    if (!this.layout) return null;
    const r = this.canvas.getBoundingClientRect();
    return blockAt(this.layout, (ev.clientX - r.left) * this.dpr, (ev.clientY - r.top) * this.dpr);
  }

  private onMove(ev: MouseEvent): void {
    if (this.drag && this.layout && (ev.buttons & 1)) {
      const dy = (ev.clientY - this.drag.y) * this.dpr;
      if (Math.abs(dy) > 3) this.drag.moved = true;
      this.layout = { ...this.layout, scrollY: clampScroll(this.layout, this.drag.scroll - dy) };
      this.fitted = false;
      this.schedule();
      return;
    }
    this.hoverFn(this.hit(ev), ev);
  }

  private onWheel(ev: WheelEvent): void {
    if (!this.layout) return;
    ev.preventDefault();
    const r = this.canvas.getBoundingClientRect();
    if (ev.ctrlKey || ev.metaKey || ev.altKey) {
      this.layout = zoom(this.layout, ev.deltaY < 0, (ev.clientX - r.left) * this.dpr, (ev.clientY - r.top) * this.dpr);
    } else {
      this.layout = { ...this.layout, scrollY: clampScroll(this.layout, this.layout.scrollY + ev.deltaY * this.dpr) };
    }
    this.fitted = false;
    this.schedule();
  }
}

function readPalette(): Palette {
  const style = getComputedStyle(document.documentElement);
  return makePalette((name) => style.getPropertyValue(name));
}
