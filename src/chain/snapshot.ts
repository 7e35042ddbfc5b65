import { existsSync } from 'fs';
import * as nodePath from 'path';
import { FORMATS } from '../format/registry';
import { createChild } from './createChild';

/** `disk.vhd` -> `disk-1.vhd`; `disk-1.vhd` -> `disk-2.vhd`; the first name not taken. */
export function nextSnapshotName(top: string): string {
  const dir = nodePath.dirname(top);
  const ext = nodePath.extname(top) || FORMATS[0].extensions[0];
  const stem = nodePath.basename(top, nodePath.extname(top));
  const m = /^(.*)-(\d+)$/.exec(stem);
  const base = m ? m[1] : stem;
  let n = m ? Number(m[2]) + 1 : 1;
  while (existsSync(nodePath.join(dir, `${base}-${n}${ext}`))) n++;
  return nodePath.join(dir, `${base}-${n}${ext}`);
}

/**
 * Cascade: the current top is frozen (from now on only read, as the new child's parent) and a new
 * differencing child becomes the image to write to. Returns the new top's path.
 */
export async function snapshot(top: string, newTop?: string): Promise<string> {
  const target = newTop ?? nextSnapshotName(nodePath.resolve(top));
  await createChild(top, target);
  return nodePath.resolve(target);
}
