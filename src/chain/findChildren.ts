import { closeSync, fstatSync, openSync, readdirSync, readSync, realpathSync } from 'fs';
import * as nodePath from 'path';
import { DiskImage } from '../format/diskImage';
import { DiskImageError } from '../format/errors';
import { mayBeDifferencing, openImage, PROBE_HEAD, PROBE_TAIL } from '../format/registry';
import { resolveParent } from './resolveParent';

/** Candidate files opened at once: their opens are chains of small reads in the I/O pool. */
const OPEN_CONCURRENCY = 8;

function real(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return nodePath.resolve(p);
  }
}

/**
 * True when `file` is a regular file whose first and last bytes may be a differencing image. One
 * open and two small reads, synchronous (cheaper than the format's open by an order of magnitude:
 * a folder of base images, raw dumps and other files is passed over on these bytes alone).
 */
function mayBeChild(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return false;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return false;
    const head = Buffer.alloc(Math.min(PROBE_HEAD, st.size));
    const tail = Buffer.alloc(Math.min(PROBE_TAIL, st.size));
    if (readSync(fd, head, 0, head.length, 0) !== head.length) return false;
    if (readSync(fd, tail, 0, tail.length, st.size - tail.length) !== tail.length) return false;
    return mayBeDifferencing(head, tail, st.size);
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
}

/** The real path of the parent `file` names, or null when it is no differencing image. */
async function parentOf(file: string): Promise<string | null> {
  let img: DiskImage | null = null;
  try {
    img = await openImage(file, { linkOnly: true });
    if (img.diskType !== 'differencing') return null;
    const parent = resolveParent(img).resolvedPath;
    return parent ? real(parent) : null;
  } catch (e) {
    if (!(e instanceof DiskImageError)) throw e;
    return null;
  } finally {
    await img?.close();
  }
}

/**
 * Differencing images in `dirs` whose parent resolves to one of `parents`. Returns, per parent (by
 * its real path), the children found. Files are recognised by content, whatever their names;
 * unreadable ones and other files are skipped: they cannot be anyone's child.
 */
export async function findChildren(parents: string[], dirs: string[]): Promise<Map<string, string[]>> {
  const wanted = new Map(parents.map((p) => [real(p), [] as string[]]));
  const seenDirs = new Set<string>();
  const seenFiles = new Set<string>();
  const candidates: string[] = [];
  for (const d of dirs) {
    const dir = real(d);
    if (seenDirs.has(dir)) continue;
    seenDirs.add(dir);
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      // Our own lock and journal files sit next to images: never images themselves.
      if (/\.diskimg-(lock|merge)(\.tmp)?$/.test(name)) continue;
      const file = real(nodePath.join(dir, name));
      if (seenFiles.has(file) || wanted.has(file)) continue;
      seenFiles.add(file);
      if (mayBeChild(file)) candidates.push(file);
    }
  }
  // Opened a few at a time; results go back in folder order.
  const parentsOf: Array<string | null> = new Array(candidates.length).fill(null);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < candidates.length) {
      const i = next++;
      parentsOf[i] = await parentOf(candidates[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(OPEN_CONCURRENCY, candidates.length) }, worker));
  candidates.forEach((file, i) => {
    const list = parentsOf[i] !== null ? wanted.get(parentsOf[i]!) : undefined;
    if (list) list.push(file);
  });
  return wanted;
}

export function realPath(p: string): string {
  return real(p);
}
