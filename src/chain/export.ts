import { ImageFile } from '../io/imageFile';
import { parseExportTarget } from '../format/registry';
import { Chain, MapExtent, openChain } from './chain';
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
// Six requests in flight keep both cores and the (8-thread, see cli/entry.ts) pool busy: a read,
// a zero check and a write can each be under way for different chunks at once.
const IN_FLIGHT = 6;
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
  // The chain is mapped a window of 64 chunks at a time, not once per chunk.
  let windowMap: MapExtent[] = [];
  let windowEnd = 0;
  const cursor = { i: 0 };
  for (let pos = 0; pos < size && failure === null; pos += chunkSize) {
    throwIfCancelled(options.signal, chain.top.path);
    const len = Math.min(chunkSize, size - pos);
    if (pos >= windowEnd) {
      windowEnd = Math.min(size, pos + 64 * chunkSize);
      windowMap = await chain.map(pos, windowEnd - pos);
      cursor.i = 0;
    }
    const map = clipExtents(windowMap, pos, len, cursor);
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
      // The map already says which layer holds each range: read from it directly, no second walk.
      for (const e of map) {
        const slice = buf.subarray(e.start - at, e.start - at + e.length);
        if (e.data) await chain.layers[e.depth].readOwn(e.start, slice);
        else slice.fill(0);
      }
      if (!isAllZero(buf)) await writeChunk(at, buf);
      done += len;
      options.onProgress?.(done, size);
    })().catch((e) => { failure ??= e; }).finally(() => { free.push(buffer); running.delete(job); });
    running.add(job);
  }
  await Promise.all(running);
  if (failure !== null) throw failure;
}

/** The extents of a window's map that fall in [start, start+length), cut to it. */
function clipExtents(map: MapExtent[], start: number, length: number, cursor: { i: number }): MapExtent[] {
  const end = start + length;
  const out: MapExtent[] = [];
  // Chunks come in order: extents wholly before this one are never looked at again.
  while (cursor.i < map.length && map[cursor.i].start + map[cursor.i].length <= start) cursor.i++;
  for (let i = cursor.i; i < map.length; i++) {
    const e = map[i];
    if (e.start >= end) break;
    const s = Math.max(start, e.start);
    out.push({ ...e, start: s, length: Math.min(end, e.start + e.length) - s });
  }
  return out;
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

/** `raw`, or `<format>-<type>` of a registered format (`vhd-dynamic`, `vhd-fixed`; see exportTargets()). */
export type ExportFormat = string;

export interface ExportOptions extends OperationOptions {
  format?: ExportFormat;
}

/**
 * Flattens a chain into a raw file, or into a new image of a registered format: fixed, or dynamic
 * allocating only non-zero blocks. The new image is created by its format (taking what fits from
 * the source, e.g. a VHD's exact CHS geometry) and written through its DiskImage.
 */
export async function exportImage(imagePath: string, outPath: string, options: ExportOptions = {}): Promise<void> {
  const target = options.format ?? 'raw';
  if (target === 'raw') return exportRaw(imagePath, outPath, options);
  const { format, type } = parseExportTarget(target);
  const chain = await openChain(imagePath);
  try {
    const size = chain.virtualSize;
    const top = chain.top;
    await format.create(outPath, {
      size, type, exactSize: true, overwrite: true, template: top,
      // Block sizes carry over within a format only (a qcow2 cluster is no VHDX block size).
      blockSize: type === 'dynamic' && top.diskType !== 'fixed' && top.format === format.name ? top.blockSize : undefined,
    });
    const out = await format.open(outPath, { writable: true });
    try {
      const blockSize = out.blockSize;
      const zeros = async (_o: number, t: Buffer) => { t.fill(0); };
      let writes = Promise.resolve();
      await streamChain(chain, (offset, data) => {
        // Chunks arrive in flight together; the image's appends must stay in order.
        writes = writes.then(async () => {
          for (let o = 0; o < data.length; o += blockSize) {
            const piece = data.subarray(o, Math.min(o + blockSize, data.length));
            if (!isAllZero(piece)) await out.write(offset + o, piece, zeros);
          }
        });
        return writes;
      }, options);
      await writes;
      await out.flush();
    } finally {
      await out.close();
    }
  } finally {
    await chain.close();
  }
}
