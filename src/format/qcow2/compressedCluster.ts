// Compressed cluster descriptors (decoded in l2Table.ts) and their data: raw deflate (compression
// type 0) or zstd (type 1; Node's zlib lacks it before Node 23, so the fzstd decoder reads it).
import type * as ZlibModule from 'zlib';
import { Decompress } from 'fzstd';
import { DiskImageError } from '../errors';

export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;

const ZSTD_MAGIC = 0xfd2fb528;
/** The largest window a cluster's frame may ask for (the decoder allocates it): clusters are at most 2 MiB. */
const MAX_ZSTD_WINDOW = 8 * 1024 * 1024;
const ZSTD_BLOCK_RLE = 1;
const ZSTD_BLOCK_RESERVED = 3;

/** Stops the decoder once the cluster is full (qemu ignores what a frame would give beyond it). */
class ClusterFull extends Error {}

/**
 * Length of the first zstd frame in `data` (qemu writes one frame per cluster; the bytes after it,
 * up to the descriptor's 512-byte sector end, are not part of it), after checking its header asks
 * for no more memory than a cluster warrants. Block headers give each block's length, so the end
 * is found without decoding.
 */
function zstdFrameLength(data: Buffer, fail: (what: string) => DiskImageError): number {
  if (data.length < 6 || data.readUInt32LE(0) !== ZSTD_MAGIC) throw fail('compressed cluster is not a zstd frame');
  const fhd = data[4];
  const singleSegment = (fhd >> 5) & 1;
  const contentSizeFlag = fhd >> 6;
  const dictBytes = [0, 1, 2, 4][fhd & 3];
  if (fhd & 8) throw fail('zstd frame header has its reserved bit set');
  if (dictBytes !== 0) throw fail('zstd frame needs a dictionary');
  const sizeBytes = contentSizeFlag ? 1 << contentSizeFlag : singleSegment;
  let pos = 5 + (singleSegment ? 0 : 1);
  let window: number;
  if (singleSegment) {
    if (pos + sizeBytes > data.length) throw fail('zstd frame header is cut short');
    window = sizeBytes === 1 ? data[pos] : sizeBytes === 2 ? data.readUInt16LE(pos) + 256 : sizeBytes === 4 ? data.readUInt32LE(pos) : Number(data.readBigUInt64LE(pos));
  } else {
    const exp = 2 ** (10 + (data[5] >> 3)); // up to 2^41: not a 32-bit shift
    window = exp + (exp / 8) * (data[5] & 7);
  }
  if (window > MAX_ZSTD_WINDOW) throw fail(`zstd frame asks for a window of ${window} bytes (more than ${MAX_ZSTD_WINDOW})`);
  pos += sizeBytes;
  for (;;) {
    if (pos + 3 > data.length) throw fail('zstd frame runs past the compressed data');
    const h = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16);
    const type = (h >> 1) & 3;
    if (type === ZSTD_BLOCK_RESERVED) throw fail('zstd block of the reserved type');
    pos += 3 + (type === ZSTD_BLOCK_RLE ? 1 : h >>> 3);
    if (h & 1) break;
  }
  if ((fhd >> 2) & 1) pos += 4;
  if (pos > data.length) throw fail('zstd frame runs past the compressed data');
  return pos;
}

/** Decodes one zstd frame into exactly one cluster, holding at most the frame's window and one block. */
function zstdCluster(data: Buffer, clusterSize: number, fail: (what: string) => DiskImageError): Buffer {
  const frame = data.subarray(0, zstdFrameLength(data, fail));
  const out = Buffer.alloc(clusterSize);
  let got = 0;
  const decoder = new Decompress((chunk) => {
    const n = Math.min(chunk.length, clusterSize - got);
    out.set(chunk.subarray(0, n), got);
    got += n;
    if (got === clusterSize) throw new ClusterFull();
  });
  try {
    decoder.push(frame, true);
  } catch (e) {
    if (!(e instanceof ClusterFull)) throw fail(`compressed cluster does not decode (zstd): ${(e as Error).message}`);
  }
  if (got < clusterSize) throw fail(`compressed cluster decodes to ${got} of ${clusterSize} bytes`);
  return out;
}

/** Inflates `data` into exactly one cluster; throws naming the descriptor's offset when it is damaged. */
export function decompressCluster(data: Buffer, clusterSize: number, compressionType: number, path: string, descriptorAt: number): Buffer {
  if (compressionType === COMPRESSION_ZSTD) {
    return zstdCluster(data, clusterSize, (what) => new DiskImageError(path, what, 'compressed cluster descriptor', descriptorAt, 'ECOMPRESSED'));
  }
  let out: Buffer;
  try {
    // maxOutputLength: a hostile stream cannot inflate past one cluster. zlib is required here, on
    // first use: it is not in Node's start-up snapshot and most images hold no compressed cluster.
    out = (require('zlib') as typeof ZlibModule).inflateRawSync(data, { maxOutputLength: clusterSize, finishFlush: 2 /* Z_SYNC_FLUSH: qemu's streams may end without a final block */ });
  } catch (e) {
    throw new DiskImageError(path, `compressed cluster does not inflate: ${(e as Error).message}`, 'compressed cluster descriptor', descriptorAt, 'ECOMPRESSED');
  }
  // qemu requires the stream to fill the cluster exactly.
  if (out.length < clusterSize) {
    throw new DiskImageError(path, `compressed cluster inflates to ${out.length} of ${clusterSize} bytes`, 'compressed cluster descriptor', descriptorAt, 'ECOMPRESSED');
  }
  return out;
}
