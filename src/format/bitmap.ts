/**
 * Sector bitmaps as the DiskImage interface hands them out: bit i, most significant bit first,
 * says whether sector i of the block is present in the layer.
 */
export function testBit(bitmap: Uint8Array, i: number): boolean {
  return (bitmap[i >> 3] & (0x80 >> (i & 7))) !== 0;
}

export function setBits(bitmap: Uint8Array, start: number, count: number): void {
  let i = start;
  const end = start + count;
  while (i < end && (i & 7) !== 0) { bitmap[i >> 3] |= 0x80 >> (i & 7); i++; }
  while (i + 8 <= end) { bitmap[i >> 3] = 0xff; i += 8; }
  while (i < end) { bitmap[i >> 3] |= 0x80 >> (i & 7); i++; }
}

export function countSetBits(bitmap: Uint8Array, sectors: number): number {
  let n = 0;
  const full = sectors >> 3;
  for (let i = 0; i < full; i++) {
    let v = bitmap[i];
    v = v - ((v >> 1) & 0x55);
    v = (v & 0x33) + ((v >> 2) & 0x33);
    n += (v + (v >> 4)) & 0x0f;
  }
  for (let i = full * 8; i < sectors; i++) if (testBit(bitmap, i)) n++;
  return n;
}

/** True when every one of the sectors [start, start+count) has the given value. */
export function allBits(bitmap: Uint8Array, start: number, count: number, value: boolean): boolean {
  return runLength(bitmap, start, start + count, value) === count;
}

/** How many sectors from `start` (below `end`) share the bit value `value`; skips whole bytes fast. */
export function runLength(bitmap: Uint8Array, start: number, end: number, value: boolean): number {
  const fullByte = value ? 0xff : 0x00;
  let i = start;
  while (i < end) {
    if ((i & 7) === 0 && i + 8 <= end && bitmap[i >> 3] === fullByte) { i += 8; continue; }
    if (testBit(bitmap, i) !== value) break;
    i++;
  }
  return i - start;
}

/** Splits [start, start+count) into runs of equal bits. */
export function bitmapRuns(bitmap: Uint8Array, start: number, count: number): Array<{ start: number; count: number; set: boolean }> {
  const runs: Array<{ start: number; count: number; set: boolean }> = [];
  const end = start + count;
  let i = start;
  while (i < end) {
    const set = testBit(bitmap, i);
    const n = runLength(bitmap, i, end, set);
    runs.push({ start: i, count: n, set });
    i += n;
  }
  return runs;
}
