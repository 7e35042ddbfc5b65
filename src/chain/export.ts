import { DiskImageError } from '../format/errors';
import { parseExportTarget } from '../format/registry';
import { promises as fsp } from 'fs';
import { blockDeviceSize } from '../io/blockDevice';
import { AlignedPool, DirectOutput, WriteRoute } from '../io/directOutput';
import { describeFsError, ImageFile } from '../io/imageFile';
import { openChain } from './chain';
import { OperationOptions } from './progress';
import { DEPTH, isAllZero, nonZeroRuns, REQUEST_SIZE, streamChain } from './stream';

/**
 * Zero runs at least this long are left as holes in a raw export (as qemu-img convert's default
 * 4 KiB sparse detection does; a 64 KiB grain costs a memcmp call per 64 KiB instead of per 4 KiB
 * on zero data, and nothing on data whose first byte is not zero).
 */
const SPARSE_GRAIN = 64 * 1024;

export { isAllZero, streamChain };

/**
 * How a raw export to a regular file writes (see io/directOutput.ts, WriteRoute): by default each
 * write goes buffered or O_DIRECT by what the last ones cost; DISKIMG_EXPORT_DIRECT=1 always
 * direct, =0 always buffered (as before the route was measured; for benchmarks and comparisons).
 */
const DIRECT_MODE = process.env.DISKIMG_EXPORT_DIRECT === '1' ? 'always' : process.env.DISKIMG_EXPORT_DIRECT === '0' ? 'never' : 'measured';

/** Flattens the chain into a raw file of exactly the virtual size (holes where the disk is zero). */
export async function exportRaw(imagePath: string, outPath: string, options: OperationOptions = {}): Promise<void> {
  const chain = await openChain(imagePath);
  try {
    const stdout = isStandardOutput(outPath);
    const existing = stdout ? null : await fsp.stat(outPath).catch(() => null);
    const isFile = !stdout && (existing?.isFile() ?? true);
    // A device or a pipe can be neither truncated nor left with holes: every byte is written, zeros
    // too (a disk's old data must not show through), and a pipe or character device (/dev/null,
    // standard output) in order, without offsets.
    const sequential = stdout || (existing !== null && !isFile && !existing.isBlockDevice());
    if (existing?.isBlockDevice()) {
      const room = blockDeviceSize(Number(existing.rdev));
      if (room !== null && room < chain.virtualSize) {
        throw new DiskImageError(outPath, `the device holds ${room} bytes; the disk is ${chain.virtualSize} bytes`, 'output', room, 'ENOSPC');
      }
    }
    // Standard output is Node's stream (a socket or a pipe that /dev/stdout cannot always reopen).
    const out = stdout ? null : await ImageFile.create(outPath, false);
    const outName = stdout ? 'standard output' : outPath;
    let stdoutError: Error | null = null;
    const onStdoutError = (e: Error) => { stdoutError = e; };
    if (stdout) process.stdout.on('error', onStdoutError);
    const toStdout = (data: Buffer) => new Promise<void>((resolve, reject) => {
      if (stdoutError) return reject(stdoutError);
      process.stdout.write(data, (e) => (e ? reject(e) : resolve()));
    });
    // Only a regular file is written direct (not /dev/null, a pipe or a block device).
    const pool = DIRECT_MODE !== 'never' && isFile ? new AlignedPool(DEPTH, REQUEST_SIZE) : null;
    const route = pool && DIRECT_MODE === 'measured' ? new WriteRoute() : null;
    const direct = pool ? await DirectOutput.open(outPath, pool, route) : null;
    const buffered = (data: Buffer, at: number) => out!.writeAt(data, at);
    let written = 0;
    const writeDense = async (data: Buffer, at: number) => {
      try {
        await (stdout ? toStdout(data) : sequential ? out!.writeNext(data) : out!.writeAt(data, at));
      } catch (e) {
        throw asWriteError(outName, at, data.length, e);
      }
      written = at + data.length;
    };
    let zeros: Buffer | null = null;
    const fillTo = async (end: number) => {
      while (written < end) {
        zeros ??= Buffer.alloc(1024 * 1024);
        await writeDense(zeros.subarray(0, Math.min(zeros.length, end - written)), written);
      }
    };
    try {
      // The pipeline hands data over in order, one request at a time: writes stay sequential.
      await streamChain(chain, async (offset, data) => {
        if (!isFile) {
          await fillTo(offset); // the pipeline passes no ranges that no layer holds
          await writeDense(data, offset);
          return;
        }
        const runs = nonZeroRuns(data, SPARSE_GRAIN);
        for (let i = 0; i < runs.length; i += 2) {
          const at = offset + runs[i];
          const piece = data.subarray(runs[i], runs[i + 1]);
          try {
            await (direct ? direct.write(piece, at, buffered) : out!.writeAt(piece, at));
          } catch (e) {
            throw asWriteError(outPath, at, runs[i + 1] - runs[i], e);
          }
        }
      }, { ...options, requestSize: REQUEST_SIZE, depth: DEPTH, allocate: pool ? () => pool.take() : undefined });
      if (isFile) await out!.truncate(chain.virtualSize);
      else await fillTo(chain.virtualSize);
      if (route && process.env.DISKIMG_EXPORT_ROUTES === '1') process.stderr.write(`export routes: ${JSON.stringify(route.stats)}\n`);
      // No fsync: like cp and qemu-img convert (cache=unsafe), a new export is not a durability point.
    } finally {
      await direct?.close();
      await out?.close();
      if (stdout) process.stdout.off('error', onStdoutError);
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
  if (isStandardOutput(outPath)) {
    throw new DiskImageError(outPath, `a ${target} export is written out of order and needs a file; only raw goes to standard output`, 'output', undefined, 'EINVAL');
  }
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
      // Data comes in order, one request at a time, so the image's appends stay in order. Requests
      // are cut at multiples of their size and so, for a smaller block size, at block boundaries.
      await streamChain(chain, async (offset, data) => {
        for (let o = 0; o < data.length;) {
          const end = Math.min(data.length, (Math.floor((offset + o) / blockSize) + 1) * blockSize - offset);
          const piece = data.subarray(o, end);
          if (!isAllZero(piece)) await out.write(offset + o, piece, zeros);
          o = end;
        }
      }, options);
      await out.flush();
    } finally {
      await out.close();
    }
  } finally {
    await chain.close();
  }
}

/** `-` and /dev/stdout: the process's standard output. */
function isStandardOutput(outPath: string): boolean {
  return outPath === '-' || outPath === '/dev/stdout';
}

/** A write failure as one DiskImageError naming the output file and the offset. */
function asWriteError(path: string, offset: number, length: number, e: unknown): DiskImageError {
  if (e instanceof DiskImageError) return e;
  return new DiskImageError(path, `cannot write ${length} bytes: ${describeFsError(e)}`, 'output', offset, 'EWRITE');
}
