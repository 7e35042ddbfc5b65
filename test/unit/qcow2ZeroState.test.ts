// The "zero" state end to end: qcow2 zero clusters/subclusters in the block map (checked against
// qemu-img map), carried in BlockData, and painted in their own colour by the webview logic.
import { strict as assert } from 'assert';
import { execFileSync } from 'child_process';
import * as path from 'path';
import { buildBlockMap, NO_OWNER } from '../../src/chain/blockMap';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/vhd/create';
import { toBlockData } from '../../src/extension/model';
import { changedBlocks } from '../../src/protocol';
import { distance, makePalette, pack } from '../../webview/heatmap/colors';
import { makeLayout } from '../../webview/heatmap/layout';
import { cellColor, HeatmapData, renderHeatmap, zeroBlockCount } from '../../webview/heatmap/render';
import { tempDir } from '../helpers/util';
import { qemuIo, randomQemuWrites } from '../helpers/qemuIo';

/** Data writes, zero writes (with and without unmap) and discards, up to 400 sectors each. */
const MIX = { data: 0.45, zero: 0.35, zeroUnmap: 0.1, maxSectors: 400 };


const KiB = 1024;
const MiB = 1024 * KiB;

interface MapExtent { start: number; length: number; depth: number; present: boolean; zero: boolean; data: boolean }

function qemuMap(img: string): MapExtent[] {
  return JSON.parse(execFileSync('qemu-img', ['map', '--output=json', img], { maxBuffer: 1 << 28 }).toString());
}

/**
 * Owner and zero state per cluster as qemu sees them: the owner is the shallowest depth with a
 * present extent in the cluster; the cluster is "zero" when every extent of that depth in it reads
 * as zeros without data.
 */
function expectedFromQemu(map: MapExtent[], clusterSize: number, clusters: number): { owner: number[]; zero: number[] } {
  const owner = new Array<number>(clusters).fill(NO_OWNER);
  const zero = new Array<number>(clusters).fill(1);
  for (const e of map) {
    if (!e.present) continue;
    for (let c = Math.floor(e.start / clusterSize); c < Math.ceil((e.start + e.length) / clusterSize); c++) {
      if (e.depth < owner[c]) { owner[c] = e.depth; zero[c] = 1; }
      if (e.depth === owner[c] && (e.data || !e.zero)) zero[c] = 0;
    }
  }
  return { owner, zero: zero.map((z, c) => (owner[c] === NO_OWNER ? 0 : z)) };
}

const VARS: Record<string, string> = {
  '--vscode-editor-background': '#1e1e1e', '--vscode-editor-foreground': '#d4d4d4', '--vscode-editorWidget-background': '#252526',
  '--vscode-charts-blue': '#3794ff', '--vscode-charts-orange': '#d18616', '--vscode-charts-green': '#89d185', '--vscode-charts-red': '#f14c4c',
};
const palette = makePalette((n) => VARS[n] ?? '');

describe('qcow2 zero state: block map, block data, heatmap', function () {
  this.timeout(120000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-qcow2zero-')));
  after(() => cleanup());

  const layouts = [
    { name: 'standard L2, 64 KiB clusters', opts: 'cluster_size=65536', cluster: 64 * KiB },
    { name: 'extended L2, 64 KiB clusters (2 KiB subclusters)', opts: 'cluster_size=65536,extended_l2=on', cluster: 64 * KiB },
    { name: 'v2 image (no zero flag: zero writes deallocate)', opts: 'compat=0.10,cluster_size=65536', cluster: 64 * KiB },
  ];
  layouts.forEach((l, idx) => {
    it(`owner and zero per cluster agree with qemu-img map: ${l.name}`, async () => {
      const size = 16 * MiB;
      const base = path.join(dir, `base${idx}.qcow2`);
      const top = path.join(dir, `top${idx}.qcow2`);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', l.opts, base, String(size)]);
      randomQemuWrites(base, size, 100 + idx, 120, MIX);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', l.opts, '-b', path.basename(base), '-F', 'qcow2', top]);
      randomQemuWrites(top, size, 200 + idx, 120, MIX);
      const chain = await openChain(top);
      try {
        const m = await buildBlockMap(chain);
        const clusters = size / l.cluster;
        assert.equal(m.blockCount, clusters);
        const x = expectedFromQemu(qemuMap(top), l.cluster, clusters);
        assert.deepEqual([...m.owner], x.owner, 'owners');
        assert.deepEqual([...m.zero!], x.zero, 'zero state');
        const zeros = x.zero.filter((z) => z === 1).length;
        if (idx < 2) assert.ok(zeros > 5, `the random ops made zero clusters (${zeros})`);
        // Block data for the webview carries the zero state only when there is one.
        const bd = toBlockData(m);
        assert.equal(bd.zero !== undefined, zeros > 0);
        assert.equal(zeroBlockCount(bd), zeros);
      } finally {
        await chain.close();
      }
    });
  });

  it('extended L2: a cluster with zero subclusters over backing data is zero only when it holds no data', async () => {
    const base = path.join(dir, 'xb.qcow2');
    const top = path.join(dir, 'xt.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536,extended_l2=on', base, '1M']);
    qemuIo(base, ['write -P 7 0 1M']);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536,extended_l2=on', '-b', 'xb.qcow2', '-F', 'qcow2', top]);
    // Cluster 0: two zero subclusters only; cluster 1: a zero subcluster and a data subcluster.
    qemuIo(top, ['write -z 0 4k', 'write -z 65536 2k', 'write -P 9 69632 2k']);
    const chain = await openChain(top);
    try {
      const m = await buildBlockMap(chain);
      assert.deepEqual([m.owner[0], m.owner[1], m.owner[2]], [0, 0, 1]);
      assert.deepEqual([m.zero![0], m.zero![1], m.zero![2]], [1, 0, 0]);
      // The zero cluster reads zeros where it says so and the backing data elsewhere.
      const b = await chain.readRange(0, 8192);
      assert.ok(b.subarray(0, 4096).every((v) => v === 0) && b.subarray(4096).every((v) => v === 7));
    } finally {
      await chain.close();
    }
  });

  it('a 2 TiB image of 64 KiB clusters aggregates 16 clusters per cell; a cell is zero when every cluster held is', async () => {
    const img = path.join(dir, 'big.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', img, '2T']);
    const cell = 16 * 64 * KiB;
    // Cell 0 all zero; cell 1 zero and data; cell 2: one zero cluster only; cell 1000000: data only.
    qemuIo(img, [`write -z 0 ${cell}`, `write -z ${cell} 65536`, `write -P 1 ${cell + 65536} 65536`, `write -z ${2 * cell + 5 * 65536} 65536`, `write -P 2 ${1000000 * cell} 4096`]);
    const chain = await openChain(img);
    try {
      const m = await buildBlockMap(chain);
      assert.equal(m.blocksPerCell, 16);
      assert.equal(m.blockSize, cell);
      assert.equal(m.blockCount, 2 * 1024 * 1024);
      assert.deepEqual([m.zero![0], m.zero![1], m.zero![2], m.zero![3], m.zero![1000000]], [1, 0, 1, 0, 0]);
      assert.deepEqual([m.owner[0], m.owner[1], m.owner[2], m.owner[3], m.owner[1000000]], [0, 0, 0, NO_OWNER, 0]);
      const bd = toBlockData(m);
      assert.equal(bd.blocksPerCell, 16);
      assert.equal(zeroBlockCount(bd), 2);
    } finally {
      await chain.close();
    }
  });

  it('VHD chains have no zero state; block data stays as before', async () => {
    const p = path.join(dir, 'plain.vhd');
    await createImage(p, { size: 8 * MiB, exactSize: true });
    const c = path.join(dir, 'plain-child.vhd');
    await createChild(p, c);
    const chain = await openChain(c);
    try {
      const bd = toBlockData(await buildBlockMap(chain));
      assert.equal(bd.zero, undefined);
      assert.equal(bd.blocksPerCell, undefined);
    } finally {
      await chain.close();
    }
  });

  it('changedBlocks reports a block whose zero state alone changed', () => {
    const mk = (zero?: number[]) => ({
      blockCount: 3, blockSize: 65536, sectorsPerBlock: 128, layerCount: 1,
      allocated: Uint8Array.from([1, 1, 0]), fill: Uint8Array.from([255, 255, 0]), owner: Uint16Array.from([0, 0, NO_OWNER]),
      ownerSector: new Uint32Array(3), ...(zero ? { zero: Uint8Array.from(zero) } : {}),
    });
    assert.deepEqual([...changedBlocks(mk(), mk([0, 1, 0]))], [1]);
    assert.deepEqual([...changedBlocks(mk([1, 0, 0]), mk())], [0]);
    assert.deepEqual([...changedBlocks(mk([1, 0, 0]), mk([1, 0, 0]))], []);
  });

  it('the palette has a zero colour unlike empty cells, the background and every owner', () => {
    assert.ok(distance(palette.zero, palette.empty) > 30);
    assert.ok(distance(palette.zero, palette.background) > 30);
    for (const o of palette.owners) assert.ok(distance(palette.zero, o) > 30);
    const light = makePalette((n) => ({ '--vscode-editor-background': '#ffffff', '--vscode-editor-foreground': '#000000' } as Record<string, string>)[n] ?? '');
    assert.ok(distance(light.zero, light.empty) > 30 && distance(light.zero, light.background) > 30);
  });

  it('paints zero blocks in the zero colour in owner and allocated modes, and aggregated cells only when all held blocks are zero', () => {
    const d: HeatmapData = {
      blockCount: 6,
      allocated: Uint8Array.from([1, 1, 0, 1, 0, 0]),
      fill: Uint8Array.from([255, 255, 0, 255, 0, 0]),
      owner: Uint16Array.from([0, 0, 1, 0, NO_OWNER, 1]),
      zero: Uint8Array.from([1, 0, 1, 1, 0, 0]),
      changed: null,
    };
    const zero = pack(palette.zero);
    assert.equal(cellColor(d, 'owner', 0, 1, palette), zero);
    assert.equal(cellColor(d, 'owner', 1, 2, palette), pack(palette.owners[0]));
    assert.equal(cellColor(d, 'owner', 2, 3, palette), zero, 'a zero cluster of a lower layer');
    assert.equal(cellColor(d, 'owner', 0, 2, palette), pack(palette.owners[0]), 'zero and data blocks of the owner: its colour');
    assert.equal(cellColor(d, 'owner', 2, 5, palette), zero, 'the topmost owner (0) holds only zero blocks in 2..5');
    assert.equal(cellColor(d, 'owner', 4, 5, palette), pack(palette.empty));
    assert.equal(cellColor(d, 'allocated', 0, 1, palette), zero);
    assert.equal(cellColor(d, 'allocated', 1, 2, palette), pack(palette.allocated));
    assert.equal(cellColor(d, 'allocated', 2, 3, palette), pack(palette.empty), 'not allocated in the top: the lower zero does not show here');
    const noZero = { ...d, zero: null };
    assert.equal(cellColor(noZero, 'owner', 0, 1, palette), pack(palette.owners[0]));
    assert.equal(zeroBlockCount(d), 3);
    // Painted: the zero block's cell has the zero colour in the pixel buffer.
    const l = makeLayout(6, 60, 10, 1, 10);
    const out = new Uint32Array(60 * 10);
    renderHeatmap(out, l, d, 'owner', palette);
    assert.equal(out[5 * 60 + 5], zero);
    assert.equal(out[5 * 60 + 15], pack(palette.owners[0]));
    assert.equal(out[5 * 60 + 25], zero);
  });
});
