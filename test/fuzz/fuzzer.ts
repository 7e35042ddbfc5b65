/**
 * A reproducible mutation fuzzer for the VHD core. Every case is a pure function of (seed, case
 * index): it picks a starting image (valid fixed, dynamic and differencing images made here, and the
 * real ones in ../shared/fixtures), applies 1-4 mutations aimed at the footer, dynamic header, BAT,
 * sector bitmaps and parent locators, or at random bytes and the file's length, optionally fixes the
 * checksums so the mutation is believed, and runs every parser and the info, map, read, check and
 * diff paths on the result.
 *
 * A case fails when anything throws a value that is not a DiskImageError, when it takes more than
 * CPU_LIMIT_MS of CPU time, or when any single allocation (or the growth of ArrayBuffer memory) is not
 * bounded by the size of the files involved.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { describeImage } from '../../src/chain/info';
import { DiskImageError } from '../../src/format/errors';
import { Bat } from '../../src/format/vhd/bat';
import { vhdChecksum } from '../../src/format/vhd/checksum';
import { createImage } from '../../src/format/vhd/create';
import { DYNAMIC_HEADER_SIZE, HEADER_CHECKSUM_OFFSET, parseDynamicHeader } from '../../src/format/vhd/dynamicHeader';
import { FOOTER_CHECKSUM_OFFSET, FOOTER_SIZE, hasFooterCookie, parseFooter } from '../../src/format/vhd/footer';
import { chsSizeBytes, geometryForSize } from '../../src/format/vhd/geometry';
import { decodeLocatorPath, decodeUtf16Detect, parseLocatorEntry } from '../../src/format/vhd/parentLocator';
import { bitmapRuns, countSetBits, runLength } from '../../src/format/vhd/sectorBitmap';
import { VhdImage } from '../../src/format/vhd/vhdImage';
import { openImage, createImage as createAnyImage } from '../../src/format/registry';
import { crc32cWithZeroField } from '../../src/format/vhdx/crc32c';
import { newGuid } from '../../src/format/vhdx/guid';
import { findActiveSequence, LogError, serializeLogEntry } from '../../src/format/vhdx/log';
import { parseHeader as parseVhdxHeader } from '../../src/format/vhdx/header';
import { parseMetadataTable } from '../../src/format/vhdx/metadataTable';
import { parseParentLocator, ParentLocatorError } from '../../src/format/vhdx/parentLocator';
import { parseRegionTable } from '../../src/format/vhdx/regionTable';
import { FIXTURES, fixture, rng } from '../helpers/util';

export type Rand = () => number;

export interface Seed {
  name: string;
  /** The image to mutate. */
  bytes: Buffer;
  /** For differencing seeds: the parent, written next to the case's child under its file name. */
  parent?: { name: string; bytes: Buffer };
  /** The file name the image must have (locators of seeds made here point at the parent by name). */
  fileName: string;
}

export interface CaseResult {
  index: number;
  seed: string;
  mutations: string[];
  cpuMs: number;
  wallMs: number;
  /** Largest single Buffer allocation during the case, and its bound. */
  maxAlloc: number;
  allocBound: number;
  arrayBuffersGrowth: number;
  /** Outcomes per target: 'ok' or the error code. */
  outcomes: Record<string, string>;
  /** CPU milliseconds per target. */
  targetMs: Record<string, number>;
  failure?: { kind: 'untyped' | 'unhandled rejection' | 'slow' | 'alloc'; target: string; detail: string };
}

/**
 * A runaway guard, not a speed test: typical cases take milliseconds and the slowest of a 100,000-case
 * campaign took 0.8 s, so 5 s of CPU catches loops driven by hostile sizes without failing a case
 * because the machine is busy (speed is measured by npm run bench).
 */
export const CPU_LIMIT_MS = 5000;

// ---------------------------------------------------------------------------------------------
// Seeds

/** Builds the starting images: made here (fixed, dynamic, differencing) and real ones. */
export async function buildSeeds(work: string, withFixtures = true): Promise<Seed[]> {
  mkdirSync(work, { recursive: true });
  const seeds: Seed[] = [];
  const r = rng(1234);
  const pattern = (n: number) => { const b = Buffer.alloc(n); for (let i = 0; i < n; i++) b[i] = (r() * 256) | 0; return b; };

  const fixed = path.join(work, 'fixed.vhd');
  await createImage(fixed, { size: 192 * 1024, type: 'fixed', overwrite: true });
  await writeThrough(fixed, [[4096, pattern(3000)]]);
  seeds.push({ name: 'fixed', fileName: 'fixed.vhd', bytes: readFileSync(fixed) });

  const dyn = path.join(work, 'dynamic.vhd');
  await createImage(dyn, { size: 1024 * 1024, blockSize: 64 * 1024, overwrite: true });
  await writeThrough(dyn, [[0, mbrSector()], [200 * 1024 + 100, pattern(70 * 1024)], [900 * 1024, pattern(512)]]);
  seeds.push({ name: 'dynamic-64K', fileName: 'dynamic.vhd', bytes: readFileSync(dyn) });

  const small = path.join(work, 'small-blocks.vhd');
  await createImage(small, { size: 256 * 1024, blockSize: 4096, overwrite: true });
  await writeThrough(small, [[0, gptSectors()], [8192, pattern(4096 * 5 + 300)], [100 * 1024, pattern(1000)]]);
  seeds.push({ name: 'dynamic-4K', fileName: 'small-blocks.vhd', bytes: readFileSync(small) });

  const base = path.join(work, 'base.vhd');
  await createImage(base, { size: 512 * 1024, blockSize: 32 * 1024, overwrite: true });
  await writeThrough(base, [[0, pattern(100 * 1024)]]);
  const child = path.join(work, 'child.vhd');
  rmSync(child, { force: true });
  await createChild(base, child);
  await writeThrough(child, [[1000, pattern(2000)], [40 * 1024, pattern(512 * 3)], [300 * 1024 + 7, pattern(5000)]]);
  const baseBytes = readFileSync(base);
  seeds.push({ name: 'differencing', fileName: 'child.vhd', bytes: readFileSync(child), parent: { name: 'base.vhd', bytes: baseBytes } });
  // The parent itself as the mutated file, with an intact child above it is covered by mutating
  // `base.vhd` in its own seed: a child whose parent is broken.
  seeds.push({ name: 'differencing-parent', fileName: 'child.vhd', bytes: readFileSync(child), parent: { name: 'base.vhd', bytes: baseBytes } });

  // VHDX (our layout: log at 1 MiB, metadata at 2 MiB, BAT at 3 MiB, blocks from 4 MiB; 1 MiB blocks).
  const vbase = path.join(work, 'base.vhdx');
  rmSync(vbase, { force: true });
  await createAnyImage(vbase, { size: 6 * 1024 * 1024, blockSize: 1024 * 1024 });
  await writeThrough(vbase, [[0, mbrSector()], [2 * 1024 * 1024 + 100, pattern(70 * 1024)]]);
  seeds.push({ name: 'vhdx-dynamic', fileName: 'base.vhdx', bytes: readFileSync(vbase) });
  const vchild = path.join(work, 'child.avhdx');
  rmSync(vchild, { force: true });
  await createChild(vbase, vchild);
  await writeThrough(vchild, [[1000, pattern(2000)], [3 * 1024 * 1024 + 7, pattern(5000)]]);
  seeds.push({ name: 'vhdx-differencing', fileName: 'child.avhdx', bytes: readFileSync(vchild), parent: { name: 'base.vhdx', bytes: readFileSync(vbase) } });

  // qcow2 (ours: 4 KiB clusters so the file stays small) and an overlay over it.
  const qbase = path.join(work, 'base.qcow2');
  rmSync(qbase, { force: true });
  await createAnyImage(qbase, { size: 6 * 1024 * 1024, blockSize: 4096 });
  await writeThrough(qbase, [[0, mbrSector()], [2 * 1024 * 1024 + 100, pattern(70 * 1024)]]);
  seeds.push({ name: 'qcow2-dynamic', fileName: 'base.qcow2', bytes: readFileSync(qbase) });
  const qchild = path.join(work, 'child.qcow2');
  rmSync(qchild, { force: true });
  await createChild(qbase, qchild);
  await writeThrough(qchild, [[1000, pattern(2000)], [3 * 1024 * 1024 + 7, pattern(5000)]]);
  seeds.push({ name: 'qcow2-overlay', fileName: 'child.qcow2', bytes: readFileSync(qchild), parent: { name: 'base.qcow2', bytes: readFileSync(qbase) } });

  if (withFixtures && existsSync(FIXTURES)) {
    for (const name of ['plaso_image.vhd.gz', 'dfvfs_ext2.vhd.gz', 'dfvfs_fat-differential.vhd.gz', 'dfvfs_image-differential.vhd.gz',
      'freebsd-mkimg_img-1x1-512-bsd.vhd.gz', 'freebsd-mkimg_img-1x1-512-bsd.vhdf.gz', 'qemu_virtualpc-dynamic.vhd.bz2', 'qemu_hyperv2012r2-dynamic.vhd.bz2']) {
      if (!existsSync(path.join(FIXTURES, name))) continue;
      const p = fixture(name, work);
      seeds.push({ name: name.replace(/\.(gz|bz2)$/, ''), fileName: path.basename(p), bytes: readFileSync(p) });
    }
  }
  return seeds;
}

/** An MBR with a primary and an extended partition holding one logical partition (EBR at LBA 100). */
function mbrSector(): Buffer {
  const b = Buffer.alloc(51200 + 512);
  const entry = (sector: Buffer, i: number, type: number, lba: number, count: number) => {
    const o = 446 + i * 16;
    sector[o + 4] = type;
    sector.writeUInt32LE(lba, o + 8);
    sector.writeUInt32LE(count, o + 12);
  };
  entry(b, 0, 0x83, 1, 99);
  entry(b, 1, 0x05, 100, 1000);
  b[510] = 0x55; b[511] = 0xaa;
  const ebr = b.subarray(51200, 51712);
  entry(ebr, 0, 0x07, 1, 500);
  ebr[510] = 0x55; ebr[511] = 0xaa;
  return b;
}

/** A protective MBR, a GPT header at LBA 1 and two entries at LBA 2. */
function gptSectors(): Buffer {
  const b = Buffer.alloc(3 * 512);
  b[446 + 4] = 0xee;
  b.writeUInt32LE(1, 446 + 8);
  b.writeUInt32LE(0xffffffff, 446 + 12);
  b[510] = 0x55; b[511] = 0xaa;
  const h = b.subarray(512, 1024);
  h.write('EFI PART', 0, 'latin1');
  h.writeUInt32LE(0x00010000, 8);
  h.writeUInt32LE(92, 12);
  h.writeBigUInt64LE(1n, 24);
  h.writeBigUInt64LE(2n, 72);
  h.writeUInt32LE(4, 80);
  h.writeUInt32LE(128, 84);
  for (let i = 0; i < 16; i++) h[56 + i] = i * 11;
  const e = b.subarray(1024, 1536);
  for (const [i, first, last, name] of [[0, 34, 200, 'one'], [1, 201, 400, 'two']] as const) {
    const x = e.subarray(i * 128, (i + 1) * 128);
    for (let k = 0; k < 16; k++) x[k] = 0xa0 + k;
    x.writeBigUInt64LE(BigInt(first), 32);
    x.writeBigUInt64LE(BigInt(last), 40);
    x.write(name, 56, 'utf16le');
  }
  return b;
}

async function writeThrough(image: string, writes: Array<[number, Buffer]>): Promise<void> {
  const chain = await openChain(image, { writable: true });
  try {
    for (const [off, data] of writes) await chain.write(off, data);
  } finally {
    await chain.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Structure map of a seed, for aimed mutations

interface Structures {
  footerAt: number[];
  headerAt: number | null;
  tableAt: number | null;
  entries: number;
  blockSize: number;
  bitmapSize: number;
  blocks: number[]; // file offsets of allocated blocks (bitmap first)
  locators: Array<{ entryAt: number; dataAt: number; length: number }>;
  /** VHDX seeds (our layout). */
  vhdx: boolean;
  /** qcow2 seeds: where the tables are (from the seed's header and L1/refcount tables). */
  qcow2: Qcow2Structures | null;
}

interface Qcow2Structures {
  clusterSize: number;
  l1: number;
  l1Size: number;
  l2: number[];
  refcountTable: number;
  refcountBlocks: number[];
  /** Data clusters and compressed descriptors' targets referenced from L2. */
  data: number[];
}

const QCOW2_MAGIC = 0x514649fb;

function qcow2StructuresOf(b: Buffer): Qcow2Structures | null {
  if (b.length < 104 || b.readUInt32BE(0) !== QCOW2_MAGIC) return null;
  const clusterBits = b.readUInt32BE(20);
  if (clusterBits < 9 || clusterBits > 21) return null;
  const clusterSize = 2 ** clusterBits;
  const l1 = Number(b.readBigUInt64BE(40));
  const l1Size = b.readUInt32BE(36);
  const refcountTable = Number(b.readBigUInt64BE(48));
  const q: Qcow2Structures = { clusterSize, l1, l1Size, l2: [], refcountTable, refcountBlocks: [], data: [] };
  const mask = 0x00fffffffffffe00n;
  for (let i = 0; i < l1Size && l1 + i * 8 + 8 <= b.length; i++) {
    const at = Number(b.readBigUInt64BE(l1 + i * 8) & mask);
    if (at !== 0 && at + clusterSize <= b.length) q.l2.push(at);
  }
  for (const t of q.l2) {
    for (let j = 0; j < clusterSize / 8; j++) {
      const e = b.readBigUInt64BE(t + j * 8);
      if ((e & mask) !== 0n && (e & (1n << 62n)) === 0n) q.data.push(Number(e & mask));
    }
  }
  for (let i = 0; i < clusterSize / 8 && refcountTable + i * 8 + 8 <= b.length; i++) {
    const at = Number(b.readBigUInt64BE(refcountTable + i * 8) & mask);
    if (at !== 0 && at + clusterSize <= b.length) q.refcountBlocks.push(at);
  }
  return q;
}

const MiB = 1024 * 1024;
const VHDX = { headers: [64 * 1024, 128 * 1024], regions: [192 * 1024, 256 * 1024], log: MiB, metadata: 2 * MiB, bat: 3 * MiB } as const;

function structuresOf(b: Buffer): Structures {
  const s: Structures = { footerAt: [], headerAt: null, tableAt: null, entries: 0, blockSize: 0, bitmapSize: 0, blocks: [], locators: [], vhdx: b.toString('latin1', 0, 8) === 'vhdxfile', qcow2: qcow2StructuresOf(b) };
  if (s.vhdx || s.qcow2) return s;
  if (b.length >= FOOTER_SIZE && hasFooterCookie(b.subarray(b.length - FOOTER_SIZE))) s.footerAt.push(b.length - FOOTER_SIZE);
  if (b.length >= FOOTER_SIZE && hasFooterCookie(b) && b.length !== FOOTER_SIZE) s.footerAt.push(0);
  const f = s.footerAt.length ? parseFooter(b.subarray(s.footerAt[0], s.footerAt[0] + FOOTER_SIZE)) : null;
  if (!f || (f.diskType !== 3 && f.diskType !== 4)) return s;
  const ho = Number(f.dataOffset);
  if (ho + DYNAMIC_HEADER_SIZE > b.length) return s;
  s.headerAt = ho;
  const h = parseDynamicHeader(b.subarray(ho, ho + DYNAMIC_HEADER_SIZE));
  s.tableAt = h.tableOffset;
  s.entries = h.maxTableEntries;
  s.blockSize = h.blockSize;
  s.bitmapSize = Math.ceil(h.blockSize / 512 / 8 / 512) * 512;
  if (h.tableOffset + h.maxTableEntries * 4 <= b.length) {
    for (let i = 0; i < h.maxTableEntries; i++) {
      const e = b.readUInt32BE(h.tableOffset + i * 4);
      if (e !== 0xffffffff) s.blocks.push(e * 512);
    }
  }
  for (const l of h.locators) {
    if (l.platformCode === '\0\0\0\0') continue;
    s.locators.push({ entryAt: ho + 576 + l.index * 24, dataAt: l.platformDataOffset, length: l.platformDataLength });
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Mutations

const INTERESTING32 = [0, 1, 2, 3, 4, 0x7f, 0x80, 0xff, 0x100, 0x1ff, 0x200, 0x201, 0x3ff, 0x400, 0x1000, 0xffff, 0x10000,
  0x200000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 0x10000000, 0x20000000, 0x00010000, 0x00020000];
const INTERESTING64 = [0n, 1n, 511n, 512n, 513n, 1024n, 1536n, 0x7fffffffn, 0xffffffffn, 0x100000000n, 0x1fffffffffffffn,
  0x20000000000000n, 0x7fffffffffffffffn, 0xffffffffffffffffn, 0x8000000000000000n, 2199023255552n, 2190433320960n];
const CODES = ['W2ku', 'W2ru', 'Wi2k', 'Wi2r', 'Mac ', 'MacX', '\0\0\0\0', 'abcd', 'W2KU'];

const pick = <T>(r: Rand, a: readonly T[]): T => a[Math.floor(r() * a.length)];
const int = (r: Rand, n: number) => Math.floor(r() * n);

function interesting32(r: Rand, fileLen: number): number {
  const v = r();
  if (v < 0.6) return pick(r, INTERESTING32);
  if (v < 0.8) return (pick(r, [fileLen, fileLen >> 9, (fileLen >> 9) - 1, (fileLen >> 9) + 1, fileLen - 512, fileLen + 512]) >>> 0);
  return (r() * 0x100000000) >>> 0;
}

function interesting64(r: Rand, fileLen: number): bigint {
  const v = r();
  if (v < 0.6) return pick(r, INTERESTING64);
  if (v < 0.8) return BigInt(pick(r, [fileLen, fileLen - 512, fileLen - 1024, fileLen + 1, fileLen * 2, fileLen - 511]));
  return BigInt(Math.floor(r() * 2 ** 32)) * BigInt(Math.floor(r() * 2 ** 20) + 1);
}

function set32(b: Buffer, at: number, v: number): void {
  if (at >= 0 && at + 4 <= b.length) b.writeUInt32BE(v >>> 0, at);
}
function set64le(b: Buffer, at: number, v: bigint): void {
  b.writeBigUInt64LE(BigInt.asUintN(64, v), at);
}

function set64(b: Buffer, at: number, v: bigint): void {
  if (at >= 0 && at + 8 <= b.length) b.writeBigUInt64BE(BigInt.asUintN(64, v), at);
}

type Mutator = (b: Buffer, s: Structures, r: Rand) => { bytes: Buffer; what: string };

const FOOTER_FIELDS32 = [8, 12, 24, 32, 56, 60, 64];
const FOOTER_FIELDS64 = [16, 40, 48];
const HEADER_FIELDS32 = [24, 28, 32, 36, 56, 60];
const HEADER_FIELDS64 = [8, 16];

const mutators: Array<[number, string, Mutator]> = [
  [3, 'footer field', (b, s, r) => {
    const targets = s.footerAt.length ? s.footerAt : [Math.max(0, b.length - 512)];
    const both = r() < 0.4;
    const use64 = r() < 0.5;
    const field = use64 ? pick(r, FOOTER_FIELDS64) : pick(r, FOOTER_FIELDS32);
    const v32 = interesting32(r, b.length);
    const v64 = interesting64(r, b.length);
    const which = both ? targets : [pick(r, targets)];
    for (const at of which) use64 ? set64(b, at + field, v64) : set32(b, at + field, v32);
    return { bytes: b, what: `footer${both ? 's' : `@${which[0]}`}+${field}=${use64 ? v64 : v32}` };
  }],
  [1, 'footer type', (b, s, r) => {
    const v = pick(r, [0, 1, 2, 3, 4, 5, 6, 0xffffffff]);
    for (const at of s.footerAt) if (r() < 0.7) set32(b, at + 60, v);
    return { bytes: b, what: `disk type=${v}` };
  }],
  [3, 'header field', (b, s, r) => {
    if (s.headerAt === null) return flipBytes(b, r);
    const use64 = r() < 0.35;
    const field = use64 ? pick(r, HEADER_FIELDS64) : pick(r, HEADER_FIELDS32);
    if (use64) { const v = interesting64(r, b.length); set64(b, s.headerAt + field, v); return { bytes: b, what: `header+${field}=${v}` }; }
    const v = field === 32 && r() < 0.5 ? pick(r, [0, 256, 511, 512, 1000, 4096, 3 << 20, 1 << 28, 1 << 29, 1 << 31]) : interesting32(r, b.length);
    set32(b, s.headerAt + field, v);
    return { bytes: b, what: `header+${field}=${v}` };
  }],
  [3, 'BAT entry', (b, s, r) => {
    if (s.tableAt === null || s.entries === 0) return flipBytes(b, r);
    const n = 1 + int(r, 4);
    const parts: string[] = [];
    for (let k = 0; k < n; k++) {
      const i = s.blocks.length && r() < 0.3 ? int(r, s.entries) : int(r, Math.min(s.entries, 4096));
      const choices = [0xffffffff, 0, 1, (s.headerAt ?? 512) >> 9, (b.length >> 9) - 1, b.length >> 9, (b.length >> 9) + 100,
        s.blocks.length ? pick(r, s.blocks) >> 9 : 3, s.blocks.length ? (pick(r, s.blocks) >> 9) + 1 : 5, interesting32(r, b.length)];
      const v = pick(r, choices) >>> 0;
      set32(b, s.tableAt + i * 4, v);
      parts.push(`BAT[${i}]=${v}`);
    }
    return { bytes: b, what: parts.join(',') };
  }],
  [2, 'bitmap', (b, s, r) => {
    if (!s.blocks.length || !s.bitmapSize) return flipBytes(b, r);
    const at = pick(r, s.blocks);
    const len = Math.min(s.bitmapSize, b.length - at);
    if (len <= 0) return flipBytes(b, r);
    const mode = int(r, 3);
    for (let i = 0; i < len; i++) {
      if (mode === 0) b[at + i] = 0xff;
      else if (mode === 1) b[at + i] = r() < 0.5 ? 0 : (r() * 256) | 0;
      else if (r() < 0.05) b[at + i] ^= 1 << int(r, 8);
    }
    return { bytes: b, what: `bitmap@${at} mode ${mode}` };
  }],
  [3, 'locator entry', (b, s, r) => {
    if (s.headerAt === null) return flipBytes(b, r);
    const i = s.locators.length && r() < 0.7 ? (s.locators[int(r, s.locators.length)].entryAt - s.headerAt - 576) / 24 : int(r, 8);
    const at = s.headerAt + 576 + i * 24;
    const field = pick(r, [0, 4, 8, 16, 16, 8]);
    let what: string;
    if (field === 0) { const c = pick(r, CODES); b.write(c, at, 'latin1'); what = `code=${JSON.stringify(c)}`; }
    else if (field === 16) { const v = interesting64(r, b.length); set64(b, at + 16, v); what = `offset=${v}`; }
    else { const v = interesting32(r, b.length); set32(b, at + field, v); what = `+${field}=${v}`; }
    return { bytes: b, what: `locator ${i} ${what}` };
  }],
  [2, 'locator data', (b, s, r) => {
    if (!s.locators.length) return flipBytes(b, r);
    const l = pick(r, s.locators);
    const mode = int(r, 4);
    const len = Math.min(l.length, Math.max(0, b.length - l.dataAt));
    for (let i = 0; i < len; i++) {
      if (mode === 0) b[l.dataAt + i] = (r() * 256) | 0;
      else if (mode === 1 && i % 2 === 0 && i + 1 < len) { const t = b[l.dataAt + i]; b[l.dataAt + i] = b[l.dataAt + i + 1]; b[l.dataAt + i + 1] = t; }
      else if (mode === 2 && r() < 0.1) b[l.dataAt + i] = pick(r, [0, 0x5c, 0x2f, 0x2e, 0xd8, 0xdc, 0xff, 0xfe]);
      else if (mode === 3 && i === 0) b.write(pick(r, ['file:///%zz', '\\\\?\\C:\\x', '/dev/zero', '..\\..\\..\\', 'C:\\']), l.dataAt, 'utf16le');
    }
    return { bytes: b, what: `locator data@${l.dataAt} mode ${mode}` };
  }],
  [2, 'parent identity', (b, s, r) => {
    if (s.headerAt === null) return flipBytes(b, r);
    if (r() < 0.5) { b[s.headerAt + 40 + int(r, 16)] ^= 0xff; return { bytes: b, what: 'parent uuid' }; }
    const name = pick(r, ['', 'base.vhd', '.', '..', '/', 'child.vhd', 'missing.vhd', 'C:\\x\\base.vhd', 'loop.vhd', 'dir', 'fifo', 'null']);
    b.fill(0, s.headerAt + 64, s.headerAt + 576);
    const enc = Buffer.from(name, 'utf16le'); enc.swap16(); enc.copy(b, s.headerAt + 64);
    return { bytes: b, what: `parent name ${JSON.stringify(name)}` };
  }],
  [2, 'partition table', (b, s, r) => {
    // Virtual sectors 0-2 (MBR, GPT header, entries) where the image stores them.
    const at = s.blocks.length ? Math.min(...s.blocks) + s.bitmapSize : s.headerAt === null ? 0 : -1;
    if (at < 0 || at + 1536 > b.length) return flipBytes(b, r);
    const k = int(r, 4);
    if (k === 0) { b[at + 510] = 0x55; b[at + 511] = 0xaa; b[at + 446 + int(r, 4) * 16 + 4] = pick(r, [0xee, 0x05, 0x0f, 0x83, 0x07]); }
    else if (k === 1) { const e = at + 446 + int(r, 4) * 16; b.writeUInt32LE(interesting32(r, b.length), e + 8); b.writeUInt32LE(interesting32(r, b.length), e + 12); }
    else if (k === 2) { b.write('EFI PART', at + 512, 'latin1'); b.writeUInt32LE(pick(r, [92, 0, 0xffffffff, 512, 600]), at + 512 + 12); b.writeBigUInt64LE(BigInt(interesting32(r, b.length)), at + 512 + 72); b.writeUInt32LE(interesting32(r, b.length), at + 512 + 80); b.writeUInt32LE(pick(r, [128, 0, 1, 0xffffffff, 4096]), at + 512 + 84); }
    else { for (let i = 0; i < 32; i++) b[at + 446 + int(r, 66)] = (r() * 256) | 0; b[at + 510] = 0x55; b[at + 511] = 0xaa; }
    return { bytes: b, what: `partition table ${k} at ${at}` };
  }],
  [3, 'random bytes', (b, _s, r) => flipBytes(b, r)],
  [2, 'truncate', (b, s, r) => {
    const cuts = [int(r, b.length + 1), b.length - 1, b.length - 511, b.length - 512, b.length - 513, 511, 512, 1024, 1536,
      s.headerAt !== null ? s.headerAt + int(r, 1024) : 100, s.tableAt !== null ? s.tableAt + int(r, s.entries * 4 + 1) : 600,
      s.blocks.length ? pick(r, s.blocks) + int(r, s.bitmapSize + s.blockSize) : 700];
    const n = Math.max(0, Math.min(b.length, pick(r, cuts)));
    return { bytes: b.subarray(0, n), what: `truncate to ${n}` };
  }],
  [1, 'drop end footer', (b, _s, r) => {
    const n = Math.max(0, b.length - 512 + (r() < 0.5 ? 0 : int(r, 511)));
    return { bytes: b.subarray(0, n), what: `cut end footer (to ${n})` };
  }],
  [1, 'extend', (b, _s, r) => {
    const extra = pick(r, [1, 511, 512, 4096, 70000]);
    const tail = Buffer.alloc(extra, r() < 0.5 ? 0 : 0xa5);
    if (r() < 0.5 && b.length >= 512) b.copy(tail, Math.max(0, extra - 512), b.length - 512); // footer moved out
    return { bytes: Buffer.concat([b, tail]), what: `extend by ${extra}` };
  }],
  [3, 'vhdx header field', (b, s, r) => {
    if (!s.vhdx) return flipBytes(b, r);
    const at = pick(r, r() < 0.4 ? [...VHDX.headers] : [VHDX.headers[int(r, 2)]]);
    const field = pick(r, [8, 48, 64, 66, 68, 72]);
    if (field === 8 || field === 72) { const v = field === 8 ? BigInt(int(r, 100)) : interesting64(r, b.length); set64le(b, at + field, v); return { bytes: b, what: `vhdx header@${at}+${field}=${v}` }; }
    if (field === 48) { newGuid().copy(b, at + 48); return { bytes: b, what: `vhdx header@${at} log guid set` }; }
    const v = field === 68 ? pick(r, [0, MiB, 2 * MiB, 4096, interesting32(r, b.length)]) : pick(r, [0, 1, 2, 0xffff]);
    if (field === 68) b.writeUInt32LE(v >>> 0, at + field); else b.writeUInt16LE(v & 0xffff, at + field);
    return { bytes: b, what: `vhdx header@${at}+${field}=${v}` };
  }],
  [3, 'vhdx region table', (b, s, r) => {
    if (!s.vhdx) return flipBytes(b, r);
    const at = pick(r, r() < 0.6 ? [...VHDX.regions] : [VHDX.regions[int(r, 2)]]);
    const k = int(r, 5);
    if (k === 0) { b.writeUInt32LE(pick(r, [0, 1, 3, 2047, 2048, 0xffffffff]), at + 8); return { bytes: b, what: `vhdx region count@${at}` }; }
    const e = at + 16 + int(r, 2) * 32;
    if (k === 1) { set64le(b, e + 16, BigInt(pick(r, [0, MiB, 2 * MiB, 3 * MiB, 4 * MiB, b.length, interesting32(r, b.length)]))); return { bytes: b, what: `vhdx region offset@${e}` }; }
    if (k === 2) { b.writeUInt32LE(pick(r, [0, MiB, 2 * MiB, 64 * MiB, interesting32(r, b.length)]) >>> 0, e + 24); return { bytes: b, what: `vhdx region length@${e}` }; }
    if (k === 3) { b.writeUInt32LE(pick(r, [0, 1, 3]), e + 28); b[e + int(r, 16)] ^= 0xff; return { bytes: b, what: `vhdx region guid/required@${e}` }; }
    b.copy(b, at + 16 + 32, at + 16, at + 48);
    return { bytes: b, what: `vhdx region duplicated@${at}` };
  }],
  [3, 'vhdx metadata', (b, s, r) => {
    if (!s.vhdx) return flipBytes(b, r);
    const m = VHDX.metadata;
    const count = b.readUInt16LE(m + 10);
    const k = int(r, 5);
    if (k === 0) { b.writeUInt16LE(pick(r, [0, 1, 5, 7, 2047, 2048, 0xffff]), m + 10); return { bytes: b, what: 'vhdx metadata count' }; }
    const e = m + 32 + int(r, Math.max(1, Math.min(count, 8))) * 32;
    if (k === 1) { b.writeUInt32LE(pick(r, [0, 65535, 65536, MiB, MiB - 4, interesting32(r, b.length)]) >>> 0, e + 16); return { bytes: b, what: `vhdx metadata item offset@${e}` }; }
    if (k === 2) { b.writeUInt32LE(pick(r, [0, 1, 4, 8, 16, 0xffff, MiB, interesting32(r, b.length)]) >>> 0, e + 20); return { bytes: b, what: `vhdx metadata item length@${e}` }; }
    // The item's data: block size, flags, sizes, parent locator count and lengths.
    const dataAt = m + b.readUInt32LE(e + 16);
    if (dataAt + 24 > b.length) return flipBytes(b, r);
    if (k === 3) { b.writeUInt32LE(pick(r, [0, 512, 4096, MiB, 3 * MiB, 256 * MiB, 512 * MiB, 0xffffffff, 3]) >>> 0, dataAt + pick(r, [0, 4])); return { bytes: b, what: `vhdx metadata item data@${dataAt}` }; }
    const v = pick(r, [0, 1, 2, 0x7fff, 0xfff0, 0xffff]);
    b.writeUInt16LE(v, dataAt + pick(r, [18, 20 + 8, 20 + 10, 32 + 8, 32 + 10]));
    return { bytes: b, what: `vhdx item (locator) field@${dataAt}=${v}` };
  }],
  [3, 'vhdx BAT entry', (b, s, r) => {
    if (!s.vhdx) return flipBytes(b, r);
    const n = 1 + int(r, 4);
    const parts: string[] = [];
    for (let k = 0; k < n; k++) {
      const i = int(r, 16);
      const state = pick(r, [0, 1, 2, 3, 4, 5, 6, 7]);
      const mb = pick(r, [0, 1, 2, 3, 4, 5, 6, 7, Math.floor(b.length / MiB), Math.floor(b.length / MiB) + 1, 0xfffffff]);
      set64le(b, VHDX.bat + i * 8, (BigInt(mb) << 20n) | BigInt(state));
      parts.push(`BAT[${i}]=${state}@${mb}M`);
    }
    return { bytes: b, what: `vhdx ${parts.join(',')}` };
  }],
  [3, 'vhdx log entry', (b, s, r) => {
    if (!s.vhdx) return flipBytes(b, r);
    const guid = newGuid();
    const n = 1 + int(r, 3);
    const writes = Array.from({ length: n }, () => {
      const zero = r() < 0.3;
      const fileOffset = pick(r, [0, 64 * 1024, MiB, 2 * MiB, 3 * MiB, 4 * MiB, b.length, b.length + 4096, 100 * MiB, 2 ** 40]) + 4096 * int(r, 4);
      return { fileOffset, length: zero ? 4096 * pick(r, [0, 1, 2, 256, 1 << 20]) : 4096, data: zero ? null : Buffer.alloc(4096, int(r, 256)) };
    });
    const position = 4096 * pick(r, [0, 1, 100, 255, 254]);
    const entry = serializeLogEntry({ writes, sequenceNumber: BigInt(1 + int(r, 1000)), logGuid: guid, tail: r() < 0.8 ? position : 4096 * int(r, 256), flushedFileOffset: pick(r, [0, b.length, b.length + MiB]), lastFileOffset: pick(r, [b.length, b.length + 4096, 2 ** 45]) });
    if (r() < 0.3) entry[int(r, entry.length)] ^= 0xff;
    for (let i = 0; i < entry.length && i < MiB; i += 4096) entry.copy(b, VHDX.log + ((position + i) % MiB), i, i + 4096);
    for (const h of VHDX.headers) guid.copy(b, h + 48);
    return { bytes: b, what: `vhdx log entry at ${position} (${n} writes)` };
  }],
  [1, 'splice', (b, _s, r) => {
    if (b.length < 1024) return flipBytes(b, r);
    const len = pick(r, [8, 24, 512, 1024, 4096]);
    const from = int(r, Math.max(1, b.length - len));
    const to = int(r, Math.max(1, b.length - len));
    b.copy(b, to, from, Math.min(b.length, from + len));
    return { bytes: b, what: `splice ${from}->${to} (${len})` };
  }],
];

/**
 * Mutators for qcow2 seeds only (other seeds draw from `mutators` alone, so their cases stay the
 * same as before these were added).
 */
const qcow2Mutators: Array<[number, string, Mutator]> = [
  [3, 'qcow2 header field', (b, s, r) => {
    if (!s.qcow2) return flipBytes(b, r);
    // [offset, width, values that sit on the edges of what the reader accepts]
    const fields: Array<[number, 4 | 8, Array<number | bigint>]> = [
      [4, 4, [1, 2, 3, 4]], [8, 8, [0n, 100n, 0x200n, 65530n, 65536n, BigInt(b.length)]], [16, 4, [0, 1, 1023, 1024, 65536, 0xffffffff]],
      [20, 4, [8, 9, 12, 16, 21, 22, 63]], [24, 8, [0n, 512n, 1n << 30n, 1n << 41n, 1n << 53n, (1n << 64n) - 1n]],
      [32, 4, [0, 1, 2, 3]], [36, 4, [0, 1, 2, 4096, 100000, 0x7fffffff, 0xffffffff]], [40, 8, [0n, 0x200n, BigInt(s.qcow2.clusterSize), BigInt(b.length), 1n << 40n]],
      [48, 8, [0n, 0x200n, BigInt(s.qcow2.l1), BigInt(b.length)]], [56, 4, [0, 1, 2, 128, 0xffffffff]], [60, 4, [0, 1, 2, 65536, 0xffffffff]],
      [64, 8, [0n, BigInt(s.qcow2.clusterSize), BigInt(s.qcow2.l1), BigInt(b.length), BigInt(b.length - s.qcow2.clusterSize)]],
      [72, 8, [0n, 1n, 2n, 4n, 8n, 16n, 0x20n, 1n << 40n]], [80, 8, [0n, 1n, 2n]], [88, 8, [0n, 1n, 2n, 3n]],
      [96, 4, [0, 1, 3, 5, 6, 7, 64, 0xffffffff]], [100, 4, [72, 100, 104, 105, 112, 120, 4096, 0xffffffff]],
    ];
    const [at, width, values] = pick(r, fields);
    const v = r() < 0.8 ? pick(r, values) : width === 4 ? interesting32(r, b.length) : interesting64(r, b.length);
    if (width === 4) set32(b, at, Number(v)); else set64(b, at, BigInt(v));
    return { bytes: b, what: `qcow2 header@${at}=${v}` };
  }],
  [3, 'qcow2 table entry', (b, s, r) => {
    const q = s.qcow2;
    if (!q) return flipBytes(b, r);
    const cs = q.clusterSize;
    const COPIED = 1n << 63n;
    const tables: Array<[string, number[]]> = [['L1', [q.l1]], ['L2', q.l2], ['refcount table', [q.refcountTable]], ['refcount block', q.refcountBlocks]];
    const [name, list] = pick(r, tables.filter(([, l]) => l.length > 0));
    const table = pick(r, list);
    // Mostly the first entries, where the seed's data is.
    const entry = table + 8 * (r() < 0.7 ? int(r, 8) : int(r, cs / 8));
    const otherCluster = BigInt(pick(r, [0, cs, q.l1, q.refcountTable, ...q.l2, ...q.refcountBlocks, ...q.data.slice(0, 8)]));
    const x = int(r, 62 - (Math.log2(cs) - 8));
    const values: bigint[] = name === 'refcount block'
      ? [0n, 1n, 2n, 0xffffn, 0xffffffffffffffffn]
      : [0n, 1n, COPIED | otherCluster, otherCluster, COPIED | BigInt(b.length), COPIED | (1n << 40n), COPIED | 0x200n, COPIED | 1n | otherCluster,
        (1n << 62n) | BigInt(int(r, b.length + 4096)) | (BigInt(int(r, 256)) << BigInt(x)), 0xffffffffffffffffn, BigInt.asUintN(64, BigInt(Math.floor(r() * 2 ** 32)) << 9n)];
    const v = pick(r, values);
    if (name === 'refcount block') { if (entry + 2 <= b.length) b.writeUInt16BE(Number(v & 0xffffn), entry); }
    else set64(b, entry, v);
    return { bytes: b, what: `qcow2 ${name} entry@${entry}=0x${v.toString(16)}` };
  }],
  [1, 'qcow2 backing name', (b, s, r) => {
    if (!s.qcow2) return flipBytes(b, r);
    const names = ['..', '../base.qcow2', './base.qcow2', 'base.qcow2', 'child.qcow2', 'json:{"file.driver":"file","file.filename":"base.qcow2"}', 'nbd://127.0.0.1:1/x',
      'http://127.0.0.1:1/base.qcow2', 'file:base.qcow2', '', 'a\0b', '/', 'x'.repeat(1023), 'C:\\base.qcow2'];
    const name = Buffer.from(pick(r, names), 'utf8');
    const at = Number(b.readBigUInt64BE(8)) || 0x400;
    if (at + name.length > Math.min(b.length, s.qcow2.clusterSize)) return flipBytes(b, r);
    name.copy(b, at);
    set64(b, 8, BigInt(at));
    set32(b, 16, name.length);
    return { bytes: b, what: `qcow2 backing name '${name.toString('utf8').slice(0, 40)}'` };
  }],
];

function flipBytes(b: Buffer, r: Rand): { bytes: Buffer; what: string } {
  const n = 1 + int(r, 16);
  const near = r() < 0.6;
  const region = near ? pick(r, [0, Math.max(0, b.length - 512), 512, 1536]) : 0;
  for (let k = 0; k < n && b.length; k++) {
    const at = near ? Math.min(b.length - 1, region + int(r, 1024)) : int(r, b.length);
    b[at] = r() < 0.5 ? (r() * 256) | 0 : b[at] ^ (1 << int(r, 8));
  }
  return { bytes: b, what: `${n} random bytes${near ? ` near ${region}` : ''}` };
}

function fixChecksums(b: Buffer, s: Structures): void {
  if (s.vhdx) {
    for (const at of VHDX.headers) if (at + 4096 <= b.length) b.writeUInt32LE(crc32cWithZeroField(b.subarray(at, at + 4096), 4), at + 4);
    for (const at of VHDX.regions) if (at + 65536 <= b.length) b.writeUInt32LE(crc32cWithZeroField(b.subarray(at, at + 65536), 4), at + 4);
    return;
  }
  for (const at of [0, b.length - 512]) {
    if (at >= 0 && at + 512 <= b.length && hasFooterCookie(b.subarray(at))) {
      b.writeUInt32BE(vhdChecksum(b.subarray(at, at + 512), FOOTER_CHECKSUM_OFFSET), at + FOOTER_CHECKSUM_OFFSET);
    }
  }
  if (s.headerAt !== null && s.headerAt + 1024 <= b.length) {
    b.writeUInt32BE(vhdChecksum(b.subarray(s.headerAt, s.headerAt + 1024), HEADER_CHECKSUM_OFFSET), s.headerAt + HEADER_CHECKSUM_OFFSET);
  }
}

const withQcow2 = [...mutators, ...qcow2Mutators];

export function mutate(seed: Buffer, r: Rand): { bytes: Buffer; mutations: string[] } {
  let b = Buffer.from(seed);
  const s = structuresOf(b);
  const mutations: string[] = [];
  const list = s.qcow2 ? withQcow2 : mutators;
  const totalWeight = list.reduce((a, [w]) => a + w, 0);
  const n = 1 + Math.floor(r() * r() * 4);
  for (let k = 0; k < n; k++) {
    let x = r() * totalWeight;
    let m = list[0];
    for (const cand of list) { if ((x -= cand[0]) < 0) { m = cand; break; } }
    try {
      const out = m[2](b, s, r);
      b = Buffer.from(out.bytes);
      mutations.push(out.what);
    } catch {
      // The structure map is of the seed: after a truncation a field may lie past the end.
      mutations.push(`${m[1]} (no room)`);
    }
  }
  if (r() < 0.6) { fixChecksums(b, s); mutations.push('checksums fixed'); }
  return { bytes: b, mutations };
}

// ---------------------------------------------------------------------------------------------
// Allocation accounting

let allocMax = 0;
let instrumented = false;
function instrumentAllocations(): void {
  if (instrumented) return;
  instrumented = true;
  const wrap = (name: 'alloc' | 'allocUnsafe' | 'allocUnsafeSlow') => {
    const orig = Buffer[name] as (size: number, ...rest: unknown[]) => Buffer;
    (Buffer as unknown as Record<string, unknown>)[name] = function (this: unknown, size: number, ...rest: unknown[]) {
      if (typeof size === 'number' && size > allocMax) allocMax = size;
      return orig.call(Buffer, size, ...rest);
    };
  };
  wrap('alloc');
  wrap('allocUnsafe');
  wrap('allocUnsafeSlow');
}

// ---------------------------------------------------------------------------------------------
// Running one case

type OptionalModule<T> = T | null;
function optional<T>(rel: string): OptionalModule<T> {
  try {
    // Loaded by name at run time: check and diff are being written alongside this fuzzer.
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return require(path.join(__dirname, rel)) as T;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' && String((e as Error).message).includes(path.basename(rel))) return null;
    throw e;
  }
}
interface CheckModule { checkImage(p: string): Promise<{ ok: boolean; problems: unknown[] }> }
interface DiffModule { diffImages(a: string, b: string): Promise<unknown> }
interface EditorModules {
  blockMap: { buildBlockMap(chain: unknown): Promise<unknown> } | null;
  partitions: { readPartitionTable(read: (o: number, l: number) => Promise<Buffer>, size: number): Promise<unknown> } | null;
  headerFields: { describeHeader(img: import('../../src/format/diskImage').DiskImage): unknown } | null;
}
const editor: EditorModules = {
  blockMap: optional('../../src/chain/blockMap'),
  partitions: optional('../../src/chain/partitions'),
  headerFields: optional('../../src/chain/headerFields'),
};
const checkModule = optional<CheckModule>('../../src/chain/check');
const diffModule = optional<DiffModule>('../../src/chain/diff');
export const targetsAvailable = { check: checkModule !== null, diff: diffModule !== null };

/** The most a case may read in one go, so read requests themselves stay small. */
const READ_CHUNK = 256 * 1024;

export class Fuzzer {
  private seeds: Seed[] = [];
  constructor(readonly seed: number, readonly work: string, readonly cpuLimitMs = CPU_LIMIT_MS) {}

  async init(withFixtures = true): Promise<void> {
    instrumentAllocations();
    this.seeds = await buildSeeds(path.join(this.work, 'seeds'), withFixtures);
    // Fixtures for the parent-path cases: a directory, a FIFO-like device, a symlink loop.
    const special = path.join(this.work, 'case');
    mkdirSync(special, { recursive: true });
  }

  get seedNames(): string[] {
    return this.seeds.map((s) => s.name);
  }

  /** Builds case `index` deterministically; returns the files written and what was done. */
  prepare(index: number): { dir: string; target: string; pristine: string; mutations: string[]; seed: string; bytes: number } {
    const r = rng((this.seed * 0x9e3779b1 + index * 0x85ebca6b) >>> 0);
    const seed = this.seeds[Math.floor(r() * this.seeds.length)];
    const dir = path.join(this.work, 'case');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    mkdirSync(path.join(dir, 'dir'));
    try { symlinkSync('loop.vhd', path.join(dir, 'loop.vhd')); } catch { /* exists */ }
    try { symlinkSync('/dev/null', path.join(dir, 'null')); } catch { /* exists */ }
    const target = path.join(dir, seed.fileName);
    const pristine = path.join(dir, `pristine-${seed.fileName}`);
    let mutations: string[];
    let bytes = 0;
    if (seed.name === 'differencing-parent' && seed.parent) {
      const m = mutate(seed.parent.bytes, r);
      writeFileSync(path.join(dir, seed.parent.name), m.bytes);
      writeFileSync(target, seed.bytes);
      mutations = ['(parent) ' + m.mutations.join('; ')];
      bytes = m.bytes.length + seed.bytes.length;
    } else {
      const m = mutate(seed.bytes, r);
      writeFileSync(target, m.bytes);
      if (seed.parent) writeFileSync(path.join(dir, seed.parent.name), seed.parent.bytes);
      mutations = m.mutations;
      bytes = m.bytes.length + (seed.parent?.bytes.length ?? 0);
    }
    writeFileSync(pristine, seed.bytes);
    bytes += seed.bytes.length;
    return { dir, target, pristine, mutations, seed: seed.name, bytes };
  }

  async run(index: number): Promise<CaseResult> {
    const c = this.prepare(index);
    const r = rng((this.seed ^ (index * 0x27d4eb2d)) >>> 0);
    const bound = 2 * c.bytes + 8 * 1024 * 1024;
    const outcomes: Record<string, string> = {};
    const res: CaseResult = {
      index, seed: c.seed, mutations: c.mutations, cpuMs: 0, wallMs: 0, maxAlloc: 0, allocBound: bound, arrayBuffersGrowth: 0, outcomes, targetMs: {},
    };
    const ab0 = process.memoryUsage().arrayBuffers;
    let abPeak = ab0;
    const sample = () => { const ab = process.memoryUsage().arrayBuffers; if (ab > abPeak) abPeak = ab; };
    allocMax = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    let stepAllocMax = 0;
    const step = async (name: string, fn: () => Promise<unknown> | unknown): Promise<void> => {
      if (res.failure) return;
      const outer = allocMax;
      allocMax = 0;
      const c0 = process.cpuUsage();
      try {
        await fn();
        outcomes[name] = 'ok';
      } catch (e) {
        if (e instanceof DiskImageError) {
          outcomes[name] = e.code;
        } else {
          outcomes[name] = 'UNTYPED';
          res.failure = { kind: 'untyped', target: name, detail: (e as Error)?.stack ?? String(e) };
        }
      }
      const c1 = process.cpuUsage(c0);
      res.targetMs[name] = Math.round((c1.user + c1.system) / 1000);
      // A write that allocates a block may hold one block in memory: that much more is allowed there.
      const allowed = name === 'write' ? bound + 2 * this.lastWriteBlockSize : bound;
      if (!res.failure && allocMax > allowed) {
        res.failure = { kind: 'alloc', target: name, detail: `allocated ${allocMax} bytes at once; bound ${allowed} for ${c.bytes} bytes of files` };
      }
      stepAllocMax = Math.max(stepAllocMax, name === 'write' ? 0 : allocMax);
      allocMax = Math.max(outer, allocMax);
      sample();
    };

    // A promise that rejects with nobody listening (a read-ahead failing while an earlier one is
    // awaited) would crash the process: it counts against the case it happens in.
    let unhandled: unknown = undefined;
    const onUnhandled = (reason: unknown) => { if (unhandled === undefined) unhandled = reason ?? 'undefined'; };
    process.on('unhandledRejection', onUnhandled);
    try {
      await this.runTargets(c, r, step);
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    if (!res.failure && unhandled !== undefined) {
      res.failure = { kind: 'unhandled rejection', target: Object.keys(outcomes).join(','), detail: (unhandled as Error)?.stack ?? String(unhandled) };
    }


    const cpu = process.cpuUsage(cpu0);
    res.cpuMs = (cpu.user + cpu.system) / 1000;
    res.wallMs = performance.now() - t0;
    res.maxAlloc = stepAllocMax;
    res.arrayBuffersGrowth = Math.max(0, abPeak - ab0);
    if (!res.failure && res.cpuMs > this.cpuLimitMs) {
      res.failure = { kind: 'slow', target: slowestTarget(res.targetMs), detail: `${res.cpuMs.toFixed(0)} ms CPU (${res.wallMs.toFixed(0)} ms wall)` };
    }
    if (!res.failure && res.arrayBuffersGrowth > bound + 2 * this.lastWriteBlockSize + 32 * 1024 * 1024) {
      res.failure = { kind: 'alloc', target: '-', detail: `ArrayBuffer memory grew by ${res.arrayBuffersGrowth} bytes; bound ${bound}` };
    }
    return res;
  }

  private lastWriteBlockSize = 0;

  private async runTargets(c: { target: string; pristine: string }, r: Rand, step: (name: string, fn: () => Promise<unknown> | unknown) => Promise<void>): Promise<void> {
    const bytes = readFileSync(c.target);
    await step('parsers', () => exerciseParsers(bytes, r));
    await step('open', async () => {
      const img = await openImage(c.target);
      try {
        if (img instanceof VhdImage) { void img.qemuVirtualSize; void img.footerChecksumValid; void img.headerChecksumValid; }
        void img.allocatedBlockCount();
        const size = img.virtualSize;
        for (let k = 0; k < 3; k++) {
          const block = k === 0 ? 0 : Math.floor(r() * Math.max(1, img.blockCount));
          if (img.isBlockAllocated(block)) await img.readBlockBitmap(block);
          const off = Math.floor(r() * Math.max(1, size));
          const runs = await img.runs(off, Math.min(READ_CHUNK, size - off));
          for (const run of runs.slice(0, 8)) {
            if (run.present) await img.readOwn(run.offset, Buffer.alloc(Math.min(run.length, READ_CHUNK)));
          }
        }
      } finally {
        await img.close();
      }
    });
    await step('info', () => describeImage(c.target));
    await step('map', async () => {
      const chain = await openChain(c.target);
      try {
        let n = 0;
        await chain.map(0, chain.virtualSize, () => { n++; });
      } finally {
        await chain.close();
      }
    });
    await step('read', async () => {
      const chain = await openChain(c.target);
      try {
        const size = chain.virtualSize;
        const ranges: Array<[number, number]> = [[0, Math.min(READ_CHUNK, size)], [Math.max(0, size - 4096), Math.min(4096, size)]];
        for (let k = 0; k < 3; k++) {
          const off = Math.floor(r() * Math.max(1, size));
          ranges.push([off, Math.min(1 + Math.floor(r() * READ_CHUNK), size - off)]);
        }
        for (const [off, len] of ranges) await chain.readRange(off, Math.max(0, len));
      } finally {
        await chain.close();
      }
    });
    if (checkModule) await step('check', () => checkModule.checkImage(c.target));
    if (diffModule) await step('diff', () => diffModule.diffImages(c.target, c.pristine));
    // Last, as it changes the file: a write, read back. A plain Error here is a wrong read-back.
    this.lastWriteBlockSize = 0;
    await step('write', async () => {
      const chain = await openChain(c.target, { writable: true });
      try {
        this.lastWriteBlockSize = chain.top.format !== 'vhd' || (chain.top as VhdImage).header ? chain.top.blockSize : 0;
        const size = chain.virtualSize;
        if (size === 0) return;
        const off = r() < 0.3 ? Math.floor(r() * Math.min(size, 1 << 20)) : Math.floor(r() * size);
        const len = Math.max(1, Math.min(size - off, 1 + Math.floor(r() * 70000)));
        const data = Buffer.alloc(len);
        for (let i = 0; i < len; i += 97) data[i] = 1 + Math.floor(r() * 255);
        await chain.write(off, data);
        const back = await chain.readRange(off, len);
        if (!back.equals(data)) throw new Error(`read-back after a write of ${len} bytes at ${off} differs`);
      } finally {
        await chain.close();
      }
    });
    // The editor's views: header fields, block map and partition table, all from image contents.
    await step('editor', async () => {
      const chain = await openChain(c.target, { tolerant: true });
      try {
        editor.headerFields?.describeHeader(chain.top);
        if (!chain.complete) return;
        await editor.blockMap?.buildBlockMap(chain);
        await editor.partitions?.readPartitionTable((o, l) => chain.readRange(o, l), chain.virtualSize);
      } finally {
        await chain.close();
      }
    });
  }

  /** Keeps the failing input for reproduction. */
  saveCase(index: number, outDir: string): string {
    const from = path.join(this.work, 'case');
    const to = path.join(outDir, `case-${this.seed}-${index}`);
    rmSync(to, { recursive: true, force: true });
    mkdirSync(to, { recursive: true });
    for (const name of ['child.vhd', 'base.vhd', 'child.avhdx', 'base.vhdx', 'fixed.vhd', 'dynamic.vhd', 'small-blocks.vhd', ...this.seeds.map((s) => s.fileName)]) {
      const p = path.join(from, name);
      if (existsSync(p)) writeFileSync(path.join(to, name), readFileSync(p));
    }
    return to;
  }
}

function slowestTarget(ms: Record<string, number>): string {
  return Object.entries(ms).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v} ms`).slice(0, 2).join(', ');
}

/** Runs the pure parsers on slices of the (mutated) bytes; they must never throw. */
function exerciseParsers(b: Buffer, r: Rand): void {
  const slice = (n: number) => {
    const at = b.length > n ? Math.floor(r() * (b.length - n)) : 0;
    return b.subarray(at, at + n);
  };
  for (const s of [b.subarray(0, 512), b.subarray(Math.max(0, b.length - 512)), b.subarray(Math.max(0, b.length - 511)), slice(512)]) {
    const f = parseFooter(s);
    chsSizeBytes(f.geometry);
    geometryForSize(f.currentSize);
  }
  for (const s of [b.subarray(512, 1536), slice(1024)]) {
    const h = parseDynamicHeader(s);
    for (const l of h.locators) void l.platformDataOffset;
  }
  const ls = slice(24);
  if (ls.length === 24) parseLocatorEntry(ls, 0);
  const data = slice(Math.floor(r() * 300));
  for (const code of CODES) decodeLocatorPath(code, data);
  decodeUtf16Detect(data);
  const bat = slice(4096);
  Bat.parse(bat, bat.length >> 2).allocatedCount();
  const bm = slice(512);
  countSetBits(bm, bm.length * 8);
  runLength(bm, 0, bm.length * 8, true);
  bitmapRuns(bm, 0, bm.length * 8);
  // VHDX structures on whatever bytes are there (fixed-size views, so short files are padded).
  const pad = (at: number, n: number) => { const x = Buffer.alloc(n); if (at < b.length) b.copy(x, 0, at, Math.min(b.length, at + n)); return x; };
  parseVhdxHeader(pad(64 * 1024, 4096));
  parseRegionTable(pad(192 * 1024, 65536));
  parseMetadataTable(pad(2 * MiB, 65536));
  const log = pad(MiB, 64 * 1024);
  try { findActiveSequence(log, log.subarray(48, 64)); } catch (e) { if (!(e instanceof LogError)) throw e; }
  try { parseParentLocator(slice(Math.floor(r() * 400))); } catch (e) { if (!(e instanceof ParentLocatorError)) throw e; }
}

export interface CampaignSummary {
  seed: number;
  cases: number;
  failures: CaseResult[];
  slowest: { index: number; cpuMs: number; wallMs: number; seed: string; mutations: string[] };
  maxAllocRatio: number;
  outcomeCounts: Record<string, Record<string, number>>;
  peakRss: number;
  peakArrayBuffers: number;
  seconds: number;
}

/** Runs cases [from, to) and summarises. */
export async function campaign(fuzzer: Fuzzer, from: number, to: number, onCase?: (r: CaseResult) => void): Promise<CampaignSummary> {
  const t0 = Date.now();
  const sum: CampaignSummary = {
    seed: fuzzer.seed, cases: 0, failures: [], slowest: { index: -1, cpuMs: 0, wallMs: 0, seed: '', mutations: [] },
    maxAllocRatio: 0, outcomeCounts: {}, peakRss: 0, peakArrayBuffers: 0, seconds: 0,
  };
  for (let i = from; i < to; i++) {
    const res = await fuzzer.run(i);
    sum.cases++;
    if (res.failure) sum.failures.push(res);
    if (res.cpuMs > sum.slowest.cpuMs) sum.slowest = { index: i, cpuMs: res.cpuMs, wallMs: res.wallMs, seed: res.seed, mutations: res.mutations };
    sum.maxAllocRatio = Math.max(sum.maxAllocRatio, res.maxAlloc / res.allocBound);
    for (const [k, v] of Object.entries(res.outcomes)) {
      const m = (sum.outcomeCounts[k] ??= {});
      m[v] = (m[v] ?? 0) + 1;
    }
    const mem = process.memoryUsage();
    sum.peakRss = Math.max(sum.peakRss, mem.rss);
    sum.peakArrayBuffers = Math.max(sum.peakArrayBuffers, mem.arrayBuffers);
    onCase?.(res);
  }
  sum.seconds = (Date.now() - t0) / 1000;
  return sum;
}
