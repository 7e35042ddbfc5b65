/** File type identifier: the first 64 KiB; "vhdxfile" and the creator as UTF-16LE. */
export const FILE_IDENTIFIER_SIGNATURE = 'vhdxfile';
export const FILE_IDENTIFIER_SIZE = 64 * 1024;
const CREATOR_BYTES = 512;

export interface FileIdentifier {
  signature: string;
  creator: string;
}

export function hasFileIdentifierSignature(b: Uint8Array): boolean {
  return b.length >= 8 && Buffer.from(b.buffer, b.byteOffset, 8).toString('latin1') === FILE_IDENTIFIER_SIGNATURE;
}

export function parseFileIdentifier(b: Buffer): FileIdentifier {
  const raw = b.subarray(8, 8 + CREATOR_BYTES);
  let end = 0;
  while (end + 1 < raw.length && (raw[end] | raw[end + 1]) !== 0) end += 2;
  return { signature: b.subarray(0, 8).toString('latin1'), creator: raw.subarray(0, end).toString('utf16le') };
}

export function serializeFileIdentifier(creator: string): Buffer {
  const b = Buffer.alloc(FILE_IDENTIFIER_SIZE);
  b.write(FILE_IDENTIFIER_SIGNATURE, 0, 'latin1');
  b.write(creator.slice(0, CREATOR_BYTES / 2 - 1), 8, 'utf16le');
  return b;
}
