import { crc32cWithZeroField } from './crc32c';

/** The header: 4 KiB, two copies (at 64 KiB and 128 KiB); the valid one with the higher sequence number is current. */
export const HEADER_SIGNATURE = 'head';
export const HEADER_SIZE = 4096;
export const HEADER_OFFSETS = [64 * 1024, 128 * 1024] as const;

export interface Header {
  signature: string;
  checksum: number;
  computedChecksum: number;
  sequenceNumber: bigint;
  fileWriteGuid: Buffer;
  dataWriteGuid: Buffer;
  logGuid: Buffer;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

export function parseHeader(b: Buffer): Header {
  return {
    signature: b.subarray(0, 4).toString('latin1'),
    checksum: b.readUInt32LE(4),
    computedChecksum: crc32cWithZeroField(b.subarray(0, HEADER_SIZE), 4),
    sequenceNumber: b.readBigUInt64LE(8),
    fileWriteGuid: Buffer.from(b.subarray(16, 32)),
    dataWriteGuid: Buffer.from(b.subarray(32, 48)),
    logGuid: Buffer.from(b.subarray(48, 64)),
    logVersion: b.readUInt16LE(64),
    version: b.readUInt16LE(66),
    logLength: b.readUInt32LE(68),
    // Offsets are kept below 2^53 by the callers' checks against the file size.
    logOffset: Number(b.readBigUInt64LE(72)),
  };
}

export function isHeaderValid(h: Header): boolean {
  return h.signature === HEADER_SIGNATURE && h.checksum === h.computedChecksum;
}

export type HeaderFields = Omit<Header, 'signature' | 'checksum' | 'computedChecksum'>;

export function serializeHeader(h: HeaderFields): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  b.write(HEADER_SIGNATURE, 0, 'latin1');
  b.writeBigUInt64LE(h.sequenceNumber, 8);
  h.fileWriteGuid.copy(b, 16);
  h.dataWriteGuid.copy(b, 32);
  h.logGuid.copy(b, 48);
  b.writeUInt16LE(h.logVersion, 64);
  b.writeUInt16LE(h.version, 66);
  b.writeUInt32LE(h.logLength, 68);
  b.writeBigUInt64LE(BigInt(h.logOffset), 72);
  b.writeUInt32LE(crc32cWithZeroField(b, 4), 4);
  return b;
}
