/**
 * Brushing the whole of a 1,000,000-record trace on a 2 TiB image's grid (1,048,576 blocks): the
 * host's answer (TraceIndex.brushPacked, the packed answer src/extension/timeline.ts posts) side by side with
 * the obvious way (one pass over every record of the trace per brush, a Map per block), interleaved;
 * then the webview's part, in Chromium inside the extension's HTML and CSP: from the answer's
 * message being posted to the page (its structured clone and the webview's handler included) to
 * the Timeline heatmap redrawn. Prints one JSON line per run for
 * bench/timeline.bench.mjs. Usage: timelineBrush.ts <dir> <runs>
 */
import { existsSync } from 'fs';
import * as path from 'path';
import { openChain } from '../src/chain/chain';
import { createImage } from '../src/format/vhd/create';
import { buildBlockData, buildImageModel } from '../src/extension/model';
import { TraceIndex, TraceRecord } from '../src/serve/traceIndex';
import { launchChromium } from '../test/helpers/browser';
import { openWebview } from '../test/helpers/webviewHarness';

const MiB = 1024 * 1024;
const RECORDS = 1_000_000;

/** xorshift32 */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 0x100000000; };
}

/** A guest's trace: 45% reads; writes as a sweep, a hot log region, and random 4 KiB..64 KiB writes. */
function guestTrace(blockSize: number, blockCount: number): TraceRecord[] {
  const r = rng(7);
  const out: TraceRecord[] = [];
  let t = 0;
  const disk = blockSize * blockCount;
  for (let i = 0; i < RECORDS; i++) {
    t += r() * 0.0004;
    const p = r();
    const kind = i % 3;
    const offset = kind === 0 ? ((i * 1_048_573) % blockCount) * blockSize : kind === 1 ? 1024 * MiB + Math.floor(r() * 4096) * 4096 : Math.floor(r() * (disk / 4096 - 16)) * 4096;
    out.push({ t: Math.round(t * 1e6) / 1e6, export: '', op: p < 0.45 ? 'read' : p < 0.98 ? 'write' : 'flush', offset, length: 4096 * (1 + Math.floor(r() * 16)), layer: 'disk.session.vhd' });
  }
  return out;
}

/** The reference: one pass over the whole trace per brush. */
function naiveBrush(records: TraceRecord[], blockSize: number, blockCount: number, from: number, to: number): number {
  const last = new Map<number, number>();
  for (const r of records) {
    if (r.t < from || r.t > to || (r.op !== 'write' && r.op !== 'trim' && r.op !== 'zero') || r.length === 0) continue;
    const end = Math.min(blockCount - 1, Math.floor((r.offset + r.length - 1) / blockSize));
    for (let b = Math.floor(r.offset / blockSize); b <= end; b++) last.set(b, r.t);
  }
  const blocks = Uint32Array.from(last.keys()).sort();
  return blocks.length;
}

async function main(): Promise<void> {
  const [dir, runsArg] = process.argv.slice(2);
  const runs = Number(runsArg ?? 9);
  const image = path.join(dir, 'timeline-2t.vhd');
  if (!existsSync(image)) await createImage(image, { size: 2 * 1024 * 1024 * MiB, exactSize: true });
  const chain = await openChain(image);
  const model = await buildImageModel(chain, true);
  const blocks = await buildBlockData(chain);
  const { blockSize, blockCount } = model.overview;
  const records = guestTrace(blockSize, blockCount);
  const index = new TraceIndex({ blockSize, blockCount });
  const built = process.hrtime.bigint();
  for (const r of records) index.add(r);
  const indexMs = Number(process.hrtime.bigint() - built) / 1e6;
  const { from, to } = index.timeRange!;
  const density = index.density(from, to, 600);

  const browser = await launchChromium();
  const h = await openWebview(browser, { model, blocks, chain, width: 1400, height: 900 });
  try {
    await h.page.waitForSelector('#ov-type');
    await h.send({ type: 'timeline', source: 'bench', from, to, reads: density.reads, writes: density.writes, records: index.size, live: false, snapshots: [] });
    await h.page.click('#tab-timeline');
    await h.page.evaluate(() => {
      const w = window as unknown as { __arrived: number; __drawnAt: number; __release: () => void };
      // The answer is held once the harness has decoded it, and posted by __release(): its clock
      // (and the renderer's CPU count) start there, so the harness's base64 decoding is left out but
      // the structured clone and the webview's handler are in (a listener of ours would run after
      // that handler).
      const post = window.postMessage.bind(window);
      window.postMessage = ((m: { type?: string }, ...rest: [string]) => {
        if (m?.type !== 'timelineRange') return post(m, ...rest);
        w.__release = () => { w.__arrived = performance.now(); post(m, ...rest); };
      }) as typeof window.postMessage;
      const c = document.querySelector('#timeline-heatmap canvas') as HTMLCanvasElement;
      new MutationObserver(() => { w.__drawnAt = performance.now(); }).observe(c, { attributes: true, attributeFilter: ['data-drawn'] });
    });
    // The page's main-thread busy time (Chrome's TaskDuration) around each redraw: its CPU share, beside the wall time.
    const cdp = await h.page.context().newCDPSession(h.page);
    await cdp.send('Performance.enable');
    const busy = async () => ((await cdp.send('Performance.getMetrics')).metrics.find((x: { name: string }) => x.name === 'TaskDuration')?.value ?? NaN) * 1000;
    // CPU of the page's renderer process (all its threads: main, compositor, raster), around each redraw.
    const bcdp = await browser.newBrowserCDPSession();
    const rendererCpu = async () => {
      const { processInfo } = await bcdp.send('SystemInfo.getProcessInfo') as { processInfo: Array<{ type: string; cpuTime: number }> };
      return processInfo.filter((p) => p.type === 'renderer').reduce((a, p) => a + p.cpuTime, 0) * 1000;
    };
    const queries = () => h.posted.filter((m) => m.type === 'timelineQuery') as Array<Extract<typeof h.posted[number], { type: 'timelineQuery' }>>;
    for (let i = 0; i < runs; i++) {
      // The webview asks (the All button brushes the whole trace); ours and the reference answer,
      // interleaved; then the webview's redraw of our answer.
      const asked = queries().length;
      await h.page.evaluate(() => (Array.from(document.querySelectorAll('.timeline-view vscode-button')).find((b) => b.textContent === 'All') as HTMLElement).click());
      for (let w = 0; queries().length === asked; w++) {
        if (w > 1000) throw new Error('the webview did not ask');
        await new Promise((r) => setTimeout(r, 5));
      }
      const q = queries().pop()!;
      if (q.from !== from || q.to !== to) throw new Error(`asked ${q.from}..${q.to}, not the whole trace`);
      const s0 = process.hrtime.bigint();
      const c0 = process.cpuUsage();
      const packed = index.brushPacked(from, to);
      const qc = process.cpuUsage(c0);
      const queryMs = Number(process.hrtime.bigint() - s0) / 1e6;
      const queryCpuMs = (qc.user + qc.system) / 1000;
      const s1 = process.hrtime.bigint();
      const c1 = process.cpuUsage();
      const naiveCount = naiveBrush(records, blockSize, blockCount, from, to);
      const nc = process.cpuUsage(c1);
      const naiveMs = Number(process.hrtime.bigint() - s1) / 1e6;
      const naiveCpuMs = (nc.user + nc.system) / 1000;
      if (naiveCount !== packed.count) throw new Error(`index ${packed.count} blocks, naive ${naiveCount}`);
      const drawnBefore = Number(await h.page.$eval('#timeline-heatmap canvas', (c) => (c as HTMLElement).dataset.drawn ?? 0));
      await h.send({ type: 'timelineRange', requestId: q.requestId, from, to, blocks: packed.blocks, lastWrite: new Float64Array(0), records: packed.records, ranks: packed.ranks, written: packed.written });
      const busy0 = await busy();
      const cpu0 = await rendererCpu();
      if (process.env.PROFILE && i === runs - 1) { await cdp.send('Profiler.enable'); await cdp.send('Profiler.start'); }
      await h.page.evaluate(() => (window as unknown as { __release: () => void }).__release());
      await h.page.waitForFunction((n) => Number((document.querySelector('#timeline-heatmap canvas') as HTMLElement).dataset.drawn) > n, drawnBefore);
      const pageCpuMs = await rendererCpu() - cpu0;
      const pageBusyMs = await busy() - busy0;
      if (process.env.PROFILE && i === runs - 1) {
        const { profile } = await cdp.send('Profiler.stop') as { profile: { nodes: Array<{ id: number; hitCount?: number; callFrame: { functionName: string; url: string; lineNumber: number } }>; samples?: number[]; timeDeltas?: number[] } };
        const self = new Map<string, number>();
        for (const n of profile.nodes) { const k = `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.split('/').pop()}:${n.callFrame.lineNumber}`; self.set(k, (self.get(k) ?? 0) + (n.hitCount ?? 0)); }
        console.error([...self].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([k, v]) => `${v}\t${k}`).join('\n'));
      }
      const paintMs = await h.page.evaluate(() => { const w = window as unknown as { __arrived: number; __drawnAt: number }; return w.__drawnAt - w.__arrived; });
      const bytes = packed.blocks.byteLength + packed.written.byteLength + packed.ranks.byteLength;
      console.log(JSON.stringify({ queryMs, queryCpuMs, bytes, naiveMs, naiveCpuMs, paintMs, pageCpuMs, pageBusyMs, totalMs: queryMs + paintMs, blocks: packed.count, writes: packed.records, indexMs }));
    }
  } finally {
    await h.close();
    await browser.close();
    await chain.close();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
