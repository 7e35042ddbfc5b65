import { vhdChecksum } from './checksum';
import { decodeUtf16BE, encodeUtf16BE, LOCATOR_COUNT, LOCATOR_ENTRY_SIZE, ParentLocatorEntry, parseLocatorEntry, serializeLocatorEntry } from './parentLocator';

/** The 1024-byte dynamic disk header ("cxsparse") of dynamic and differencing disks. */
export const DYNAMIC_HEADER_SIZE = 1024;
export const DYNAMIC_HEADER_COOKIE = 'cxsparse';
export const HEADER_CHECKSUM_OFFSET = 36;
export const PARENT_NAME_OFFSET = 64;
export const PARENT_NAME_SIZE = 512;
export const LOCATORS_OFFSET = 576;

export interface DynamicHeader {
  cookie: string;
  dataOffset: bigint;
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  parentUniqueId: Buffer;
  parentTimestamp: number;
  reserved1: number;
  parentUnicodeName: string;
  locators: ParentLocatorEntry[];
  raw: Buffer;
  computedChecksum: number;
}

export const DYNAMIC_HEADER_FIELDS: ReadonlyArray<{ name: string; offset: number; size: number }> = [
  { name: 'cookie', offset: 0, size: 8 },
  { name: 'dataOffset', offset: 8, size: 8 },
  { name: 'tableOffset', offset: 16, size: 8 },
  { name: 'headerVersion', offset: 24, size: 4 },
  { name: 'maxTableEntries', offset: 28, size: 4 },
  { name: 'blockSize', offset: 32, size: 4 },
  { name: 'checksum', offset: 36, size: 4 },
  { name: 'parentUniqueId', offset: 40, size: 16 },
  { name: 'parentTimestamp', offset: 56, size: 4 },
  { name: 'reserved1', offset: 60, size: 4 },
  { name: 'parentUnicodeName', offset: 64, size: 512 },
  { name: 'parentLocators', offset: 576, size: 192 },
  { name: 'reserved2', offset: 768, size: 256 },
];

export function parseDynamicHeader(bytes: Buffer): DynamicHeader {
  const raw = Buffer.alloc(DYNAMIC_HEADER_SIZE);
  bytes.copy(raw, 0, 0, Math.min(bytes.length, DYNAMIC_HEADER_SIZE));
  const tableOffset = raw.readBigUInt64BE(16);
  const locators: ParentLocatorEntry[] = [];
  for (let i = 0; i < LOCATOR_COUNT; i++) {
    const at = LOCATORS_OFFSET + i * LOCATOR_ENTRY_SIZE;
    locators.push(parseLocatorEntry(raw.subarray(at, at + LOCATOR_ENTRY_SIZE), i));
  }
  return {
    cookie: raw.toString('latin1', 0, 8),
    dataOffset: raw.readBigUInt64BE(8),
    tableOffset: tableOffset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(tableOffset),
    headerVersion: raw.readUInt32BE(24),
    maxTableEntries: raw.readUInt32BE(28),
    blockSize: raw.readUInt32BE(32),
    checksum: raw.readUInt32BE(36),
    parentUniqueId: Buffer.from(raw.subarray(40, 56)),
    parentTimestamp: raw.readUInt32BE(56),
    reserved1: raw.readUInt32BE(60),
    parentUnicodeName: decodeUtf16BE(raw.subarray(PARENT_NAME_OFFSET, PARENT_NAME_OFFSET + PARENT_NAME_SIZE)),
    locators,
    raw,
    computedChecksum: vhdChecksum(raw, HEADER_CHECKSUM_OFFSET),
  };
}

export function serializeDynamicHeader(h: Omit<DynamicHeader, 'raw' | 'computedChecksum' | 'checksum' | 'locators'> & {
  locators: Array<Omit<ParentLocatorEntry, 'raw' | 'index'>>;
  raw?: Buffer;
}): Buffer {
  const b = Buffer.alloc(DYNAMIC_HEADER_SIZE);
  if (h.raw) h.raw.copy(b, 0, 0, DYNAMIC_HEADER_SIZE);
  b.write(h.cookie.padEnd(8, '\0').slice(0, 8), 0, 'latin1');
  b.writeBigUInt64BE(h.dataOffset, 8);
  b.writeBigUInt64BE(BigInt(h.tableOffset), 16);
  b.writeUInt32BE(h.headerVersion >>> 0, 24);
  b.writeUInt32BE(h.maxTableEntries >>> 0, 28);
  b.writeUInt32BE(h.blockSize >>> 0, 32);
  h.parentUniqueId.copy(b, 40, 0, 16);
  b.writeUInt32BE(h.parentTimestamp >>> 0, 56);
  b.writeUInt32BE(h.reserved1 >>> 0, 60);
  b.fill(0, PARENT_NAME_OFFSET, PARENT_NAME_OFFSET + PARENT_NAME_SIZE);
  encodeUtf16BE(h.parentUnicodeName).copy(b, PARENT_NAME_OFFSET, 0, PARENT_NAME_SIZE);
  b.fill(0, LOCATORS_OFFSET, LOCATORS_OFFSET + LOCATOR_COUNT * LOCATOR_ENTRY_SIZE);
  h.locators.slice(0, LOCATOR_COUNT).forEach((e, i) => serializeLocatorEntry(e).copy(b, LOCATORS_OFFSET + i * LOCATOR_ENTRY_SIZE));
  b.writeUInt32BE(vhdChecksum(b, HEADER_CHECKSUM_OFFSET), HEADER_CHECKSUM_OFFSET);
  return b;
}
