import { readdirSync, realpathSync, statSync } from 'fs';
import * as nodePath from 'path';
import { DiskImage } from '../format/diskImage';
import { DiskImageError } from '../format/errors';
import { openImage } from '../format/registry';
import { resolveParent } from './resolveParent';

function real(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return nodePath.resolve(p);
  }
}

function isRegularFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
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
      if (!isRegularFile(file)) continue;
      let img: DiskImage | null = null;
      try {
        img = await openImage(file, { linkOnly: true });
        if (img.diskType !== 'differencing') continue;
        const parent = resolveParent(img).resolvedPath;
        if (!parent) continue;
        const list = wanted.get(real(parent));
        if (list) list.push(file);
      } catch (e) {
        if (!(e instanceof DiskImageError)) throw e;
      } finally {
        await img?.close();
      }
    }
  }
  return wanted;
}

export function realPath(p: string): string {
  return real(p);
}
