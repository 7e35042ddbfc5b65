/** Parent locator entries (24 bytes each, 8 in the dynamic header) and the path data they point at. */
export const LOCATOR_ENTRY_SIZE = 24;
export const LOCATOR_COUNT = 8;
/** Longest path data accepted: a Windows long path is 32767 UTF-16 units. */
export const MAX_LOCATOR_DATA = 65536;

export interface ParentLocatorEntry {
  /** Index 0..7 in the header's table. */
  index: number;
  platformCode: string;
  /** As stored: sectors per the spec, bytes as Virtual PC and Hyper-V write it. */
  platformDataSpace: number;
  platformDataLength: number;
  reserved: number;
  platformDataOffset: number;
  raw: Buffer;
}

export function isEmptyLocator(e: ParentLocatorEntry): boolean {
  return e.platformCode === '\0\0\0\0' || e.raw.every((b) => b === 0);
}

/** A value under 512 is a sector count (the spec), otherwise bytes (Virtual PC, Hyper-V). */
export function locatorSpaceBytes(e: ParentLocatorEntry): number {
  return e.platformDataSpace < 512 ? e.platformDataSpace * 512 : e.platformDataSpace;
}

export function parseLocatorEntry(bytes: Buffer, index: number): ParentLocatorEntry {
  const off = bytes.readBigUInt64BE(16);
  return {
    index,
    platformCode: bytes.toString('latin1', 0, 4),
    platformDataSpace: bytes.readUInt32BE(4),
    platformDataLength: bytes.readUInt32BE(8),
    reserved: bytes.readUInt32BE(12),
    platformDataOffset: off > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(off),
    raw: Buffer.from(bytes.subarray(0, LOCATOR_ENTRY_SIZE)),
  };
}

export function serializeLocatorEntry(e: Omit<ParentLocatorEntry, 'raw' | 'index'>): Buffer {
  const b = Buffer.alloc(LOCATOR_ENTRY_SIZE);
  b.write(e.platformCode.padEnd(4, '\0').slice(0, 4), 0, 'latin1');
  b.writeUInt32BE(e.platformDataSpace >>> 0, 4);
  b.writeUInt32BE(e.platformDataLength >>> 0, 8);
  b.writeUInt32BE(e.reserved >>> 0, 12);
  b.writeBigUInt64BE(BigInt(e.platformDataOffset), 16);
  return b;
}

/** Decodes UTF-16 that should be little-endian but is big-endian in some files: detect by where the NULs are. */
export function decodeUtf16Detect(data: Buffer): string {
  const n = data.length & ~1;
  let zeroEven = 0;
  let zeroOdd = 0;
  for (let i = 0; i < n; i += 2) {
    if (data[i] === 0) zeroEven++;
    if (data[i + 1] === 0) zeroOdd++;
  }
  if (data.length >= 2 && data[0] === 0xfe && data[1] === 0xff) return decodeUtf16BE(data.subarray(2));
  if (data.length >= 2 && data[0] === 0xff && data[1] === 0xfe) return stripNul(data.subarray(2, n).toString('utf16le'));
  return zeroEven > zeroOdd ? decodeUtf16BE(data) : stripNul(data.subarray(0, n).toString('utf16le'));
}

export function decodeUtf16BE(data: Buffer): string {
  const n = data.length & ~1;
  const swapped = Buffer.from(data.subarray(0, n));
  swapped.swap16();
  return stripNul(swapped.toString('utf16le'));
}

export function encodeUtf16BE(text: string): Buffer {
  const b = Buffer.from(text, 'utf16le');
  b.swap16();
  return b;
}

function stripNul(s: string): string {
  const i = s.indexOf('\0');
  return i >= 0 ? s.slice(0, i) : s;
}

/** Turns a locator's data into a path string, by platform code; undefined for opaque blobs (`Mac `). */
export function decodeLocatorPath(platformCode: string, data: Buffer): string | undefined {
  switch (platformCode) {
    case 'W2ku':
    case 'W2ru':
      return decodeUtf16Detect(data);
    case 'Wi2k':
    case 'Wi2r':
      return stripNul(data.toString('latin1'));
    case 'MacX': {
      const s = stripNul(data.toString('utf8'));
      if (s.startsWith('file://')) {
        try {
          return decodeURIComponent(s.replace(/^file:\/\/(localhost)?/, ''));
        } catch {
          return s.slice('file://'.length);
        }
      }
      return s;
    }
    default:
      return undefined;
  }
}
