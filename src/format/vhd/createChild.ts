// A new differencing VHD over an open parent image.
import { statSync } from 'fs';
import * as nodePath from 'path';
import { DiskImage } from '../diskImage';
import { DEFAULT_BLOCK_SIZE, relativeLocatorPath, writeSparseImage } from './create';
import { DiskType } from './footer';
import { geometryForSize } from './geometry';
import { dateToVhdTimestamp } from './timestamp';
import { parseUuid } from './uuid';
import type { VhdImage } from './vhdImage';

export interface CreateChildOptions {
  overwrite?: boolean;
}

/**
 * Creates a differencing child of `parent`: same size, geometry and block size, the parent's
 * UUID and modification time, its file name as the unicode name, and W2ru + W2ku locators (UTF-16LE).
 */
export async function createVhdChild(parent: DiskImage, childPath: string, options: CreateChildOptions = {}): Promise<void> {
  const absParent = nodePath.resolve(parent.path);
  const vhdParent = parent.format === 'vhd' ? (parent as VhdImage) : null;
  await writeSparseImage(childPath, {
    // A raw parent's size need not be a whole number of sectors: the child rounds it up.
    size: Math.ceil(parent.virtualSize / 512) * 512,
    blockSize: parent.diskType !== 'fixed' ? parent.blockSize : DEFAULT_BLOCK_SIZE,
    diskType: DiskType.Differencing,
    geometry: vhdParent ? vhdParent.footer.geometry : geometryForSize(parent.virtualSize),
    parentUniqueId: parseUuid(parent.uuid),
    parentTimestamp: dateToVhdTimestamp(statSync(absParent).mtime),
    parentUnicodeName: nodePath.basename(absParent),
    locators: [
      { code: 'W2ru', data: Buffer.from(relativeLocatorPath(childPath, absParent), 'utf16le') },
      { code: 'W2ku', data: Buffer.from(absParent, 'utf16le') },
    ],
  }, options.overwrite);
}
