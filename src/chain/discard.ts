import { unlinkSync } from 'fs';
import * as nodePath from 'path';
import { DiskImageError } from '../format/errors';
import { openImage } from '../format/registry';
import { findChildren, realPath } from './findChildren';

export interface DiscardOptions {
  search?: string[];
}

/**
 * Undo: deletes a differencing child, after checking that no other image uses it as a parent. The
 * parent is not touched. The child is held under its write lock while checked and deleted.
 */
export async function discardChild(childPath: string, options: DiscardOptions = {}): Promise<{ deleted: string; parent: string | null }> {
  const child = await openImage(childPath, { writable: true });
  try {
    if (child.diskType !== 'differencing') {
      const at = child.locate('diskType');
      throw new DiskImageError(child.path, `is a ${child.diskType} image, not a differencing child: refusing to delete it`, at.structure, at.offset, 'ENOTDIFF');
    }
    const dirs = [nodePath.dirname(nodePath.resolve(childPath)), ...(options.search ?? [])];
    const users = (await findChildren([childPath], dirs)).get(realPath(childPath)) ?? [];
    if (users.length > 0) {
      throw new DiskImageError(child.path, `refusing to discard: ${users.length} image(s) use it as their parent: ${users.join(', ')}`, undefined, undefined, 'ECHILDREN');
    }
    unlinkSync(childPath);
    return { deleted: nodePath.resolve(childPath), parent: child.parent?.name ?? null };
  } finally {
    await child.close();
  }
}
