import { formatGuid, parseGuid } from './guid';

/** Metadata table: the first 64 KiB of the metadata region, a 32-byte header and 32-byte entries. */
export const METADATA_TABLE_SIGNATURE = 'metadata';
export const METADATA_TABLE_SIZE = 64 * 1024;
export const MAX_METADATA_ENTRIES = 2047;

export const METADATA_ITEM = {
  fileParameters: 'caa16737-fa36-4d43-b3b6-33f0aa44e76b',
  virtualDiskSize: '2fa54224-cd1b-4876-b211-5dbed83bf4b8',
  page83Data: 'beca12ab-b2e6-4523-93ef-c309e000c746',
  logicalSectorSize: '8141bf1d-a96f-4709-ba47-f233a8faab5f',
  physicalSectorSize: 'cda348c7-445d-4471-9cc9-e9885251c556',
  parentLocator: 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c',
} as const;

export interface MetadataTableEntry {
  itemId: string;
  /** Relative to the start of the metadata region. */
  offset: number;
  length: number;
  isUser: boolean;
  isVirtualDisk: boolean;
  isRequired: boolean;
  /** Byte offset of this entry inside the table. */
  at: number;
}

export interface MetadataTable {
  signature: string;
  entryCount: number;
  entries: MetadataTableEntry[];
}

export function parseMetadataTable(b: Buffer): MetadataTable {
  const entryCount = b.readUInt16LE(10);
  const entries: MetadataTableEntry[] = [];
  for (let i = 0; i < Math.min(entryCount, MAX_METADATA_ENTRIES); i++) {
    const at = 32 + i * 32;
    const flags = b.readUInt32LE(at + 24);
    entries.push({
      itemId: formatGuid(b, at),
      offset: b.readUInt32LE(at + 16),
      length: b.readUInt32LE(at + 20),
      isUser: (flags & 1) !== 0,
      isVirtualDisk: (flags & 2) !== 0,
      isRequired: (flags & 4) !== 0,
      at,
    });
  }
  return { signature: b.subarray(0, 8).toString('latin1'), entryCount, entries };
}

export interface NewMetadataItem {
  itemId: string;
  data: Buffer;
  isVirtualDisk: boolean;
  isRequired: boolean;
}

/**
 * The table and the items laid out behind it (each item 8-byte aligned, starting at 64 KiB as the
 * spec requires); returns the bytes of the region from its start.
 */
export function serializeMetadataRegion(items: NewMetadataItem[]): Buffer {
  let pos = METADATA_TABLE_SIZE;
  const placed = items.map((it) => {
    const at = pos;
    pos += Math.ceil(it.data.length / 8) * 8;
    return { ...it, at };
  });
  const b = Buffer.alloc(pos);
  b.write(METADATA_TABLE_SIGNATURE, 0, 'latin1');
  b.writeUInt16LE(items.length, 10);
  placed.forEach((it, i) => {
    const at = 32 + i * 32;
    parseGuid(it.itemId)!.copy(b, at);
    b.writeUInt32LE(it.at, at + 16);
    b.writeUInt32LE(it.data.length, at + 20);
    b.writeUInt32LE((it.isVirtualDisk ? 2 : 0) | (it.isRequired ? 4 : 0), at + 24);
    it.data.copy(b, it.at);
  });
  return b;
}
