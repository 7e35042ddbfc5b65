// The L1 table: one u64 per L2 table; bits 9-55 the L2 table's offset, bit 63 "copied" (refcount 1).

export const L1_ENTRY_SIZE = 8;
export const L1E_OFFSET_MASK = 0x00fffffffffffe00n;
export const COPIED_FLAG = 1n << 63n;
/** QEMU's limit on the L1 table (32 MiB): a bigger one in a header is damage, not a disk. */
export const MAX_L1_BYTES = 32 * 1024 * 1024;

/** How many L1 entries a disk of `size` bytes needs. */
export function l1EntriesNeeded(size: number, clusterBits: number, l2EntryBytes: number): number {
  const perL2 = 2 ** clusterBits / l2EntryBytes;
  return Math.ceil(size / (perL2 * 2 ** clusterBits));
}

export function l2OffsetOf(entry: bigint): number {
  return Number(entry & L1E_OFFSET_MASK);
}

/** Bits other than the offset and the copied flag (reserved, must be zero). */
export function l1ReservedBits(entry: bigint): bigint {
  return entry & ~(L1E_OFFSET_MASK | COPIED_FLAG);
}

export function l1Entry(l2Offset: number, copied = true): bigint {
  return BigInt(l2Offset) | (copied ? COPIED_FLAG : 0n);
}
