import { strict as assert } from 'assert';
import { changedBlocks, parseWebviewMessage } from '../../src/protocol';
import { makePalette, mix, over, pack, parseColor } from '../../webview/heatmap/colors';
import { blockAt, blockRanges, cellOrigin, contentHeight, fitLayout, makeLayout, reveal, zoom } from '../../webview/heatmap/layout';
import { cellColor, cellOwners, HeatmapData, NO_OWNER, rangeSegments, renderHeatmap } from '../../webview/heatmap/render';
import { formatBytes, formatInt, hexDump, locate, parseNumber, percent } from '../../webview/format';
import { rng } from '../helpers/util';

const VARS: Record<string, string> = {
  '--vscode-editor-background': '#1e1e1e', '--vscode-editor-foreground': '#d4d4d4', '--vscode-editorWidget-background': '#252526',
  '--vscode-charts-blue': '#3794ff', '--vscode-charts-orange': '#d18616', '--vscode-charts-green': '#89d185', '--vscode-charts-red': '#f14c4c',
  '--vscode-charts-yellow': '#cca700', '--vscode-focusBorder': '#007fd4', '--vscode-terminal-ansiCyan': '#11a8cd',
};
const palette = makePalette((n) => VARS[n] ?? '');

function data(n: number, allocatedEvery = 3): HeatmapData {
  const allocated = new Uint8Array(n);
  const fill = new Uint8Array(n);
  const owner = new Uint16Array(n).fill(NO_OWNER);
  for (let i = 0; i < n; i += allocatedEvery) { allocated[i] = 1; fill[i] = 255; owner[i] = 0; }
  return { blockCount: n, allocated, fill, owner, changed: null };
}

describe('webview logic: heatmap layout and hit testing', () => {
  it('fits small maps with large square cells and no aggregation', () => {
    const l = fitLayout(129, 1000, 540);
    assert.equal(l.blocksPerCell, 1);
    assert.ok(l.cellPx >= 20 && l.cellPx <= 40, String(l.cellPx));
    assert.ok(contentHeight(l) <= 540);
  });

  it('aggregates 1,048,576 blocks into about one cell per pixel and still fits', () => {
    const l = fitLayout(1_048_576, 1200, 600);
    assert.equal(l.cellPx, 1);
    assert.equal(l.blocksPerCell, 2);
    assert.equal(l.cols, 1200);
    assert.ok(contentHeight(l) <= 600);
  });

  it('hit testing inverts cell placement for every block, at any zoom and scroll', () => {
    const r = rng(3);
    for (const [n, bpc, px] of [[129, 1, 33], [5000, 1, 7], [1_048_576, 4, 1], [1_048_576, 1, 3]] as const) {
      const l = makeLayout(n, 800, 400, bpc, px, Math.floor(r() * 100000));
      for (let k = 0; k < 300; k++) {
        const b = Math.floor(r() * n);
        const o = cellOrigin(l, b);
        if (o.y < 0 || o.y >= l.height) continue;
        const hit = blockAt(l, o.x + Math.floor(px / 2), o.y + Math.floor(px / 2));
        assert.equal(hit, Math.floor(b / bpc) * bpc, `n=${n} bpc=${bpc} px=${px} block ${b}`);
      }
    }
    const l = makeLayout(10, 100, 100, 1, 10);
    assert.equal(blockAt(l, 5, 15), null, 'past the last block');
    assert.equal(blockAt(l, -1, 0), null);
    assert.equal(blockAt(l, 100, 0), null, 'right of the last column');
  });

  it('zooming keeps the block under the cursor under the cursor', () => {
    let l = fitLayout(1_048_576, 1000, 500);
    const x = 400; const y = 250;
    for (let i = 0; i < 8; i++) {
      const anchor = blockAt(l, x, y)!;
      l = zoom(l, true, x, y);
      const o = cellOrigin(l, anchor);
      assert.ok(o.y <= y && y < o.y + l.cellPx, `the anchor's row stays under the cursor (zoom step ${i})`);
    }
    assert.equal(l.blocksPerCell, 1);
    assert.ok(l.cellPx > 1);
    const out = zoom(zoom(l, false, x, y), false, x, y);
    assert.ok(out.cellPx < l.cellPx || out.blocksPerCell > l.blocksPerCell);
  });

  it('reveal scrolls a block into view; block ranges give LBAs and bytes', () => {
    const l = makeLayout(1_000_000, 500, 200, 1, 4);
    const r = reveal(l, 999_999);
    const o = cellOrigin(r, 999_999);
    assert.ok(o.y >= 0 && o.y < 200);
    assert.deepEqual(blockRanges(3, 2 * 1048576, 7 * 1048576), { firstLba: 12288, lastLba: 14335, start: 6291456, end: 7340032 });
    assert.deepEqual(blockRanges(3, 2 * 1048576, 7 * 1048576 - 512), { firstLba: 12288, lastLba: 14334, start: 6291456, end: 7339520 });
  });

  it('range segments cover exactly the cells of a block range, row by row', () => {
    const l = makeLayout(100, 100, 100, 1, 10);
    assert.deepEqual(rangeSegments(l, 5, 25), [{ x: 50, y: 0, w: 50 }, { x: 0, y: 10, w: 100 }, { x: 0, y: 20, w: 50 }]);
    assert.deepEqual(rangeSegments(l, 7, 7), []);
  });
});

describe('webview logic: colours and painting', () => {
  it('parses theme colour syntaxes and composites alpha over the background', () => {
    assert.deepEqual(parseColor('#fff'), { r: 255, g: 255, b: 255, a: 1 });
    assert.deepEqual(parseColor('#11223380'), { r: 0x11, g: 0x22, b: 0x33, a: 0x80 / 255 });
    assert.deepEqual(parseColor(' rgba(10, 20, 30, 0.5) '), { r: 10, g: 20, b: 30, a: 0.5 });
    assert.deepEqual(parseColor('rgb(1 2 3)'), { r: 1, g: 2, b: 3, a: 1 });
    assert.equal(parseColor('var(--x)'), null);
    assert.deepEqual(over({ r: 255, g: 0, b: 0, a: 0.5 }, { r: 0, g: 0, b: 255, a: 1 }), { r: 128, g: 0, b: 128, a: 1 });
    assert.deepEqual(mix({ r: 0, g: 0, b: 0, a: 1 }, { r: 200, g: 100, b: 50, a: 1 }, 0.5), { r: 100, g: 50, b: 25, a: 1 });
    assert.equal(pack({ r: 1, g: 2, b: 3, a: 1 }), 0xff030201);
  });

  it('builds the palette from --vscode-* variables only, and keeps empty cells visible on any background', () => {
    assert.deepEqual(palette.allocated, { r: 0x37, g: 0x94, b: 0xff, a: 1 });
    assert.deepEqual(palette.owners.slice(0, 3).map((c) => c.r), [0x37, 0xd1, 0x89]);
    const hc = makePalette((n) => ({ '--vscode-editor-background': '#000000', '--vscode-editor-foreground': '#ffffff', '--vscode-editorWidget-background': '#000000' } as Record<string, string>)[n] ?? '');
    assert.notDeepEqual(hc.empty, hc.background, 'empty cells differ from the background even when the theme makes them equal');
  });

  it('colours cells by mode: allocated, fill, owner, changed; aggregates by fraction and topmost owner', () => {
    const d = data(8, 1);
    d.allocated.set([1, 0, 1, 1, 0, 0, 0, 0]);
    d.fill.set([255, 0, 10, 0, 0, 0, 0, 0]);
    d.owner.set([2, NO_OWNER, 1, 0, NO_OWNER, NO_OWNER, NO_OWNER, NO_OWNER]);
    const empty = pack(palette.empty);
    assert.equal(cellColor(d, 'allocated', 4, 8, palette), empty);
    assert.equal(cellColor(d, 'allocated', 0, 1, palette), pack(palette.allocated));
    assert.notEqual(cellColor(d, 'allocated', 0, 2, palette), cellColor(d, 'allocated', 0, 1, palette), 'half-allocated cell is dimmer');
    assert.notEqual(cellColor(d, 'fill', 3, 4, palette), empty, 'allocated with no sectors is still marked');
    assert.notEqual(cellColor(d, 'fill', 2, 3, palette), cellColor(d, 'fill', 0, 1, palette));
    assert.equal(cellColor(d, 'owner', 0, 4, palette), pack(palette.owners[0]), 'topmost owner wins an aggregated cell');
    assert.equal(cellColor(d, 'owner', 1, 3, palette), pack(palette.owners[1]));
    assert.equal(cellColor(d, 'changed', 0, 8, palette), empty, 'no diff yet');
    d.changed = new Uint8Array(8); d.changed[5] = 1;
    assert.equal(cellColor(d, 'changed', 4, 6, palette), pack(palette.changed));
  });

  it('paints allocated cells and only them, with gaps between large cells, and flashes marked blocks', () => {
    const d = data(28, 3);
    const l = makeLayout(28, 60, 50, 1, 10);
    const out = new Uint32Array(60 * 50);
    renderHeatmap(out, l, d, 'allocated', palette);
    const at = (x: number, y: number) => out[y * 60 + x];
    for (let b = 0; b < 28; b++) {
      const o = cellOrigin(l, b);
      assert.equal(at(o.x + 4, o.y + 4), pack(d.allocated[b] ? palette.allocated : palette.empty), `block ${b}`);
      assert.equal(at(o.x + 9, o.y + 4), pack(palette.background), 'gap column');
    }
    assert.equal(at(44, 44), pack(palette.background), 'past the last block');
    const flash = new Uint8Array(28); flash[1] = 1;
    renderHeatmap(out, l, d, 'allocated', palette, flash);
    assert.equal(at(cellOrigin(l, 1).x + 4, 4), pack(palette.flash));
  });

  it('gives a lone painted cell under 3 px a 3x3 mark so sparse data stays visible', () => {
    const d = data(10_000, 100_000);
    d.allocated[0] = 0; d.owner[0] = NO_OWNER; d.fill[0] = 0;
    d.allocated[5050] = 1; d.owner[5050] = 0;
    const l = makeLayout(10_000, 100, 100, 1, 1);
    const out = new Uint32Array(100 * 100);
    renderHeatmap(out, l, d, 'allocated', palette);
    const c = pack(palette.allocated);
    for (const [x, y] of [[49, 49], [50, 50], [51, 51], [49, 51]]) assert.equal(out[y * 100 + x], c, `${x},${y}`);
    assert.equal(out[50 * 100 + 53], pack(palette.empty));
    assert.equal(out.filter((v) => v === c).length, 9);
  });

  it('paints 1,048,576 blocks into a 1200x600 canvas without hanging', () => {
    const d = data(1_048_576, 7);
    const l = fitLayout(d.blockCount, 1200, 600);
    const out = new Uint32Array(1200 * 600);
    const t = Date.now();
    renderHeatmap(out, l, d, 'owner', palette);
    // A hang guard only (about 10x a quiet machine's figure).
    assert.ok(Date.now() - t < 5000, `${Date.now() - t} ms`);
    assert.equal(out[0], pack(palette.owners[0]), 'cell 0 holds block 0 (owned)');
  });

  it('owner mode through per-layer searches paints exactly what the per-block loop paints', () => {
    const r = rng(15);
    for (const [n, owned, w, h, scroll] of [[1_048_576, 40, 700, 260, 0], [100_000, 3000, 300, 200, 0], [5000, 4000, 120, 90, 30], [777, 5, 64, 64, 0]]) {
      const layers = 4;
      const owner = new Uint16Array(n).fill(NO_OWNER);
      // Some owned blocks held as zeros (qcow2 zero clusters): such cells take the "zero" colour.
      const zero = new Uint8Array(n);
      for (let k = 0; k < owned; k++) {
        const i = Math.floor(r() * n);
        owner[i] = Math.floor(r() * layers);
        if (r() < 0.3) zero[i] = 1;
      }
      const plain: HeatmapData = { blockCount: n, allocated: new Uint8Array(0), fill: new Uint8Array(0), owner, zero, changed: null };
      const searched: HeatmapData = { ...plain, layerCount: layers };
      const fit = fitLayout(n, w, h, 24);
      const l = makeLayout(n, w, h, fit.blocksPerCell, fit.cellPx, scroll);
      const a = new Uint32Array(w * h);
      const b = new Uint32Array(w * h);
      renderHeatmap(a, l, plain, 'owner', palette);
      renderHeatmap(b, l, searched, 'owner', palette);
      assert.deepEqual(b, a, `${n} blocks, ${owned} owned`);
      // Each cell's searched owner is the lowest layer among its blocks.
      const found = cellOwners(searched, l.blocksPerCell, 0, Math.ceil(n / l.blocksPerCell));
      if (found) {
        const owned: number[] = [];
        for (let c = 0; c < found.owners.length; c++) {
          let best = NO_OWNER;
          for (let i = c * l.blocksPerCell; i < Math.min(n, (c + 1) * l.blocksPerCell); i++) best = Math.min(best, owner[i]);
          assert.equal(found.owners[c], best, `cell ${c}`);
          if (best !== NO_OWNER) owned.push(c);
        }
        assert.deepEqual(found.owned, owned);
      }
    }
    // A dense map is left to the plain loop, as is one whose layer count is not known.
    const dense = data(10_000, 1);
    assert.equal(cellOwners({ ...dense, layerCount: 1 }, 1, 0, 10_000), null);
    assert.equal(cellOwners(dense, 1, 0, 10_000), null);
  });
});

describe('webview logic: formatting, go-to and protocol handling', () => {
  it('groups integers as en-US does', () => {
    for (const n of [0, 7, 999, 1000, -1000, 65_536, 1_048_576, 2_097_152, 33_554_432, -123_456_789, 2 ** 41, Number.MAX_SAFE_INTEGER]) {
      assert.equal(formatInt(n), n.toLocaleString('en-US'), String(n));
    }
    assert.equal(formatInt(1234.5), (1234.5).toLocaleString('en-US'));
  });

  it('parses numbers and locates LBAs and offsets', () => {
    assert.equal(parseNumber('0x200'), 512);
    assert.equal(parseNumber('2M'), 2 * 1048576);
    assert.equal(parseNumber('1_000'), 1000);
    assert.equal(parseNumber('-1'), null);
    assert.equal(parseNumber('abc'), null);
    assert.deepEqual(locate('lba', '4096', 2 * 1048576, 10 * 1048576), { block: 1, sector: 4096 });
    assert.deepEqual(locate('offset', '0x400001', 2 * 1048576, 10 * 1048576), { block: 2, sector: 8192 });
    assert.match(locate('lba', '999999', 2 * 1048576, 10 * 1048576) as string, /past the end/);
    assert.match(locate('offset', 'zz', 2 * 1048576, 10 * 1048576) as string, /not a number/);
  });

  it('formats bytes, percentages and hex dumps', () => {
    assert.equal(formatBytes(2 * 1024 ** 4), '2.00 TiB');
    assert.equal(percent(1, 3), '33%');
    assert.equal(percent(1, 1000), '0.1%');
    const lines = hexDump(Uint8Array.from([0x41, 0x00, 0xff, ...new Array(16).fill(0x42)]));
    assert.equal(lines.length, 2);
    assert.ok(lines[0].startsWith('000: 41 00 ff 42'));
    assert.ok(lines[0].endsWith('A..BBBBBBBBBBBBB'));
  });

  it('accepts only well-formed webview messages', () => {
    assert.deepEqual(parseWebviewMessage({ type: 'ready' }), { type: 'ready' });
    assert.deepEqual(parseWebviewMessage({ type: 'requestBlock', requestId: 3, block: 7 }), { type: 'requestBlock', requestId: 3, block: 7 });
    assert.equal(parseWebviewMessage({ type: 'requestBlock', requestId: 3, block: -1 }), null);
    assert.equal(parseWebviewMessage({ type: 'requestSector', requestId: 1, sector: 1.5 }), null);
    assert.equal(parseWebviewMessage({ type: 'runCommand', command: 'workbench.action.terminal.new' }), null);
    assert.deepEqual(parseWebviewMessage({ type: 'runCommand', command: 'relinkParent' }), { type: 'runCommand', command: 'relinkParent' });
    assert.equal(parseWebviewMessage({ type: 'copyText', text: 5 }), null);
    assert.deepEqual(parseWebviewMessage({ type: 'requestDiffSector', requestId: 2, sector: 40961 }), { type: 'requestDiffSector', requestId: 2, sector: 40961 });
    assert.equal(parseWebviewMessage({ type: 'requestDiffSector', requestId: 2 }), null);
    assert.equal(parseWebviewMessage('ready'), null);
    assert.equal(parseWebviewMessage(null), null);
    assert.equal(parseWebviewMessage({ type: '__proto__' }), null);
  });

  it('finds the blocks that changed between two block maps', () => {
    const a = { blockCount: 5, blockSize: 512, sectorsPerBlock: 1, layerCount: 1, allocated: new Uint8Array(5), fill: new Uint8Array(5), owner: new Uint16Array(5).fill(NO_OWNER), ownerSector: new Uint32Array(5).fill(0xffffffff) };
    const b = { ...a, allocated: Uint8Array.from([0, 1, 0, 0, 0]), fill: Uint8Array.from([0, 255, 0, 0, 9]), owner: Uint16Array.from([NO_OWNER, 0, NO_OWNER, NO_OWNER, NO_OWNER]) };
    assert.deepEqual([...changedBlocks(a, b)], [1, 4]);
    assert.deepEqual([...changedBlocks(a, { ...b, blockCount: 6 })], []);
    assert.deepEqual([...changedBlocks(b, { ...b, ownerSector: Uint32Array.from([0xffffffff, 7, 0xffffffff, 0xffffffff, 0xffffffff]) })], [1], 'a block that moved');
  });
});
