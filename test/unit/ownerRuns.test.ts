import { strict as assert } from 'assert';
import * as path from 'path';
import { NO_OWNER } from '../../src/chain/blockMap';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/vhd/create';
import { buildBlockData, firstBlocks, ownerRuns } from '../../src/extension/model';
import { BlockData } from '../../src/protocol';
import { makePalette } from '../../webview/heatmap/colors';
import { fitLayout, makeLayout } from '../../webview/heatmap/layout';
import { HeatmapData, renderHeatmap } from '../../webview/heatmap/render';
import { rng, tempDir } from '../helpers/util';

const MiB = 1024 * 1024;

/** The format's meaning, written out plainly: each run's blocks get its owner, and its zero flag. */
function ownersFromRuns(blockCount: number, runs: Uint32Array): { owner: Uint16Array; zero?: Uint8Array } {
  const owner = new Uint16Array(blockCount).fill(NO_OWNER);
  const zero = new Uint8Array(blockCount);
  for (let k = 0; k < runs.length; k += 3) {
    for (let i = runs[k]; i < runs[k + 1]; i++) { owner[i] = runs[k + 2] & 0xffff; zero[i] = runs[k + 2] >>> 16; }
  }
  return { owner, zero };
}

const VARS: Record<string, string> = {
  '--vscode-editor-background': '#1e1e1e', '--vscode-editor-foreground': '#d4d4d4', '--vscode-editorWidget-background': '#252526',
  '--vscode-charts-blue': '#3794ff', '--vscode-charts-orange': '#d18616', '--vscode-charts-green': '#89d185', '--vscode-charts-red': '#f14c4c',
  '--vscode-charts-yellow': '#cca700', '--vscode-focusBorder': '#007fd4', '--vscode-terminal-ansiCyan': '#11a8cd',
};
const palette = makePalette((n) => VARS[n] ?? '');

/** A map of `n` blocks over `layers` layers: stretches of one owner (or none) of random length, some zero. */
function randomMap(n: number, layers: number, meanRun: number, seed: number, withZero: boolean): { owner: Uint16Array; zero: Uint8Array | null } {
  const r = rng(seed);
  const owner = new Uint16Array(n).fill(NO_OWNER);
  const zero = withZero ? new Uint8Array(n) : null;
  for (let i = 0; i < n;) {
    const len = 1 + Math.floor(r() * meanRun * 2);
    const o = r() < 0.5 ? NO_OWNER : Math.floor(r() * layers);
    const z = zero && o !== NO_OWNER && r() < 0.3 ? 1 : 0;
    owner.fill(o, i, Math.min(n, i + len));
    if (zero && z) zero.fill(1, i, Math.min(n, i + len));
    i += len;
  }
  return { owner, zero };
}

function assertSameMap(got: { owner: Uint16Array; zero?: Uint8Array }, want: { owner: Uint16Array; zero: Uint8Array | null }): void {
  assert.equal(got.owner.length, want.owner.length);
  for (let i = 0; i < want.owner.length; i++) {
    if (got.owner[i] !== want.owner[i]) assert.fail(`owner of block ${i}: ${got.owner[i]}, expected ${want.owner[i]}`);
    // Zero flags matter only for owned blocks (the heatmap ignores them elsewhere).
    const wz = want.owner[i] !== NO_OWNER && want.zero ? want.zero[i] : 0;
    const gz = got.zero ? got.zero[i] : 0;
    if (gz !== wz) assert.fail(`zero flag of block ${i}: ${gz}, expected ${wz}`);
  }
}

describe('first message: the owner map as runs (firstBlocks / ownersFromRuns)', () => {
  it('round-trips random maps of 1 to 5 layers, with and without zero flags, short and long runs', () => {
    let seed = 1;
    for (const n of [1, 7, 4096, 100_003]) {
      for (const layers of [1, 2, 5]) {
        for (const meanRun of [1, 9, 500]) {
          for (const withZero of [false, true]) {
            const want = randomMap(n, layers, meanRun, seed++, withZero);
            const runs = ownerRuns(want.owner, want.zero, layers, n);
            assert.ok(runs, 'a budget of one run per block always suffices');
            assert.equal(runs!.length % 3, 0);
            assertSameMap(ownersFromRuns(n, runs!), want);
          }
        }
      }
    }
  });

  it('owner mode drawn from the runs alone is pixel-identical to the drawing from the full arrays (aggregated, gapped, scrolled layouts)', () => {
    let seed = 100;
    for (const n of [5, 777, 100_000, 1_048_576]) {
      for (const layers of [1, 3]) {
        for (const meanRun of [1, 40, 20_000]) {
          const want = randomMap(n, layers, meanRun, seed++, true);
          const runs = ownerRuns(want.owner, want.zero, layers, n);
          const full: HeatmapData = { blockCount: n, allocated: new Uint8Array(0), fill: new Uint8Array(0), owner: want.owner, zero: want.zero, changed: null, layerCount: layers };
          const first: HeatmapData = { blockCount: n, allocated: new Uint8Array(0), fill: new Uint8Array(0), owner: new Uint16Array(0), changed: null, layerCount: layers, ownerRuns: runs };
          const fit = fitLayout(n, 900, 260, 24);
          const layouts = [fit, makeLayout(n, 900, 260, Math.max(1, fit.blocksPerCell * 3), 1), makeLayout(n, 640, 300, 1, 6, 150), makeLayout(n, 640, 300, 7, 2, 40)];
          for (const l of layouts) {
            const a = new Uint32Array(l.width * l.height);
            const b = new Uint32Array(l.width * l.height);
            renderHeatmap(a, l, full, 'owner', palette);
            renderHeatmap(b, l, first, 'owner', palette);
            const at = a.findIndex((v, i) => v !== b[i]);
            assert.equal(at, -1, `n ${n}, ${layers} layers, runs of ~${meanRun}, layout ${JSON.stringify(l)}: pixel ${at} differs`);
          }
        }
      }
    }
  });

  it('gives up past the run budget, so a scattered map is sent as the array itself', () => {
    const n = 10_000;
    const owner = new Uint16Array(n).fill(NO_OWNER);
    for (let i = 0; i < n; i += 2) owner[i] = 0;
    assert.equal(ownerRuns(owner, null, 1, 100), null);
    assert.equal(ownerRuns(owner, null, 1, n / 2)!.length, (n / 2) * 3);
    const b: BlockData = { blockCount: n, blockSize: MiB, sectorsPerBlock: 2048, layerCount: 1, allocated: new Uint8Array(n), fill: new Uint8Array(n), owner, ownerSector: new Uint32Array(n) };
    const first = firstBlocks(b);
    assert.equal(first.ownerRuns, undefined);
    assert.equal(first.owner, owner);
    assert.equal(first.allocated.length, 0);
    assert.equal(first.ownerSector.length, 0);
  });

  it('carries a real sparse chain map (child over base, 2 TiB-like grid) as a few runs that rebuild it exactly', async () => {
    const t = tempDir('paint-runs-');
    try {
      const base = path.join(t.dir, 'base.vhd');
      await createImage(base, { size: 4096 * 2 * MiB, exactSize: true });
      let c = await openChain(base, { writable: true });
      for (const b of [0, 1, 2, 1000, 4095]) await c.write(b * 2 * MiB, Buffer.alloc(4096, 0x5a));
      await c.close();
      const child = path.join(t.dir, 'child.vhd');
      await createChild(base, child);
      c = await openChain(child, { writable: true });
      for (const b of [2, 3, 2000]) await c.write(b * 2 * MiB + 512, Buffer.alloc(512, 0xa5));
      await c.close();
      const chain = await openChain(child);
      try {
        const full = await buildBlockData(chain);
        const first = firstBlocks(full);
        assert.ok(first.ownerRuns, 'a sparse map goes as runs');
        assert.equal(first.owner.length, 0);
        assert.equal(first.zero, undefined);
        // Blocks 0-1 base, 2-3 child, 1000 base, 2000 child, 4095 base: six runs.
        assert.deepEqual(Array.from(first.ownerRuns!), [2, 4, 0, 2000, 2001, 0, 0, 2, 1, 1000, 1001, 1, 4095, 4096, 1]);
        assertSameMap(ownersFromRuns(first.blockCount, first.ownerRuns!), { owner: full.owner, zero: full.zero ?? null });
        assert.equal(first.layerCount, 2);
        assert.equal(first.blockCount, 4096);
      } finally {
        await chain.close();
      }
    } finally {
      t.cleanup();
    }
  });
});
