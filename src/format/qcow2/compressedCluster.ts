// Compressed cluster descriptors (decoded in l2Table.ts) and their data: raw deflate (compression
// type 0) or zstd (type 1, which Node's zlib lacks before Node 23).
import { inflateRawSync } from 'zlib';
import { DiskImageError } from '../errors';

export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;

/** Inflates `data` into exactly one cluster; throws naming the descriptor's offset when it is damaged. */
export function decompressCluster(data: Buffer, clusterSize: number, compressionType: number, path: string, descriptorAt: number): Buffer {
  if (compressionType === COMPRESSION_ZSTD) {
    throw new DiskImageError(path, 'zstd-compressed cluster not supported (this Node has no zstd; convert with qemu-img convert -c -o compression_type=zlib)', 'compressed cluster descriptor', descriptorAt, 'EUNSUPPORTED');
  }
  let out: Buffer;
  try {
    // maxOutputLength: a hostile stream cannot inflate past one cluster.
    out = inflateRawSync(data, { maxOutputLength: clusterSize, finishFlush: 2 /* Z_SYNC_FLUSH: qemu's streams may end without a final block */ });
  } catch (e) {
    throw new DiskImageError(path, `compressed cluster does not inflate: ${(e as Error).message}`, 'compressed cluster descriptor', descriptorAt, 'ECOMPRESSED');
  }
  // qemu requires the stream to fill the cluster exactly.
  if (out.length < clusterSize) {
    throw new DiskImageError(path, `compressed cluster inflates to ${out.length} of ${clusterSize} bytes`, 'compressed cluster descriptor', descriptorAt, 'ECOMPRESSED');
  }
  return out;
}
