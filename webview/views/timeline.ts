/** The Timeline tab: read/write density over time, a brush, the blocks written in the brushed range, replay, per-block writes, export. */
import { HostMessage, TimelineWrite } from '../../src/protocol';
import { formatBytes } from '../format';
import { BrushPainter } from '../heatmap/brush';
import { renderHeatmap } from '../heatmap/render';
import { HeatmapView } from '../heatmap/view';
import { brushBlocks, brushRange, RANK_MAX, replayStep, timeToX } from '../timeline/logic';
import { append, button, clear, dataGrid, dropdown, el } from '../ui';

export interface TimelineHost {
  query(from: number, to: number): void;
  blockWrites(block: number, from: number, to: number): void;
  exportRange(from: number, to: number): void;
  openTrace(): void;
  openSector(block: number, sector: number): void;
}

type Summary = Extract<HostMessage, { type: 'timeline' }>;

const AXIS_HEIGHT = 70;

export class TimelineView {
  readonly element = el('div', 'view timeline-view');
  readonly heatmap: HeatmapView;
  private summary: Summary | null = null;
  private blockCount = 0;
  private blockSize = 1;
  private range: { from: number; to: number } | null = null;
  private grid: { age: Float32Array; allocated: Uint8Array; fill: Uint8Array; owner: Uint16Array } | null = null;
  private readonly axisBox = el('div', 'timeline-axis');
  private readonly axis: HTMLCanvasElement;
  private readonly info = el('div', 'timeline-info', 'No trace yet: start an emulator session on this image, or Open Trace… a file written by diskimg serve --trace.');
  private readonly snapBar = el('div', 'toolbar timeline-snapshots');
  private readonly writesBox = el('div', 'timeline-writes');
  private drag: number | null = null;
  private playing: number | null = null;
  private speed = 1;
  private readonly playButton: HTMLElement;
  private readonly painter = new BrushPainter();

  constructor(private readonly host: TimelineHost) {
    this.axis = document.createElement('canvas');
    this.axis.className = 'timeline-canvas';
    this.axis.id = 'timeline-axis';
    this.axisBox.appendChild(this.axis);
    const mapBox = el('div', 'heatmap-box');
    mapBox.id = 'timeline-heatmap';
    this.heatmap = new HeatmapView(mapBox, true);
    this.heatmap.setMode('timeline');
    this.heatmap.onClick((b) => this.range && host.blockWrites(b, this.range.from, this.range.to));
    this.playButton = button('Play', () => this.togglePlay(), { secondary: true, title: 'Replay the writes of the brushed range in order' });
    this.playButton.id = 'timeline-play';
    const speeds = dropdown<string>(['0.25', '1', '4', '16', '64'].map((v) => ({ value: v, label: `${v}×` })), '1', (v) => { this.speed = Number(v); }, 'Replay speed');
    const all = button('All', () => this.summary && this.brush(this.summary.from, this.summary.to), { secondary: true, title: 'Brush the whole trace' });
    const exp = button('Export JSON…', () => this.range && host.exportRange(this.range.from, this.range.to), { secondary: true });
    exp.id = 'timeline-export';
    append(this.element,
      el('div', 'toolbar', button('Open Trace…', () => host.openTrace(), { secondary: true }), all, this.playButton, el('label', 'tool-label', 'Speed'), speeds.element, exp),
      this.snapBar,
      this.axisBox,
      this.info,
      mapBox,
      this.writesBox);
    this.axis.addEventListener('mousedown', (ev) => { this.drag = this.x(ev); });
    window.addEventListener('mousemove', (ev) => {
      if (this.drag === null || !this.summary) return;
      const r = brushRange(this.drag, this.x(ev), this.summary.from, this.summary.to, this.axis.clientWidth);
      this.range = r;
      this.drawAxis();
    });
    window.addEventListener('mouseup', (ev) => {
      if (this.drag === null || !this.summary) return;
      const x0 = this.drag;
      this.drag = null;
      const x1 = this.x(ev);
      if (Math.abs(x1 - x0) < 2) return;
      const r = brushRange(x0, x1, this.summary.from, this.summary.to, this.axis.clientWidth);
      this.brush(r.from, r.to);
    });
    new ResizeObserver(() => this.drawAxis()).observe(this.axisBox);
  }

  private x(ev: MouseEvent): number {
    return ev.clientX - this.axis.getBoundingClientRect().left;
  }

  setGrid(blockCount: number, blockSize: number): void {
    this.blockCount = blockCount;
    this.blockSize = blockSize;
  }

  setSummary(s: Summary): void {
    const first = !this.summary;
    this.summary = s;
    this.info.textContent = `${s.records.toLocaleString('en-US')} trace records, ${s.from.toFixed(3)} s to ${s.to.toFixed(3)} s${s.live ? ' (live)' : ''} — ${s.source}. Drag across the axis to brush a range.`;
    clear(this.snapBar);
    const marks = [{ label: 'start', t: s.from }, ...s.snapshots, { label: s.live ? 'now' : 'end', t: s.to }];
    for (let i = 0; i + 1 < marks.length; i++) {
      const a = marks[i];
      const b = marks[i + 1];
      const what = (m: { label: string; layer?: string }) => (m.layer ? `snapshot ${m.label} (${m.layer} frozen)` : m.label);
      const bt = button(`${a.label} → ${b.label}`, () => this.brush(a.t, b.t), { secondary: true, title: `Blocks written between ${what(a)} and ${what(b)}` });
      bt.dataset.from = String(a.t);
      bt.dataset.to = String(b.t);
      this.snapBar.appendChild(bt);
    }
    this.element.dataset.from = String(s.from);
    this.element.dataset.to = String(s.to);
    this.element.dataset.records = String(s.records);
    this.element.dataset.writeRecords = String(s.writes.reduce((n, w) => n + w, 0));
    this.element.dataset.snapshots = s.snapshots.map((m) => m.t).join(',');
    if (first || !this.range) this.brush(s.from, s.to);
    this.drawAxis();
  }

  brush(from: number, to: number): void {
    this.range = { from, to };
    this.drawAxis();
    this.host.query(from, to);
  }

  /** The host's answer to a brush: colour exactly the blocks written in it, oldest to newest. */
  showRange(m: Extract<HostMessage, { type: 'timelineRange' }>): void {
    // The painter's work is the written blocks (sorted by the host); the per-block layers are only
    // there for the heatmap's geometry and for the fallback, allocated once per grid.
    if (!this.grid || this.grid.age.length !== this.blockCount) {
      const n = this.blockCount;
      this.grid = { age: new Float32Array(n), allocated: new Uint8Array(n), fill: new Uint8Array(n), owner: new Uint16Array(n) };
    }
    const g = this.grid;
    const data = { blockCount: this.blockCount, allocated: g.allocated, fill: g.fill, owner: g.owner, changed: null, age: g.age };
    const { blocks, ranks } = brushBlocks(m);
    const answer = { blockCount: this.blockCount, blocks, ranks };
    this.heatmap.setPainter((out, l, p) => {
      if (this.painter.paint(out, l, answer, p)) return;
      // Not ascending (not what the host sends): every block's age, every cell.
      g.age.fill(-1);
      for (let i = 0; i < blocks.length; i++) if (blocks[i] < g.age.length) g.age[blocks[i]] = ranks[i] / RANK_MAX;
      renderHeatmap(out, l, data, 'timeline', p);
    });
    this.heatmap.setData(data);
    this.heatmap.canvas.dataset.written = String(blocks.length);
    this.element.dataset.range = `${m.from},${m.to}`;
    // The written blocks as text for the tests, only when short (a long list would cost more than the paint).
    this.element.dataset.blocks = blocks.length <= 10_000 ? blocks.join(',') : '';
    this.info.textContent = `${blocks.length.toLocaleString('en-US')} blocks written by ${m.records.toLocaleString('en-US')} writes between ${m.from.toFixed(3)} s and ${m.to.toFixed(3)} s (colour: oldest to newest). Click a block for its writes.`;
  }

  showWrites(block: number, writes: TimelineWrite[]): void {
    clear(this.writesBox);
    const rows = writes.slice(0, 2000);
    append(this.writesBox,
      el('h3', undefined, `Block ${block}: ${writes.length} write${writes.length === 1 ? '' : 's'} in the range${writes.length > rows.length ? ` (first ${rows.length})` : ''}`),
      dataGrid<TimelineWrite>([
        { title: 'Time (s)', cell: (w) => w.t.toFixed(6) },
        { title: 'Offset', cell: (w) => `${w.offset} (LBA ${Math.floor(w.offset / 512)})` },
        { title: 'Length', cell: (w) => formatBytes(w.length) },
        { title: 'Layer', cell: (w) => w.layer },
      ], rows, `Writes of block ${block}`));
    const open = el('div', 'toolbar');
    for (const w of rows.slice(0, 20)) {
      open.appendChild(button(`Sector ${Math.floor(w.offset / 512)} @ ${w.t.toFixed(3)} s`, () => this.host.openSector(Math.floor(w.offset / this.blockSize), Math.floor(w.offset / 512)), { secondary: true }));
    }
    this.writesBox.appendChild(open);
  }

  private togglePlay(): void {
    if (this.playing !== null) {
      cancelAnimationFrame(this.playing);
      this.playing = null;
      this.playButton.textContent = 'Play';
      return;
    }
    const start = this.range ?? (this.summary ? { from: this.summary.from, to: this.summary.to } : null);
    if (!start) return;
    let t = start.from;
    let last = performance.now();
    let lastQuery = 0;
    this.playButton.textContent = 'Pause';
    const tick = (now: number) => {
      const step = replayStep(t, now - last, this.speed, start.to);
      last = now;
      t = step.t;
      this.range = { from: start.from, to: t };
      this.drawAxis();
      // One query per frame at most, and not faster than the host answers comfortably.
      if (now - lastQuery > 60 || step.done) { lastQuery = now; this.host.query(start.from, t); }
      if (step.done) { this.playing = null; this.playButton.textContent = 'Play'; return; }
      this.playing = requestAnimationFrame(tick);
    };
    this.playing = requestAnimationFrame(tick);
  }

  private drawAxis(): void {
    const w = Math.max(1, this.axisBox.clientWidth);
    const dpr = Math.max(1, Math.round(window.devicePixelRatio || 1));
    this.axis.width = w * dpr;
    this.axis.height = AXIS_HEIGHT * dpr;
    this.axis.style.width = `${w}px`;
    this.axis.style.height = `${AXIS_HEIGHT}px`;
    const ctx = this.axis.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const css = getComputedStyle(document.documentElement);
    const v = (n: string, f: string) => css.getPropertyValue(n).trim() || css.getPropertyValue(f).trim();
    ctx.fillStyle = v('--vscode-editor-background', '--vscode-editorWidget-background');
    ctx.fillRect(0, 0, w, AXIS_HEIGHT);
    const s = this.summary;
    if (!s) return;
    const bins = s.writes.length;
    let max = 1;
    for (let i = 0; i < bins; i++) max = Math.max(max, s.writes[i], s.reads[i]);
    const half = (AXIS_HEIGHT - 14) / 2;
    const bw = w / bins;
    ctx.fillStyle = v('--vscode-charts-red', '--vscode-errorForeground');
    for (let i = 0; i < bins; i++) if (s.writes[i]) { const h = Math.max(1, (s.writes[i] / max) * half); ctx.fillRect(i * bw, half - h, Math.max(1, bw), h); }
    ctx.fillStyle = v('--vscode-charts-blue', '--vscode-focusBorder');
    for (let i = 0; i < bins; i++) if (s.reads[i]) { const h = Math.max(1, (s.reads[i] / max) * half); ctx.fillRect(i * bw, half, Math.max(1, bw), h); }
    ctx.fillStyle = v('--vscode-descriptionForeground', '--vscode-foreground');
    ctx.font = '10px sans-serif';
    ctx.fillText(`${s.from.toFixed(2)} s`, 2, AXIS_HEIGHT - 2);
    const endLabel = `${s.to.toFixed(2)} s`;
    ctx.fillText(endLabel, w - ctx.measureText(endLabel).width - 2, AXIS_HEIGHT - 2);
    // Snapshot marks at their trace time (the server writes them on the requests' clock), on a
    // whole pixel so a mark between two bursts of writes is seen between them.
    ctx.strokeStyle = v('--vscode-charts-yellow', '--vscode-foreground');
    ctx.fillStyle = ctx.strokeStyle;
    ctx.lineWidth = 1;
    for (const snap of s.snapshots) {
      const x = Math.round(timeToX(snap.t, s.from, s.to, w)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, AXIS_HEIGHT - 12); ctx.stroke();
      const tw = ctx.measureText(snap.label).width;
      ctx.fillText(snap.label, Math.min(w - tw - 1, x + 2), 9);
    }
    if (this.range) {
      const a = timeToX(this.range.from, s.from, s.to, w);
      const b = timeToX(this.range.to, s.from, s.to, w);
      ctx.globalAlpha = 0.25;
      ctx.fillStyle = v('--vscode-editor-selectionBackground', '--vscode-focusBorder');
      ctx.fillRect(a, 0, Math.max(1, b - a), AXIS_HEIGHT - 12);
      ctx.globalAlpha = 1;
    }
  }
}

/** The Blocks tab's live strip: writes per second as a sparkline while a session writes. */
export class LiveStrip {
  readonly element = el('div', 'live-strip');
  private readonly canvas = document.createElement('canvas');
  private readonly label = el('span', 'live-label', '');
  private readonly history: number[] = new Array(60).fill(0);

  constructor() {
    this.canvas.className = 'sparkline';
    this.canvas.id = 'write-sparkline';
    append(this.element, this.label, this.canvas);
    this.element.hidden = true;
  }

  push(rate: number): void {
    this.element.hidden = false;
    this.history.push(rate);
    if (this.history.length > 60) this.history.shift();
    this.label.textContent = `Live session: ${rate.toFixed(0)} writes/s`;
    const w = 180;
    const h = 24;
    this.canvas.width = w;
    this.canvas.height = h;
    const ctx = this.canvas.getContext('2d');
    if (!ctx) return;
    const max = Math.max(1, ...this.history);
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = getComputedStyle(document.documentElement).getPropertyValue('--vscode-charts-red').trim() || getComputedStyle(document.documentElement).getPropertyValue('--vscode-foreground');
    ctx.beginPath();
    this.history.forEach((v, i) => {
      const x = (i / (this.history.length - 1)) * w;
      const y = h - 1 - (v / max) * (h - 2);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}
