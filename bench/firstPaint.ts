/**
 * The 2 TiB first paint, phase by phase: the extension host's open, model and block map (the same
 * calls ImageDocument makes) and the webview's own time from its script starting to the heatmap
 * drawn, in Chromium inside the exact HTML and CSP the extension serves (test/helpers/webviewHarness).
 * What code-server spends creating the webview frame is not ours and is not counted. Prints one JSON
 * line per run for bench/firstPaint.bench.mjs.
 */
import { existsSync, readFileSync, renameSync } from 'fs';
import * as path from 'path';
import { openChain } from '../src/chain/chain';
import { createChild } from '../src/chain/createChild';
import { createImage } from '../src/format/vhd/create';
import { buildBlockData, buildImageModel } from '../src/extension/model';
import type { Browser } from 'playwright-core';
import { buildEditorHtml } from '../src/extension/html';
import { BlockData, HostMessage, ImageModel } from '../src/protocol';
import { launchChromium } from '../test/helpers/browser';
import { encode, ORIGIN, THEMES } from '../test/helpers/webviewHarness';
import { ROOT } from '../test/helpers/util';

const MiB = 1024 * 1024;

/** The e2e test's image: 1,048,576 BAT entries, a few blocks in the base and in the child. */
async function bigChain(dir: string): Promise<string> {
  const child = path.join(dir, 'paint-2t.vhd');
  if (existsSync(child)) return child;
  const base = path.join(dir, 'paint-2t-base.vhd');
  await createImage(base, { size: 2 * 1024 * 1024 * MiB, exactSize: true });
  let c = await openChain(base, { writable: true });
  for (const b of [0, 1, 77_777, 524_288, 1_048_575]) await c.write(b * 2 * MiB, Buffer.alloc(64 * 1024, 0x5a));
  await c.close();
  await createChild(base, `${child}.tmp`);
  c = await openChain(`${child}.tmp`, { writable: true });
  for (const b of [2, 300_000, 999_999]) await c.write(b * 2 * MiB + 4096, Buffer.alloc(4096, 0xa5));
  await c.close();
  renameSync(`${child}.tmp`, child);
  return child;
}

/**
 * Opens the real webview bundle in the extension's HTML and CSP. The host's two messages (as
 * ImageDocument sends them: the owner map first, then every per-block array) are loaded, decoded
 * into typed arrays, by a script that runs before the webview's own; on its `ready` they are posted
 * with window.postMessage, a structured clone as VS Code delivers them. Playwright's argument
 * serializer takes seconds for megabytes, so it must stay out of the measured path.
 */
async function paint(browser: Browser, model: ImageModel, blocks: BlockData): Promise<{ webviewMs: number; initAtMs: number }> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  try {
    const { html, nonce } = buildEditorHtml({ cspSource: ORIGIN, scriptUri: `${ORIGIN}/webview.js`, styleUri: `${ORIGIN}/webview.css`, title: model.overview.fileName });
    const ownersOnly = { ...blocks, allocated: new Uint8Array(0), fill: new Uint8Array(0), ownerSector: new Uint32Array(0) };
    const messages: HostMessage[] = [
      { type: 'init', model, blocks: ownersOnly, complete: false, diff: null },
      { type: 'blocks', blocks },
    ];
    const data = `window.__hostMessages = (() => {
      const decode = (v) => {
        if (v && typeof v === 'object' && v.__typed) {
          const bin = atob(v.b64); const bytes = new Uint8Array(bin.length);
          for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
          const C = globalThis[v.__typed]; return new C(bytes.buffer, 0, bytes.byteLength / C.BYTES_PER_ELEMENT);
        }
        if (Array.isArray(v)) return v.map(decode);
        if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, decode(x)]));
        return v;
      };
      return decode(${JSON.stringify(encode(messages))});
    })();`;
    const vars = THEMES.dark;
    const withData = html.replace(`<script nonce="${nonce}"`, `<script nonce="${nonce}" src="${ORIGIN}/host-messages.js"></script>\n<script nonce="${nonce}"`);
    await page.route(`${ORIGIN}/**`, async (route) => {
      const url = new URL(route.request().url());
      if (url.pathname === '/index.html') return route.fulfill({ contentType: 'text/html', body: withData });
      if (url.pathname === '/host-messages.js') return route.fulfill({ contentType: 'text/javascript', body: data });
      const file = { '/webview.js': 'webview.js', '/webview.css': 'webview.css' }[url.pathname];
      if (!file) return route.fulfill({ status: 404, body: '' });
      return route.fulfill({ contentType: file.endsWith('.js') ? 'text/javascript' : 'text/css', body: readFileSync(path.join(ROOT, 'dist', file)) });
    });
    await page.addInitScript(`(() => {
      window.__name = (f) => f;
      const vars = ${JSON.stringify(vars)};
      window.acquireVsCodeApi = () => ({
        postMessage: (m) => { if (m && m.type === 'ready') for (const msg of window.__hostMessages) window.postMessage(msg, '*'); },
        getState: () => undefined, setState: () => {},
      });
      document.addEventListener('DOMContentLoaded', () => {
        for (const [k, v] of Object.entries(vars)) document.documentElement.style.setProperty(k, v);
        document.body.classList.add('vscode-dark');
      });
    })();`);
    await page.goto(`${ORIGIN}/index.html`);
    await page.waitForFunction(() => document.body.dataset.heatmapMs !== undefined, undefined, { timeout: 60000 });
    return await page.evaluate(() => ({ webviewMs: Number(document.body.dataset.heatmapMs), initAtMs: Number(document.body.dataset.initAt) }));
  } finally {
    await page.close();
  }
}

async function main(): Promise<void> {
  const [dir, runsArg] = process.argv.slice(2);
  const runs = Number(runsArg ?? 7);
  const image = await bigChain(dir);
  const browser = await launchChromium();
  try {
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const chain = await openChain(image, { tolerant: true });
      const t1 = performance.now();
      const model = await buildImageModel(chain, false);
      const t2 = performance.now();
      const blocks = await buildBlockData(chain);
      const t3 = performance.now();
      const { webviewMs, initAtMs } = await paint(browser, model, blocks);
      await chain.close();
      const phases = { openMs: t1 - t0, modelMs: t2 - t1, blocksMs: t3 - t2, webviewMs };
      console.log(JSON.stringify({ ...phases, initAtMs, totalMs: phases.openMs + phases.modelMs + phases.blocksMs + webviewMs }));
    }
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
