import { DiskImageError } from '../errors';
import { ImageFile } from '../../io/imageFile';
import { BAT_ENTRY_SIZE, batGeometry, encodeEntry, MIB, PayloadBlockState } from './bat';
import { isValidBlockSize, serializeFileParameters } from './fileParameters';
import { serializeFileIdentifier } from './fileIdentifier';
import { newGuid } from './guid';
import { HEADER_OFFSETS, serializeHeader } from './header';
import { METADATA_ITEM, NewMetadataItem, serializeMetadataRegion } from './metadataTable';
import { serializeParentLocator } from './parentLocator';
import { BAT_REGION_GUID, METADATA_REGION_GUID, REGION_TABLE_OFFSETS, serializeRegionTable } from './regionTable';
import { isValidSectorSize, serializeSectorSize } from './sectorSize';
import { MAX_VHDX_VIRTUAL_SIZE, serializeVirtualDiskSize } from './virtualDiskSize';
import { MAX_BAT_ENTRIES } from './vhdxImage';

export const VHDX_CREATOR = 'Disk Image Inspector (diskimg)';
export const DEFAULT_VHDX_BLOCK_SIZE = 32 * MIB;
const LOG_OFFSET = MIB;
const LOG_LENGTH = MIB;
const METADATA_OFFSET = 2 * MIB;
const METADATA_LENGTH = MIB;
const BAT_OFFSET = 3 * MIB;

export interface VhdxCreateOptions {
  size: number;
  type?: 'dynamic' | 'fixed';
  blockSize?: number;
  logicalSectorSize?: 512 | 4096;
  physicalSectorSize?: 512 | 4096;
  overwrite?: boolean;
}

export interface VhdxLayoutOptions {
  size: number;
  blockSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  fixed: boolean;
  parentLocator?: Array<[string, string]>;
}

/** Creates a fixed or dynamic VHDX. Returns the virtual size used (rounded up to whole logical sectors). */
export async function createVhdx(path: string, options: VhdxCreateOptions): Promise<number> {
  const logicalSectorSize = options.logicalSectorSize ?? 512;
  const blockSize = options.blockSize ?? DEFAULT_VHDX_BLOCK_SIZE;
  const arg = (what: string): never => { throw new DiskImageError(path, what, undefined, undefined, 'EARG'); };
  if (!isValidSectorSize(logicalSectorSize)) arg(`logical sector size ${logicalSectorSize} is neither 512 nor 4096`);
  if (!isValidBlockSize(blockSize)) arg(`block size ${blockSize} is not a power of two from 1 MiB to 256 MiB`);
  if (!Number.isFinite(options.size) || options.size <= 0) arg(`size must be positive (got ${options.size})`);
  const size = Math.ceil(options.size / logicalSectorSize) * logicalSectorSize;
  if (size > MAX_VHDX_VIRTUAL_SIZE) arg(`size ${size} is larger than a VHDX can be (64 TiB)`);
  await writeVhdx(path, {
    size, blockSize, logicalSectorSize, physicalSectorSize: options.physicalSectorSize ?? 4096,
    fixed: options.type === 'fixed',
  }, options.overwrite);
  return size;
}

/**
 * Lays out a new file: identifier, two headers, two region tables, a 1 MiB log, the metadata
 * region, the BAT, then (fixed) every payload block. Written front to back and flushed; the file
 * identifier goes last, so a file cut short by a crash is not taken for a VHDX.
 */
export async function writeVhdx(path: string, l: VhdxLayoutOptions, overwrite = false): Promise<void> {
  const hasParent = l.parentLocator !== undefined;
  const geo = batGeometry(l.size, l.blockSize, l.logicalSectorSize, hasParent);
  if (geo.totalEntries > MAX_BAT_ENTRIES) throw new DiskImageError(path, `${geo.totalEntries} BAT entries are more than ${MAX_BAT_ENTRIES}`, undefined, undefined, 'EARG');
  const batLength = Math.max(MIB, Math.ceil((geo.totalEntries * BAT_ENTRY_SIZE) / MIB) * MIB);
  const dataStart = BAT_OFFSET + batLength;

  const items: NewMetadataItem[] = [
    { itemId: METADATA_ITEM.fileParameters, data: serializeFileParameters({ blockSize: l.blockSize, leaveBlocksAllocated: l.fixed, hasParent }), isVirtualDisk: false, isRequired: true },
    { itemId: METADATA_ITEM.virtualDiskSize, data: serializeVirtualDiskSize(l.size), isVirtualDisk: true, isRequired: true },
    { itemId: METADATA_ITEM.page83Data, data: newGuid(), isVirtualDisk: true, isRequired: true },
    { itemId: METADATA_ITEM.logicalSectorSize, data: serializeSectorSize(l.logicalSectorSize), isVirtualDisk: true, isRequired: true },
    { itemId: METADATA_ITEM.physicalSectorSize, data: serializeSectorSize(l.physicalSectorSize), isVirtualDisk: true, isRequired: true },
  ];
  if (l.parentLocator) items.push({ itemId: METADATA_ITEM.parentLocator, data: serializeParentLocator(l.parentLocator), isVirtualDisk: false, isRequired: true });
  const metadata = serializeMetadataRegion(items);
  if (metadata.length > METADATA_LENGTH) throw new DiskImageError(path, 'parent locator too long', undefined, undefined, 'EARG');

  const regions = serializeRegionTable([
    { guid: BAT_REGION_GUID, fileOffset: BAT_OFFSET, length: batLength, required: true },
    { guid: METADATA_REGION_GUID, fileOffset: METADATA_OFFSET, length: METADATA_LENGTH, required: true },
  ]);
  const dataWriteGuid = newGuid();
  const header = (seq: bigint) => serializeHeader({
    sequenceNumber: seq, fileWriteGuid: newGuid(), dataWriteGuid: dataWriteGuid, logGuid: Buffer.alloc(16),
    logVersion: 0, version: 1, logLength: LOG_LENGTH, logOffset: LOG_OFFSET,
  });

  const file = await ImageFile.create(path, !overwrite);
  try {
    const end = l.fixed ? dataStart + geo.payloadBlocks * l.blockSize : dataStart;
    // Holes read as zeros: the log, unused BAT entries and a fixed image's data cost no disk space.
    await file.truncate(end);
    await file.writeAt(header(0n), HEADER_OFFSETS[0]);
    await file.writeAt(header(1n), HEADER_OFFSETS[1]);
    await file.writeAt(regions, REGION_TABLE_OFFSETS[0]);
    await file.writeAt(regions, REGION_TABLE_OFFSETS[1]);
    await file.writeAt(metadata, METADATA_OFFSET);
    if (l.fixed) {
      // The BAT in 1 MiB pieces: every payload entry fully present, blocks back to back.
      const perChunk = MIB / BAT_ENTRY_SIZE;
      for (let first = 0; first < geo.totalEntries; first += perChunk) {
        const chunk = Buffer.alloc(Math.min(perChunk, geo.totalEntries - first) * BAT_ENTRY_SIZE);
        for (let i = first; i < first + chunk.length / BAT_ENTRY_SIZE; i++) {
          if ((i + 1) % (geo.chunkRatio + 1) === 0) continue; // a sector bitmap entry
          const b = i - Math.floor(i / (geo.chunkRatio + 1));
          if (b >= geo.payloadBlocks) break;
          encodeEntry(PayloadBlockState.FullyPresent, dataStart + b * l.blockSize).copy(chunk, (i - first) * BAT_ENTRY_SIZE);
        }
        await file.writeAt(chunk, BAT_OFFSET + first * BAT_ENTRY_SIZE);
      }
    }
    await file.sync();
    await file.writeAt(serializeFileIdentifier(VHDX_CREATOR), 0);
    await file.sync();
  } finally {
    await file.close();
  }
}
