import { strict as assert } from 'assert';
import * as path from 'path';
import { pathToFileURL } from 'url';
import type { Browser } from 'playwright-core';
import { Chain, openChain } from '../../src/chain/chain';
import { buildBlockData, buildImageModel } from '../../src/extension/model';
import { BlockData, HostMessage, ImageModel } from '../../src/protocol';
import { TraceIndex, TraceRecord } from '../../src/serve/traceIndex';
import { hasChromium, launchChromium, RESULTS } from '../helpers/browser';
import { parseHex, sameColor, sampleBlocks } from '../helpers/canvasProbe';
import { Harness, openWebview, THEMES } from '../helpers/webviewHarness';
import { ROOT, tempDir } from '../helpers/util';

async function until(fn: () => boolean, ms = 10_000): Promise<void> {
  const start = Date.now();
  while (!fn()) {
    if (Date.now() - start > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** xorshift32 */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 0x100000000; };
}

/**
 * A trace of `count` records over the image's grid; writes concentrate on a few blocks per time
 * slice, so a brushed range holds a subset of the blocks, not all of them.
 */
function trace(count: number, blockSize: number, blockCount: number): TraceRecord[] {
  const r = rng(11);
  const out: TraceRecord[] = [];
  for (let i = 0; i < count; i++) {
    const t = (i / count) * 100;
    const slice = Math.floor(t / 10);
    const block = (slice * 7 + Math.floor(r() * 3) * 13) % blockCount;
    const op = r() < 0.4 ? 'read' : 'write';
    out.push({ t: Math.round(t * 1e6) / 1e6, export: 'demo', op, offset: block * blockSize + Math.floor(r() * 64) * 512, length: 4096, layer: 'child2.session.vhd' });
  }
  return out;
}

describe('Timeline tab and live blocks in Chromium (real HTML, CSP and bundle; the host\'s trace index)', function () {
  this.timeout(300_000);
  let browser: Browser;
  let chain: Chain;
  let model: ImageModel;
  let blocks: BlockData;
  const t = tempDir('timeline-');

  before(async function () {
    if (!hasChromium()) throw new Error('Chromium is missing: run scripts/setup.sh (Debian package chromium)');
    const { makeDemoChain } = await import(pathToFileURL(path.join(ROOT, 'scripts', 'makeDemoChain.mjs')).href);
    const demo = makeDemoChain(t.dir);
    chain = await openChain(demo.child2);
    model = await buildImageModel(chain, true);
    blocks = await buildBlockData(chain);
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await chain?.close();
    t.cleanup();
  });

  /** Answers the webview's timeline questions from `index`, as src/extension/timeline.ts does. */
  function serveTimeline(h: Harness, index: TraceIndex): () => void {
    let seen = 0;
    const timer = setInterval(() => {
      for (; seen < h.posted.length; seen++) {
        const m = h.posted[seen];
        if (m.type === 'timelineQuery') {
          // Packed (ranks, and a bitmap when dense), as the extension posts it.
          const p = index.brushPacked(m.from, m.to);
          void h.send({ type: 'timelineRange', requestId: m.requestId, from: m.from, to: m.to, blocks: p.blocks, lastWrite: new Float64Array(0), records: p.records, ranks: p.ranks, written: p.written });
        } else if (m.type === 'timelineBlock') {
          void h.send({ type: 'timelineWrites', requestId: m.requestId, block: m.block, writes: index.writesOfBlock(m.block, m.from, m.to) });
        }
      }
    }, 10);
    return () => clearInterval(timer);
  }

  it('brushing a range of a 1,000,000-record trace paints exactly the blocks written in it; a block lists its writes; live writes flash', async () => {
    const { blockSize, blockCount } = model.overview;
    const index = new TraceIndex({ blockSize, blockCount });
    const records = trace(1_000_000, blockSize, blockCount);
    for (const r of records) index.add(r);
    const span = index.timeRange!;
    const d = index.density(span.from, span.to, 600);
    const problems: string[] = [];
    const h = await openWebview(browser, { model, blocks, chain, problems, width: 1280, height: 1000 });
    const stop = serveTimeline(h, index);
    try {
      await h.page.waitForSelector('#ov-type');
      await h.send({ type: 'timeline', source: 'test trace', from: span.from, to: span.to, reads: d.reads, writes: d.writes, records: index.size, live: true,
        snapshots: [{ label: '#1 child2.session.vhd', t: 40 }] });
      await h.page.click('#tab-timeline');
      const axis = (await h.page.$('#timeline-axis'))!;
      const box = (await axis.boundingBox())!;
      // Brush from 25% to 60% of the axis.
      await h.page.mouse.move(box.x + box.width * 0.25, box.y + box.height / 2);
      await h.page.mouse.down();
      await h.page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 4 });
      const before = h.posted.filter((m) => m.type === 'timelineQuery').length;
      await h.page.mouse.up();
      await until(() => h.posted.filter((m) => m.type === 'timelineQuery').length > before);
      const q = h.posted.filter((m) => m.type === 'timelineQuery').pop() as Extract<typeof h.posted[number], { type: 'timelineQuery' }>;
      assert.ok(q.from > span.from + 20 && q.to < span.from + 65 && q.to > q.from, `brushed ${q.from}..${q.to}`);
      const want = index.blocksWritten(q.from, q.to);
      await h.page.waitForFunction((n) => (document.querySelector('.timeline-view') as HTMLElement).dataset.blocks?.split(',').length === n, want.blocks.length);
      const canvas = '#timeline-heatmap canvas';
      await h.page.waitForTimeout(200);
      const all = Array.from({ length: blockCount }, (_, i) => i);
      const colors = await sampleBlocks(h.page, canvas, all);
      const empty = parseHex(THEMES.dark['--vscode-editorWidget-background']);
      const written = new Set(want.blocks);
      assert.ok(written.size > 0 && written.size < blockCount, `a strict subset is written (${written.size} of ${blockCount})`);
      // Naive cross-check of the index's answer.
      const naive = new Set<number>();
      for (const r of records) if (r.op === 'write' && r.t >= q.from && r.t <= q.to) naive.add(Math.floor(r.offset / blockSize));
      assert.deepEqual([...written].sort((a, b) => a - b), [...naive].sort((a, b) => a - b));
      for (const b of all) {
        const c = colors[b];
        assert.ok(c, `block ${b} is on screen`);
        if (written.has(b)) assert.ok(!sameColor(c, empty, 12), `written block ${b} is painted (got ${c})`);
        else assert.ok(sameColor(c, empty, 12), `block ${b}, not written in the range, is not painted (got ${c})`);
      }
      // Oldest and newest differ in colour.
      const order = [...want.blocks].map((b, i) => ({ b, t: want.lastWrite[i] })).sort((x, y) => x.t - y.t);
      const oldest = colors[order[0].b]!;
      const newest = colors[order[order.length - 1].b]!;
      assert.ok(!sameColor(oldest, newest, 20), `oldest ${oldest} and newest ${newest} are told apart`);
      await h.page.screenshot({ path: path.join(RESULTS, 'webview-timeline.png') });

      // Brush-to-paint time in the page, printed (not asserted).
      const ms = await h.page.evaluate(() => new Promise<number>((resolve) => {
        const t0 = performance.now();
        const c = document.querySelector('#timeline-heatmap canvas') as HTMLCanvasElement;
        const n0 = Number(c.dataset.drawn);
        (document.querySelector('#timeline-play') as HTMLElement).click(); // start a replay: queries stream in
        const check = () => (Number(c.dataset.drawn) > n0 ? resolve(performance.now() - t0) : requestAnimationFrame(check));
        requestAnimationFrame(check);
      }));
      console.log(`      first replay frame painted ${ms.toFixed(1)} ms after Play (1,000,000 records, host answers from the index)`);
      await h.page.click('#timeline-play');

      // Click a written block: its writes in the range.
      const target = order[order.length - 1].b;
      const geo = await h.page.$eval(canvas, (c) => ({ ...(c as HTMLCanvasElement).dataset }));
      const cell = Math.floor(target / Number(geo.blocksPerCell));
      const px = Number(geo.cellPx);
      const dpr = Number(geo.dpr);
      await h.page.click(canvas, { position: { x: ((cell % Number(geo.cols)) * px + px / 2) / dpr, y: (Math.floor(cell / Number(geo.cols)) * px + px / 2 - Number(geo.scrollY)) / dpr } });
      await h.page.waitForSelector('.timeline-writes h3');
      const title = await h.page.textContent('.timeline-writes h3');
      const lastQuery = h.posted.filter((m) => m.type === 'timelineQuery').pop() as { from: number; to: number };
      assert.match(title!, new RegExp(`^Block ${target}: ${index.writesOfBlock(target, lastQuery.from, lastQuery.to).length} write`));

      // Live writes flash their blocks on the Blocks tab without a reload.
      await h.page.click('#tab-blocks');
      await h.send({ type: 'liveWrites', blocks: Uint32Array.from([1, 2, 3]), writesPerSecond: 42 });
      await h.page.waitForFunction(() => (document.querySelector('#blocks-heatmap canvas.write-flash') as HTMLElement).dataset.flashing === '3');
      assert.match((await h.page.textContent('.live-strip'))!, /42 writes\/s/);
      // The flash fades: the lit cells' opacity falls through intermediate levels to none; other cells stay clear.
      const fade = await h.page.evaluate(() => new Promise<Array<{ ms: number; lit: number[]; other: number }>>((resolve) => {
        const c = document.querySelector('#blocks-heatmap canvas.write-flash') as HTMLCanvasElement;
        const ctx = c.getContext('2d')!;
        const alphaAt = (b: number) => {
          const d = c.dataset; const px = Number(d.cellPx); const cell = Math.floor(b / Number(d.blocksPerCell));
          const x = (cell % Number(d.cols)) * px + Math.floor((px - 1) / 2);
          const y = Math.floor(cell / Number(d.cols)) * px - Number(d.scrollY) + Math.floor((px - 1) / 2);
          return ctx.getImageData(x, y, 1, 1).data[3];
        };
        const t0 = performance.now();
        const out: Array<{ ms: number; lit: number[]; other: number }> = [];
        const step = () => {
          out.push({ ms: performance.now() - t0, lit: [1, 2, 3].map(alphaAt), other: alphaAt(10) });
          if (performance.now() - t0 < 3500) setTimeout(step, 100); else resolve(out);
        };
        step();
      }));
      assert.ok(fade.every((f) => f.other === 0), 'an unwritten block is never lit');
      const lit = fade.map((f) => f.lit[1]);
      assert.ok(lit[0] > 200, `lit at first (${lit[0]})`);
      assert.equal(lit[lit.length - 1], 0, 'faded out in the end');
      const between = new Set(lit.filter((a) => a > 10 && a < 245).map((a) => Math.round(a / 25)));
      assert.ok(between.size >= 3, `fades through intermediate levels: ${lit.join(' ')}`);
      for (let i = 1; i < lit.length; i++) assert.ok(lit[i] <= lit[i - 1], `never brightens without a new write: ${lit.join(' ')}`);
      await h.page.waitForFunction(() => (document.querySelector('#blocks-heatmap canvas.write-flash') as HTMLElement).dataset.flashing === undefined);
      assert.equal(h.posted.filter((m) => m.type === 'ready').length, 1, 'no reload');
      assert.deepEqual(problems, []);
    } finally {
      stop();
      await h.close();
    }
  });
});

export type { HostMessage };
