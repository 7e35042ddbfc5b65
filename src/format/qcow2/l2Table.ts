// L2 tables: one entry per guest cluster. Standard entries are one u64; extended entries (incompatible
// bit 4) add a u64 subcluster bitmap: bits 0-31 "allocated", bits 32-63 "reads as zeros", 32
// subclusters per cluster.

export const L2E_OFFSET_MASK = 0x00fffffffffffe00n;
export const COPIED = 1n << 63n;
export const COMPRESSED = 1n << 62n;
export const ZERO_FLAG = 1n;
export const SUBCLUSTERS_PER_CLUSTER = 32;

/** What one guest cluster (or subcluster) reads as. */
export const enum ClusterKind {
  Unallocated = 0,
  /** Reads as zeros without data (zero flag, or all subclusters zero). */
  Zero = 1,
  Normal = 2,
  Compressed = 3,
  /** Extended L2 with subclusters in different states. */
  Mixed = 4,
  /**
   * A damaged entry (or a cluster under a damaged L1 entry): present in this layer, so nothing
   * below shows through, but every read or write of it fails with the entry's error.
   */
  Bad = 5,
}

export interface L2Entry {
  kind: ClusterKind;
  /** Host offset of the cluster data (normal), or of the compressed data (compressed), or 0. */
  hostOffset: number;
  /** Compressed: bytes of compressed data the descriptor covers. */
  compressedLength: number;
  copied: boolean;
  /** Extended L2: allocation bits (one per subcluster) and zero bits. Standard: all 32 set as the cluster is. */
  allocBits: number;
  zeroBits: number;
  /** Bits that must be zero but are not (check reports them). */
  reserved: bigint;
}

const ALL = 0xffffffff;

/** Decodes one entry; `bitmap` is the extended entry's second word (null for standard L2). */
export function decodeL2Entry(word: bigint, bitmap: bigint | null, clusterBits: number): L2Entry {
  const copied = (word & COPIED) !== 0n;
  if (word & COMPRESSED) {
    // Offset in the low (62 - (cluster_bits - 8)) bits, then the count of extra 512-byte sectors.
    const x = 62 - (clusterBits - 8);
    const hostOffset = Number(word & ((1n << BigInt(x)) - 1n));
    const sectors = Number((word >> BigInt(x)) & ((1n << BigInt(clusterBits - 8)) - 1n)) + 1;
    return { kind: ClusterKind.Compressed, hostOffset, compressedLength: sectors * 512 - (hostOffset & 511), copied, allocBits: 0, zeroBits: 0, reserved: 0n };
  }
  const hostOffset = Number(word & L2E_OFFSET_MASK);
  if (bitmap === null) {
    const zero = (word & ZERO_FLAG) !== 0n;
    const reserved = word & ~(L2E_OFFSET_MASK | COPIED | ZERO_FLAG);
    if (zero) return { kind: ClusterKind.Zero, hostOffset, compressedLength: 0, copied, allocBits: 0, zeroBits: ALL, reserved };
    if (hostOffset === 0) return { kind: ClusterKind.Unallocated, hostOffset, compressedLength: 0, copied, allocBits: 0, zeroBits: 0, reserved };
    return { kind: ClusterKind.Normal, hostOffset, compressedLength: 0, copied, allocBits: ALL, zeroBits: 0, reserved };
  }
  const allocBits = Number(bitmap & 0xffffffffn) >>> 0;
  const zeroBits = Number(bitmap >> 32n) >>> 0;
  const reserved = word & ~(L2E_OFFSET_MASK | COPIED);
  let kind: ClusterKind;
  if (allocBits === 0 && zeroBits === 0) kind = ClusterKind.Unallocated;
  else if (allocBits === 0 && zeroBits === ALL) kind = ClusterKind.Zero;
  else if (allocBits === ALL && zeroBits === 0) kind = ClusterKind.Normal;
  else kind = ClusterKind.Mixed;
  return { kind, hostOffset, compressedLength: 0, copied, allocBits, zeroBits, reserved };
}

/** State of subcluster `i` of a decoded entry. */
export function subclusterKind(e: L2Entry, i: number): ClusterKind {
  if (e.kind === ClusterKind.Compressed) return ClusterKind.Compressed;
  const bit = 1 << i;
  if (e.zeroBits & bit) return ClusterKind.Zero;
  if (e.allocBits & bit) return ClusterKind.Normal;
  return ClusterKind.Unallocated;
}

/** The first word of a normal cluster's entry. */
export function normalL2Word(hostOffset: number, copied = true): bigint {
  return BigInt(hostOffset) | (copied ? COPIED : 0n);
}

/**
 * The same entry, COPIED, written at `at` as two 32-bit halves (no BigInt: merges write thousands
 * per batch); with extended L2 entries, every subcluster allocated. Host offsets are under 2^56.
 */
export function setCopiedNormalL2Entry(view: DataView, at: number, hostOffset: number, extendedL2: boolean): void {
  view.setUint32(at, (0x80000000 | Math.floor(hostOffset / 2 ** 32)) >>> 0);
  view.setUint32(at + 4, hostOffset % 2 ** 32);
  if (extendedL2) view.setUint32(at + 12, 0xffffffff);
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * An L2 table's big-endian 64-bit entries as 32-bit halves in native order (entry j: high half at
 * 2j, low half at 2j + 1), from one native byte swap of a copy. Why: a table is decoded once, in
 * a loop V8 seldom optimizes, where Buffer's readUInt32BE cost ~1.3 us per entry (a 512 MiB
 * qcow2 merge spent ~20 ms there); a typed array element costs a fraction of that.
 */
export function l2TableWords(table: Uint8Array): Uint32Array {
  const length = table.length - (table.length % 8);
  const copy = new Uint8Array(length);
  copy.set(table.subarray(0, length));
  if (LITTLE_ENDIAN) Buffer.from(copy.buffer, 0, length).swap32();
  return new Uint32Array(copy.buffer, 0, length / 4);
}

