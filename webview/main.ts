/** The editor's webview: receives structures and typed arrays from the host, never image bytes to parse. */
import { BlockData, DiffData, EditorCommand, HostMessage, ImageModel, ViewName, WebviewMessage } from '../src/protocol';
import { HeatmapState } from './heatmap/view';
import { Mode } from './heatmap/render';
import { BlocksView, WriteFlash } from './views/blocks';
import { ChainView } from './views/chain';
import { HeaderView } from './views/header';
import { OverviewView } from './views/overview';
import { LiveStrip, TimelineView } from './views/timeline';
import { append, clear, el, registerComponents, tabs } from './ui';

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

document.body.dataset.scriptStart = t0.toFixed(1);
// Ask for the data first: the host answers while the components register and the views are built
// (the listener below is attached in this same task, before any answer can arrive).
post({ type: 'ready' });
registerComponents();
const app = document.getElementById('app')!;
const status = el('div', 'status');
status.setAttribute('role', 'status');

const runCommand = (command: EditorCommand) => post({ type: 'runCommand', command });
const overview = new OverviewView(runCommand);
const header = new HeaderView((text) => post({ type: 'copyText', text }));
const chainView = new ChainView(runCommand, () => true);
const blocksView = new BlocksView({
  requestBlock: (block) => { lastBlockRequest = ++requestId; post({ type: 'requestBlock', requestId: lastBlockRequest, block }); },
  requestSector: (sector) => { lastSectorRequest = ++requestId; post({ type: 'requestSector', requestId: lastSectorRequest, sector }); },
  requestDiffSector: (sector) => { lastDiffSectorRequest = ++requestId; post({ type: 'requestDiffSector', requestId: lastDiffSectorRequest, sector }); },
  saveState: () => save(),
});
let lastTimelineRequest = -1;
let lastTimelineBlockRequest = -1;
const timelineView = new TimelineView({
  query: (from, to) => { lastTimelineRequest = ++requestId; post({ type: 'timelineQuery', requestId: lastTimelineRequest, from, to }); },
  blockWrites: (block, from, to) => { lastTimelineBlockRequest = ++requestId; post({ type: 'timelineBlock', requestId: lastTimelineBlockRequest, block, from, to }); },
  exportRange: (from, to) => post({ type: 'timelineExport', from, to }),
  openTrace: () => runCommand('openTrace'),
  openSector: (block, sector) => { view = 'blocks'; tabView.select('blocks'); blocksView.selectBlock(block, sector); save(); },
});
const liveStrip = new LiveStrip();
const overviewFlash = new WriteFlash(overview.heatmap);
blocksView.element.insertBefore(liveStrip.element, blocksView.element.firstChild);
if (saved?.mode && saved.mode !== 'timeline') blocksView.mode = saved.mode;
blocksView.selected = saved?.selected ?? null;
blocksView.selectedSector = saved?.sector ?? null;
blocksView.heatmap.restore(saved?.heatmap);

const tabView = tabs<ViewName>([
  { id: 'overview', label: 'Overview', content: overview.element },
  { id: 'header', label: 'Header', content: header.element },
  { id: 'blocks', label: 'Blocks', content: blocksView.element },
  { id: 'chain', label: 'Chain', content: chainView.element },
  { id: 'timeline', label: 'Timeline', content: timelineView.element },
], view);
tabView.onChange((v) => { view = v; save(); post({ type: 'rendered', view: v, heatmapMs: null }); });

function save(): void {
  vscode.setState({ view, mode: blocksView.mode, selected: blocksView.selected, sector: blocksView.selectedSector, heatmap: blocksView.heatmap.state() });
}

overview.heatmap.onDrawn(() => {
  if (!firstDraw) return;
  firstDraw = false;
  const ms = performance.now() - t0;
  document.body.dataset.heatmapMs = ms.toFixed(1);
  // Wall-clock time of the first draw, comparable with the host's and the tests' clocks.
  document.body.dataset.heatmapAt = String(Math.round(performance.timeOrigin + performance.now()));
  post({ type: 'rendered', view, heatmapMs: ms });
});

/** False between an `init` that carried only the owner map and the `blocks` message with the rest. */
let complete = true;

function renderOverview(): void {
  if (!model || !blocks) return;
  overview.render(model, { blockCount: blocks.blockCount, allocated: blocks.allocated, fill: blocks.fill, owner: blocks.owner, changed: diff?.changed ?? null });
}

function renderRest(): void {
  if (!model || !blocks || !complete) return;
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

window.addEventListener('message', (ev: MessageEvent) => {
  const m = ev.data as HostMessage;
  switch (m.type) {
    case 'init':
      model = m.model; blocks = m.blocks; diff = m.diff; complete = m.complete;
      if (m.timings) document.body.dataset.hostTimings = JSON.stringify(m.timings);
      document.body.dataset.initAt = (performance.now() - t0).toFixed(1);
      clear(app);
      app.removeAttribute('aria-busy');
      append(app, status, tabView.element);
      renderAll();
      tabView.select(view);
      break;
    case 'blocks':
      blocks = m.blocks;
      complete = true;
      renderRest();
      break;
    case 'update':
      model = m.model; blocks = m.blocks; complete = true;
      if (diff && diff.changed.length !== blocks.blockCount) diff = null;
      renderAll();
      blocksView.heatmap.flash(m.changedBlocks);
      overview.heatmap.flash(m.changedBlocks);
      document.body.dataset.updates = String((Number(document.body.dataset.updates) || 0) + 1);
      status.textContent = m.changedBlocks.length ? `Reloaded: ${m.changedBlocks.length} block(s) changed on disk.` : 'Reloaded from disk.';
      break;
    case 'diff':
      diff = m.diff;
      if (model && blocks) { renderAll(); blocksView.setDiff(m.diff); }
      tabView.select('blocks'); view = 'blocks'; save();
      break;
    case 'blockDetail':
      if (m.requestId === lastBlockRequest) blocksView.showBlockDetail(m.block, m.layers);
      break;
    case 'sectorDetail':
      if (m.requestId === lastSectorRequest) blocksView.showSector(m.sector, m.layers, m.winner, m.effective);
      break;
    case 'diffSector':
      if (m.requestId === lastDiffSectorRequest) blocksView.showDiffSector(m.sector, m.aName, m.bName, m.a, m.b);
      break;
    case 'showView':
      view = m.view; tabView.select(m.view);
      if (m.block !== undefined) blocksView.selectBlock(m.block);
      save();
      break;
    case 'liveWrites':
      // A fading flash where the emulator's writes land; the model is not reloaded.
      blocksView.writeFlash.flash(m.blocks);
      overviewFlash.flash(m.blocks);
      liveStrip.push(m.writesPerSecond);
      document.body.dataset.liveWrites = String((Number(document.body.dataset.liveWrites) || 0) + m.blocks.length);
      break;
    case 'timeline':
      if (model && blocks) timelineView.setGrid(blocks.blockCount, model.overview.blockSize);
      timelineView.setSummary(m);
      break;
    case 'timelineRange':
      if (m.requestId === lastTimelineRequest) timelineView.showRange(m);
      break;
    case 'timelineWrites':
      if (m.requestId === lastTimelineBlockRequest) timelineView.showWrites(m.block, m.writes);
      break;
    case 'error':
      status.textContent = m.message;
      status.className = 'status problem';
      break;
  }
});

