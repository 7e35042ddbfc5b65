/** The editor's webview: receives structures and typed arrays from the host, never image bytes to parse. */
import { BlockData, DiffData, EditorCommand, HostMessage, ImageModel, ViewName, WebviewMessage } from '../src/protocol';
import { HeatmapState } from './heatmap/view';
import { Mode } from './heatmap/render';
import type { BlocksView, WriteFlash } from './views/blocks';
import type { ChainView } from './views/chain';
import type { HeaderView } from './views/header';
import { OverviewView } from './views/overview';
import type { LiveStrip, TimelineView } from './views/timeline';
import { append, clear, el, tabs } from './ui';

/** The second bundle's exports (webview/rest.ts): the toolkit and the views past the overview. */
type Rest = typeof import('./rest');

interface VsCodeApi {
  postMessage(m: WebviewMessage): void;
  getState(): SavedState | undefined;
  setState(s: SavedState): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

interface SavedState {
  view: ViewName;
  mode: Mode;
  selected: number | null;
  sector: number | null;
  heatmap: HeatmapState | null;
}

const vscode = acquireVsCodeApi();
const saved = vscode.getState();
const post = (m: WebviewMessage) => vscode.postMessage(m);
let requestId = 0;
let lastBlockRequest = -1;
let lastSectorRequest = -1;
let lastDiffSectorRequest = -1;
let view: ViewName = saved?.view ?? 'overview';
let model: ImageModel | null = null;
let blocks: BlockData | null = null;
let diff: DiffData | null = null;
let firstDraw = true;
const t0 = performance.now();
// The second bundle sits next to this one and is let in by the same nonce.
const self = document.currentScript as HTMLScriptElement | null;
// Inline in the page (the extension's HTML): the page names it; loaded by src: next to this one.
const restSrc = self?.dataset.rest || (self?.src ? self.src.replace(/webview\.js([?#].*)?$/, 'webview-rest.js$1') : 'webview-rest.js');
const nonce = self?.nonce ?? '';

document.body.dataset.scriptStart = t0.toFixed(1);
// Ask for the data first: the host answers while the overview is built (the listener below is
// attached in this same task, before any answer can arrive).
post({ type: 'ready' });
const app = document.getElementById('app')!;
const status = el('div', 'status');
status.setAttribute('role', 'status');

const runCommand = (command: EditorCommand) => post({ type: 'runCommand', command });
// Only the overview exists before the first draw: the other views, and the component toolkit whose
// registration upgrades every element, are built just after it is on screen (ensureViews).
const overview = new OverviewView(runCommand);
// The overview's write flash is made on the first live write (nothing to build before first paint).
let overviewFlash: WriteFlash | null = null;
const tabView = tabs<ViewName>([
  { id: 'overview', label: 'Overview', content: overview.element },
  { id: 'header', label: 'Header', content: null },
  { id: 'blocks', label: 'Blocks', content: null },
  { id: 'chain', label: 'Chain', content: null },
  { id: 'timeline', label: 'Timeline', content: null },
], view);
tabView.onChange((v) => { view = v; save(); post({ type: 'rendered', view: v, heatmapMs: null }); });
// A tab clicked before the second bundle has registered the toolkit is not lost: it is the view
// selected once the views exist.
tabView.element.addEventListener('click', (ev) => {
  if (views) return;
  const id = ((ev.target as HTMLElement).closest?.('vscode-panel-tab') as HTMLElement | null)?.dataset.view as ViewName | undefined;
  if (id) { view = id; save(); }
});
// While the host opens a slow image, the tab strip and the empty overview are on the page under
// "Reading image…": the page's first style, layout and font work happens during that wait, not
// between the host's message and the first heatmap draw. Only when the answer is not in soon: the
// host is usually done before this script runs, and then the skeleton's layout and frame (15-20 ms
// in the trace) would only stand between its message and the draw, which lays the page out again.
const SKELETON_AFTER_MS = 40;
const skeletonTimer = view === 'overview' ? setTimeout(() => {
  if (model || status.parentNode === app) return;
  tabView.showBeforeComponents('overview');
  append(app, tabView.element);
  document.body.dataset.skeletonAt = (performance.now() - t0).toFixed(1);
}, SKELETON_AFTER_MS) : undefined;

interface LazyViews {
  header: HeaderView;
  chainView: ChainView;
  blocksView: BlocksView;
  timelineView: TimelineView;
  liveStrip: LiveStrip;
}
let views: LazyViews | null = null;
let lastTimelineRequest = -1;
let lastTimelineBlockRequest = -1;

let rest: Rest | null = null;
let restLoading: Promise<Rest> | null = null;

/** Loads the second bundle once (a classic script with this page's nonce); resolves with its exports. */
function loadRest(): Promise<Rest> {
  restLoading ??= new Promise<Rest>((resolve, reject) => {
    const s = document.createElement('script');
    s.nonce = nonce;
    s.src = restSrc;
    s.onload = () => {
      rest = (window as unknown as { __diskimgRest?: Rest }).__diskimgRest ?? null;
      if (rest) resolve(rest); else reject(new Error('webview-rest.js did not load'));
    };
    s.onerror = () => reject(new Error(`could not load ${restSrc}`));
    document.head.appendChild(s);
  });
  return restLoading;
}

/** The views past the overview and the toolkit's components, built once; the second bundle must be loaded. */
function ensureViews(): LazyViews {
  if (views) return views;
  if (!rest) throw new Error('the second bundle is not loaded yet');
  const { registerComponents, HeaderView, ChainView, BlocksView, TimelineView, LiveStrip } = rest;
  registerComponents();
  const header = new HeaderView((text) => post({ type: 'copyText', text }));
  const chainView = new ChainView(runCommand, () => true);
  const blocksView = new BlocksView({
    requestBlock: (block) => { lastBlockRequest = ++requestId; post({ type: 'requestBlock', requestId: lastBlockRequest, block }); },
    requestSector: (sector) => { lastSectorRequest = ++requestId; post({ type: 'requestSector', requestId: lastSectorRequest, sector }); },
    requestDiffSector: (sector) => { lastDiffSectorRequest = ++requestId; post({ type: 'requestDiffSector', requestId: lastDiffSectorRequest, sector }); },
    saveState: () => save(),
  });
  const timelineView = new TimelineView({
    query: (from, to) => { lastTimelineRequest = ++requestId; post({ type: 'timelineQuery', requestId: lastTimelineRequest, from, to }); },
    blockWrites: (block, from, to) => { lastTimelineBlockRequest = ++requestId; post({ type: 'timelineBlock', requestId: lastTimelineBlockRequest, block, from, to }); },
    exportRange: (from, to) => post({ type: 'timelineExport', from, to }),
    openTrace: () => runCommand('openTrace'),
    openSector: (block, sector) => { view = 'blocks'; tabView.select('blocks'); blocksView.selectBlock(block, sector); save(); },
  });
  const liveStrip = new LiveStrip();
  blocksView.element.insertBefore(liveStrip.element, blocksView.element.firstChild);
  if (saved?.mode && saved.mode !== 'timeline') blocksView.mode = saved.mode;
  blocksView.selected = saved?.selected ?? null;
  blocksView.selectedSector = saved?.sector ?? null;
  blocksView.heatmap.restore(saved?.heatmap);
  tabView.setContent('header', header.element);
  tabView.setContent('blocks', blocksView.element);
  tabView.setContent('chain', chainView.element);
  tabView.setContent('timeline', timelineView.element);
  views = { header, chainView, blocksView, timelineView, liveStrip };
  return views;
}

function save(): void {
  const b = views?.blocksView;
  vscode.setState({
    view, mode: b?.mode ?? saved?.mode ?? 'owner', selected: b ? b.selected : saved?.selected ?? null,
    sector: b ? b.selectedSector : saved?.sector ?? null, heatmap: b ? b.heatmap.state() : saved?.heatmap ?? null,
  });
}

/** Runs `fn` once the frame being prepared has been painted (rAF runs before the paint, the timer after). */
function afterPaint(fn: () => void): void {
  requestAnimationFrame(() => setTimeout(fn, 0));
}

overview.heatmap.onDrawn(() => {
  if (!firstDraw) return;
  firstDraw = false;
  const ms = performance.now() - t0;
  document.body.dataset.heatmapMs = ms.toFixed(1);
  // Wall-clock time of the first draw, comparable with the host's and the tests' clocks.
  document.body.dataset.heatmapAt = String(Math.round(performance.timeOrigin + performance.now()));
  // And when the frame holding it has been painted (what the user sees), for the benchmark.
  afterPaint(() => { document.body.dataset.heatmapPaintedMs = (performance.now() - t0).toFixed(1); });
  post({ type: 'rendered', view, heatmapMs: ms });
});

/** False between an `init` that carried only the owner map and the `blocks` message with the rest. */
let complete = true;

function renderOverview(): void {
  if (!model || !blocks) return;
  overview.render(model, { blockCount: blocks.blockCount, allocated: blocks.allocated, fill: blocks.fill, owner: blocks.owner, zero: blocks.zero ?? null, changed: diff?.changed ?? null, layerCount: blocks.layerCount, ownerRuns: blocks.ownerRuns ?? null });
}

function renderRest(): void {
  if (!model || !blocks || !complete || !views) return;
  const { header, chainView, timelineView, blocksView } = views;
  header.render(model);
  chainView.render(model);
  timelineView.setGrid(blocks.blockCount, model.overview.blockSize);
  blocksView.render(model, blocks, diff);
  blocksView.setMode(blocksView.mode === 'changed' && !diff ? 'owner' : blocksView.mode);
}

function renderAll(): void {
  renderOverview();
  renderRest();
}

/** Messages held until the second bundle is loaded (kept in order: later ones wait behind them). */
const held: HostMessage[] = [];

/** Whether a message can be handled before the second bundle is loaded (the first paint's path). */
function handledEarly(m: HostMessage): boolean {
  if (views) return true;
  if (m.type === 'init') return view === 'overview';
  return m.type === 'blocks' || m.type === 'error';
}

function showError(message: string): void {
  status.textContent = message;
  status.className = 'status problem';
  // Before any model (the image could not be opened): show it in place of "Reading image…".
  if (!model) { clear(app); app.removeAttribute('aria-busy'); append(app, status); }
}

window.addEventListener('message', (ev: MessageEvent) => {
  const m = ev.data as HostMessage;
  if (held.length === 0 && handledEarly(m)) { handle(m); return; }
  held.push(m);
  if (held.length > 1) return;
  loadRest().then(() => {
    if (!views) { ensureViews(); if (model && blocks) renderAll(); tabView.select(view); }
    // Handled one by one: a message may itself need nothing more, all views now exist.
    while (held.length) handle(held.shift()!);
  }, (e: Error) => { held.length = 0; showError(e.message); });
});

function handle(m: HostMessage): void {
  switch (m.type) {
    case 'init':
      clearTimeout(skeletonTimer);
      model = m.model; blocks = m.blocks; diff = m.diff; complete = m.complete;
      if (m.timings) document.body.dataset.hostTimings = JSON.stringify(m.timings);
      document.body.dataset.initAt = (performance.now() - t0).toFixed(1);
      // The skeleton placed while waiting stays where it is (moving it would lay it out again).
      app.querySelector('.loading')?.remove();
      app.removeAttribute('aria-busy');
      if (status.parentNode !== app) app.insertBefore(status, app.firstChild);
      if (tabView.element.parentNode !== app) append(app, tabView.element);
      tabView.select(view);
      if (view === 'overview' && !views) {
        // First paint: the overview alone, drawn now; everything else once that frame is on screen.
        tabView.showBeforeComponents('overview');
        renderOverview();
        overview.heatmap.drawNow();
        afterPaint(() => {
          void loadRest().then(() => {
            // A held message may have built them already (the queue's own path).
            if (!views) { ensureViews(); renderRest(); tabView.select(view); }
          }, (e: Error) => showError(e.message));
        });
      } else {
        ensureViews();
        renderAll();
      }
      break;
    case 'blocks':
      blocks = m.blocks;
      complete = true;
      renderRest();
      break;
    case 'update':
      model = m.model; blocks = m.blocks; complete = true;
      if (diff && diff.changed.length !== blocks.blockCount) diff = null;
      ensureViews();
      renderAll();
      ensureViews().blocksView.heatmap.flash(m.changedBlocks);
      overview.heatmap.flash(m.changedBlocks);
      document.body.dataset.updates = String((Number(document.body.dataset.updates) || 0) + 1);
      status.textContent = m.changedBlocks.length ? `Reloaded: ${m.changedBlocks.length} block(s) changed on disk.` : 'Reloaded from disk.';
      break;
    case 'diff':
      diff = m.diff;
      ensureViews();
      if (model && blocks) { renderAll(); ensureViews().blocksView.setDiff(m.diff); }
      tabView.select('blocks'); view = 'blocks'; save();
      break;
    case 'blockDetail':
      if (m.requestId === lastBlockRequest) ensureViews().blocksView.showBlockDetail(m.block, m.layers);
      break;
    case 'sectorDetail':
      if (m.requestId === lastSectorRequest) ensureViews().blocksView.showSector(m.sector, m.layers, m.winner, m.effective);
      break;
    case 'diffSector':
      if (m.requestId === lastDiffSectorRequest) ensureViews().blocksView.showDiffSector(m.sector, m.aName, m.bName, m.a, m.b);
      break;
    case 'showView':
      view = m.view; tabView.select(m.view);
      if (m.block !== undefined) ensureViews().blocksView.selectBlock(m.block);
      save();
      break;
    case 'liveWrites':
      // A fading flash where the emulator's writes land; the model is not reloaded.
      ensureViews().blocksView.writeFlash.flash(m.blocks);
      (overviewFlash ??= new rest!.WriteFlash(overview.heatmap)).flash(m.blocks);
      ensureViews().liveStrip.push(m.writesPerSecond);
      document.body.dataset.liveWrites = String((Number(document.body.dataset.liveWrites) || 0) + m.blocks.length);
      break;
    case 'timeline':
      if (model && blocks) ensureViews().timelineView.setGrid(blocks.blockCount, model.overview.blockSize);
      ensureViews().timelineView.setSummary(m);
      break;
    case 'timelineRange':
      if (m.requestId === lastTimelineRequest) ensureViews().timelineView.showRange(m);
      break;
    case 'timelineWrites':
      if (m.requestId === lastTimelineBlockRequest) ensureViews().timelineView.showWrites(m.block, m.writes);
      break;
    case 'error':
      showError(m.message);
      break;
  }
}

