import { ChainLayerModel, EditorCommand, ImageModel } from '../../src/protocol';
import { formatBytes, percent } from '../format';
import { append, button, clear, dataGrid, el } from '../ui';

/** The chain from this image to the ultimate parent, with each link's checks. */
export class ChainView {
  readonly element = el('div', 'view chain-view');

  constructor(private readonly run: (c: EditorCommand) => void, private readonly available: (c: EditorCommand) => boolean) {}

  render(model: ImageModel): void {
    clear(this.element);
    const linkText = (l: ChainLayerModel): string => {
      if (l.diskType !== 'differencing') return 'no parent (end of chain)';
      if (!l.link) return 'not checked';
      if (l.link.problem) return `BROKEN: ${l.link.problem}`;
      const parts = [
        `parent found via ${l.link.via ?? '?'}`,
        l.link.uuidMatches ? 'UUID matches' : 'UUID MISMATCH',
        l.link.timestampMatches === null ? '' : l.link.timestampMatches ? 'timestamp matches' : 'timestamp differs (warning)',
      ];
      return parts.filter(Boolean).join('; ');
    };
    // A parent that is not an image file: where its bytes come from, its size, whether it answers, the cache.
    const sourceText = (l: ChainLayerModel): string => {
      const s = l.parentSource;
      if (!s) return '';
      const what = s.kind === 'http' || s.kind === 'nbd' ? `on a server (${s.scheme})` : s.kind === 'block-device' ? 'block device' : 'raw file';
      const parts = [
        `parent: ${what} ${s.location}`,
        s.format ? `read as ${s.format}` : '',
        s.size !== null ? formatBytes(s.size) : 'size unknown',
        s.reachable ? 'reachable' : `NOT REACHABLE${s.problem ? `: ${s.problem}` : ''}`,
        s.kind === 'http' || s.kind === 'nbd' ? (s.cache ? `local cache ${percent(s.cache.cachedBytes, s.cache.size)} (${formatBytes(s.cache.cachedBytes)})` : 'no local cache') : '',
      ];
      return parts.filter(Boolean).join('; ');
    };
    const broken = (l: ChainLayerModel) => l.diskType === 'differencing' && (!l.link || l.link.problem !== null || l.link.uuidMatches === false);
    const grid = dataGrid<ChainLayerModel>([
      { title: '#', cell: (l) => String(l.index), width: '0.3fr' },
      { title: 'File', cell: (l) => el('span', 'path', el('strong', undefined, l.fileName), el('br'), el('span', 'muted', l.path)), width: '2.6fr' },
      { title: 'Type', cell: (l) => l.diskType, width: '1.1fr' },
      { title: 'Virtual / file size', cell: (l) => `${formatBytes(l.virtualSize)} / ${formatBytes(l.fileSize)}`, width: '1.6fr' },
      { title: 'Allocated', cell: (l) => `${percent(l.allocatedBlocks, l.blockCount)} (${l.allocatedBlocks}/${l.blockCount})`, width: '1.1fr' },
      { title: 'UUID', cell: (l) => l.uuid, width: '2fr', className: () => 'mono' },
      { title: 'Parent UUID', cell: (l) => l.parentUuid ?? '—', width: '2fr', className: () => 'mono' },
      {
        title: 'Link',
        cell: (l) => (l.parentSource ? el('span', undefined, linkText(l), el('br'), el('span', 'parent-source', sourceText(l))) : linkText(l)),
        width: '2.2fr',
        className: (l) => (broken(l) ? 'problem' : l.link?.timestampMatches === false ? 'warning' : undefined),
      },
    ], model.chain, 'Chain');
    grid.id = 'chain-grid';
    append(this.element, el('h3', undefined, `Chain of ${model.chain.length} image${model.chain.length === 1 ? '' : 's'}`), grid);
    if (model.chain.some(broken) || !model.overview.chainComplete) {
      const p = el('div', 'problem-box', el('p', undefined, 'A link of this chain is broken or its UUID does not match, so the disk cannot be read through it.'));
      if (this.available('relinkParent')) {
        p.appendChild(button('Re-link Parent…', () => this.run('relinkParent'), { disabled: !model.canWrite, title: model.canWrite ? '' : 'Needs a trusted workspace' }));
      }
      this.element.appendChild(p);
    }
  }
}
