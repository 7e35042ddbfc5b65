// File-to-file copies that never pass through JavaScript (native/copyRange.c): one copy per byte in
// the kernel where reading into a buffer and writing it make two.
import { constants as osConstants } from 'os';
import { load } from './seekHole';

/** A range of one file to copy to an offset of another. */
export interface FileCopy {
  from: number;
  to: number;
  length: number;
}

const disabled = process.env.DISKIMG_NO_NATIVE_COPY === '1';

/** Whether copyRanges can run here at all (the addon is built and has it); false: callers take their ordinary path. */
export function nativeCopyAvailable(): boolean {
  return !disabled && typeof load()?.copyRanges === 'function';
}

/**
 * Copies `ranges` of file `inFd` into file `outFd`, off the main thread. `grain` > 0: only the
 * grains (cut at multiples of `grain` in the output) that hold a non-zero byte are written, zero
 * runs are left untouched (holes in a new file); 0: every byte (copy_file_range). Resolves to the
 * bytes written, or null when it cannot be done here (no addon, not regular files, a file system
 * that refuses, a range past the source's end): then nothing is promised about the output's bytes
 * in those ranges and the caller writes them its ordinary way. Rejects on real failures (EIO, ENOSPC)
 * with an error carrying the errno's name in `code`.
 */
export function copyRanges(inFd: number, outFd: number, ranges: FileCopy[], grain: number): Promise<number | null> {
  const addon = disabled ? null : load();
  if (!addon?.copyRanges) return Promise.resolve(null);
  const flat = new Float64Array(ranges.length * 3);
  ranges.forEach((r, i) => { flat[3 * i] = r.from; flat[3 * i + 1] = r.to; flat[3 * i + 2] = r.length; });
  return new Promise((resolve, reject) => {
    addon.copyRanges!(inFd, outFd, flat, grain, (err, n) => {
      if (err) {
        const e = err as NodeJS.ErrnoException;
        e.code = errnoName(err.errno ?? 5);
        reject(e);
      } else {
        resolve(n! < 0 ? null : n!);
      }
    });
  });
}

function errnoName(n: number): string {
  return Object.entries(osConstants.errno).find(([, v]) => v === n)?.[0] ?? `errno ${n}`;
}
