/**
 * The webview's own small component layer. This folder is the only place that knows the component
 * toolkit (@vscode/webview-ui-toolkit today): views build their UI from these functions, so replacing
 * the toolkit means rewriting this folder and nothing else. Every text argument is set with
 * textContent or as a property, never parsed as HTML.
 */
// The toolkit itself is registered by ./components.ts, which only the second bundle (webview/rest.ts)
// loads: these functions create its elements by tag name, upgraded when it registers.

type Child = Node | string | null | undefined | false;

/** A plain element with a class and children; strings become text nodes. */
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, ...children: Child[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (className) e.className = className;
  append(e, ...children);
  return e;
}

export function append(parent: Element, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
  }
}

export function clear(e: Element): void {
  while (e.firstChild) e.removeChild(e.firstChild);
}

export interface TabSpec<T extends string> {
  id: T;
  label: string;
  /** Null: the view is built later and placed with setContent. */
  content: HTMLElement | null;
}

export interface Tabs<T extends string> {
  element: HTMLElement;
  select(id: T): void;
  onChange(fn: (id: T) => void): void;
  /** Puts a view built later into its tab. */
  setContent(id: T, content: HTMLElement): void;
  /** Which view shows before the toolkit's components are registered (styled in editor.css). */
  showBeforeComponents(id: T): void;
}

export function tabs<T extends string>(specs: Array<TabSpec<T>>, initial: T): Tabs<T> {
  const panels = document.createElement('vscode-panels');
  panels.className = 'tabs';
  for (const s of specs) {
    const tab = document.createElement('vscode-panel-tab');
    tab.id = `tab-${s.id}`;
    tab.textContent = s.label;
    tab.dataset.view = s.id;
    panels.appendChild(tab);
  }
  for (const s of specs) {
    const view = document.createElement('vscode-panel-view');
    view.id = `view-${s.id}`;
    view.className = 'tab-view';
    if (s.content) view.appendChild(s.content);
    panels.appendChild(view);
  }
  panels.setAttribute('activeid', `tab-${initial}`);
  const listeners: Array<(id: T) => void> = [];
  panels.addEventListener('change', (ev) => {
    const target = (ev as CustomEvent).detail as HTMLElement | undefined;
    const id = (target?.dataset?.view ?? (panels.getAttribute('activeid') ?? '').replace(/^tab-/, '')) as T;
    if (id) for (const l of listeners) l(id);
  });
  return {
    element: panels,
    select: (id) => { (panels as unknown as { activeid: string }).activeid = `tab-${id}`; panels.setAttribute('activeid', `tab-${id}`); },
    onChange: (fn) => { listeners.push(fn); },
    setContent: (id, content) => { panels.querySelector(`#view-${id}`)?.appendChild(content); },
    showBeforeComponents: (id) => {
      for (const v of Array.from(panels.querySelectorAll('vscode-panel-view'))) v.classList.toggle('before-components', v.id === `view-${id}`);
      for (const t of Array.from(panels.querySelectorAll('vscode-panel-tab'))) t.classList.toggle('before-components', t.id === `tab-${id}`);
    },
  };
}

export function button(label: string, onClick: () => void, options: { secondary?: boolean; title?: string; disabled?: boolean } = {}): HTMLElement {
  const b = document.createElement('vscode-button');
  b.textContent = label;
  if (options.secondary) b.setAttribute('appearance', 'secondary');
  if (options.title) b.title = options.title;
  if (options.disabled) b.setAttribute('disabled', '');
  b.addEventListener('click', () => { if (!b.hasAttribute('disabled')) onClick(); });
  return b;
}

export interface Dropdown<T extends string> {
  element: HTMLElement;
  value(): T;
  setValue(v: T): void;
  setOptions(options: Array<{ value: T; label: string }>): void;
}

export function dropdown<T extends string>(options: Array<{ value: T; label: string }>, initial: T, onChange: (v: T) => void, label?: string): Dropdown<T> {
  const d = document.createElement('vscode-dropdown') as HTMLElement & { value: string };
  if (label) d.setAttribute('aria-label', label);
  const fill = (opts: Array<{ value: T; label: string }>) => {
    clear(d);
    for (const o of opts) {
      const opt = document.createElement('vscode-option') as HTMLElement & { value: string };
      opt.setAttribute('value', o.value);
      opt.textContent = o.label;
      d.appendChild(opt);
    }
  };
  fill(options);
  // The value the caller chose last; options are re-filled asynchronously by the toolkit.
  let current: T = initial;
  d.setAttribute('value', initial);
  queueMicrotask(() => { d.value = current; });
  d.addEventListener('change', () => { current = d.value as T; onChange(current); });
  return {
    element: d,
    value: () => current,
    setValue: (v) => { current = v; d.value = v; d.setAttribute('value', v); },
    setOptions: (opts) => {
      fill(opts);
      if (!opts.some((o) => o.value === current) && opts[0]) current = opts[0].value;
      queueMicrotask(() => { d.value = current; d.setAttribute('value', current); });
    },
  };
}

export function textField(placeholder: string, onEnter: (value: string) => void, label?: string): { element: HTMLElement; value(): string } {
  const t = document.createElement('vscode-text-field') as HTMLElement & { value: string };
  t.setAttribute('placeholder', placeholder);
  if (label) t.textContent = label;
  t.addEventListener('keydown', (ev) => { if ((ev as KeyboardEvent).key === 'Enter') onEnter(t.value); });
  return { element: t, value: () => t.value };
}

export function badge(text: string): HTMLElement {
  const b = document.createElement('vscode-badge');
  b.textContent = text;
  return b;
}

export function divider(): HTMLElement {
  return document.createElement('vscode-divider');
}

export interface Column<R> {
  title: string;
  /** Cell content: text (set as text), or a node. */
  cell: (row: R) => string | Node;
  /** CSS grid width, e.g. "120px" or "1fr". */
  width?: string;
  className?: (row: R) => string | undefined;
}

/** A data grid whose cells are filled with text nodes or given nodes (never HTML strings). */
export function dataGrid<R>(columns: Array<Column<R>>, rows: R[], label: string): HTMLElement {
  const grid = document.createElement('vscode-data-grid');
  grid.setAttribute('aria-label', label);
  grid.setAttribute('generate-header', 'none');
  grid.setAttribute('grid-template-columns', columns.map((c) => c.width ?? '1fr').join(' '));
  const header = document.createElement('vscode-data-grid-row');
  header.setAttribute('row-type', 'header');
  columns.forEach((c, i) => {
    const cell = document.createElement('vscode-data-grid-cell');
    cell.setAttribute('cell-type', 'columnheader');
    cell.setAttribute('grid-column', String(i + 1));
    cell.textContent = c.title;
    header.appendChild(cell);
  });
  grid.appendChild(header);
  for (const r of rows) {
    const row = document.createElement('vscode-data-grid-row');
    columns.forEach((c, i) => {
      const cell = document.createElement('vscode-data-grid-cell');
      cell.setAttribute('grid-column', String(i + 1));
      const v = c.cell(r);
      if (typeof v === 'string') cell.textContent = v; else cell.appendChild(v);
      const cls = c.className?.(r);
      if (cls) cell.className = cls;
      row.appendChild(cell);
    });
    grid.appendChild(row);
  }
  return grid;
}
