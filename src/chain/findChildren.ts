import { readdirSync, realpathSync } from 'fs';
import * as nodePath from 'path';
import { DiskImageError } from '../format/errors';
import { VhdImage } from '../format/vhd/vhdImage';
import { resolveParent } from './resolveParent';

const IMAGE_EXTENSIONS = /\.(vhd|avhd)$/i;

function real(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return nodePath.resolve(p);
  }
}

/**
 * Differencing images in `dirs` whose parent resolves to one of `parents`. Returns, per parent (by
 * its real path), the children found. Unreadable files are skipped: they cannot be anyone's child.
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
      if (!IMAGE_EXTENSIONS.test(name)) continue;
      const file = real(nodePath.join(dir, name));
      if (seenFiles.has(file) || wanted.has(file)) continue;
      seenFiles.add(file);
      let img: VhdImage | null = null;
      try {
        img = await VhdImage.open(file, { linkOnly: true });
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
