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
 * no layer holds. A few chunks are in flight at once so reads and writes overlap in the I/O threads;
 * memory stays at IN_FLIGHT chunks whatever the disk size.
 */
const IN_FLIGHT = 4;
export async function streamChain(
  chain: Chain,
  writeChunk: (offset: number, data: Buffer) => Promise<void>,
  options: OperationOptions = {},
): Promise<void> {
  const size = chain.virtualSize;
  const chunkSize = Math.max(CHUNK, chain.top.blockSize);
  const free: Buffer[] = [];
  for (let i = 0; i < IN_FLIGHT; i++) free.push(Buffer.allocUnsafe(chunkSize));
  const running = new Set<Promise<void>>();
  let failure: unknown = null;
  let done = 0;
  for (let pos = 0; pos < size && failure === null; pos += chunkSize) {
    throwIfCancelled(options.signal, chain.top.path);
    const len = Math.min(chunkSize, size - pos);
    const map = await chain.map(pos, len);
    if (map.every((e) => !e.data)) {
      done += len;
      options.onProgress?.(done, size);
      continue;
    }
    while (free.length === 0) await Promise.race(running);
    const buffer = free.pop()!;
    const at = pos;
    const job = (async () => {
      const buf = buffer.subarray(0, len);
      await chain.read(at, buf);
      if (!isAllZero(buf)) await writeChunk(at, buf);
      done += len;
      options.onProgress?.(done, size);
    })().catch((e) => { failure ??= e; }).finally(() => { free.push(buffer); running.delete(job); });
    running.add(job);
  }
  await Promise.all(running);
  if (failure !== null) throw failure;
}

/** Flattens the chain into a raw file of exactly the virtual size (holes where the disk is zero). */
export async function exportRaw(imagePath: string, outPath: string, options: OperationOptions = {}): Promise<void> {
  const chain = await openChain(imagePath);
  try {
    const out = await ImageFile.create(outPath, false);
    try {
      await streamChain(chain, (o, d) => out.writeAt(d, o), options);
      await out.truncate(chain.virtualSize);
      // No fsync: like cp and qemu-img convert (cache=unsafe), a new export is not a durability point.
    } finally {
      await out.close();
    }
  } finally {
    await chain.close();
  }
}
