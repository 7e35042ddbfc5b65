import { BlockData, DiffData, ImageModel, LayerBlockModel, SectorLayerModel } from '../../src/protocol';
import { formatBytes, formatInt, hexDump, locate, percent } from '../format';
import { blockRanges } from '../heatmap/layout';
import { HeatmapData, Mode, NO_OWNER, zeroBlockCount } from '../heatmap/render';
import { HeatmapView } from '../heatmap/view';
import { flashAlpha } from '../timeline/logic';
import { append, button, clear, dropdown, Dropdown, el, textField } from '../ui';

export interface BlocksHost {
  requestBlock(block: number): void;
  requestSector(sector: number): void;
  requestDiffSector(sector: number): void;
  saveState(): void;
}

const MODE_LABELS: Record<Mode, string> = {
  owner: 'Owning layer', allocated: 'Allocated in this image', fill: 'Sector-bitmap fill %', changed: 'Changed vs other image', timeline: 'Written in the brushed range',
};

/** The heatmap with its toolbar, hover line, partition list, diff ranges, and the block detail. */
export class BlocksView {
  readonly element = el('div', 'view blocks-view');
  readonly heatmap: HeatmapView;
  /** An emulator session's writes, fading on top of the heatmap. */
  readonly writeFlash: WriteFlash;
  private model: ImageModel | null = null;
  private blocks: BlockData | null = null;
  private diff: DiffData | null = null;
  private readonly legend = el('div', 'legend');
  private readonly hover = el('div', 'hover-line', 'Hover a block for details; click it to see its sectors. Ctrl+wheel zooms, wheel or drag scrolls.');
  private readonly side = el('div', 'blocks-side');
  private readonly detail = el('div', 'block-detail');
  private readonly sectorBox = el('div', 'sector-detail');
  private readonly diffBox = el('div', 'diff-detail');
  private diffSector: number | null = null;
  private readonly message = el('div', 'goto-message');
  private readonly modeBox: Dropdown<Mode>;
  private gotoKind: Dropdown<'lba' | 'offset'>;
  mode: Mode = 'owner';
  selected: number | null = null;
  selectedSector: number | null = null;
  private detailLayers: LayerBlockModel[] = [];

  constructor(private readonly host: BlocksHost) {
    this.modeBox = dropdown<Mode>(this.modeOptions(), this.mode, (m) => this.setMode(m), 'Heatmap mode');
    this.modeBox.element.id = 'heatmap-mode';
    this.gotoKind = dropdown<'lba' | 'offset'>([{ value: 'lba', label: 'LBA' }, { value: 'offset', label: 'Byte offset' }], 'lba', () => undefined, 'Go to');
    const go = textField('Go to LBA / offset', (v) => this.goTo(v));
    go.element.id = 'goto';
    const mapBox = el('div', 'heatmap-box');
    mapBox.id = 'blocks-heatmap';
    this.heatmap = new HeatmapView(mapBox, true);
    this.heatmap.setMode(this.mode);
    this.heatmap.onHover((b) => this.showHover(b));
    this.heatmap.onClick((b) => this.selectBlock(b));
    this.writeFlash = new WriteFlash(this.heatmap);
    append(this.element,
      el('div', 'toolbar',
        el('label', 'tool-label', 'Mode'), this.modeBox.element,
        button('−', () => { this.heatmap.zoomBy(false); host.saveState(); }, { secondary: true, title: 'Zoom out' }),
        button('+', () => { this.heatmap.zoomBy(true); host.saveState(); }, { secondary: true, title: 'Zoom in' }),
        button('Fit', () => { this.heatmap.fit(); host.saveState(); }, { secondary: true, title: 'Show every block' }),
        el('span', 'spacer'),
        this.gotoKind.element, go.element),
      this.message,
      this.legend,
      el('div', 'blocks-main', el('div', 'blocks-map-col', mapBox, this.hover), this.side),
      this.diffBox,
      this.detail,
      this.sectorBox,
    );
  }

  private modeOptions(): Array<{ value: Mode; label: string }> {
    const modes: Mode[] = this.diff ? ['owner', 'allocated', 'fill', 'changed'] : ['owner', 'allocated', 'fill'];
    return modes.map((m) => ({ value: m, label: MODE_LABELS[m] }));
  }

  setMode(m: Mode): void {
    this.mode = m;
    this.modeBox.setValue(m);
    this.heatmap.setMode(m);
    this.renderLegend();
    this.host.saveState();
  }

  heatmapData(): HeatmapData | null {
    if (!this.blocks) return null;
    return { blockCount: this.blocks.blockCount, allocated: this.blocks.allocated, fill: this.blocks.fill, owner: this.blocks.owner, zero: this.blocks.zero ?? null, changed: this.diff?.changed ?? null };
  }

  render(model: ImageModel, blocks: BlockData, diff: DiffData | null): void {
    this.model = model;
    this.blocks = blocks;
    this.diff = diff;
    this.modeBox.setOptions(this.modeOptions());
    if (this.mode === 'changed' && !diff) this.mode = 'owner';
    this.heatmap.setData(this.heatmapData()!);
    this.heatmap.setOverlays(model.partitions.list.map((p, i) => ({
      first: Math.floor(p.start / blocks.blockSize), end: Math.ceil((p.start + p.length) / blocks.blockSize), colorIndex: i,
    })));
    this.renderLegend();
    this.renderSide();
    if (this.selected !== null) {
      if (this.selected < blocks.blockCount) { this.heatmap.select(this.selected); this.host.requestBlock(this.selected); } else this.selected = null;
    }
  }

  setDiff(diff: DiffData): void {
    if (!this.model || !this.blocks) return;
    this.render(this.model, this.blocks, diff);
    this.setMode('changed');
  }

  private renderLegend(): void {
    clear(this.legend);
    if (!this.model || !this.blocks) return;
    const sw = (css: string) => { const s = el('span', 'swatch'); s.style.backgroundColor = css; return s; };
    if (this.mode === 'owner') {
      const counts = new Array<number>(this.blocks.layerCount + 1).fill(0);
      for (let i = 0; i < this.blocks.blockCount; i++) { const o = this.blocks.owner[i]; counts[o === NO_OWNER ? this.blocks.layerCount : o]++; }
      this.model.chain.forEach((l, i) => append(this.legend, el('span', 'legend-item', sw(this.heatmap.ownerCss(i)), `${i}: ${l.fileName} (${formatInt(counts[i])})`)));
      append(this.legend, el('span', 'legend-item', el('span', 'swatch empty'), `no layer: reads as zeros (${formatInt(counts[this.blocks.layerCount])})`));
      const zeros = zeroBlockCount(this.blocks);
      if (zeros > 0) append(this.legend, el('span', 'legend-item', sw(this.heatmap.zeroCss()), `zero: held as zeros, no data (${formatInt(zeros)})`));
    } else if (this.mode === 'allocated') {
      append(this.legend, el('span', 'legend-item', sw(this.heatmap.ownerCss(0)), `allocated in ${this.model.overview.fileName}`), el('span', 'legend-item', el('span', 'swatch empty'), 'not allocated'));
      if (this.blocks.zero) append(this.legend, el('span', 'legend-item', sw(this.heatmap.zeroCss()), 'zero: held as zeros, no data'));
    } else if (this.mode === 'fill') {
      append(this.legend, el('span', 'legend-item', 'Brighter = more of the block\'s sectors present in this image (sector bitmap).'));
    } else if (this.diff) {
      append(this.legend, el('span', 'legend-item', el('span', 'swatch changed'), `differs from ${this.diff.otherName}`), el('span', 'legend-item', el('span', 'swatch empty'), 'identical'));
    }
  }

  private renderSide(): void {
    clear(this.side);
    if (!this.model || !this.blocks) return;
    const bs = this.blocks.blockSize;
    const parts = this.model.partitions;
    append(this.side, el('h3', undefined, parts.scheme === 'none' ? 'No partition table' : `Partitions (${parts.scheme.toUpperCase()})`));
    const list = el('ul', 'partition-list');
    list.id = 'partitions';
    parts.list.forEach((p, i) => {
      const s = el('span', 'swatch');
      s.style.backgroundColor = this.heatmap.partitionCss(i);
      const item = el('li', 'clickable', s, `#${p.number} ${p.typeName} (${p.type})${p.name ? ` “${p.name}”` : ''}${p.bootable ? ', boot' : ''}`, el('br'),
        el('span', 'muted', `LBA ${formatInt(p.start / 512)}–${formatInt((p.start + p.length) / 512 - 1)}, ${formatBytes(p.length)}`));
      item.addEventListener('click', () => this.selectBlock(Math.floor(p.start / bs)));
      list.appendChild(item);
    });
    append(this.side, list);
    for (const w of parts.warnings) append(this.side, el('p', 'warning', w));
    if (this.diff) {
      const d = this.diff;
      append(this.side, el('h3', undefined, d.identical ? `Identical to ${d.otherName}` : `Differs from ${d.otherName}: ${formatBytes(d.differingBytes)}`));
      const ranges = el('ul', 'range-list');
      ranges.id = 'diff-ranges';
      for (const r of d.ranges) {
        const item = el('li', 'clickable', `${formatInt(r.start)} +${formatInt(r.length)} (LBA ${formatInt(Math.floor(r.start / 512))})`);
        item.addEventListener('click', () => {
          const sector = Math.floor(r.start / 512);
          this.diffSector = sector;
          this.host.requestDiffSector(sector);
          this.selectBlock(Math.floor(r.start / bs), sector);
        });
        ranges.appendChild(item);
      }
      append(this.side, ranges, d.rangesTruncated ? el('p', 'muted', 'Only the first ranges are listed.') : null);
    }
  }

  private showHover(block: number | null): void {
    if (block === null || !this.blocks || !this.model) { return; }
    const b = this.blocks;
    const r = blockRanges(block, b.blockSize, this.model.overview.virtualSize);
    const owner = b.owner[block];
    const ownerName = owner === NO_OWNER ? 'none (zeros)' : `${owner}: ${this.model.chain[owner]?.fileName ?? '?'}${b.zero?.[block] ? ' (zero, no data)' : ''}`;
    const sector = b.ownerSector[block];
    const where = owner === NO_OWNER || sector === 0xffffffff ? '' : ` at file offset ${formatInt(sector * 512)}`;
    const text = `Block ${formatInt(block)} · LBA ${formatInt(r.firstLba)}–${formatInt(r.lastLba)} · bytes ${formatInt(r.start)}–${formatInt(r.end - 1)} · `
      + `${b.allocated[block] ? `allocated, fill ${percent(b.fill[block], 255)}` : 'not allocated here'} · owner ${ownerName}${where}`;
    this.heatmap.canvas.title = text;
    this.hover.textContent = text;
  }

  goTo(text: string): void {
    if (!this.blocks || !this.model) return;
    const r = locate(this.gotoKind.value(), text, this.blocks.blockSize, this.model.overview.virtualSize);
    if (typeof r === 'string') { this.message.textContent = r; return; }
    this.message.textContent = '';
    this.selectBlock(r.block, r.sector);
  }

  selectBlock(block: number, sector?: number): void {
    this.selected = block;
    this.selectedSector = sector ?? null;
    this.heatmap.select(block);
    this.host.requestBlock(block);
    if (sector !== undefined) this.host.requestSector(sector);
    this.host.saveState();
  }

  showBlockDetail(block: number, layers: LayerBlockModel[]): void {
    if (block !== this.selected || !this.blocks || !this.model) return;
    this.detailLayers = layers;
    clear(this.detail);
    const b = this.blocks;
    const r = blockRanges(block, b.blockSize, this.model.overview.virtualSize);
    append(this.detail, el('h3', undefined, `Block ${formatInt(block)}: LBA ${formatInt(r.firstLba)}–${formatInt(r.lastLba)}, bytes ${formatInt(r.start)}–${formatInt(r.end - 1)}`));
    const table = el('ul', 'layer-list');
    for (const l of layers) {
      const held = l.bitmap ? countBits(l.bitmap, b.sectorsPerBlock) : 0;
      table.appendChild(el('li', undefined, `${l.index}: ${l.fileName} — `, l.allocated
        ? `allocated${l.fileOffset !== null ? ` at file offset ${formatInt(l.fileOffset)}` : ''}, ${formatInt(held)} of ${formatInt(b.sectorsPerBlock)} sectors (${percent(held, b.sectorsPerBlock)})`
        : 'not allocated'));
    }
    append(this.detail, table, el('p', 'muted', 'Sector map: each cell is a sector, coloured by the layer a read takes it from. Click a sector for its bytes in every layer.'));
    const cols = 64;
    const spb = b.sectorsPerBlock;
    const px = spb > 2048 ? 6 : 10;
    const canvas = el('canvas', 'sector-map');
    canvas.id = 'sector-map';
    canvas.width = cols * px;
    canvas.height = Math.ceil(spb / cols) * px;
    const ctx = canvas.getContext('2d')!;
    const empty = getComputedStyle(document.documentElement).getPropertyValue('--vscode-editorWidget-background').trim() || 'gray';
    for (let s = 0; s < spb; s++) {
      const layer = layers.find((l) => l.bitmap && (l.bitmap[s >> 3] & (0x80 >> (s & 7))));
      ctx.fillStyle = layer ? this.heatmap.ownerCss(layer.index) : empty;
      ctx.fillRect((s % cols) * px, Math.floor(s / cols) * px, px - 1, px - 1);
    }
    canvas.addEventListener('click', (ev) => {
      const rect = canvas.getBoundingClientRect();
      const s = Math.floor((ev.clientY - rect.top) / px) * cols + Math.floor((ev.clientX - rect.left) / px);
      if (s >= 0 && s < spb) { this.selectedSector = block * spb + s; this.host.requestSector(this.selectedSector); this.host.saveState(); }
    });
    this.detail.appendChild(canvas);
  }

  showSector(sector: number, layers: SectorLayerModel[], winner: number | null, effective: Uint8Array): void {
    if (sector !== this.selectedSector) return;
    clear(this.sectorBox);
    append(this.sectorBox, el('h3', undefined, `Sector ${formatInt(sector)} (LBA ${formatInt(sector)}, byte ${formatInt(sector * 512)})`));
    const cols = el('div', 'hex-columns');
    for (const l of layers) {
      const win = l.index === winner;
      const head = el('div', `hex-head${win ? ' winner' : ''}`, `${l.index}: ${l.fileName}`, win ? el('span', 'win-mark', ' ◀ read from here') : null);
      const body = el('pre', 'hex', l.bytes ? hexDump(l.bytes).join('\n') : '(not held by this layer)');
      cols.appendChild(el('div', `hex-col${win ? ' winner' : ''}`, head, body));
    }
    if (winner === null) cols.appendChild(el('div', 'hex-col winner', el('div', 'hex-head winner', 'No layer holds it: reads as zeros'), el('pre', 'hex', hexDump(effective).join('\n'))));
    this.sectorBox.appendChild(cols);
    this.sectorBox.scrollIntoView({ block: 'nearest' });
  }

  layersShown(): number { return this.detailLayers.length; }

  /** The sector as this image and the diffed image read it, rows that differ marked. */
  showDiffSector(sector: number, aName: string, bName: string, a: Uint8Array, b: Uint8Array): void {
    if (sector !== this.diffSector) return;
    clear(this.diffBox);
    const da = hexDump(a);
    const db = hexDump(b);
    const column = (name: string, lines: string[]) => {
      const pre = el('pre', 'hex');
      lines.forEach((line, i) => {
        const differs = !sameRow(a, b, i);
        pre.appendChild(el('span', differs ? 'hex-row differs' : 'hex-row', `${differs ? '≠ ' : '  '}${line}\n`));
      });
      return el('div', 'hex-col', el('div', 'hex-head', name), pre);
    };
    append(this.diffBox,
      el('h3', undefined, `Sector ${formatInt(sector)} (byte ${formatInt(sector * 512)}): ${aName} vs ${bName}`),
      el('div', 'hex-columns', column(aName, da), column(bName, db)));
    this.diffBox.id = 'diff-sector';
  }
}

function sameRow(a: Uint8Array, b: Uint8Array, row: number): boolean {
  for (let i = row * 16; i < Math.min(a.length, row * 16 + 16); i++) if (a[i] !== b[i]) return false;
  return true;
}

function countBits(bitmap: Uint8Array, n: number): number {
  let c = 0;
  for (let i = 0; i < n; i++) if (bitmap[i >> 3] & (0x80 >> (i & 7))) c++;
  return c;
}

/**
 * The live write flash: each block an emulator session writes lights up in the flash colour and
 * fades out over a few seconds (a new write lights it again), drawn on a transparent canvas over
 * the heatmap so the heatmap is not redrawn every frame; cells follow its zoom and scroll. The
 * canvas publishes the heatmap's geometry (and `flashing`, the blocks still lit) for the tests.
 */
export class WriteFlash {
  readonly canvas = document.createElement('canvas');
  private readonly ctx: CanvasRenderingContext2D;
  /** Block -> when its latest write was seen (performance.now()). */
  private readonly lit = new Map<number, number>();
  private frame = 0;

  constructor(private readonly heatmap: HeatmapView) {
    const c = this.canvas;
    c.className = 'write-flash';
    c.style.position = 'absolute';
    c.style.left = '0';
    c.style.top = '0';
    c.style.pointerEvents = 'none';
    c.width = 1;
    c.height = 1;
    heatmap.container.appendChild(c);
    this.ctx = c.getContext('2d')!;
  }

  flash(blocks: ArrayLike<number>): void {
    const now = performance.now();
    for (let i = 0; i < blocks.length; i++) this.lit.set(blocks[i], now);
    // `flashing` is published by draw(), together with the geometry it was drawn with, so a reader
    // who sees it can also locate the cells.
    if (!this.frame) this.frame = requestAnimationFrame((t) => this.draw(t));
  }

  private draw(now: number): void {
    this.frame = 0;
    const l = this.heatmap.describe();
    const src = this.heatmap.canvas;
    const c = this.canvas;
    if (c.width !== src.width || c.height !== src.height) {
      c.width = src.width;
      c.height = src.height;
    }
    c.style.width = src.style.width;
    c.style.height = src.style.height;
    this.ctx.clearRect(0, 0, c.width, c.height);
    if (!l) {
      if (this.lit.size) this.frame = requestAnimationFrame((t) => this.draw(t));
      return;
    }
    const d = c.dataset;
    d.cols = String(l.cols); d.cellPx = String(l.cellPx); d.blocksPerCell = String(l.blocksPerCell); d.scrollY = String(l.scrollY);
    // Several blocks in one cell (zoomed out): the cell shows the most recent.
    const cells = new Map<number, number>();
    for (const [block, at] of this.lit) {
      const a = flashAlpha(now - at);
      if (a <= 0) { this.lit.delete(block); continue; }
      const cell = Math.floor(block / l.blocksPerCell);
      if ((cells.get(cell) ?? 0) < a) cells.set(cell, a);
    }
    const css = getComputedStyle(document.documentElement);
    this.ctx.fillStyle = css.getPropertyValue('--vscode-charts-yellow').trim() || css.getPropertyValue('--vscode-editorWarning-foreground').trim() || '#cca700';
    const px = l.cellPx;
    const gap = px >= 4 ? 1 : 0;
    // Cells under 3 px get a 3x3 mark, as the heatmap does, so one lit block is still seen.
    const grow = px < 3 ? 1 : 0;
    for (const [cell, a] of cells) {
      const x = (cell % l.cols) * px;
      const y = Math.floor(cell / l.cols) * px - l.scrollY;
      if (y + px < 0 || y > c.height) continue;
      this.ctx.globalAlpha = a;
      this.ctx.fillRect(x - grow, y - grow, px - gap + 2 * grow, px - gap + 2 * grow);
    }
    this.ctx.globalAlpha = 1;
    if (this.lit.size) {
      d.flashing = String(this.lit.size);
      this.frame = requestAnimationFrame((t) => this.draw(t));
    } else {
      delete d.flashing;
    }
  }
}
