// The qcow2 header (QEMU docs/interop/qcow2.txt, "Header"): big-endian fields at the start of the file.
import { DiskImageError } from '../errors';

export const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
export const V2_HEADER_LENGTH = 72;
export const V3_HEADER_LENGTH = 104;
/** qemu writes 112: the compression type byte padded to a multiple of 8. */
export const V3_HEADER_LENGTH_WITH_COMPRESSION = 112;
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** QEMU refuses backing file names longer than this. */
export const MAX_BACKING_FILE_NAME = 1023;

export const INCOMPAT = { dirty: 0, corrupt: 1, externalDataFile: 2, compressionType: 3, extendedL2: 4 } as const;
export const COMPAT = { lazyRefcounts: 0 } as const;
export const AUTOCLEAR = { bitmaps: 0, rawExternalData: 1 } as const;
const KNOWN_INCOMPAT = 0x1fn;

export const HEADER_OFFSETS = {
  magic: 0, version: 4, backingFileOffset: 8, backingFileSize: 16, clusterBits: 20, size: 24, cryptMethod: 32,
  l1Size: 36, l1TableOffset: 40, refcountTableOffset: 48, refcountTableClusters: 56, nbSnapshots: 60,
  snapshotsOffset: 64, incompatibleFeatures: 72, compatibleFeatures: 80, autoclearFeatures: 88,
  refcountOrder: 96, headerLength: 100, compressionType: 104,
} as const;

export interface Qcow2Header {
  version: number;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  /** 0 deflate (zlib), 1 zstd. */
  compressionType: number;
}

export function hasQcow2Magic(head: Buffer): boolean {
  return head.length >= 4 && head.readUInt32BE(0) === QCOW2_MAGIC;
}

export function hasFeature(bits: bigint, bit: number): boolean {
  return ((bits >> BigInt(bit)) & 1n) === 1n;
}

/** A u64 that must fit a JS number (offsets and sizes beyond 2^53 are not real files). */
function u64(b: Buffer, at: number, path: string, field: string): number {
  const v = b.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new DiskImageError(path, `${field} ${v} is too large`, 'qcow2 header', at, 'EHEADER');
  return Number(v);
}

/**
 * Parses and validates the header fields that everything else depends on. `b` holds at least the
 * first 72 bytes (104 for version 3).
 */
export function parseHeader(b: Buffer, path: string): Qcow2Header {
  const err = (what: string, at: number, code = 'EHEADER') => new DiskImageError(path, what, 'qcow2 header', at, code);
  if (b.length < V2_HEADER_LENGTH) throw new DiskImageError(path, `file ends after ${b.length} of ${V2_HEADER_LENGTH} bytes`, 'qcow2 header', 0, 'ETRUNC');
  if (b.readUInt32BE(0) !== QCOW2_MAGIC) throw err(`not a qcow2 image: magic ${b.subarray(0, 4).toString('hex')} is not 514649fb`, 0, 'EFORMAT');
  const version = b.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw err(`qcow2 version ${version} is not supported (2 or 3)`, 4, 'EUNSUPPORTED');
  if (version === 3 && b.length < V3_HEADER_LENGTH) throw new DiskImageError(path, `file ends after ${b.length} of ${V3_HEADER_LENGTH} bytes`, 'qcow2 header', 0, 'ETRUNC');
  const h: Qcow2Header = {
    version,
    backingFileOffset: u64(b, 8, path, 'backing file offset'),
    backingFileSize: b.readUInt32BE(16),
    clusterBits: b.readUInt32BE(20),
    size: u64(b, 24, path, 'virtual size'),
    cryptMethod: b.readUInt32BE(32),
    l1Size: b.readUInt32BE(36),
    l1TableOffset: u64(b, 40, path, 'L1 table offset'),
    refcountTableOffset: u64(b, 48, path, 'refcount table offset'),
    refcountTableClusters: b.readUInt32BE(56),
    nbSnapshots: b.readUInt32BE(60),
    snapshotsOffset: u64(b, 64, path, 'snapshot table offset'),
    incompatibleFeatures: version === 3 ? b.readBigUInt64BE(72) : 0n,
    compatibleFeatures: version === 3 ? b.readBigUInt64BE(80) : 0n,
    autoclearFeatures: version === 3 ? b.readBigUInt64BE(88) : 0n,
    refcountOrder: version === 3 ? b.readUInt32BE(96) : 4,
    headerLength: version === 3 ? b.readUInt32BE(100) : V2_HEADER_LENGTH,
    compressionType: 0,
  };
  if (h.clusterBits < MIN_CLUSTER_BITS || h.clusterBits > MAX_CLUSTER_BITS) {
    throw err(`cluster bits ${h.clusterBits} out of range (${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}: 512 B to 2 MiB clusters)`, HEADER_OFFSETS.clusterBits);
  }
  if (h.refcountOrder > 6) throw err(`refcount order ${h.refcountOrder} out of range (0..6: refcounts of 1 to 64 bits)`, HEADER_OFFSETS.refcountOrder);
  if (version === 3) {
    if (h.headerLength < V3_HEADER_LENGTH || h.headerLength % 8 !== 0 || h.headerLength > (1 << h.clusterBits)) {
      throw err(`header length ${h.headerLength} is not a multiple of 8 between ${V3_HEADER_LENGTH} and the cluster size`, HEADER_OFFSETS.headerLength);
    }
    if (h.headerLength > V3_HEADER_LENGTH && b.length > V3_HEADER_LENGTH) h.compressionType = b[V3_HEADER_LENGTH];
  }
  const unknown = h.incompatibleFeatures & ~KNOWN_INCOMPAT;
  if (unknown !== 0n) throw err(`unknown incompatible features 0x${unknown.toString(16)}`, HEADER_OFFSETS.incompatibleFeatures, 'EUNSUPPORTED');
  if (hasFeature(h.incompatibleFeatures, INCOMPAT.compressionType) && h.compressionType > 1) {
    throw err(`compression type ${h.compressionType} is unknown (0 zlib, 1 zstd)`, HEADER_OFFSETS.compressionType, 'EUNSUPPORTED');
  }
  if (!hasFeature(h.incompatibleFeatures, INCOMPAT.compressionType) && h.compressionType !== 0) {
    throw err(`compression type ${h.compressionType} set without the compression type feature bit`, HEADER_OFFSETS.compressionType);
  }
  if (h.backingFileSize > MAX_BACKING_FILE_NAME) {
    throw err(`backing file name length ${h.backingFileSize} exceeds ${MAX_BACKING_FILE_NAME}`, HEADER_OFFSETS.backingFileSize);
  }
  return h;
}

/** The header as bytes (`length` bytes: the header length, for version 3 at least 104). */
export function serializeHeader(h: Qcow2Header): Buffer {
  const b = Buffer.alloc(h.version === 3 ? h.headerLength : V2_HEADER_LENGTH);
  b.writeUInt32BE(QCOW2_MAGIC, 0);
  b.writeUInt32BE(h.version, 4);
  b.writeBigUInt64BE(BigInt(h.backingFileOffset), 8);
  b.writeUInt32BE(h.backingFileSize, 16);
  b.writeUInt32BE(h.clusterBits, 20);
  b.writeBigUInt64BE(BigInt(h.size), 24);
  b.writeUInt32BE(h.cryptMethod, 32);
  b.writeUInt32BE(h.l1Size, 36);
  b.writeBigUInt64BE(BigInt(h.l1TableOffset), 40);
  b.writeBigUInt64BE(BigInt(h.refcountTableOffset), 48);
  b.writeUInt32BE(h.refcountTableClusters, 56);
  b.writeUInt32BE(h.nbSnapshots, 60);
  b.writeBigUInt64BE(BigInt(h.snapshotsOffset), 64);
  if (h.version === 3) {
    b.writeBigUInt64BE(h.incompatibleFeatures, 72);
    b.writeBigUInt64BE(h.compatibleFeatures, 80);
    b.writeBigUInt64BE(h.autoclearFeatures, 88);
    b.writeUInt32BE(h.refcountOrder, 96);
    b.writeUInt32BE(h.headerLength, 100);
    if (h.headerLength > V3_HEADER_LENGTH) b[V3_HEADER_LENGTH] = h.compressionType;
  }
  return b;
}
