import * as nodePath from 'path';
import { DiskImageError } from '../errors';
import { ImageFile } from '../../io/imageFile';
import { batSizeBytes } from './bat';
import { DYNAMIC_HEADER_COOKIE, DYNAMIC_HEADER_SIZE, serializeDynamicHeader } from './dynamicHeader';
import { DiskType, FOOTER_COOKIE, FOOTER_SIZE, serializeFooter } from './footer';
import { Geometry, geometryForSize, roundUpToChsSize, SECTOR_SIZE } from './geometry';
import { dateToVhdTimestamp } from './timestamp';
import { newUuid } from './uuid';
import { MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from './vhdImage';

/** Our creator application code and version, as other tools will see them. */
export const CREATOR_APPLICATION = 'dimg';
export const CREATOR_VERSION = 0x00010000;
export const CREATOR_HOST_OS = 'Wi2k';
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;
/** 32-bit BAT sector offsets address 2 TiB of file. */
export const MAX_VHD_SIZE = 2 * 1024 * 1024 * 1024 * 1024;

export interface CreateOptions {
  size: number;
  type?: 'dynamic' | 'fixed';
  blockSize?: number;
  /** Keep the byte count as given instead of rounding up to an exact CHS size. */
  exactSize?: boolean;
  /** Allow replacing an existing file (default: refuse). */
  overwrite?: boolean;
  /** CHS geometry to record (default: the spec's for the size). */
  geometry?: Geometry;
}

export interface NewLocator {
  code: string;
  data: Buffer;
}

export interface SparseLayout {
  size: number;
  blockSize: number;
  diskType: DiskType.Dynamic | DiskType.Differencing;
  geometry: Geometry;
  uniqueId?: Buffer;
  parentUniqueId?: Buffer;
  parentTimestamp?: number;
  parentUnicodeName?: string;
  locators?: NewLocator[];
}

export function effectiveSize(request: number, exact: boolean | undefined): number {
  if (!Number.isFinite(request) || request <= 0) throw new Error(`size must be positive (got ${request})`);
  const size = exact ? Math.ceil(request / SECTOR_SIZE) * SECTOR_SIZE : roundUpToChsSize(request);
  if (size > MAX_VHD_SIZE) throw new Error(`size ${size} is larger than a VHD can address (2 TiB)`);
  return size;
}

export function footerFor(size: number, geometry: Geometry, diskType: DiskType, dataOffset: bigint, uniqueId: Buffer, timestamp: number): Buffer {
  return serializeFooter({
    cookie: FOOTER_COOKIE, features: 2, formatVersion: 0x00010000, dataOffset, timestamp,
    creatorApplication: CREATOR_APPLICATION, creatorVersion: CREATOR_VERSION, creatorHostOs: CREATOR_HOST_OS,
    originalSize: size, currentSize: size, geometry, diskType, uniqueId, savedState: 0, hidden: 0,
  });
}

/** Creates a fixed or dynamic image. Returns the size actually used. */
export async function createImage(path: string, options: CreateOptions): Promise<number> {
  let size: number;
  try {
    size = effectiveSize(options.size, options.exactSize);
  } catch (e) {
    throw new DiskImageError(path, (e as Error).message, undefined, undefined, 'EARG');
  }
  const geometry = options.geometry ?? geometryForSize(size);
  if ((options.type ?? 'dynamic') === 'fixed') {
    const file = await ImageFile.create(path, !options.overwrite);
    try {
      // The data area is a hole until written: reads as zeros, costs no disk space.
      await file.truncate(size);
      await file.writeAt(footerFor(size, geometry, DiskType.Fixed, 0xffffffffffffffffn, newUuid(), dateToVhdTimestamp(new Date())), size);
      await file.sync();
    } finally {
      await file.close();
    }
    return size;
  }
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    throw new DiskImageError(path, `block size ${blockSize} is not a power of two from 512 bytes to 256 MiB`, undefined, undefined, 'EARG');
  }
  await writeSparseImage(path, { size, blockSize, diskType: DiskType.Dynamic, geometry }, options.overwrite);
  return size;
}

/** Lays out a new dynamic or differencing image: footer copy, header, BAT, locator data, footer. */
export async function writeSparseImage(path: string, l: SparseLayout, overwrite = false): Promise<void> {
  const entries = Math.ceil(l.size / l.blockSize);
  const tableOffset = FOOTER_SIZE + DYNAMIC_HEADER_SIZE;
  const batBytes = batSizeBytes(entries);
  let cursor = tableOffset + batBytes;
  const locatorEntries = (l.locators ?? []).map((loc) => {
    const space = Math.max(SECTOR_SIZE, Math.ceil(loc.data.length / SECTOR_SIZE) * SECTOR_SIZE);
    const entry = {
      platformCode: loc.code,
      // Bytes, as Hyper-V and Virtual PC store it (a value >= 512 cannot be mistaken for sectors).
      platformDataSpace: space,
      platformDataLength: loc.data.length,
      reserved: 0,
      platformDataOffset: cursor,
    };
    cursor += space;
    return { entry, data: loc.data };
  });
  const timestamp = dateToVhdTimestamp(new Date());
  const footer = footerFor(l.size, l.geometry, l.diskType, BigInt(FOOTER_SIZE), l.uniqueId ?? newUuid(), timestamp);
  const header = serializeDynamicHeader({
    cookie: DYNAMIC_HEADER_COOKIE,
    dataOffset: 0xffffffffffffffffn,
    tableOffset,
    headerVersion: 0x00010000,
    maxTableEntries: entries,
    blockSize: l.blockSize,
    parentUniqueId: l.parentUniqueId ?? Buffer.alloc(16),
    parentTimestamp: l.parentTimestamp ?? 0,
    reserved1: 0,
    parentUnicodeName: l.parentUnicodeName ?? '',
    locators: locatorEntries.map((e) => e.entry),
  });
  const file = await ImageFile.create(path, !overwrite);
  try {
    await file.writeAt(footer, 0);
    await file.writeAt(header, FOOTER_SIZE);
    // The BAT is written in chunks so a 2 TiB image's 4 MiB table never sits in memory twice.
    const chunk = Buffer.alloc(Math.min(batBytes, 1024 * 1024), 0xff);
    for (let off = 0; off < batBytes; off += chunk.length) {
      await file.writeAt(chunk.subarray(0, Math.min(chunk.length, batBytes - off)), tableOffset + off);
    }
    for (const e of locatorEntries) {
      const space = Buffer.alloc(e.entry.platformDataSpace);
      e.data.copy(space);
      await file.writeAt(space, e.entry.platformDataOffset);
    }
    await file.writeAt(footer, cursor);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** W2ru data: the parent relative to the child's folder, Windows style (`.\parent.vhd`). */
export function relativeLocatorPath(childPath: string, parentPath: string): string {
  const rel = nodePath.relative(nodePath.dirname(nodePath.resolve(childPath)), nodePath.resolve(parentPath)).split(nodePath.sep).join('\\');
  return rel.startsWith('..') ? rel : `.\\${rel}`;
}
