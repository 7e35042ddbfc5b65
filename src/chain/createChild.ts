import { statSync } from 'fs';
import * as nodePath from 'path';
import { writeSparseImage, relativeLocatorPath, DEFAULT_BLOCK_SIZE } from '../format/vhd/create';
import { DiskType } from '../format/vhd/footer';
import { dateToVhdTimestamp } from '../format/vhd/timestamp';
import { VhdImage } from '../format/vhd/vhdImage';

export interface CreateChildOptions {
  overwrite?: boolean;
}

/**
 * Creates a differencing child of `parentPath`: same size, geometry and block size, the parent's
 * UUID and modification time, its file name as the unicode name, and W2ru + W2ku locators (UTF-16LE).
 */
export async function createChild(parentPath: string, childPath: string, options: CreateChildOptions = {}): Promise<void> {
  const parent = await VhdImage.open(parentPath);
  try {
    const absParent = nodePath.resolve(parentPath);
    await writeSparseImage(childPath, {
      size: parent.virtualSize,
      blockSize: parent.header ? parent.blockSize : DEFAULT_BLOCK_SIZE,
      diskType: DiskType.Differencing,
      geometry: parent.footer.geometry,
      parentUniqueId: parent.footer.uniqueId,
      parentTimestamp: dateToVhdTimestamp(statSync(absParent).mtime),
      parentUnicodeName: nodePath.basename(absParent),
      locators: [
        { code: 'W2ru', data: Buffer.from(relativeLocatorPath(childPath, absParent), 'utf16le') },
        { code: 'W2ku', data: Buffer.from(absParent, 'utf16le') },
      ],
    }, options.overwrite);
  } finally {
    await parent.close();
  }
}
