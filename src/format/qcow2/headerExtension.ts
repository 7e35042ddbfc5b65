// Header extensions: (type u32, length u32, data padded to 8 bytes) records after the header, up to
// the end-of-extensions record or the end of the first cluster.
import { DiskImageError } from '../errors';
import { FeatureName, parseFeatureNameTable } from './featureNameTable';

export const EXTENSION = {
  end: 0x00000000,
  backingFileFormat: 0xe2792aca,
  featureNameTable: 0x6803f857,
  bitmaps: 0x23852875,
  fullDiskEncryption: 0x0537be77,
  externalDataFile: 0x44415441,
} as const;

export const EXTENSION_NAMES: Record<number, string> = {
  [EXTENSION.backingFileFormat]: 'backing file format name',
  [EXTENSION.featureNameTable]: 'feature name table',
  [EXTENSION.bitmaps]: 'bitmaps',
  [EXTENSION.fullDiskEncryption]: 'full disk encryption header pointer',
  [EXTENSION.externalDataFile]: 'external data file name',
};

export interface HeaderExtension {
  type: number;
  /** File offset of the record (its type field). */
  offset: number;
  data: Buffer;
}

export interface HeaderExtensions {
  list: HeaderExtension[];
  backingFormat: string | null;
  featureNames: FeatureName[];
  externalDataFile: string | null;
  /** Bitmaps extension: how many bitmaps (listed, not used). */
  bitmapCount: number | null;
  /** Where the end-of-extensions record is (or would go). */
  endOffset: number;
}

/**
 * Parses the records in `area` (the bytes from `start` to the end of the first cluster, or to the
 * backing file name when that comes first).
 */
export function parseHeaderExtensions(area: Buffer, start: number, path: string): HeaderExtensions {
  const out: HeaderExtensions = { list: [], backingFormat: null, featureNames: [], externalDataFile: null, bitmapCount: null, endOffset: start };
  let at = 0;
  while (at + 8 <= area.length) {
    const type = area.readUInt32BE(at);
    const length = area.readUInt32BE(at + 4);
    out.endOffset = start + at;
    if (type === EXTENSION.end) return out;
    if (length > area.length - at - 8) {
      throw new DiskImageError(path, `header extension 0x${type.toString(16)} of ${length} bytes runs past the first cluster`, 'header extension', start + at, 'EHEADER');
    }
    const data = area.subarray(at + 8, at + 8 + length);
    out.list.push({ type, offset: start + at, data });
    if (type === EXTENSION.backingFileFormat) out.backingFormat = data.toString('latin1').replace(/\0+$/, '');
    else if (type === EXTENSION.featureNameTable) out.featureNames = parseFeatureNameTable(data);
    else if (type === EXTENSION.externalDataFile) out.externalDataFile = data.toString('utf8').replace(/\0+$/, '');
    else if (type === EXTENSION.bitmaps && length >= 4) out.bitmapCount = data.readUInt32BE(0);
    at += 8 + Math.ceil(length / 8) * 8;
  }
  out.endOffset = start + at;
  return out;
}

/** One record, padded to 8 bytes. */
export function serializeHeaderExtension(type: number, data: Buffer): Buffer {
  const b = Buffer.alloc(8 + Math.ceil(data.length / 8) * 8);
  b.writeUInt32BE(type, 0);
  b.writeUInt32BE(data.length, 4);
  data.copy(b, 8);
  return b;
}
