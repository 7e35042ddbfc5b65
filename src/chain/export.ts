import { ImageFile } from '../io/imageFile';
import { Chain, openChain } from './chain';
import { OperationOptions, throwIfCancelled } from './progress';

const CHUNK = 4 * 1024 * 1024;

/** True when every byte is zero (compares 4 MiB at memcmp speed). */
const ZERO = Buffer.alloc(CHUNK);
export function isAllZero(b: Buffer): boolean {
  for (let off = 0; off < b.length; off += ZERO.length) {
    const n = Math.min(ZERO.length, b.length - off);
    if (!b.subarray(off, off + n).equals(ZERO.subarray(0, n))) return false;
  }
  return true;
}

/**
 * Streams the chain's whole virtual disk into `writeChunk`, a chunk at a time, skipping ranges that
 * no layer holds and reading the next chunk while the previous one is written.
 */
export async function streamChain(
  chain: Chain,
  writeChunk: (offset: number, data: Buffer) => Promise<void>,
  options: OperationOptions = {},
): Promise<void> {
  const size = chain.virtualSize;
  const chunkSize = Math.max(CHUNK, chain.top.blockSize);
  let pendingWrite: Promise<void> = Promise.resolve();
  const buffers = [Buffer.alloc(chunkSize), Buffer.alloc(chunkSize)];
  let which = 0;
  for (let pos = 0; pos < size; pos += chunkSize) {
    throwIfCancelled(options.signal, chain.top.path);
    const len = Math.min(chunkSize, size - pos);
    const map = await chain.map(pos, len);
    if (map.every((e) => !e.data)) {
      options.onProgress?.(pos + len, size);
      continue;
    }
    const buf = buffers[which].subarray(0, len);
    which ^= 1;
    await chain.read(pos, buf);
    await pendingWrite;
    pendingWrite = isAllZero(buf) ? Promise.resolve() : writeChunk(pos, buf);
    options.onProgress?.(pos + len, size);
  }
  await pendingWrite;
}

/** Flattens the chain into a raw file of exactly the virtual size (holes where the disk is zero). */
export async function exportRaw(imagePath: string, outPath: string, options: OperationOptions = {}): Promise<void> {
  const chain = await openChain(imagePath);
  try {
    const out = await ImageFile.create(outPath, false);
    try {
      await streamChain(chain, (o, d) => out.writeAt(d, o), options);
      await out.truncate(chain.virtualSize);
      await out.sync();
    } finally {
      await out.close();
    }
  } finally {
    await chain.close();
  }
}
