import { ChecksumModel, HeaderFieldModel, ImageModel } from '../../src/protocol';
import { append, button, clear, dataGrid, el } from '../ui';

/** The field table the image's format gives (every on-disk field with offset, raw hex and meaning) and its checksums. */
export class HeaderView {
  readonly element = el('div', 'view header-view');

  constructor(private readonly copy: (text: string) => void) {}

  render(model: ImageModel): void {
    clear(this.element);
    const h = model.header;
    const checks = dataGrid<ChecksumModel>([
      { title: 'Structure', cell: (c) => c.structure, width: '1.2fr' },
      { title: 'Offset', cell: (c) => String(c.offset), width: '0.8fr' },
      { title: 'Stored', cell: (c) => c.stored, width: '1fr' },
      { title: 'Computed', cell: (c) => c.computed, width: '1fr' },
      { title: 'Result', cell: (c) => (c.ok ? 'ok' : 'WRONG'), width: '0.6fr', className: (c) => (c.ok ? 'ok' : 'problem') },
    ], h.checksums, 'Checksums');
    checks.id = 'header-checksums';
    const fields = dataGrid<HeaderFieldModel>([
      { title: 'Structure', cell: (f) => f.structure, width: '1.1fr' },
      { title: 'Field', cell: (f) => f.name, width: '1.2fr' },
      { title: 'Offset', cell: (f) => String(f.offset), width: '0.7fr' },
      { title: 'Size', cell: (f) => String(f.size), width: '0.45fr' },
      { title: 'Raw (hex)', cell: (f) => f.hex, width: '2.2fr', className: () => 'mono' },
      { title: 'Meaning', cell: (f) => (f.problem ? `${f.decoded} — ${f.problem}` : f.decoded), width: '2.4fr', className: (f) => (f.problem ? 'problem' : undefined) },
    ], h.fields, 'Header fields');
    fields.id = 'header-fields';
    const warnings = el('ul', 'warnings');
    for (const w of model.overview.warnings) warnings.appendChild(el('li', undefined, w));
    append(this.element,
      el('div', 'toolbar', button('Copy as JSON', () => this.copy(h.json), { secondary: true, title: 'Copy every field as JSON' })),
      el('h3', undefined, 'Checksums'), checks,
      model.overview.warnings.length ? el('h3', undefined, 'Warnings') : null,
      model.overview.warnings.length ? warnings : null,
      el('h3', undefined, 'Fields'), fields,
    );
  }
}
