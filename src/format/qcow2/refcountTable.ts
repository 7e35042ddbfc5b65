// The refcount table (u64 offsets of refcount blocks) and refcount blocks (one 2^refcount_order-bit
// count per host cluster; counts under 8 bits are packed least significant bit first, wider ones
// big-endian).

export const REFCOUNT_TABLE_ENTRY_SIZE = 8;
export const REFT_OFFSET_MASK = 0xfffffffffffffe00n;
/** QEMU's limit on the refcount table (8 MiB). */
export const MAX_REFCOUNT_TABLE_BYTES = 8 * 1024 * 1024;

/** Counts per refcount block. */
export function refcountBlockEntries(clusterBits: number, refcountOrder: number): number {
  return 2 ** (clusterBits + 3 - refcountOrder);
}

export function getRefcount(block: Buffer, index: number, refcountOrder: number): number {
  const bits = 1 << refcountOrder;
  switch (bits) {
    case 8: return block[index];
    case 16: return block.readUInt16BE(index * 2);
    case 32: return block.readUInt32BE(index * 4);
    case 64: {
      const v = block.readBigUInt64BE(index * 8);
      return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
    }
    default: {
      const bit = index * bits;
      return (block[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
    }
  }
}

/** The largest count an entry holds. */
export function maxRefcount(refcountOrder: number): number {
  return refcountOrder >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** (1 << refcountOrder) - 1;
}

export function setRefcount(block: Buffer, index: number, refcountOrder: number, value: number): void {
  const bits = 1 << refcountOrder;
  switch (bits) {
    case 8: block[index] = value; return;
    case 16: block.writeUInt16BE(value, index * 2); return;
    case 32: block.writeUInt32BE(value, index * 4); return;
    case 64: block.writeBigUInt64BE(BigInt(value), index * 8); return;
    default: {
      const bit = index * bits;
      const mask = ((1 << bits) - 1) << (bit & 7);
      block[bit >> 3] = (block[bit >> 3] & ~mask) | ((value << (bit & 7)) & mask);
    }
  }
}

/**
 * Adds `delta` to entries [from, to) of a refcount block, all or none: returns -1, or the first
 * index whose count would fall below 0 or exceed the maximum (nothing changed then). The common
 * 16-bit counts are read and written byte by byte (bulk allocation counts thousands at a time).
 */
export function addRefcounts(block: Buffer, from: number, to: number, refcountOrder: number, delta: number): number {
  const max = maxRefcount(refcountOrder);
  if (refcountOrder === 4) {
    for (let i = from; i < to; i++) {
      const v = ((block[2 * i] << 8) | block[2 * i + 1]) + delta;
      if (v < 0 || v > max) return i;
    }
    for (let i = from; i < to; i++) {
      const v = ((block[2 * i] << 8) | block[2 * i + 1]) + delta;
      block[2 * i] = v >>> 8;
      block[2 * i + 1] = v & 0xff;
    }
    return -1;
  }
  for (let i = from; i < to; i++) {
    const v = getRefcount(block, i, refcountOrder) + delta;
    if (v < 0 || v > max) return i;
  }
  for (let i = from; i < to; i++) setRefcount(block, i, refcountOrder, getRefcount(block, i, refcountOrder) + delta);
  return -1;
}

/** Zeros to compare spans of a refcount block with (grown to the longest span asked about). */
let zeros = Buffer.alloc(0);

/**
 * The last index in [from, to) of a refcount block whose count is not 0, or -1 when all are 0.
 * Allocation asks it for a whole run of clusters at once (merge's batches: hundreds a block);
 * the usual answer, all 0, is one native compare of the span.
 */
export function lastNonZeroRefcount(block: Buffer, from: number, to: number, refcountOrder: number): number {
  if (from >= to) return -1;
  const a = refcountEntrySpan(from, refcountOrder).start;
  const last = refcountEntrySpan(to - 1, refcountOrder);
  const b = last.start + last.length;
  if (zeros.length < b - a) zeros = Buffer.alloc(b - a);
  // Sub-byte counts: the span's end bytes may hold neighbours' counts, so non-zero is looked at below.
  if (block.compare(zeros, 0, b - a, a, b) === 0) return -1;
  if (refcountOrder >= 3) {
    // Whole bytes per count: any non-zero byte of an entry makes it non-zero.
    const width = 1 << (refcountOrder - 3);
    for (let i = to - 1; i >= from; i--) {
      for (let j = i * width, end = j + width; j < end; j++) if (block[j] !== 0) return i;
    }
    return -1;
  }
  for (let i = to - 1; i >= from; i--) if (getRefcount(block, i, refcountOrder) !== 0) return i;
  return -1;
}

/** Byte range within a block holding entry `index` (sub-byte entries: their byte). */
export function refcountEntrySpan(index: number, refcountOrder: number): { start: number; length: number } {
  const bits = 1 << refcountOrder;
  if (bits < 8) return { start: (index * bits) >> 3, length: 1 };
  return { start: index * (bits / 8), length: bits / 8 };
}
