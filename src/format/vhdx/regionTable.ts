import { crc32cWithZeroField } from './crc32c';
import { formatGuid, parseGuid } from './guid';

/** Region table: 64 KiB, two copies (192 KiB and 256 KiB), naming where the BAT and metadata regions are. */
export const REGION_TABLE_SIGNATURE = 'regi';
export const REGION_TABLE_SIZE = 64 * 1024;
export const REGION_TABLE_OFFSETS = [192 * 1024, 256 * 1024] as const;
export const MAX_REGION_ENTRIES = 2047;
export const BAT_REGION_GUID = '2dc27766-f623-4200-9d64-115e9bfd4a08';
export const METADATA_REGION_GUID = '8b7ca206-4790-4b9a-b8fe-575f050f886e';

export interface RegionTableEntry {
  guid: string;
  fileOffset: number;
  length: number;
  required: boolean;
  /** Byte offset of this entry inside the table. */
  at: number;
}

export interface RegionTable {
  signature: string;
  checksum: number;
  computedChecksum: number;
  entryCount: number;
  entries: RegionTableEntry[];
}

/** Parses a 64 KiB table; entries are read only when the count is within the limit. */
export function parseRegionTable(b: Buffer): RegionTable {
  const entryCount = b.readUInt32LE(8);
  const entries: RegionTableEntry[] = [];
  if (entryCount <= MAX_REGION_ENTRIES) {
    for (let i = 0; i < entryCount; i++) {
      const at = 16 + i * 32;
      entries.push({
        guid: formatGuid(b, at),
        fileOffset: Number(b.readBigUInt64LE(at + 16)),
        length: b.readUInt32LE(at + 24),
        required: (b.readUInt32LE(at + 28) & 1) !== 0,
        at,
      });
    }
  }
  return {
    signature: b.subarray(0, 4).toString('latin1'),
    checksum: b.readUInt32LE(4),
    computedChecksum: crc32cWithZeroField(b.subarray(0, REGION_TABLE_SIZE), 4),
    entryCount,
    entries,
  };
}

export function isRegionTableValid(t: RegionTable): boolean {
  return t.signature === REGION_TABLE_SIGNATURE && t.checksum === t.computedChecksum && t.entryCount <= MAX_REGION_ENTRIES;
}

export function serializeRegionTable(entries: Array<{ guid: string; fileOffset: number; length: number; required: boolean }>): Buffer {
  const b = Buffer.alloc(REGION_TABLE_SIZE);
  b.write(REGION_TABLE_SIGNATURE, 0, 'latin1');
  b.writeUInt32LE(entries.length, 8);
  entries.forEach((e, i) => {
    const at = 16 + i * 32;
    parseGuid(e.guid)!.copy(b, at);
    b.writeBigUInt64LE(BigInt(e.fileOffset), at + 16);
    b.writeUInt32LE(e.length, at + 24);
    b.writeUInt32LE(e.required ? 1 : 0, at + 28);
  });
  b.writeUInt32LE(crc32cWithZeroField(b, 4), 4);
  return b;
}
