/**
 * The 2 TiB first paint, phase by phase: the extension host's open, model and block map (the same
 * calls ImageDocument makes) and the webview's own time from its script starting to the heatmap
 * drawn, in Chromium inside the exact HTML and CSP the extension serves (test/helpers/webviewHarness).
 * What code-server spends creating the webview frame is not ours and is not counted. Prints one JSON
 * line per run for bench/firstPaint.bench.mjs.
 */
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../src/chain/chain';
import { createChild } from '../src/chain/createChild';
import { createImage } from '../src/format/vhd/create';
import { getFormat } from '../src/format/registry';
import { buildBlockData, buildImageModel } from '../src/extension/model';
import type { Browser } from 'playwright-core';
import { buildEditorHtml } from '../src/extension/html';
import { BlockData, HostMessage, ImageModel } from '../src/protocol';
import { launchChromium } from '../test/helpers/browser';
import { encode, ORIGIN, THEMES } from '../test/helpers/webviewHarness';
import { ROOT } from '../test/helpers/util';

const MiB = 1024 * 1024;

const TiB2 = 2 * 1024 * 1024 * MiB;

/**
 * The 2 TiB images: a base with a few written blocks and a differencing child (overlay) over it
 * with a few more, made once into the bench folder. VHD: 2 MiB blocks (1,048,576 BAT entries, the
 * e2e test's image); VHDX: 1 MiB blocks (2,097,152 payload entries); qcow2: 64 KiB clusters
 * (33,554,432 clusters, a 4096-entry L1), aggregated into cells by the block map.
 */
const IMAGES = {
  vhd: { base: 'paint-2t-base.vhd', child: 'paint-2t.vhd', blockSize: 2 * MiB, make: (p: string) => createImage(p, { size: TiB2, exactSize: true }) },
  vhdx: { base: 'paint-2t-base.vhdx', child: 'paint-2t.avhdx', blockSize: MiB, make: (p: string) => getFormat('vhdx').create(p, { size: TiB2, blockSize: MiB }) },
  qcow2: { base: 'paint-2t-base.qcow2', child: 'paint-2t.qcow2', blockSize: 64 * 1024, make: (p: string) => getFormat('qcow2').create(p, { size: TiB2, blockSize: 64 * 1024 }) },
};
type Kind = keyof typeof IMAGES;

async function bigChain(dir: string, kind: Kind): Promise<string> {
  const spec = IMAGES[kind];
  const child = path.join(dir, spec.child);
  if (existsSync(child)) return child;
  const base = path.join(dir, spec.base);
  const blocks = TiB2 / spec.blockSize;
  // The same places on every format: the first blocks, a few spread out, the last one.
  const at = (f: number) => Math.min(blocks - 1, Math.floor(f * blocks)) * spec.blockSize;
  rmSync(base, { force: true });
  await spec.make(base);
  let c = await openChain(base, { writable: true });
  for (const f of [0, 1 / blocks, 0.0742, 0.5, 1]) await c.write(at(f), Buffer.alloc(Math.min(64 * 1024, spec.blockSize), 0x5a));
  await c.close();
  const tmp = path.join(dir, `tmp-${spec.child}`);
  rmSync(tmp, { force: true });
  await createChild(base, tmp);
  c = await openChain(tmp, { writable: true });
  for (const f of [2 / blocks, 0.2861, 0.9537]) await c.write(at(f) + 4096, Buffer.alloc(4096, 0xa5));
  await c.close();
  if (kind !== 'vhdx') { renameSync(tmp, child); return child; }
  // A VHDX child names its parent by path: make it under its final name.
  rmSync(tmp);
  await createChild(base, child);
  c = await openChain(child, { writable: true });
  for (const f of [2 / blocks, 0.2861, 0.9537]) await c.write(at(f) + 4096, Buffer.alloc(4096, 0xa5));
  await c.close();
  return child;
}

/**
 * Opens the real webview bundle in the extension's HTML and CSP. The host's two messages (as
 * ImageDocument sends them: the owner map first, then every per-block array) are loaded, decoded
 * into typed arrays, by a script that runs before the webview's own; on its `ready` they are posted
 * with window.postMessage, their ArrayBuffers transferred as VS Code's webview messaging transfers them
 * (extHostWebviewMessaging: each ArrayBuffer travels as binary and is handed to the frame as a transfer). Playwright's argument
 * serializer takes seconds for megabytes, so it must stay out of the measured path.
 */
async function paint(browser: Browser, model: ImageModel, blocks: BlockData): Promise<{ webviewMs: number; initAtMs: number; paintedMs: number }> {
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
    if (process.env.FIRSTPAINT_SHOT) await page.addInitScript('customElements.define = () => undefined;');
    await page.addInitScript(`(() => {
      window.__name = (f) => f;
      const vars = ${JSON.stringify(vars)};
      window.acquireVsCodeApi = () => ({
        postMessage: (m) => {
          if (!m || m.type !== 'ready') return;
          const buffers = (v, out) => { if (ArrayBuffer.isView(v)) out.add(v.buffer); else if (v && typeof v === 'object') for (const x of Object.values(v)) buffers(x, out); return out; };
          for (const msg of window.__hostMessages) window.postMessage(msg, '*', [...buffers(msg, new Set())]);
        },
        getState: () => undefined, setState: () => {},
      });
      document.addEventListener('DOMContentLoaded', () => {
        for (const [k, v] of Object.entries(vars)) document.documentElement.style.setProperty(k, v);
        document.body.classList.add('vscode-dark');
      });
    })();`);
    // FIRSTPAINT_PROFILE=DIR: a V8 CPU profile of the page from navigation to first draw, one file per run.
    const profileDir = process.env.FIRSTPAINT_PROFILE;
    const cdp = profileDir ? await page.context().newCDPSession(page) : null;
    if (cdp) { await cdp.send('Profiler.enable'); await cdp.send('Profiler.setSamplingInterval', { interval: 200 }); await cdp.send('Profiler.start'); }
    await page.goto(`${ORIGIN}/index.html`);
    await page.waitForFunction(() => document.body.dataset.heatmapMs !== undefined, undefined, { timeout: 60000 });
    // The frame holding the first draw painted (the webview marks it after the next frame).
    await page.waitForFunction(() => document.body.dataset.heatmapPaintedMs !== undefined, undefined, { timeout: 60000 });
    // FIRSTPAINT_SHOT=DIR: what the first frame shows, before the component toolkit (kept from registering) upgrades the page.
    if (process.env.FIRSTPAINT_SHOT) await page.screenshot({ path: path.join(process.env.FIRSTPAINT_SHOT, `first-frame-${model.overview.fileName}.png`) });
    if (cdp && profileDir) {
      const { profile } = await cdp.send('Profiler.stop');
      writeFileSync(path.join(profileDir, `webview-${Date.now()}.cpuprofile`), JSON.stringify(profile));
    }
    return await page.evaluate(() => ({ webviewMs: Number(document.body.dataset.heatmapMs), initAtMs: Number(document.body.dataset.initAt), paintedMs: Number(document.body.dataset.heatmapPaintedMs) }));
  } finally {
    await page.close();
  }
}

async function main(): Promise<void> {
  const [dir, runsArg, kindsArg] = process.argv.slice(2);
  const runs = Number(runsArg ?? 7);
  const kinds = (kindsArg ?? 'vhd').split(',') as Kind[];
  const images = new Map<Kind, string>();
  for (const k of kinds) images.set(k, await bigChain(dir, k));
  const browser = await launchChromium();
  try {
    // Formats interleaved run by run, so each sees the same machine.
    for (let i = 0; i < runs; i++) {
      for (const kind of kinds) {
        const t0 = performance.now();
        const chain = await openChain(images.get(kind)!, { tolerant: true });
        const t1 = performance.now();
        const model = await buildImageModel(chain, false);
        const t2 = performance.now();
        const blocks = await buildBlockData(chain);
        const t3 = performance.now();
        const { webviewMs, initAtMs, paintedMs } = await paint(browser, model, blocks);
        await chain.close();
        const phases = { openMs: t1 - t0, modelMs: t2 - t1, blocksMs: t3 - t2, webviewMs };
        // The total counts to the frame holding the first draw painted (what the user sees).
        console.log(JSON.stringify({ kind, cells: blocks.blockCount, ...phases, initAtMs, paintedMs, totalMs: phases.openMs + phases.modelMs + phases.blocksMs + paintedMs }));
      }
    }
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
