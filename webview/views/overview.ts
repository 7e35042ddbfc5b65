import { EditorCommand, ImageModel } from '../../src/protocol';
import { formatBytes, formatInt, percent } from '../format';
import { HeatmapView } from '../heatmap/view';
import { HeatmapData } from '../heatmap/render';
import { append, button, clear, el } from '../ui';

/** The view shown on open: what the image is, where its chain leads, and a map of who holds what. */
export class OverviewView {
  readonly element = el('div', 'view overview');
  private readonly facts = el('div', 'facts');
  private readonly side = el('div', 'overview-side');
  private readonly mapBox = el('div', 'heatmap-box compact');
  readonly heatmap: HeatmapView;

  constructor(private readonly run: (c: EditorCommand) => void) {
    const mapSection = el('section', 'overview-map', el('h3', undefined, 'Blocks by owning layer'), this.mapBox);
    append(this.element, this.facts, el('div', 'overview-columns', this.side, mapSection));
    this.heatmap = new HeatmapView(this.mapBox, false);
    this.heatmap.setMode('owner');
  }

  render(model: ImageModel, data: HeatmapData): void {
    const o = model.overview;
    clear(this.facts);
    const row = (k: string, v: string, id: string) => el('div', 'fact', el('span', 'fact-key', k), Object.assign(el('span', 'fact-value', v), { id }));
    append(this.facts,
      el('h2', 'file-name', o.fileName),
      el('div', 'fact-grid',
        row('Disk type', o.diskType, 'ov-type'),
        row('Virtual size', `${formatBytes(o.virtualSize)} (${formatInt(o.virtualSize)} bytes)`, 'ov-size'),
        row('UUID', o.uuid, 'ov-uuid'),
        row('Allocated blocks', `${formatInt(o.allocatedBlocks)} of ${formatInt(o.blockCount)} (${percent(o.allocatedBlocks, o.blockCount)}), ${formatBytes(o.blockSize)} each`, 'ov-alloc'),
        row('Creator', o.creator, 'ov-creator'),
        row('Created', o.created, 'ov-created'),
      ));
    const actions = el('div', 'toolbar actions');
    const act = (label: string, c: EditorCommand, writes: boolean) => button(label, () => this.run(c), {
      secondary: true, disabled: writes && !model.canWrite, title: writes && !model.canWrite ? 'Needs a trusted workspace' : '',
    });
    append(actions, act('Check Image', 'check', false), act('Diff With…', 'diffWith', false), act('Create Child…', 'createChild', true), act('Snapshot', 'snapshot', true));
    if (o.diskType === 'differencing') append(actions, act('Merge Into Parent…', 'mergeIntoParent', true), act('Discard…', 'discard', true));
    append(actions, act('Export…', 'export', true), act('Start Emulator Session…', 'startSession', true));
    this.facts.appendChild(actions);
    clear(this.side);
    const chainList = el('ol', 'chain-list');
    chainList.id = 'ov-chain';
    o.chain.forEach((name, i) => {
      const swatch = el('span', 'swatch');
      if (i < model.chain.length) swatch.style.backgroundColor = this.heatmap.ownerCss(i);
      chainList.appendChild(el('li', i === 0 ? 'this' : undefined, swatch, name, i === 0 ? el('span', 'muted', ' (this image)') : null));
    });
    append(this.side, el('h3', undefined, `Chain (${o.chain.length})`), chainList);
    if (!o.chainComplete) append(this.side, el('p', 'problem', 'The chain is broken: a parent could not be opened. See the Chain tab.'));
    const warn = el('ul', 'warnings');
    warn.id = 'ov-warnings';
    for (const w of o.warnings) warn.appendChild(el('li', undefined, w));
    append(this.side, el('h3', undefined, o.warnings.length ? `Warnings (${o.warnings.length})` : 'No warnings'), o.warnings.length ? warn : null);
    this.heatmap.setData(data);
  }
}
