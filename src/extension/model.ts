// Turns core results into protocol structures. No `vscode` import here, so it is unit-tested as is.
import * as nodePath from 'path';
import { Buffer } from 'buffer';
import { BlockMap, buildBlockMap } from '../chain/blockMap';
import { Chain, openChain } from '../chain/chain';
import { describeParentSource } from '../chain/parentSource';
import { creatorLabel, describeHeader } from '../chain/headerFields';
import { readPartitionTable } from '../chain/partitions';
import { DiskImage } from '../format/diskImage';
import { BlockData, ChainLayerModel, ImageModel, LayerBlockModel, SectorLayerModel } from '../protocol';

export async function buildImageModel(chain: Chain, canWrite: boolean): Promise<ImageModel> {
  const top = chain.top;
  const header = describeHeader(top);
  const partitions = chain.complete
    ? await readPartitionTable((o, l) => chain.readRange(o, l), chain.virtualSize).catch((e: Error) => ({ scheme: 'none' as const, partitions: [], diskGuid: null, warnings: [e.message] }))
    : { scheme: 'none' as const, partitions: [], diskGuid: null, warnings: ['the chain is incomplete, so partitions cannot be read'] };
  const json = JSON.stringify({
    path: top.path,
    fields: header.fields.map((f) => ({ structure: f.structure, name: f.name, offset: f.offset, size: f.size, hex: f.hex, decoded: f.decoded })),
    checksums: header.checksums,
    warnings: top.warnings,
  }, null, 2);
  return {
    overview: {
      fileName: nodePath.basename(top.path),
      path: top.path,
      diskType: top.diskType,
      virtualSize: top.virtualSize,
      blockSize: top.blockSize,
      blockCount: Math.ceil(top.virtualSize / top.blockSize),
      allocatedBlocks: top.allocatedBlockCount(),
      uuid: top.uuid,
      creator: creatorLabel(top),
      created: top.created ?? '',
      warnings: [...chain.warnings],
      chain: chain.layers.map((l) => nodePath.basename(l.path)).concat(chain.complete ? [] : ['(parent not found)']),
      chainComplete: chain.complete,
    },
    header: { fields: header.fields, checksums: header.checksums, json },
    chain: chainLayers(chain),
    partitions: { scheme: partitions.scheme, list: partitions.partitions, warnings: partitions.warnings },
    canWrite,
  };
}

function chainLayers(chain: Chain): ChainLayerModel[] {
  return chain.layers.map((l, i) => {
    const link = chain.links.find((k) => k.depth === i) ?? null;
    return {
      index: i,
      path: l.path,
      fileName: nodePath.basename(l.path),
      diskType: l.diskType,
      virtualSize: l.virtualSize,
      fileSize: l.fileSize,
      allocatedBlocks: l.allocatedBlockCount(),
      blockCount: l.blockCount,
      uuid: l.uuid,
      parentUuid: l.diskType === 'differencing' ? l.parent?.uuid ?? null : null,
      parentName: l.parent?.name ?? null,
      parentSource: describeParentSource(chain, i),
      link: link ? {
        resolvedPath: link.resolution.resolvedPath,
        via: link.resolution.via,
        uuidMatches: link.uuidMatches,
        timestampMatches: link.timestampMatches,
        problem: link.problem,
      } : null,
    };
  });
}

export function toBlockData(map: BlockMap): BlockData {
  return {
    blockCount: map.blockCount,
    blockSize: map.blockSize,
    sectorsPerBlock: map.sectorsPerBlock,
    layerCount: map.layerCount,
    allocated: map.allocated,
    fill: map.fill,
    owner: map.owner,
    ownerSector: map.ownerSector,
    // Only when the chain has aggregated cells or zero clusters: other maps stay as they were.
    ...(map.blocksPerCell !== undefined && map.blocksPerCell > 1 ? { blocksPerCell: map.blocksPerCell } : {}),
    // Native search (the map only ever holds 0 or 1): a callback per cell costs milliseconds per million cells.
    ...(map.zero && map.zero.indexOf(1) !== -1 ? { zero: map.zero } : {}),
  };
}

/**
 * What `init` carries of the map: the owner map alone (what the overview draws first), as runs when
 * that is smaller (a sparse 2 TiB map of 2,097,152 cells is 4 MiB as an array, a few bytes as
 * runs), so the first message is small; every array follows in `blocks`.
 */
export function firstBlocks(b: BlockData): BlockData {
  const rest = { allocated: new Uint8Array(0), fill: new Uint8Array(0), ownerSector: new Uint32Array(0) };
  // A run takes 12 bytes, a block 2 (3 with zero flags): runs only while they are clearly smaller.
  const runs = ownerRuns(b.owner, b.zero ?? null, b.layerCount, Math.floor(b.blockCount / 8));
  if (!runs) return { ...b, ...rest };
  const { zero: _zero, ...withoutZero } = b;
  return { ...withoutZero, ...rest, owner: new Uint16Array(0), ownerRuns: runs };
}

/**
 * The owner map as runs of one owner and one zero flag: triples [first, end, owner | zero << 16],
 * unowned blocks left out; null past `maxRuns`. Each layer's blocks are found with the typed array's
 * native indexOf, so the empty stretches of a sparse map cost no JavaScript per block.
 */
export function ownerRuns(owner: Uint16Array, zero: Uint8Array | null, layerCount: number, maxRuns: number): Uint32Array | null {
  const out: number[] = [];
  const n = owner.length;
  for (let layer = 0; layer < layerCount; layer++) {
    for (let from = owner.indexOf(layer); from >= 0; from = owner.indexOf(layer, from)) {
      const z = zero ? zero[from] : 0;
      let end = from + 1;
      while (end < n && owner[end] === layer && (zero ? zero[end] : 0) === z) end++;
      out.push(from, end, layer | (z ? 0x10000 : 0));
      if (out.length > maxRuns * 3) return null;
      from = end;
    }
  }
  return Uint32Array.from(out);
}

export async function buildBlockData(chain: Chain): Promise<BlockData> {
  return toBlockData(await buildBlockMap(chain));
}

/** Each layer's view of one block of the top image's grid: allocation, file offset and bitmap. */
export async function blockDetail(chain: Chain, block: number): Promise<LayerBlockModel[]> {
  const out: LayerBlockModel[] = [];
  const bs = chain.top.blockSize;
  for (let i = 0; i < chain.layers.length; i++) {
    const l: DiskImage = chain.layers[i];
    const base: LayerBlockModel = { index: i, fileName: nodePath.basename(l.path), allocated: false, fileOffset: null, bitmap: null };
    if (l.blockSize !== bs) {
      // A different grid: show the sectors it holds of this range as a bitmap.
      const spb = bs / 512;
      const bitmap = new Uint8Array(Math.ceil(spb / 8));
      let any = false;
      for (const r of await l.runs(block * bs, Math.max(0, Math.min(bs, l.virtualSize - block * bs)))) {
        if (!r.present) continue;
        any = true;
        for (let s = (r.offset - block * bs) / 512; s < (r.offset + r.length - block * bs) / 512; s++) bitmap[s >> 3] |= 0x80 >> (s & 7);
      }
      out.push({ ...base, allocated: any, bitmap: any ? bitmap : null });
      continue;
    }
    if (!l.isBlockAllocated(block)) { out.push(base); continue; }
    const spb = l.blockSize / l.sectorSize;
    let bitmap: Uint8Array;
    if (l.diskType === 'differencing') {
      const raw = await l.readBlockBitmap(block);
      bitmap = Uint8Array.from(raw!.subarray(0, Math.ceil(spb / 8)));
    } else {
      bitmap = new Uint8Array(Math.ceil(spb / 8)).fill(0xff);
    }
    const fileOffset = l.blockFileOffset(block);
    out.push({ ...base, allocated: true, fileOffset, bitmap });
  }
  return out;
}

/** One sector as each layer holds it, which layer wins, and what the chain reads there. */
export async function sectorDetail(chain: Chain, sector: number): Promise<{ layers: SectorLayerModel[]; winner: number | null; effective: Uint8Array }> {
  const offset = sector * 512;
  if (offset + 512 > chain.virtualSize) throw new Error(`sector ${sector} is past the end of the disk`);
  const layers: SectorLayerModel[] = [];
  let winner: number | null = null;
  for (let i = 0; i < chain.layers.length; i++) {
    const l = chain.layers[i];
    const runs = await l.runs(offset, 512);
    const held = runs.length === 1 && runs[0].present;
    let bytes: Uint8Array | null = null;
    if (held) {
      const b = Buffer.alloc(512);
      await l.readOwn(offset, b);
      bytes = new Uint8Array(b);
      if (winner === null) winner = i;
    }
    layers.push({ index: i, fileName: nodePath.basename(l.path), bytes });
    // A dynamic or fixed layer ends the chain for reads.
    if (l.diskType !== 'differencing') break;
  }
  const eff = Buffer.alloc(512);
  if (chain.complete) await chain.read(offset, eff);
  return { layers, winner, effective: new Uint8Array(eff) };
}

/** One sector as this chain and the other image's chain read it (past either end: zeros). */
export async function diffSector(chain: Chain, otherPath: string, sector: number): Promise<{ aName: string; bName: string; a: Uint8Array; b: Uint8Array }> {
  const offset = sector * 512;
  const a = Buffer.alloc(512);
  await chain.read(offset, a);
  const other = await openChain(otherPath);
  try {
    const b = Buffer.alloc(512);
    await other.read(offset, b);
    return { aName: nodePath.basename(chain.top.path), bName: nodePath.basename(otherPath), a: new Uint8Array(a), b: new Uint8Array(b) };
  } finally {
    await other.close();
  }
}
