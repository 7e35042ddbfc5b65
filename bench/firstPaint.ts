/**
 * The 2 TiB first paint, phase by phase: the extension host's open, model and block map (the same
 * calls ImageDocument makes, in bench/firstPaintHost.ts's own process) and the webview's work, in
 * Chromium inside the exact HTML and CSP the extension serves (test/helpers/webviewHarness), with a
 * timeline trace of each run from which the page's own share is read (bench/firstPaintTrace.ts).
 * What code-server spends creating the webview frame is not ours and is not counted. Prints one JSON
 * line per run for bench/firstPaint.bench.mjs.
 */
import { fork, spawnSync } from 'child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import { openChain } from '../src/chain/chain';
import { createChild } from '../src/chain/createChild';
import { createImage } from '../src/format/vhd/create';
import { getFormat } from '../src/format/registry';
import type { Browser } from 'playwright-core';
import { buildEditorHtml, readWebviewBundle } from '../src/extension/html';
import { launchChromium } from '../test/helpers/browser';
import { THEMES } from '../test/helpers/webviewHarness';
import { ROOT } from '../test/helpers/util';
import { pageShare, STAND_IN_URL, TraceEvent } from './firstPaintTrace';
import type { OpenReply, OpenRequest } from './firstPaintHost';

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
 * The page's stand-in for VS Code's webview API: `ready` is answered with the host's message. The
 * bench hands the message to the page in one evaluated call (DevTools protocol, no fetch), which
 * rebuilds each typed array in its own ArrayBuffer and posts the message with them transferred: two
 * main-thread tasks, as VS Code's path is two (the webview's host frame receives the message and
 * posts it into the content frame, extHostWebviewMessaging's ArrayBuffers handed over as transfers).
 */
const PAGE_API = `(() => {
  window.__name = (f) => f;
  let give;
  const data = new Promise((resolve) => { give = resolve; });
  window.__hostMessage = (b64) => {
    document.documentElement.dataset.msgInAt = String(performance.now());
    const bytes = Uint8Array.fromBase64 ? Uint8Array.fromBase64(b64) : Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const buf = bytes.buffer;
    const n = new DataView(buf).getUint32(0, true);
    const base = 4 + n + ((8 - ((4 + n) % 8)) % 8);
    const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
    const transfer = [];
    const rebuild = (v) => {
      if (v && typeof v === 'object' && v.__typed) {
        const C = globalThis[v.__typed];
        const a = new C(buf.slice(base + v.at, base + v.at + v.bytes));
        transfer.push(a.buffer);
        return a;
      }
      if (Array.isArray(v)) return v.map(rebuild);
      if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, rebuild(x)]));
      return v;
    };
    const msg = rebuild(head);
    document.documentElement.dataset.dataAt = String(performance.now());
    give({ msg, transfer });
  };
  window.acquireVsCodeApi = () => ({
    postMessage: (m) => {
      if (!m || m.type !== 'ready') return;
      document.documentElement.dataset.readyAt = String(performance.now());
      data.then(({ msg, transfer }) => window.postMessage(msg, '*', transfer));
    },
    getState: () => undefined, setState: () => {},
  });
  // The bench learns of the painted frame from a console message: polling with page.waitForFunction
  // would inject Playwright's utility script into the page (20-30 ms of main-thread compile and run,
  // seen in the timeline trace) in the middle of the work being measured.
  new MutationObserver((_records, obs) => {
    if (document.body?.dataset.heatmapPaintedMs === undefined) return;
    obs.disconnect();
    // Marks the end of the page's share in the timeline trace (bench/firstPaintTrace.ts).
    console.timeStamp('__firstPaintDone');
    console.debug('__firstPaintDone');
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-heatmap-painted-ms'] });
})();
//# sourceURL=${STAND_IN_URL}.js
`;

interface Server { origin: string; dir: string; send(m: unknown): void; close(): void }

/** Starts bench/firstPaintServer.mjs (its own process, as VS Code serves webview resources outside the extension host). */
async function startServer(): Promise<Server> {
  const child = fork(path.join(ROOT, 'bench', 'firstPaintServer.mjs'), [process.env.FIRSTPAINT_DIST ?? path.join(ROOT, 'dist')], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { port: number }) => resolve(m.port));
    child.once('exit', (code) => reject(new Error(`the bench server exited (${code})`)));
  });
  const dir = mkdtempSync(path.join(tmpdir(), 'paint-firstpaint-'));
  return {
    origin: `http://127.0.0.1:${port}`,
    dir,
    send: (m) => child.send(m as never),
    close: () => { child.kill(); rmSync(dir, { recursive: true, force: true }); },
  };
}

interface RunResult {
  openMs: number; modelMs: number; blocksMs: number; cells: number;
  /** Page times, from the common start (ms): navigation start, script start, ready posted, data rebuilt, message handled, first draw, its frame painted. */
  hostCpuMs: number; pageCpuMs: number;
  /** When the host process began its steps (after the bench's request crossed to it). */
  hostStartMs: number; pageScriptMs: number;
  /** The host's message handed to the messaging stand-in, and its bytes in the page (not ours: VS Code's postMessage in the editor). */
  postedMs: number; msgInMs: number;
  /** When the bench handed the message to the page (after the host's reply and the page's commit). */
  deliveredMs: number;
  /** The page's first frame painted (the skeleton under "Reading image…" when the page is ready before the host's message). */
  firstPaintMs: number;
  /** Whether the page built its loading skeleton (the host's answer was not in soon after the script started). */
  skeleton: boolean;
  /** The page's own main-thread time before the message's task and from it to the painted frame, that task to painted in wall time, and the main-thread time in the page's window that is not ours (bench/firstPaintTrace.ts). */
  ownBeforeMs: number; ownAfterMs: number; afterWallMs: number; notOursMs: number; ownBeforeCpuMs: number; ownAfterCpuMs: number;
  /** The share in CPU time: the host's CPU and the page's own main-thread CPU time, combined as shareMs is (steadier on a busy machine). */
  shareCpuMs: number;
  /**
   * The extension's share: the host's three steps and the page's own work before the message run
   * side by side, the later of the two, then the page's own work to the painted frame. VS Code's
   * (and here the stand-ins') work, navigation, messaging and waiting for a frame's turn are left out.
   */
  shareMs: number;
  navMs: number; htmlMs: number; assetsMs: number | null; scriptMs: number; readyMs: number; dataMs: number; initMs: number; drawMs: number; paintedMs: number;
}

/**
 * One open, as the editor does it since the HTML is set without waiting for the image: at the same
 * instant the host opens the chain, builds the model and the block map, and the page (the real
 * bundles in the extension's HTML and CSP) starts loading; the page's `ready` is answered once the
 * host has its first message. Every time is measured from that common start, so the end-to-end total
 * counts all of the page's own work (loading, compiling and running its script, drawing, painting)
 * and what is not ours in between (navigation, messaging, waiting); the share counts only ours.
 * What VS Code spends creating the webview frame (here: a blank page made beforehand) is in neither.
 */
interface Variant {
  /** Built webview bundles to serve (dist/ of this tree, or of another for a before/after pair). */
  dist?: string;
  /** As the editor did before the HTML was set early: the page starts loading once the host is done. */
  serial?: boolean;
}

interface Host { open(m: Omit<OpenRequest, 'type'>): Promise<OpenReply>; close(): void }

/** Starts bench/firstPaintHost.ts, the extension host's stand-in, in its own process. */
function startHost(): Host {
  const child = fork(path.join(ROOT, 'bench', 'firstPaintHost.ts'), [], { execArgv: ['--require', 'tsx/cjs'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return {
    open: (m) => new Promise<OpenReply>((resolve, reject) => {
      const onExit = (code: number) => reject(new Error(`the bench's host exited (${code})`));
      child.once('exit', onExit);
      child.once('message', (r: OpenReply) => { child.off('exit', onExit); resolve(r); });
      child.send({ type: 'open', ...m });
    }),
    close: () => child.kill(),
  };
}

async function openOnce(browser: Browser, server: Server, host: Host, file: string, id: string, variant: Variant = {}): Promise<RunResult> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  try {
    const base = `${server.origin}/run/${id}`;
    // As the editor serves it: the first bundle and the styles inline (the code before as well, as
    // main has served it since the inline page; FIRSTPAINT_BEFORE_FETCHED=1: fetched by URL, as before that).
    const dist = variant.dist ?? process.env.FIRSTPAINT_DIST ?? path.join(ROOT, 'dist');
    const inline = variant.dist && process.env.FIRSTPAINT_BEFORE_FETCHED === '1' ? undefined : { ...readWebviewBundle(dist), restUri: `${base}/webview-rest.js` };
    const { html, nonce } = buildEditorHtml({ cspSource: server.origin, scriptUri: `${base}/webview.js`, styleUri: `${base}/webview.css`, title: path.basename(file), inline });
    // VS Code puts the theme's variables and class in the page before any of its scripts run.
    const vars = THEMES.dark;
    const themed = html
      .replace('<head>', `<head>\n<script nonce="${nonce}">for (const [k, v] of Object.entries(${JSON.stringify(vars)})) document.documentElement.style.setProperty(k, v);\n//# sourceURL=${STAND_IN_URL}-theme.js\n</script>`)
      .replace('<body>', `<body>\n<script nonce="${nonce}">document.body.classList.add('vscode-dark');\n//# sourceURL=${STAND_IN_URL}-class.js\n</script>`);
    server.send({ type: 'page', id, html: themed, dist: variant.dist });
    await page.addInitScript(PAGE_API);
    if (process.env.FIRSTPAINT_SHOT) await page.addInitScript('customElements.define = () => undefined;');
    // FIRSTPAINT_PROFILE=DIR: a V8 CPU profile of the page from navigation to first draw, one file per run.
    const profileDir = process.env.FIRSTPAINT_PROFILE;
    const cdp = await page.context().newCDPSession(page);
    // The page's main-thread task time (Chromium's own counter), less swayed by other processes than wall time.
    await cdp.send('Performance.enable', { timeDomain: 'threadTicks' });
    if (profileDir) { await cdp.send('Profiler.enable'); await cdp.send('Profiler.setSamplingInterval', { interval: 200 }); await cdp.send('Profiler.start'); }

    // A Chromium timeline trace of every run (the categories DevTools' performance panel records):
    // the page's own share is read from it. FIRSTPAINT_TRACE=DIR keeps each run's, with Blink's detail.
    const traceDir = process.env.FIRSTPAINT_TRACE;
    await browser.startTracing(page, { ...(traceDir ? { path: path.join(traceDir, `trace-${id}.json`) } : {}), categories: ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'v8.execute', ...(traceDir ? ['blink', 'loading'] : [])] });
    const metricsNow = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
    const m0 = await metricsNow();
    const start = performance.timeOrigin + performance.now();
    const painted = page.waitForEvent('console', { predicate: (m) => m.text() === '__firstPaintDone', timeout: 60000 });
    const go = () => page.goto(`${base}/index.html`, { waitUntil: 'commit' });
    let navigated = variant.serial ? null : go();
    // The host's steps in its own process, started at the same instant as the page's navigation.
    const dataFile = path.join(server.dir, `${id}.bin`);
    const opened = host.open({ file, serial: !!variant.serial, dataFile });
    const h = variant.serial ? await opened : null;
    navigated ??= go();
    const { openMs, modelMs, blocksMs, hostCpuMs, cells, startedAt, postedAt } = h ?? await opened;
    // The stand-in for VS Code's messaging: once the page's document exists, the message in one call.
    await navigated;
    const deliveredAt = performance.timeOrigin + performance.now();
    // The browser reports the commit before the renderer has the new document's context: until the
    // stand-in is there, the call lands in the old document and is tried again. The bytes go as the
    // call's argument, not a script literal. A message of megabytes (FIRSTPAINT_BEFORE_SERIAL: the
    // whole owner array) still costs the page 300-400 ms of protocol handling: not ours and not in the
    // share, but that variant's end-to-end time is no measure of VS Code's messaging.
    const b64 = readFileSync(dataFile).toString('base64');
    const give = 'function (b64) { return typeof __hostMessage === "function" && (__hostMessage(b64), true); }';
    for (let tries = 0; ; tries++) {
      const g = await cdp.send('Runtime.evaluate', { expression: 'globalThis' });
      const r = g.result.objectId ? await cdp.send('Runtime.callFunctionOn', { objectId: g.result.objectId, functionDeclaration: give, arguments: [{ value: b64 }], returnByValue: true }) : null;
      if (r?.result.value === true) break;
      if (tries > 5000) throw new Error(`the page did not take the host's message: ${JSON.stringify(r?.exceptionDetails ?? r?.result ?? g)}`);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    await painted;
    if (process.env.FIRSTPAINT_SHOT) await page.screenshot({ path: path.join(process.env.FIRSTPAINT_SHOT, `first-frame-${path.basename(file)}.png`) });
    const trace = JSON.parse((await browser.stopTracing()).toString()) as { traceEvents: TraceEvent[] };
    const share = pageShare(trace.traceEvents, `${base}/index.html`, '__firstPaintDone');
    const m1 = await metricsNow();
    // Counted from the navigation on (the blank page made beforehand and the setup commands are not ours).
    const metrics = Object.fromEntries(Object.keys(m1).map((k) => [k, m1[k] - (m0[k] ?? 0)]));
    if (process.env.FIRSTPAINT_METRICS) console.error(JSON.stringify(metrics));
    if (profileDir) {
      const { profile } = await cdp.send('Profiler.stop');
      writeFileSync(path.join(profileDir, `webview-${Date.now()}.cpuprofile`), JSON.stringify(profile));
    }
    const p = await page.evaluate(() => {
      const b = document.body.dataset; const h = document.documentElement.dataset;
      const script = Number(b.scriptStart);
      // The HTML's arrival, and the last of our fetched files before the script ran (none when inline).
      const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming | undefined;
      const assets = (performance.getEntriesByType('resource') as PerformanceResourceTiming[]).filter((r) => /\/webview(\.js|\.css)$/.test(r.name));
      return { origin: performance.timeOrigin, script, html: nav ? nav.responseEnd : 0, fp: performance.getEntriesByName('first-paint')[0]?.startTime ?? 0, msgIn: Number(h.msgInAt), assets: assets.length ? Math.max(...assets.map((r) => r.responseEnd)) : null, ready: Number(h.readyAt), data: Number(h.dataAt), skeleton: b.skeletonAt !== undefined, init: script + Number(b.initAt), draw: script + Number(b.heatmapMs), painted: script + Number(b.heatmapPaintedMs) };
    });
    const at = (pageMs: number) => p.origin + pageMs - start;
    return {
      openMs, modelMs, blocksMs, cells,
      ...share, shareMs: Math.max(openMs + modelMs + blocksMs, share.ownBeforeMs) + share.ownAfterMs,
      shareCpuMs: Math.max(hostCpuMs, share.ownBeforeCpuMs) + share.ownAfterCpuMs,
      // CPU: the host process over its three steps (user + system); the page's main thread (thread time) and its script time, navigation to painted.
      hostCpuMs, hostStartMs: startedAt - start, pageCpuMs: metrics.ThreadTime * 1000, pageScriptMs: metrics.ScriptDuration * 1000,
      postedMs: postedAt - start, deliveredMs: deliveredAt - start, msgInMs: at(p.msgIn), skeleton: p.skeleton, firstPaintMs: at(p.fp),
      navMs: at(0), htmlMs: at(p.html), assetsMs: p.assets === null ? null : at(p.assets), scriptMs: at(p.script), readyMs: at(p.ready), dataMs: at(p.data), initMs: at(p.init), drawMs: at(p.draw), paintedMs: at(p.painted),
    };
  } finally {
    server.send({ type: 'done', id });
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
  const server = await startServer();
  const host = startHost();
  try {
    // Formats interleaved run by run, so each sees the same machine.
    for (let i = 0; i < runs; i++) {
      for (const kind of kinds) {
        // FIRSTPAINT_BEFORE=DIR (a dist/ built from the code before): each run also opens the image as
        // that code did (its bundles inline, or fetched by URL with FIRSTPAINT_BEFORE_FETCHED=1; with
        // FIRSTPAINT_BEFORE_SERIAL=1 the page loaded after the host's work, as before the HTML was set
        // early), the pair in alternating order.
        const before = process.env.FIRSTPAINT_BEFORE;
        const order: Array<'before' | 'after'> = !before ? ['after'] : i % 2 ? ['after', 'before'] : ['before', 'after'];
        for (const which of order) {
          // Outside the timing, as every other benchmark: no run pays for earlier writeback (an export
          // bench's 1 GiB output just before this one made the first VHD runs wait 60-90 ms on I/O).
          spawnSync('sync');
          const r = await openOnce(browser, server, host, images.get(kind)!, `${kind}-${i}-${which}`, which === 'before' ? { dist: before, serial: process.env.FIRSTPAINT_BEFORE_SERIAL === '1' } : {});
          // The total: from the common start to the frame holding the first heatmap draw painted (what the user sees).
          console.log(JSON.stringify({ kind, which, run: i, ...r, totalMs: r.paintedMs }));
        }
      }
    }
  } finally {
    host.close();
    server.close();
    await browser.close();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
