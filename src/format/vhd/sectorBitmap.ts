/**
 * The per-block sector bitmap: bit i (most significant bit first) says whether sector i of the block
 * is present in this layer. Stored padded to whole sectors in front of the block's data. VHD's bit
 * order is the one the DiskImage interface uses, so the bit helpers are the shared ones.
 */
export { allBits, bitmapRuns, countSetBits, runLength, setBits, testBit } from '../bitmap';

export function bitmapSizeBytes(sectorsPerBlock: number): number {
  return Math.ceil(Math.ceil(sectorsPerBlock / 8) / 512) * 512;
}
