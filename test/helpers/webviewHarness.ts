/**
 * Runs the built webview (dist/webview.js + dist/webview.css) in Chromium inside the exact HTML and
 * CSP the extension serves, with a stand-in for VS Code's webview API: the real host model code
 * (src/extension/model.ts) answers its messages. Used to look at and test the views in each theme
 * quickly; the code-server test covers the real VS Code around it.
 */
import { readFileSync } from 'fs';
import * as path from 'path';
import type { Browser, Page } from 'playwright-core';
import { Chain } from '../../src/chain/chain';
import { buildEditorHtml, readWebviewBundle } from '../../src/extension/html';
import { blockDetail, firstBlocks, sectorDetail } from '../../src/extension/model';
import { BlockData, DiffData, HostMessage, ImageModel, WebviewMessage } from '../../src/protocol';
import { ROOT } from './util';

export const ORIGIN = 'https://webview.test';

export type Theme = 'dark' | 'light' | 'high-contrast';

const COMMON: Record<string, string> = {
  '--vscode-font-family': 'sans-serif', '--vscode-font-size': '13px', '--vscode-font-weight': 'normal',
  '--vscode-editor-font-family': 'monospace', '--vscode-editor-font-size': '13px',
};

export const THEMES: Record<Theme, Record<string, string>> = {
  dark: {
    '--vscode-editor-background': '#1f1f1f', '--vscode-editor-foreground': '#cccccc', '--vscode-foreground': '#cccccc',
    '--vscode-descriptionForeground': '#9d9d9d', '--vscode-errorForeground': '#f85149', '--vscode-editorWarning-foreground': '#cca700',
    '--vscode-editorWidget-background': '#2b2b2b', '--vscode-widget-border': '#313131', '--vscode-focusBorder': '#0078d4',
    '--vscode-charts-blue': '#3794ff', '--vscode-charts-orange': '#d18616', '--vscode-charts-green': '#89d185', '--vscode-charts-purple': '#b180d7',
    '--vscode-charts-yellow': '#cca700', '--vscode-charts-red': '#f14c4c', '--vscode-button-background': '#0078d4', '--vscode-button-foreground': '#ffffff',
    '--vscode-button-secondaryBackground': '#313131', '--vscode-button-secondaryForeground': '#cccccc', '--vscode-panelTitle-activeForeground': '#e7e7e7',
    '--vscode-panelTitle-inactiveForeground': '#9d9d9d', '--vscode-panelTitle-activeBorder': '#0078d4', '--vscode-dropdown-background': '#313131',
    '--vscode-dropdown-foreground': '#cccccc', '--vscode-dropdown-border': '#3c3c3c', '--vscode-input-background': '#313131', '--vscode-input-foreground': '#cccccc',
    '--vscode-list-hoverBackground': '#2a2d2e', '--vscode-badge-background': '#616161', '--vscode-badge-foreground': '#f8f8f8', '--vscode-textLink-activeForeground': '#4daafc',
    '--vscode-inputValidation-errorBorder': '#be1100', '--vscode-inputValidation-errorBackground': '#5a1d1d', '--vscode-testing-iconPassed': '#73c991',
    '--vscode-terminal-ansiCyan': '#11a8cd', '--vscode-terminal-ansiMagenta': '#bc3fbc', '--vscode-terminal-ansiBrightYellow': '#f5f543', '--vscode-terminal-ansiBrightRed': '#f14c4c', '--vscode-terminal-ansiBrightGreen': '#23d18b',
  },
  light: {
    '--vscode-editor-background': '#ffffff', '--vscode-editor-foreground': '#3b3b3b', '--vscode-foreground': '#3b3b3b',
    '--vscode-descriptionForeground': '#717171', '--vscode-errorForeground': '#f85149', '--vscode-editorWarning-foreground': '#bf8803',
    '--vscode-editorWidget-background': '#f0f0f0', '--vscode-widget-border': '#e5e5e5', '--vscode-focusBorder': '#005fb8',
    '--vscode-charts-blue': '#1a85ff', '--vscode-charts-orange': '#d18616', '--vscode-charts-green': '#388a34', '--vscode-charts-purple': '#652d90',
    '--vscode-charts-yellow': '#bf8803', '--vscode-charts-red': '#e51400', '--vscode-button-background': '#005fb8', '--vscode-button-foreground': '#ffffff',
    '--vscode-button-secondaryBackground': '#e5e5e5', '--vscode-button-secondaryForeground': '#3b3b3b', '--vscode-panelTitle-activeForeground': '#3b3b3b',
    '--vscode-panelTitle-inactiveForeground': '#3b3b3b', '--vscode-panelTitle-activeBorder': '#005fb8', '--vscode-dropdown-background': '#ffffff',
    '--vscode-dropdown-foreground': '#3b3b3b', '--vscode-dropdown-border': '#cecece', '--vscode-input-background': '#ffffff', '--vscode-input-foreground': '#3b3b3b',
    '--vscode-list-hoverBackground': '#f2f2f2', '--vscode-badge-background': '#cccccc', '--vscode-badge-foreground': '#3b3b3b', '--vscode-textLink-activeForeground': '#005fb8',
    '--vscode-inputValidation-errorBorder': '#be1100', '--vscode-inputValidation-errorBackground': '#f2dede', '--vscode-testing-iconPassed': '#388a34',
    '--vscode-terminal-ansiCyan': '#0598bc', '--vscode-terminal-ansiMagenta': '#bc05bc', '--vscode-terminal-ansiBrightYellow': '#b5ba00', '--vscode-terminal-ansiBrightRed': '#cd3131', '--vscode-terminal-ansiBrightGreen': '#14ce14',
  },
  'high-contrast': {
    '--vscode-editor-background': '#000000', '--vscode-editor-foreground': '#ffffff', '--vscode-foreground': '#ffffff',
    '--vscode-descriptionForeground': '#ffffffb3', '--vscode-errorForeground': '#f48771', '--vscode-editorWarning-foreground': '#ffd370',
    '--vscode-editorWidget-background': '#0c141f', '--vscode-contrastBorder': '#6fc3df', '--vscode-widget-border': '#6fc3df', '--vscode-focusBorder': '#f38518',
    '--vscode-charts-blue': '#3794ff', '--vscode-charts-orange': '#d18616', '--vscode-charts-green': '#89d185', '--vscode-charts-purple': '#b180d7',
    '--vscode-charts-yellow': '#cca700', '--vscode-charts-red': '#f14c4c', '--vscode-button-background': '#000000', '--vscode-button-foreground': '#ffffff',
    '--vscode-button-border': '#6fc3df', '--vscode-button-secondaryBackground': '#000000', '--vscode-button-secondaryForeground': '#ffffff',
    '--vscode-panelTitle-activeForeground': '#ffffff', '--vscode-panelTitle-inactiveForeground': '#ffffff', '--vscode-panelTitle-activeBorder': '#6fc3df',
    '--vscode-dropdown-background': '#000000', '--vscode-dropdown-foreground': '#ffffff', '--vscode-dropdown-border': '#6fc3df', '--vscode-input-background': '#000000',
    '--vscode-input-foreground': '#ffffff', '--vscode-badge-background': '#000000', '--vscode-badge-foreground': '#ffffff', '--vscode-textLink-activeForeground': '#21a6ff',
    '--vscode-inputValidation-errorBorder': '#6fc3df', '--vscode-inputValidation-errorBackground': '#000000', '--vscode-testing-iconPassed': '#73c991',
    '--vscode-terminal-ansiCyan': '#00ffff', '--vscode-terminal-ansiMagenta': '#ff00ff', '--vscode-terminal-ansiBrightYellow': '#ffff00', '--vscode-terminal-ansiBrightRed': '#ff0000', '--vscode-terminal-ansiBrightGreen': '#00ff00',
  },
};

/** Typed arrays cannot cross page.evaluate as such: tag them and rebuild them in the page. */
export function encode(v: unknown): unknown {
  if (ArrayBuffer.isView(v)) return { __typed: v.constructor.name, b64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') };
  if (Array.isArray(v)) return v.map(encode);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, encode(x)]));
  return v;
}

export interface Harness {
  page: Page;
  posted: WebviewMessage[];
  send(m: HostMessage): Promise<void>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  model: ImageModel;
  blocks: BlockData;
  diff?: DiffData | null;
  chain?: Chain;
  theme?: Theme;
  width?: number;
  height?: number;
  /** Collected CSP violations and page errors go here. */
  problems?: string[];
  /** Answer `ready` as the editor does when the image could not be opened: this error, no `init`. */
  openError?: string;
}

export async function openWebview(browser: Browser, o: HarnessOptions): Promise<Harness> {
  const page = await browser.newPage({ viewport: { width: o.width ?? 1280, height: o.height ?? 900 } });
  const posted: WebviewMessage[] = [];
  const problems = o.problems ?? [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  // As the editor serves it: the first bundle and the styles inline, the second bundle fetched.
  const { html } = buildEditorHtml({ cspSource: ORIGIN, scriptUri: `${ORIGIN}/webview.js`, styleUri: `${ORIGIN}/webview.css`, title: o.model.overview.fileName,
    inline: { ...readWebviewBundle(path.join(ROOT, 'dist')), restUri: `${ORIGIN}/webview-rest.js` } });
  await page.route(`${ORIGIN}/**`, async (route) => {
    const url = new URL(route.request().url());
    if (url.pathname === '/index.html') return route.fulfill({ contentType: 'text/html', body: html });
    const file = { '/webview.js': 'webview.js', '/webview-rest.js': 'webview-rest.js', '/webview.css': 'webview.css' }[url.pathname];
    if (!file) return route.fulfill({ status: 404, body: '' });
    return route.fulfill({ contentType: file.endsWith('.js') ? 'text/javascript' : 'text/css', body: readFileSync(path.join(ROOT, 'dist', file)) });
  });
  const send = async (m: HostMessage) => {
    await page.evaluate((msg) => {
      const decode = (v: any): any => {
        if (v && typeof v === 'object' && v.__typed) {
          const bin = atob(v.b64);
          const bytes = new Uint8Array(bin.length);
          for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
          const C = (globalThis as any)[v.__typed];
          return new C(bytes.buffer, 0, bytes.byteLength / C.BYTES_PER_ELEMENT);
        }
        if (Array.isArray(v)) return v.map(decode);
        if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, decode(x)]));
        return v;
      };
      window.postMessage(decode(msg), '*');
    }, encode(m) as any);
  };
  await page.exposeBinding('__toHost', async (_src, raw: WebviewMessage) => {
    posted.push(raw);
    try {
      if (raw.type === 'ready' && o.openError !== undefined) await send({ type: 'error', message: o.openError });
      else if (raw.type === 'ready') {
        // As the host does: the owner map first (as runs when smaller), then every per-block array.
        await send({ type: 'init', model: o.model, blocks: firstBlocks(o.blocks), complete: false, diff: o.diff ?? null });
        await send({ type: 'blocks', blocks: o.blocks });
      }
      else if (raw.type === 'requestBlock' && o.chain) await send({ type: 'blockDetail', requestId: raw.requestId, block: raw.block, layers: await blockDetail(o.chain, raw.block) });
      else if (raw.type === 'requestSector' && o.chain) await send({ type: 'sectorDetail', requestId: raw.requestId, sector: raw.sector, ...(await sectorDetail(o.chain, raw.sector)) });
    } catch (e) {
      problems.push(`host: ${(e as Error).message}`);
    }
  });
  const theme = o.theme ?? 'dark';
  const vars = { ...COMMON, ...THEMES[theme] };
  // A string, not a function: the test runner's transpiler would add helpers the page lacks.
  await page.addInitScript(`(() => {
    window.__name = (f) => f;
    document.addEventListener("securitypolicyviolation", (e) => console.error("CSP " + e.violatedDirective + " at " + e.sourceFile + ":" + e.lineNumber + ":" + e.columnNumber + " sample=" + e.sample));
    const vars = ${JSON.stringify(vars)};
    const theme = ${JSON.stringify(theme)};
    let state;
    window.acquireVsCodeApi = () => ({
      postMessage: (m) => window.__toHost(m),
      getState: () => state,
      setState: (s) => { state = s; },
    });
    const apply = () => {
      for (const [k, v] of Object.entries(vars)) document.documentElement.style.setProperty(k, v);
      if (document.body) document.body.classList.add(theme === 'light' ? 'vscode-light' : theme === 'dark' ? 'vscode-dark' : 'vscode-high-contrast');
    };
    if (document.documentElement) apply();
    document.addEventListener('DOMContentLoaded', apply);
  })();`);
  await page.goto(`${ORIGIN}/index.html`);
  return { page, posted, send, close: () => page.close() };
}
