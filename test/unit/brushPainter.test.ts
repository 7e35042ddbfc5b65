import { strict as assert } from 'assert';
import { makePalette } from '../../webview/heatmap/colors';
import { fitLayout, makeLayout, Layout } from '../../webview/heatmap/layout';
import { renderHeatmap } from '../../webview/heatmap/render';
import { BrushPainter } from '../../webview/heatmap/brush';
import { blockAges, brushBlocks } from '../../webview/timeline/logic';
import { packBrush, RANK_MAX } from '../../src/serve/traceIndex';
import { rng } from '../helpers/util';

const VARS: Record<string, string> = {
  '--vscode-editor-background': '#1e1e1e', '--vscode-editor-foreground': '#d4d4d4', '--vscode-editorWidget-background': '#252526',
  '--vscode-charts-blue': '#3794ff', '--vscode-charts-orange': '#d18616', '--vscode-charts-green': '#89d185', '--vscode-charts-red': '#f14c4c',
};
const palette = makePalette((n) => VARS[n] ?? '');

/** A brush answer: `density` of the blocks written, ascending, with last-write times in [from, to]. */
function answer(blockCount: number, density: number, seed: number, from = 10, to = 20) {
  const r = rng(seed);
  const blocks: number[] = [];
  const lastWrite: number[] = [];
  for (let b = 0; b < blockCount; b++) {
    if (r() >= density) continue;
    blocks.push(b);
    // Some exactly at the ends (age 0 and 1), the rest anywhere between.
    const x = r();
    lastWrite.push(x < 0.05 ? from : x > 0.95 ? to : from + r() * (to - from));
  }
  return { blockCount, blocks: Uint32Array.from(blocks), lastWrite: Float64Array.from(lastWrite), from, to };
}

/** The painter's input as the timeline view makes it from the host's message. */
function sparse(a: ReturnType<typeof answer>) {
  return { blockCount: a.blockCount, ...brushBlocks(a) };
}

/** The reference: renderHeatmap over every cell, each written block's age its rank / RANK_MAX (blockAges' values to within half a rank). */
function reference(l: Layout, a: ReturnType<typeof answer>): Uint32Array {
  const out = new Uint32Array(l.width * l.height);
  const n = a.blockCount;
  const { blocks, ranks } = brushBlocks(a);
  const exact = blockAges(n, a.blocks, a.lastWrite, a.from, a.to);
  const age = new Float32Array(n).fill(-1);
  for (let i = 0; i < blocks.length; i++) {
    if (blocks[i] >= n) continue;
    age[blocks[i]] = ranks[i] / RANK_MAX;
    assert.ok(Math.abs(age[blocks[i]] - exact[blocks[i]]) <= 0.5 / RANK_MAX + 1e-7, `rank of block ${blocks[i]}`);
  }
  renderHeatmap(out, l, { blockCount: n, allocated: new Uint8Array(n), fill: new Uint8Array(n), owner: new Uint16Array(n), changed: null, age }, 'timeline', palette);
  return out;
}

function assertSamePixels(got: Uint32Array, want: Uint32Array, l: Layout, what: string): void {
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) assert.fail(`${what}: pixel (${i % l.width}, ${Math.floor(i / l.width)}) is ${got[i].toString(16)}, renderHeatmap paints ${want[i].toString(16)}`);
  }
}

describe('timeline brush painter (sparse written blocks -> pixels)', () => {
  it('paints exactly what renderHeatmap paints, for 1-3 px cells, gapped cells, aggregated cells, scrolled and partial rows', () => {
    const painter = new BrushPainter();
    const cases: Array<{ l: Layout; density: number }> = [
      { l: fitLayout(1_048_576, 1400, 760), density: 0.3 }, // the 2 TiB grid: 1 px cells
      { l: fitLayout(1_048_576, 700, 400), density: 0.3 }, // aggregated: several blocks a cell
      { l: fitLayout(4_000_000, 900, 500), density: 0.02 },
      { l: makeLayout(50_000, 641, 333, 1, 2, 517), density: 0.2 }, // 2 px, scrolled mid-cell
      { l: makeLayout(50_000, 640, 300, 1, 3, 301), density: 0.5 },
      { l: makeLayout(20_000, 640, 300, 1, 5, 1234), density: 0.4 }, // gapped cells
      { l: makeLayout(129, 1000, 540, 1, 40), density: 0.5 },
      { l: makeLayout(100_003, 333, 200, 7, 1, 90), density: 0.6 }, // partial last cell
      { l: makeLayout(1000, 500, 300, 1, 1), density: 1 },
      { l: makeLayout(1000, 500, 300, 1, 1), density: 0 },
    ];
    let seed = 1;
    for (const { l, density } of cases) {
      const a = answer(l.blockCount, density, seed++);
      const out = new Uint32Array(l.width * l.height).fill(0xdeadbeef);
      assert.equal(painter.paint(out, l, sparse(a), palette), true);
      assertSamePixels(out, reference(l, a), l, `${l.blockCount} blocks, ${l.cellPx} px, ${l.blocksPerCell}/cell, scroll ${l.scrollY}, ${a.blocks.length} written`);
    }
  });

  it('reuses its empty grid across brushes and follows a palette change; an equal-time range colours every block newest', () => {
    const painter = new BrushPainter();
    const l = fitLayout(262_144, 800, 600);
    for (let s = 0; s < 3; s++) {
      const a = answer(l.blockCount, 0.1 * (s + 1), 100 + s);
      const out = new Uint32Array(l.width * l.height);
      painter.paint(out, l, sparse(a), palette);
      assertSamePixels(out, reference(l, a), l, `brush ${s}`);
    }
    const flat = { ...answer(l.blockCount, 0.05, 9, 5, 5) };
    const out = new Uint32Array(l.width * l.height);
    painter.paint(out, l, sparse(flat), palette);
    assertSamePixels(out, reference(l, flat), l, 'from = to');
    const other = makePalette((n) => ({ ...VARS, '--vscode-editor-background': '#ffffff', '--vscode-editorWidget-background': '#eeeeee' } as Record<string, string>)[n] ?? '');
    painter.paint(out, l, sparse(flat), other);
    const want = new Uint32Array(l.width * l.height);
    const n = l.blockCount;
    renderHeatmap(want, l, { blockCount: n, allocated: new Uint8Array(n), fill: new Uint8Array(n), owner: new Uint16Array(n), changed: null, age: blockAges(n, flat.blocks, flat.lastWrite, 5, 5) }, 'timeline', other);
    assertSamePixels(out, want, l, 'light theme');
    // A palette whose colours change: the colour table follows.
    const red = makePalette((n) => ({ ...VARS, '--vscode-charts-red': '#00ff00', '--vscode-charts-blue': '#ff00ff' } as Record<string, string>)[n] ?? '');
    const a = answer(l.blockCount, 0.2, 5);
    painter.paint(out, l, sparse(a), red);
    const ref = new Uint32Array(l.width * l.height);
    const age = new Float32Array(n).fill(-1);
    const s = brushBlocks(a);
    s.blocks.forEach((b, i) => { age[b] = s.ranks[i] / RANK_MAX; });
    renderHeatmap(ref, l, { blockCount: n, allocated: new Uint8Array(n), fill: new Uint8Array(n), owner: new Uint16Array(n), changed: null, age }, 'timeline', red);
    assertSamePixels(out, ref, l, 'changed colours');
  });

  it('declines unsorted blocks and ignores blocks past the grid', () => {
    const painter = new BrushPainter();
    const l = makeLayout(1000, 200, 200, 1, 4);
    const out = new Uint32Array(l.width * l.height);
    assert.equal(painter.paint(out, l, sparse({ blockCount: 1000, blocks: Uint32Array.from([5, 3]), lastWrite: Float64Array.from([1, 2]), from: 0, to: 2 }), palette), false);
    const past = { blockCount: 1000, blocks: Uint32Array.from([7, 999, 1000, 5000]), lastWrite: Float64Array.from([1, 2, 2, 2]), from: 0, to: 2 };
    assert.equal(painter.paint(out, l, sparse(past), palette), true);
    assertSamePixels(out, reference(l, { ...past }), l, 'blocks past the grid');
  });

  it('packs an answer for the wire (ranks; a bitmap when denser than 1 block in 32) and unpacks the same blocks and colours', () => {
    const painter = new BrushPainter();
    const l = fitLayout(1_048_576, 1400, 760);
    for (const density of [0.3, 0.01, 0.0001]) {
      const a = answer(l.blockCount, density, 77);
      const packed = packBrush(a, a.from, a.to, a.blockCount);
      const k = a.blocks.length;
      assert.equal(packed.ranks.length, k);
      if (k * 32 > a.blockCount) {
        assert.equal(packed.blocks.length, 0);
        assert.equal(packed.written.length, a.blockCount / 8);
      } else {
        assert.equal(packed.written.length, 0);
        assert.deepEqual(packed.blocks, a.blocks);
      }
      const got = brushBlocks({ from: a.from, to: a.to, lastWrite: new Float64Array(0), ...packed });
      assert.deepEqual([...got.blocks], [...a.blocks], `blocks at density ${density}`);
      assert.deepEqual([...got.ranks], [...brushBlocks(a).ranks], 'the same ranks as the full form gives');
      // Painted from the packed form: renderHeatmap's picture of those ages.
      const out = new Uint32Array(l.width * l.height);
      assert.equal(painter.paint(out, l, { blockCount: l.blockCount, ...got }, palette), true);
      const age = new Float32Array(l.blockCount).fill(-1);
      got.blocks.forEach((b, i) => { age[b] = got.ranks[i] / RANK_MAX; });
      const want = new Uint32Array(l.width * l.height);
      const n = l.blockCount;
      renderHeatmap(want, l, { blockCount: n, allocated: new Uint8Array(n), fill: new Uint8Array(n), owner: new Uint16Array(n), changed: null, age }, 'timeline', palette);
      assertSamePixels(out, want, l, `packed, density ${density}`);
    }
    // The ends of the range and an empty range.
    const ends = packBrush({ blocks: Uint32Array.from([1, 2, 3]), lastWrite: Float64Array.from([10, 15, 20]) }, 10, 20, 4);
    assert.deepEqual([...ends.ranks], [0, Math.round(RANK_MAX / 2), RANK_MAX]);
    assert.deepEqual([...ends.written], [0b1110]);
    assert.deepEqual([...packBrush({ blocks: Uint32Array.from([5]), lastWrite: Float64Array.from([3]) }, 3, 3, 10).ranks], [RANK_MAX]);
    assert.throws(() => brushBlocks({ from: 0, to: 1, blocks: new Uint32Array(0), lastWrite: [], ranks: new Uint16Array(2), written: Uint8Array.from([1]) }), /1 written blocks in the bitmap, 2 ranks/);
  });
});
