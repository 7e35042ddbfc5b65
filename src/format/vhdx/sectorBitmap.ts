/**
 * Sector bitmap blocks (1 MiB each, one per chunk): one bit per logical sector of the chunk's
 * payload blocks, least significant bit first; a set bit means the sector is in this file.
 */
export const SECTOR_BITMAP_BLOCK_SIZE = 1024 * 1024;

export function testBit(b: Uint8Array, i: number): boolean {
  return (b[i >>> 3] & (1 << (i & 7))) !== 0;
}

export function setBitRange(b: Uint8Array, from: number, count: number): void {
  for (let i = from; i < from + count; i++) b[i >>> 3] |= 1 << (i & 7);
}

/** Length of the run of equal bits starting at `from`, stopping at `end`. */
export function bitRunLength(b: Uint8Array, from: number, end: number, value: boolean): number {
  let i = from;
  while (i < end) {
    if ((i & 7) === 0 && i + 8 <= end) {
      const byte = b[i >>> 3];
      if (byte === (value ? 0xff : 0)) { i += 8; continue; }
    }
    if (testBit(b, i) !== value) break;
    i++;
  }
  return i - from;
}
