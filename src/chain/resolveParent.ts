import { statSync } from 'fs';
import { DiskImage, ParentCandidate, ParentCandidates } from '../format/diskImage';
import { isRemoteLocation } from '../io/byteSource';

export interface ParentResolution {
  /** The parent file found, or null. */
  resolvedPath: string | null;
  /** Which locator (or the recorded name) found it. */
  via: string | null;
  /** Each candidate tried, with what happened, for error messages. */
  tried: string[];
}

function checkCandidate(candidate: string): string | null {
  // A URL is reached when the parent is opened (its errors say why it could not be).
  if (isRemoteLocation(candidate)) return null;
  try {
    const st = statSync(candidate);
    if (st.isDirectory()) return 'is a directory';
    // A block device is a raw parent (vhd-util's convention); other special files are not images.
    if (!st.isFile() && !st.isBlockDevice()) return 'is not a regular file';
    return null;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'not found';
    if (code === 'ELOOP') return 'symbolic link loop';
    return (e as Error).message;
  }
}

/** The first candidate that is a regular file; `unreadable` locators are listed first in `tried`. */
export function resolveCandidates(candidates: ParentCandidate[], unreadable: string[] = []): ParentResolution {
  const tried = [...unreadable];
  for (const c of candidates) {
    const problem = checkCandidate(c.path);
    if (problem === null) return { resolvedPath: c.path, via: c.via, tried };
    tried.push(`${c.via} '${c.raw}' -> ${c.path}: ${problem}`);
  }
  if (candidates.length === 0 && tried.length === 0) tried.push('no parent locators and no parent name');
  return { resolvedPath: null, via: null, tried };
}

/** Finds a differencing image's parent from the candidates its format derives (see DiskImage.parentCandidates). */
export function resolveParent(child: DiskImage): ParentResolution {
  return resolveFrom(child.parentCandidates());
}

/** resolveParent for candidates at hand (a tolerant scan's, when the image could not be opened). */
export function resolveFrom(list: ParentCandidates): ParentResolution {
  return resolveCandidates(list.candidates, list.unreadable);
}
