import * as nodePath from 'path';
import { DiskImageError } from '../format/errors';
import { openImage } from '../format/registry';
import { openChain } from './chain';
import { realPath } from './findChildren';

export interface ReparentOptions {
  /** Accept a parent whose identity is not the one the child records (and record the new one). */
  ignoreIdMismatch?: boolean;
}

export interface ReparentResult {
  child: string;
  parent: string;
  previousParentUuid: string;
  parentUuid: string;
  uuidChanged: boolean;
}

/**
 * `diskimg reparent`: re-link a child to a moved (or replaced) parent. The new parent's chain must
 * resolve and must not lead back to the child; the format writes the new link crash-safely.
 */
export async function reparent(childPath: string, parentPath: string, options: ReparentOptions = {}): Promise<ReparentResult> {
  const child = await openImage(childPath, { writable: true });
  try {
    if (child.diskType !== 'differencing') {
      const at = child.locate('diskType');
      throw new DiskImageError(childPath, `is a ${child.diskType} image, not a differencing one: it has no parent to re-link`, at.structure, at.offset, 'ENOTDIFF');
    }
    const linkAt = child.locate('parentLink');
    if (realPath(parentPath) === realPath(childPath)) {
      throw new DiskImageError(childPath, 'an image cannot be its own parent', linkAt.structure, linkAt.offset, 'ECYCLE');
    }
    const parentChain = await openChain(parentPath);
    try {
      if (parentChain.layers.some((l) => realPath(l.path) === realPath(childPath))) {
        throw new DiskImageError(childPath, `re-linking to ${parentPath} would make a cycle (its chain contains this image)`, linkAt.structure, linkAt.offset, 'ECYCLE');
      }
      const parent = parentChain.top;
      if (parent.virtualSize !== child.virtualSize) {
        const at = child.locate('virtualSize');
        throw new DiskImageError(childPath, `virtual size ${child.virtualSize} differs from ${parentPath}'s ${parent.virtualSize}`, at.structure, at.offset, 'ESIZE');
      }
      const link = child.checkParent(parent);
      if (!link.idMatches && !options.ignoreIdMismatch) {
        throw new DiskImageError(childPath, `parent ${link.idName} mismatch: the child expects ${link.expected} but ${parentPath} is ${link.found} (use --ignore-id-mismatch to link anyway)`, link.idLocation.structure, link.idLocation.offset, 'EUUID');
      }
      await child.writeParentLink(parent);
      return { child: child.path, parent: nodePath.resolve(parentPath), previousParentUuid: link.expected, parentUuid: link.found, uuidChanged: !link.idMatches };
    } finally {
      await parentChain.close();
    }
  } finally {
    await child.close();
  }
}
