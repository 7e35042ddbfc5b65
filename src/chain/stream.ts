/**
 * The one streaming pipeline: how export, diff, merge's copy phase (and serve's sequential reads)
 * move the bytes of a virtual disk. Nothing here knows a format; it reads through `DiskImage.readOwn`
 * on the layers the chain's map names, so a format's own coalescing (blocks back to back in the file
 * travel as one preadv) applies to every caller.
 *
 * API
 *
 *   runPipeline(requests, { read, consume, bufferSize, depth, file, signal })
 *     `requests`: an Iterable or AsyncIterable of objects with at least `offset` and `length`.
 *     `read(req, buffer)` fills the request's bytes into `buffer` (a pool buffer of `bufferSize`
 *     bytes; the caller decides which part, usually `buffer.subarray(0, req.length)`).
 *     `consume(req, buffer)` is called once per request, strictly in request order and one at a
 *     time (the next waits until the previous resolved); `buffer` is reused once it resolves.
 *     Up to `depth - 1` reads are in flight while one request is consumed: memory is
 *     `depth x bufferSize`, whatever the disk size. A failed read or consume stops the pipeline;
 *     reads still in flight are awaited before the error is thrown (so the caller may close files).
 *
 *   chainRequests(chain, { offset, length, requestSize, include })
 *     The chain's map cut into read requests (`ChainRequest`): ranges some layer holds, contiguous
 *     in the virtual disk, cut at multiples of `requestSize` (so requests line up with blocks).
 *     Ranges no layer holds (zeros) are left out; `include(extent)` can leave out more (merge: only
 *     the layers being merged). Each request lists its `parts` (range + layer depth).
 *
 *   readChainRequest(chain, req, target)
 *     Reads a request into `target` (req.length bytes) from the layers its parts name: no second
 *     walk of the chain. Errors that are not already a DiskImageError are turned into one naming
 *     the layer's file and the virtual offset.
 *
 *   streamChain(chain, sink, options)
 *     chainRequests + runPipeline + readChainRequest with measured defaults: `sink(offset, data)`
 *     gets the disk's data in ascending order, one call at a time. What export and merge use.
 *
 *   nonZeroRuns(buffer, grain) / isAllZero(buffer)
 *     Zero detection without copies: the [start, end) runs of `buffer` that hold a non-zero byte,
 *     at `grain` granularity (zero runs shorter than that are kept inside the data).
 *
 * Why this shape (numbers in the pipeline notes, measured on the 1 GiB export benchmark):
 * - Writes go one at a time, in order. With six 4 MiB writes in flight to one file they queue on
 *   the inode lock: strace -c showed 20.9 ms per 4 MiB pwrite against qemu-img's 2.1 ms per 2 MiB
 *   (qemu-img convert writes in order too; its -W is off by default). In order also keeps the
 *   output's extents sequential.
 * - Reads run ahead through the libuv pool (sized in cli/entry.ts), so the copy out of the page
 *   cache of the next requests overlaps the write of this one.
 * - 4 MiB requests, 4 buffers: the best median of the sizes tried (256 KiB to 4 MiB, depth 2 to 8);
 *   smaller requests cost user time per request (512 KiB: about twice the user time of 4 MiB).
 */
import { DiskImageError, throwIfCancelled } from '../format/errors';
import { alignedBuffer } from '../io/alignedBuffer';
import { describeFsError } from '../io/imageFile';
import type { Chain, MapExtent } from './chain';
import type { OperationOptions } from './progress';

/** A range of the virtual disk to read. */
export interface StreamRequest {
  offset: number;
  length: number;
}

/** A read request over a chain: the layers that hold each part of it, in order, back to back. */
export interface ChainRequest extends StreamRequest {
  parts: MapExtent[];
}

export interface PipelineOptions<R extends StreamRequest> {
  read: (req: R, buffer: Buffer) => Promise<void>;
  consume: (req: R, buffer: Buffer) => Promise<void> | void;
  /** Bytes of each pool buffer. */
  bufferSize: number;
  /** Buffers in the pool: reads in flight plus the one being consumed (at least 2). */
  depth: number;
  /** Named in the cancellation error. */
  file?: string;
  signal?: AbortSignal;
  /** Makes a pool buffer of `bufferSize` bytes (at most `depth` calls; default: ordinary memory). */
  allocate?: () => Buffer;
}

/** Measured defaults (see the top of the file); overridable for benchmarks only. */
export const REQUEST_SIZE = tuning('DISKIMG_STREAM_REQUEST_KIB', 4096) * 1024;
export const DEPTH = tuning('DISKIMG_STREAM_DEPTH', 4);

function tuning(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isInteger(v) && v > 0 && v <= 65536 ? v : fallback;
}

/**
 * Reads ahead, consumes in order: see the top of the file. Returns when every request has been
 * consumed.
 */
export async function runPipeline<R extends StreamRequest>(
  requests: Iterable<R> | AsyncIterable<R>,
  options: PipelineOptions<R>,
): Promise<void> {
  const { read, consume, bufferSize } = options;
  const depth = Math.max(2, options.depth);
  const free: Buffer[] = [];
  const it: Iterator<R> | AsyncIterator<R> = Symbol.asyncIterator in requests
    ? (requests as AsyncIterable<R>)[Symbol.asyncIterator]()
    : (requests as Iterable<R>)[Symbol.iterator]();
  let exhausted = false;
  let consuming = false;
  const queue: Array<Promise<{ req: R; buffer: Buffer }>> = [];

  const start = (req: R): void => {
    if (req.length > bufferSize) throw new RangeError(`request of ${req.length} bytes exceeds the ${bufferSize}-byte buffers`);
    // Buffers are allocated on first use, then reused: fresh memory costs a page fault per 4 KiB.
    // Page aligned: reads from the page cache into malloc'd Buffers stall on 4K aliasing (alignedBuffer.ts).
    const buffer = free.pop() ?? (options.allocate ? options.allocate() : alignedBuffer(bufferSize));
    const p = read(req, buffer).then(() => ({ req, buffer }), (e) => { free.push(buffer); throw e; });
    // Awaited later, in order; until then a failure must not count as unhandled.
    p.catch(() => undefined);
    queue.push(p);
  };
  // Buffers in use (queued reads + the one being consumed) never exceed `depth`.
  const fill = async (): Promise<void> => {
    while (!exhausted && queue.length + (consuming ? 1 : 0) < depth) {
      const n = await it.next();
      if (n.done) { exhausted = true; return; }
      start(n.value);
    }
  };

  try {
    await fill();
    while (queue.length > 0) {
      throwIfCancelled(options.signal, options.file ?? '');
      const { req, buffer } = await queue.shift()!;
      consuming = true;
      // The next read starts before this request is consumed: depth - 1 in flight meanwhile.
      await fill();
      try {
        await consume(req, buffer);
      } finally {
        free.push(buffer);
        consuming = false;
      }
    }
  } finally {
    // Let reads still in flight finish before the caller closes the files.
    await Promise.allSettled(queue);
    if (!exhausted) await it.return?.();
  }
}

export interface ChainRequestOptions {
  offset?: number;
  length?: number;
  requestSize?: number;
  /** Which data extents to read (default: all that hold data). */
  include?: (e: MapExtent) => boolean;
}

/** The chain's data, as read requests in ascending order (see the top of the file). */
export async function* chainRequests(chain: Chain, options: ChainRequestOptions = {}): AsyncGenerator<ChainRequest> {
  const offset = options.offset ?? 0;
  const end = Math.min(chain.virtualSize, offset + (options.length ?? chain.virtualSize - offset));
  const requestSize = options.requestSize ?? REQUEST_SIZE;
  const include = options.include ?? ((e: MapExtent) => e.data);
  // Mapped a window at a time: the extent list of one window stays short however fragmented the chain.
  const window = 64 * requestSize;
  let cur: ChainRequest | null = null;
  for (let pos = offset; pos < end; pos += window) {
    const map = await chain.map(pos, Math.min(window, end - pos));
    for (const e of map) {
      if (!e.data || !include(e)) continue;
      let s = e.start;
      const eEnd = e.start + e.length;
      while (s < eEnd) {
        const cell = Math.floor(s / requestSize);
        const cut = Math.min(eEnd, (cell + 1) * requestSize);
        if (cur && cur.offset + cur.length === s && Math.floor(cur.offset / requestSize) === cell) {
          cur.length += cut - s;
          const last = cur.parts[cur.parts.length - 1];
          if (last.depth === e.depth && last.start + last.length === s) last.length += cut - s;
          else cur.parts.push({ start: s, length: cut - s, depth: e.depth, data: true });
        } else {
          if (cur) yield cur;
          cur = { offset: s, length: cut - s, parts: [{ start: s, length: cut - s, depth: e.depth, data: true }] };
        }
        s = cut;
      }
    }
  }
  if (cur) yield cur;
}

/** Reads `req` into `target` from the layers its parts name (each layer's own reads, in parallel). */
export async function readChainRequest(chain: Chain, req: ChainRequest, target: Buffer): Promise<void> {
  const one = async (p: MapExtent) => {
    const slice = target.subarray(p.start - req.offset, p.start - req.offset + p.length);
    const layer = chain.layers[p.depth];
    try {
      await layer.readOwn(p.start, slice);
    } catch (e) {
      throw asReadError(layer.path, p.start, p.length, e);
    }
  };
  if (req.parts.length === 1) await one(req.parts[0]);
  else await Promise.all(req.parts.map(one));
}

/** A read failure as one DiskImageError naming the file and the virtual offset. */
export function asReadError(path: string, offset: number, length: number, e: unknown): DiskImageError {
  if (e instanceof DiskImageError) return e;
  return new DiskImageError(path, `cannot read ${length} bytes: ${describeFsError(e)}`, 'virtual disk', offset, 'EIO');
}

export interface StreamOptions extends OperationOptions {
  requestSize?: number;
  depth?: number;
  include?: (e: MapExtent) => boolean;
  /** Pool buffers of `requestSize` bytes from the caller (export: page-aligned ones for O_DIRECT). */
  allocate?: () => Buffer;
}

/**
 * The chain's data in ascending order, one `sink` call at a time, reads running ahead (see the top
 * of the file). Ranges no layer holds are never read nor passed. Progress counts virtual bytes.
 */
export async function streamChain(
  chain: Chain,
  sink: (offset: number, data: Buffer) => Promise<void> | void,
  options: StreamOptions = {},
): Promise<void> {
  const size = chain.virtualSize;
  const requestSize = options.requestSize ?? REQUEST_SIZE;
  await runPipeline(chainRequests(chain, { requestSize, include: options.include }), {
    bufferSize: requestSize,
    depth: options.depth ?? DEPTH,
    file: chain.top.path,
    signal: options.signal,
    allocate: options.allocate,
    read: (req, buffer) => readChainRequest(chain, req, buffer.subarray(0, req.length)),
    consume: async (req, buffer) => {
      await sink(req.offset, buffer.subarray(0, req.length));
      options.onProgress?.(req.offset + req.length, size);
    },
  });
  options.onProgress?.(size, size);
}

const ZERO_BYTES = Buffer.alloc(64 * 1024);

/** True when every byte is zero (memcmp against a zero page, 64 KiB at a time; no copy). */
export function isAllZero(b: Uint8Array): boolean {
  const buf = Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  for (let off = 0; off < buf.length; off += ZERO_BYTES.length) {
    const n = Math.min(ZERO_BYTES.length, buf.length - off);
    // Data that is not zero almost always says so in its first byte: no call at all then.
    if (buf[off] !== 0 || buf[off + n - 1] !== 0) return false;
    if (!buf.subarray(off, off + n).equals(n === ZERO_BYTES.length ? ZERO_BYTES : ZERO_BYTES.subarray(0, n))) return false;
  }
  return true;
}

/**
 * The [start, end) runs of `buf` holding non-zero bytes, `grain` bytes at a time (a grain with any
 * non-zero byte counts whole); adjacent non-zero grains form one run. Returns a flat array
 * [s0, e0, s1, e1, …].
 */
export function nonZeroRuns(buf: Buffer, grain: number): number[] {
  const out: number[] = [];
  if (grain > ZERO_BYTES.length) throw new RangeError(`zero-detection grain ${grain} exceeds ${ZERO_BYTES.length}`);
  for (let off = 0; off < buf.length; off += grain) {
    const n = Math.min(grain, buf.length - off);
    const zero = buf[off] === 0 && buf[off + n - 1] === 0
      && buf.subarray(off, off + n).equals(n === ZERO_BYTES.length ? ZERO_BYTES : ZERO_BYTES.subarray(0, n));
    if (zero) continue;
    const last = out.length - 1;
    if (last > 0 && out[last] === off) out[last] = off + n;
    else out.push(off, off + n);
  }
  return out;
}
