/** Logical and physical sector size metadata items: 4 bytes each, 512 or 4096. */
export const SECTOR_SIZE_ITEM_SIZE = 4;

export function parseSectorSize(b: Buffer): number {
  return b.readUInt32LE(0);
}

export function serializeSectorSize(n: number): Buffer {
  const b = Buffer.alloc(SECTOR_SIZE_ITEM_SIZE);
  b.writeUInt32LE(n, 0);
  return b;
}

export function isValidSectorSize(n: number): boolean {
  return n === 512 || n === 4096;
}
