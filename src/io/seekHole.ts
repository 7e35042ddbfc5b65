// Where a sparse file's data and holes are (lseek SEEK_DATA / SEEK_HOLE through native/seekHole.c).
import { loadAddon } from './nativeAddon';

interface SeekHoleAddon { seek(fd: number, offset: number, wantData: boolean): number }

let addon: SeekHoleAddon | null | undefined;

/**
 * The addon built at install (scripts/build-native.mjs), or null when it was not built: Node has no
 * lseek, and without it every byte of a raw file counts as data (correct, only less precise).
 */
function load(): SeekHoleAddon | null {
  if (addon === undefined) addon = loadAddon<SeekHoleAddon>('seek_hole', 'DISKIMG_NO_SEEK_HOLE');
  return addon;
}

export function holesDetectable(): boolean {
  return load() !== null;
}

/**
 * Data extents of [offset, offset + length) of the open file `fd`, in order, or null when holes
 * cannot be told (no addon, or a file system without SEEK_DATA): then all of it is data.
 */
export function dataExtents(fd: number, offset: number, length: number): Array<{ offset: number; length: number }> | null {
  const a = load();
  if (!a) return null;
  const end = offset + length;
  const out: Array<{ offset: number; length: number }> = [];
  try {
    let pos = offset;
    while (pos < end) {
      const data = a.seek(fd, pos, true);
      if (data < 0 || data >= end) break;
      const hole = a.seek(fd, data, false);
      const stop = hole < 0 ? end : Math.min(hole, end);
      out.push({ offset: data, length: stop - data });
      pos = stop;
    }
  } catch {
    return null;
  }
  return out;
}
