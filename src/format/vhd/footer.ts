import { vhdChecksum } from './checksum';
import { Geometry } from './geometry';

/** The 512-byte hard disk footer ("conectix"), found at the end of every VHD and at offset 0 of sparse ones. */
export const FOOTER_SIZE = 512;
export const FOOTER_COOKIE = 'conectix';
export const FOOTER_CHECKSUM_OFFSET = 64;
export const NO_DATA_OFFSET = 0xffffffffffffffffn;

export enum DiskType {
  None = 0,
  Fixed = 2,
  Dynamic = 3,
  Differencing = 4,
}

export type DiskTypeName = 'fixed' | 'dynamic' | 'differencing';

export function diskTypeName(t: number): DiskTypeName | undefined {
  switch (t) {
    case DiskType.Fixed: return 'fixed';
    case DiskType.Dynamic: return 'dynamic';
    case DiskType.Differencing: return 'differencing';
    default: return undefined;
  }
}

export interface Footer {
  cookie: string;
  features: number;
  formatVersion: number;
  /** Offset of the dynamic header; all ones (NO_DATA_OFFSET) for fixed disks. */
  dataOffset: bigint;
  /** Seconds since 2000-01-01 UTC. */
  timestamp: number;
  /** The 4 raw bytes, as latin1. */
  creatorApplication: string;
  creatorVersion: number;
  creatorHostOs: string;
  originalSize: number;
  currentSize: number;
  geometry: Geometry;
  diskType: number;
  checksum: number;
  uniqueId: Buffer;
  savedState: number;
  /** blktap keeps a "hidden" flag in the first reserved byte. */
  hidden: number;
  /** The bytes it was parsed from (512; a 511-byte footer is padded with one zero). */
  raw: Buffer;
  /** The checksum the bytes should carry. */
  computedChecksum: number;
}

/** Field offsets and sizes, for the editor's raw view and for error messages. */
export const FOOTER_FIELDS: ReadonlyArray<{ name: keyof Footer | 'reserved'; offset: number; size: number }> = [
  { name: 'cookie', offset: 0, size: 8 },
  { name: 'features', offset: 8, size: 4 },
  { name: 'formatVersion', offset: 12, size: 4 },
  { name: 'dataOffset', offset: 16, size: 8 },
  { name: 'timestamp', offset: 24, size: 4 },
  { name: 'creatorApplication', offset: 28, size: 4 },
  { name: 'creatorVersion', offset: 32, size: 4 },
  { name: 'creatorHostOs', offset: 36, size: 4 },
  { name: 'originalSize', offset: 40, size: 8 },
  { name: 'currentSize', offset: 48, size: 8 },
  { name: 'geometry', offset: 56, size: 4 },
  { name: 'diskType', offset: 60, size: 4 },
  { name: 'checksum', offset: 64, size: 4 },
  { name: 'uniqueId', offset: 68, size: 16 },
  { name: 'savedState', offset: 84, size: 1 },
  { name: 'reserved', offset: 85, size: 427 },
];

function readSize(b: Buffer, off: number): number {
  const v = b.readBigUInt64BE(off);
  // Sizes past 2^53 cannot be real disks; saturate so validation rejects them instead of wrapping.
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

export function hasFooterCookie(bytes: Buffer): boolean {
  return bytes.length >= 8 && bytes.toString('latin1', 0, 8) === FOOTER_COOKIE;
}

/** Parses 511 or 512 bytes; never throws on content (validation is the caller's job). */
export function parseFooter(bytes: Buffer): Footer {
  const raw = Buffer.alloc(FOOTER_SIZE);
  bytes.copy(raw, 0, 0, Math.min(bytes.length, FOOTER_SIZE));
  return {
    cookie: raw.toString('latin1', 0, 8),
    features: raw.readUInt32BE(8),
    formatVersion: raw.readUInt32BE(12),
    dataOffset: raw.readBigUInt64BE(16),
    timestamp: raw.readUInt32BE(24),
    creatorApplication: raw.toString('latin1', 28, 32),
    creatorVersion: raw.readUInt32BE(32),
    creatorHostOs: raw.toString('latin1', 36, 40),
    originalSize: readSize(raw, 40),
    currentSize: readSize(raw, 48),
    geometry: { cylinders: raw.readUInt16BE(56), heads: raw[58], sectorsPerTrack: raw[59] },
    diskType: raw.readUInt32BE(60),
    checksum: raw.readUInt32BE(64),
    uniqueId: Buffer.from(raw.subarray(68, 84)),
    savedState: raw[84],
    hidden: raw[85],
    raw,
    computedChecksum: vhdChecksum(raw, FOOTER_CHECKSUM_OFFSET),
  };
}

/** Serializes with a fresh checksum; reserved bytes come from `raw` when present so nothing is lost. */
export function serializeFooter(f: Omit<Footer, 'raw' | 'computedChecksum' | 'checksum'> & { raw?: Buffer }): Buffer {
  const b = Buffer.alloc(FOOTER_SIZE);
  if (f.raw) f.raw.copy(b, 0, 0, FOOTER_SIZE);
  b.write(f.cookie.padEnd(8, '\0').slice(0, 8), 0, 'latin1');
  b.writeUInt32BE(f.features >>> 0, 8);
  b.writeUInt32BE(f.formatVersion >>> 0, 12);
  b.writeBigUInt64BE(f.dataOffset, 16);
  b.writeUInt32BE(f.timestamp >>> 0, 24);
  b.write(f.creatorApplication.padEnd(4, ' ').slice(0, 4), 28, 'latin1');
  b.writeUInt32BE(f.creatorVersion >>> 0, 32);
  b.write(f.creatorHostOs.padEnd(4, ' ').slice(0, 4), 36, 'latin1');
  b.writeBigUInt64BE(BigInt(f.originalSize), 40);
  b.writeBigUInt64BE(BigInt(f.currentSize), 48);
  b.writeUInt16BE(f.geometry.cylinders, 56);
  b[58] = f.geometry.heads;
  b[59] = f.geometry.sectorsPerTrack;
  b.writeUInt32BE(f.diskType >>> 0, 60);
  f.uniqueId.copy(b, 68, 0, 16);
  b[84] = f.savedState;
  b[85] = f.hidden;
  b.writeUInt32BE(vhdChecksum(b, FOOTER_CHECKSUM_OFFSET), FOOTER_CHECKSUM_OFFSET);
  return b;
}

/** "win ", "d2v\0" -> "win", "d2v": trailing spaces and NULs removed, for display. */
export function trimCode(code: string): string {
  return code.replace(/[\s\0]+$/, '');
}

export function formatCreatorVersion(v: number): string {
  return `${v >>> 16}.${v & 0xffff}`;
}
