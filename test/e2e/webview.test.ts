import { strict as assert } from 'assert';
import * as path from 'path';
import { pathToFileURL } from 'url';
import type { Browser } from 'playwright-core';
import { mkdirSync, rmSync } from 'fs';
import { Chain, openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/vhd/create';
import { buildBlockData, buildImageModel } from '../../src/extension/model';
import { BlockData, ImageModel } from '../../src/protocol';
import { hasChromium, launchChromium, RESULTS } from '../helpers/browser';
import { parseHex, sameColor, sampleBlocks } from '../helpers/canvasProbe';
import { READABILITY_JS, Readability, readabilityProblems } from '../helpers/contrast';
import { openWebview, THEMES, Theme } from '../helpers/webviewHarness';
import { ROOT, tempDir } from '../helpers/util';

function rgbOf(hex: string): string {
  const n = parseInt(hex.slice(1, 7), 16);
  return `rgb(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255})`;
}

async function until(fn: () => boolean, ms = 5000): Promise<void> {
  const start = Date.now();
  while (!fn()) {
    if (Date.now() - start > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('editor webview in Chromium (real HTML, CSP and bundle; host model from src/extension/model.ts)', function () {
  this.timeout(120000);
  let browser: Browser;
  let chain: Chain;
  let model: ImageModel;
  let blocks: BlockData;
  const t = tempDir('webview-');

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

  it('shows image-supplied strings (names, paths, creator, warnings, partition names) as text, never as HTML', async () => {
    const evil = (tag: string) => `<img src=x onerror="window.__pwned='${tag}'"><script>window.__pwned='${tag}'</script>`;
    const m: ImageModel = JSON.parse(JSON.stringify(model));
    m.overview.fileName = `${evil('name')}.vhd`;
    m.overview.creator = `"><svg onload="window.__pwned='creator'">`;
    m.overview.warnings = [evil('warning')];
    m.overview.chain = m.overview.chain.map((c) => `${evil('chain')}${c}`);
    m.chain = m.chain.map((l) => ({ ...l, fileName: evil('layer'), path: evil('path'), parentName: evil('parent') }));
    m.header.fields = m.header.fields.map((f) => ({ ...f, decoded: evil('field') }));
    m.partitions.list = m.partitions.list.map((p) => ({ ...p, name: evil('partition'), typeName: evil('type') }));
    const problems: string[] = [];
    const h = await openWebview(browser, { model: m, blocks, chain, problems });
    try {
      await h.page.waitForSelector('#ov-type');
      for (const tab of ['#tab-header', '#tab-blocks', '#tab-chain']) { await h.page.click(tab); await h.page.waitForTimeout(150); }
      assert.equal(await h.page.evaluate(() => (window as any).__pwned), undefined);
      assert.equal(await h.page.evaluate(() => document.querySelectorAll('#app img, #app svg, #app script, #app iframe, #app object').length), 0);
      assert.ok((await h.page.textContent('.file-name'))!.includes('<img src=x onerror='), 'the name is shown literally');
      assert.ok((await h.page.textContent('#partitions'))!.includes('<script>'), 'partition names are shown literally');
      assert.ok((await h.page.textContent('#header-fields'))!.includes('<img'));
      assert.deepEqual(problems, []);
      await h.page.click('#tab-overview');
      // Back on the overview, its map is drawn again at full size.
      await h.page.waitForFunction(() => (document.querySelector('.overview canvas') as HTMLCanvasElement).width > 100);
      await h.page.waitForTimeout(300);
      await h.page.screenshot({ path: path.join(RESULTS, 'webview-hostile-strings.png') });
    } finally {
      await h.close();
    }
  });

  it('an image that cannot be opened: the host\'s error (file, structure, offset) replaces "Reading image…", nothing else is drawn', async () => {
    const problems: string[] = [];
    const message = 'The image could not be opened: /x/bad.vhd: footer at offset 0x3fe00: bad checksum';
    const h = await openWebview(browser, { model, blocks, problems, openError: message });
    try {
      await h.page.waitForSelector('#app .status.problem');
      assert.equal(await h.page.textContent('#app .status.problem'), message);
      assert.equal(await h.page.$('#app .loading'), null, '"Reading image…" is gone');
      assert.equal(await h.page.getAttribute('#app', 'aria-busy'), null);
      assert.equal(await h.page.$('.overview canvas[data-drawn]'), null, 'no heatmap drawn');
      assert.deepEqual(problems, []);
    } finally {
      await h.close();
    }
  });

  it('shows a broken link as such and offers Re-link Parent…, which asks the host to run the command', async () => {
    const dir = path.join(t.dir, 'broken');
    mkdirSync(dir, { recursive: true });
    await createImage(path.join(dir, 'base.vhd'), { size: 16 * 1024 * 1024, exactSize: true });
    await createChild(path.join(dir, 'base.vhd'), path.join(dir, 'child1.vhd'));
    rmSync(path.join(dir, 'base.vhd'));
    const broken = await openChain(path.join(dir, 'child1.vhd'), { tolerant: true });
    try {
      const m = await buildImageModel(broken, true);
      const b = await buildBlockData(broken);
      assert.equal(m.overview.chainComplete, false);
      const h = await openWebview(browser, { model: m, blocks: b, chain: broken });
      try {
        await h.page.waitForSelector('#ov-type');
        assert.match((await h.page.textContent('.overview'))!, /chain is broken/);
        await h.page.click('#tab-chain');
        await h.page.waitForSelector('#chain-grid');
        assert.match((await h.page.textContent('#chain-grid'))!, /BROKEN: .*not found/);
        await h.page.click('.problem-box vscode-button');
        await until(() => h.posted.some((p) => p.type === 'runCommand' && p.command === 'relinkParent'));
        await h.page.screenshot({ path: path.join(RESULTS, 'webview-broken-chain.png') });
      } finally {
        await h.close();
      }
    } finally {
      await broken.close();
    }
  });

  it('handles 1,048,576 blocks: aggregated cells, zoom in, go to the last LBA, hover details', async () => {
    const dir = path.join(t.dir, 'huge');
    mkdirSync(dir, { recursive: true });
    const p = path.join(dir, 'huge.vhd');
    await createImage(p, { size: 2 * 1024 * 1024 * 1024 * 1024, exactSize: true });
    const w = await openChain(p, { writable: true });
    await w.write(1_048_575 * 2 * 1024 * 1024, Buffer.alloc(512, 7));
    await w.close();
    const huge = await openChain(p);
    try {
      const m = await buildImageModel(huge, true);
      const b = await buildBlockData(huge);
      const h = await openWebview(browser, { model: m, blocks: b, chain: huge });
      try {
        await h.page.waitForSelector('#ov-type');
        await h.page.click('#tab-blocks');
        const canvas = '#blocks-heatmap canvas';
        await h.page.waitForFunction((s) => Number((document.querySelector(s) as HTMLElement)?.dataset.drawn) > 0, canvas);
        const geo = async () => h.page.$eval(canvas, (c: HTMLCanvasElement) => ({ bpc: Number(c.dataset.blocksPerCell), px: Number(c.dataset.cellPx) }));
        const fitted = await geo();
        assert.ok(fitted.bpc > 1, `aggregated when zoomed out (${fitted.bpc} blocks per cell)`);
        for (let i = 0; i < 3; i++) await h.page.click('vscode-button[title="Zoom in"]');
        await h.page.waitForTimeout(100);
        const zoomed = await geo();
        assert.ok(zoomed.bpc < fitted.bpc || zoomed.px > fitted.px, 'zoomed in');
        await h.page.evaluate(() => {
          const f = document.querySelector('#goto') as HTMLElement & { value: string };
          f.value = String(1_048_575 * 4096 + 1);
          f.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
        });
        await h.page.waitForSelector('.block-detail h3');
        assert.match((await h.page.textContent('.block-detail h3'))!, /^Block 1,048,575:/);
        // The selected block was scrolled into view: hovering its cell describes it.
        const pos = await h.page.$eval(canvas, (c: HTMLCanvasElement) => {
          const d = c.dataset; const bpc = Number(d.blocksPerCell); const px = Number(d.cellPx); const cols = Number(d.cols);
          const cell = Math.floor(1_048_575 / bpc);
          return { x: ((cell % cols) * px + px / 2) / Number(d.dpr), y: (Math.floor(cell / cols) * px - Number(d.scrollY) + px / 2) / Number(d.dpr), h: c.height };
        });
        assert.ok(pos.y >= 0 && pos.y < pos.h, 'the selected block is on screen');
        await h.page.hover(canvas, { position: { x: pos.x, y: pos.y } });
        await h.page.waitForFunction(() => /Block 1,048,\d{3}/.test(document.querySelector('.hover-line')!.textContent!));
        assert.match((await h.page.textContent('.hover-line'))!, /owner 0: huge\.vhd at file offset/);
        await h.page.screenshot({ path: path.join(RESULTS, 'webview-2tib-blocks.png') });
      } finally {
        await h.close();
      }
    } finally {
      await huge.close();
    }
  });

  /** Every visible text readable on its background; the toolkit's controls in the theme's colours. */
  async function assertReadable(page: import('playwright-core').Page, theme: Theme, view: string): Promise<void> {
    const r = await page.evaluate(READABILITY_JS) as Readability;
    assert.deepEqual(readabilityProblems(r), [], `${view} in the ${theme} theme`);
    assert.ok(r.controls.length > 0, `${view}: the toolkit's controls were checked`);
    // The harness's theme colours, as the page resolved them.
    assert.ok(r.theme.buttons.includes(rgbOf(THEMES[theme]['--vscode-button-secondaryBackground'])));
  }

  for (const theme of ['dark', 'light', 'high-contrast'] as Theme[]) {
    it(`shows every view in the ${theme} theme, heatmap painted exactly where blocks are allocated`, async () => {
      const problems: string[] = [];
      const h = await openWebview(browser, { model, blocks, chain, theme, problems });
      const { page } = h;
      try {
        await page.waitForSelector('#ov-type');
        assert.equal(await page.textContent('#ov-type'), 'differencing');
        assert.equal(await page.textContent('#ov-uuid'), chain.top.uuid);
        assert.deepEqual(await page.$$eval('#ov-chain li', (l) => l.map((x) => x.textContent)), ['child2.vhd (this image)', 'child1.vhd', 'base.vhd']);
        await page.waitForFunction(() => Number((document.querySelector('.overview canvas') as HTMLElement)?.dataset.drawn) > 0);
        await page.screenshot({ path: path.join(RESULTS, `webview-${theme}-overview.png`) });
        // The toolkit (second bundle) arrives after the page's load event: it must still take the theme.
        await page.waitForFunction(() => customElements.get('vscode-button') !== undefined);
        await page.waitForTimeout(50);
        await assertReadable(page, theme, 'overview');

        await page.click('#tab-header');
        await page.waitForSelector('#header-fields');
        assert.ok((await page.textContent('#header-fields'))!.includes('conectix'));
        await page.screenshot({ path: path.join(RESULTS, `webview-${theme}-header.png`), fullPage: true });

        await page.click('#tab-chain');
        await page.waitForSelector('#chain-grid');
        await page.screenshot({ path: path.join(RESULTS, `webview-${theme}-chain.png`) });

        await page.click('#tab-blocks');
        const canvas = '#blocks-heatmap canvas';
        await page.waitForFunction((s) => Number((document.querySelector(s) as HTMLElement)?.dataset.drawn) > 0, canvas);
        // Mode "allocated in this image": painted cells are exactly the top image's allocated blocks.
        await page.evaluate(() => {
          const d = document.querySelector('#heatmap-mode') as HTMLElement & { value: string };
          d.value = 'allocated';
          d.dispatchEvent(new Event('change'));
        });
        await page.waitForFunction((s) => (document.querySelector(s) as HTMLElement).dataset.mode === 'allocated', canvas);
        await page.waitForTimeout(100);
        await assertReadable(page, theme, 'blocks');
        const all = Array.from({ length: blocks.blockCount }, (_, i) => i);
        const colors = await sampleBlocks(page, canvas, all);
        const vars = THEMES[theme];
        const empty = parseHex(vars['--vscode-editorWidget-background']);
        const background = parseHex(vars['--vscode-editor-background']);
        let painted = 0;
        for (const b of all) {
          const c = colors[b];
          assert.ok(c, `block ${b} is on screen`);
          if (blocks.allocated[b]) {
            painted++;
            assert.ok(!sameColor(c, empty) && !sameColor(c, background), `allocated block ${b} is painted (got ${c})`);
          } else {
            assert.ok(sameColor(c, empty, 12), `unallocated block ${b} is not painted (got ${c}, empty ${empty})`);
          }
        }
        assert.ok(painted > 5);
        // Click an allocated block: sector map and a side-by-side hex view with the winning layer marked.
        const target = all.find((b) => blocks.allocated[b] && blocks.owner[b] === 0)!;
        const box = (await page.$(canvas))!;
        const geo = await box.evaluate((c: HTMLCanvasElement) => ({ ...c.dataset }));
        const cell = Math.floor(target / Number(geo.blocksPerCell));
        const dpr = Number(geo.dpr);
        const px = Number(geo.cellPx);
        await box.click({ position: { x: ((cell % Number(geo.cols)) * px + px / 2) / dpr, y: (Math.floor(cell / Number(geo.cols)) * px + px / 2 - Number(geo.scrollY)) / dpr } });
        await page.waitForSelector('#sector-map');
        await page.fill('#goto input', '').catch(() => undefined);
        await page.evaluate((lba) => {
          const f = document.querySelector('#goto') as HTMLElement & { value: string };
          f.value = String(lba);
          f.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', bubbles: true }));
        }, Math.floor((20 * 1048576 + 777) / 512));
        await page.waitForSelector('.hex-col.winner');
        assert.match((await page.textContent('.hex-head.winner'))!, /child2\.vhd/);
        await page.screenshot({ path: path.join(RESULTS, `webview-${theme}-blocks.png`), fullPage: true });
        assert.deepEqual(problems, []);
      } finally {
        await h.close();
      }
    });
  }
});
