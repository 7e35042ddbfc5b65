// New qcow2 files (version 3): header, extensions and backing name in cluster 0, then the refcount
// table, the refcount blocks counting the metadata clusters, and an empty L1 table.
import { DiskImageError } from '../errors';
import { ImageFile } from '../../io/imageFile';
import { STANDARD_FEATURE_NAMES, serializeFeatureNameTable } from './featureNameTable';
import { INCOMPAT, MAX_BACKING_FILE_NAME, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, Qcow2Header, serializeHeader, V3_HEADER_LENGTH_WITH_COMPRESSION } from './header';
import { EXTENSION, serializeHeaderExtension } from './headerExtension';
import { l1EntriesNeeded, MAX_L1_BYTES } from './l1Table';
import { refcountBlockEntries, setRefcount } from './refcountTable';

export const DEFAULT_CLUSTER_SIZE = 65536;
const REFCOUNT_ORDER = 4;

export interface Qcow2CreateOptions {
  size: number;
  clusterSize?: number;
  extendedL2?: boolean;
  backingFile?: string;
  backingFormat?: string;
  overwrite?: boolean;
}

export function isValidClusterSize(n: number): boolean {
  return Number.isInteger(n) && n >= 2 ** MIN_CLUSTER_BITS && n <= 2 ** MAX_CLUSTER_BITS && (n & (n - 1)) === 0;
}

/** Writes the file; returns the virtual size (rounded up to 512 bytes as QEMU does). */
export async function createQcow2(path: string, options: Qcow2CreateOptions): Promise<number> {
  const clusterSize = options.clusterSize ?? DEFAULT_CLUSTER_SIZE;
  const fail = (what: string) => new DiskImageError(path, what, undefined, undefined, 'EARG');
  if (!isValidClusterSize(clusterSize)) throw fail(`cluster size ${clusterSize} is not a power of two from 512 bytes to 2 MiB`);
  if (options.extendedL2 && clusterSize < 16384) throw fail('extended L2 entries need clusters of at least 16 KiB');
  if (!Number.isSafeInteger(options.size) || options.size <= 0) throw fail(`size ${options.size} is not a positive byte count`);
  const size = Math.ceil(options.size / 512) * 512;
  const clusterBits = Math.log2(clusterSize);
  const l1Size = l1EntriesNeeded(size, clusterBits, options.extendedL2 ? 16 : 8);
  if (l1Size * 8 > MAX_L1_BYTES) throw fail(`size ${size} needs an L1 table beyond ${MAX_L1_BYTES} bytes at ${clusterSize}-byte clusters: use bigger clusters`);
  const l1Clusters = Math.max(1, Math.ceil(l1Size * 8 / clusterSize));
  const perBlock = refcountBlockEntries(clusterBits, REFCOUNT_ORDER);
  // Cluster 0 header, then the table, the blocks and L1; sizes depend on each other: settle them.
  let tableClusters = 1;
  let blocks = 1;
  for (;;) {
    const total = 1 + tableClusters + blocks + l1Clusters;
    const b = Math.ceil(total / perBlock);
    const t = Math.max(1, Math.ceil(b * 8 / clusterSize));
    if (b === blocks && t === tableClusters) break;
    blocks = b;
    tableClusters = t;
  }
  const tableAt = clusterSize;
  const blocksAt = tableAt + tableClusters * clusterSize;
  const l1At = blocksAt + blocks * clusterSize;
  const total = 1 + tableClusters + blocks + l1Clusters;

  const name = options.backingFile !== undefined ? Buffer.from(options.backingFile, 'utf8') : null;
  if (name && name.length > MAX_BACKING_FILE_NAME) throw fail(`backing file name of ${name.length} bytes is too long (at most ${MAX_BACKING_FILE_NAME})`);
  const ext: Buffer[] = [];
  if (options.backingFormat) ext.push(serializeHeaderExtension(EXTENSION.backingFileFormat, Buffer.from(options.backingFormat, 'latin1')));
  // The feature name table (392 bytes) only where it leaves room for a backing name (as qemu, it is optional).
  if (clusterSize >= 4096) ext.push(serializeHeaderExtension(EXTENSION.featureNameTable, serializeFeatureNameTable(STANDARD_FEATURE_NAMES)));
  ext.push(Buffer.alloc(8));
  const extBytes = Buffer.concat(ext);
  const nameAt = V3_HEADER_LENGTH_WITH_COMPRESSION + extBytes.length;
  if (name && nameAt + name.length > clusterSize) throw fail('backing file name does not fit in the first cluster');
  const header: Qcow2Header = {
    version: 3, backingFileOffset: name ? nameAt : 0, backingFileSize: name ? name.length : 0, clusterBits, size,
    cryptMethod: 0, l1Size, l1TableOffset: l1At, refcountTableOffset: tableAt, refcountTableClusters: tableClusters,
    nbSnapshots: 0, snapshotsOffset: 0,
    incompatibleFeatures: options.extendedL2 ? 1n << BigInt(INCOMPAT.extendedL2) : 0n,
    compatibleFeatures: 0n, autoclearFeatures: 0n, refcountOrder: REFCOUNT_ORDER,
    headerLength: V3_HEADER_LENGTH_WITH_COMPRESSION, compressionType: 0,
  };
  const first = Buffer.alloc(clusterSize);
  serializeHeader(header).copy(first, 0);
  extBytes.copy(first, V3_HEADER_LENGTH_WITH_COMPRESSION);
  if (name) name.copy(first, nameAt);
  const table = Buffer.alloc(tableClusters * clusterSize);
  for (let i = 0; i < blocks; i++) table.writeBigUInt64BE(BigInt(blocksAt + i * clusterSize), i * 8);
  const blockBytes = Buffer.alloc(blocks * clusterSize);
  for (let c = 0; c < total; c++) {
    setRefcount(blockBytes.subarray(Math.floor(c / perBlock) * clusterSize), c % perBlock, REFCOUNT_ORDER, 1);
  }
  const file = await ImageFile.create(path, !options.overwrite);
  try {
    await file.writeAt(table, tableAt);
    await file.writeAt(blockBytes, blocksAt);
    await file.writeAt(Buffer.alloc(l1Clusters * clusterSize), l1At);
    // The header last: a file cut short before it is not mistaken for a qcow2 image.
    await file.writeAt(first, 0);
    await file.sync();
  } finally {
    await file.close();
  }
  return size;
}
