// A new differencing VHDX over an open parent image.
import { DiskImage } from '../diskImage';
import { DEFAULT_VHDX_BLOCK_SIZE, writeVhdx } from './create';
import { isValidBlockSize } from './fileParameters';
import { locatorPairs, parentIdentity } from './parentLink';

/**
 * Creates a differencing child of `parent`: same virtual size and logical sector size (the spec
 * requires both), the parent's block size where VHDX allows it; parent_linkage is the parent's
 * DataWriteGuid, with relative_path and absolute_win32_path.
 */
export async function createVhdxChild(parent: DiskImage, childPath: string, options: { overwrite?: boolean } = {}): Promise<void> {
  const physical = (parent as { physicalSectorSize?: number }).physicalSectorSize;
  await writeVhdx(childPath, {
    size: parent.virtualSize,
    blockSize: parent.diskType !== 'fixed' && isValidBlockSize(parent.blockSize) ? parent.blockSize : DEFAULT_VHDX_BLOCK_SIZE,
    logicalSectorSize: parent.sectorSize,
    physicalSectorSize: physical === 512 || physical === 4096 ? physical : 4096,
    fixed: false,
    parentLocator: locatorPairs(childPath, parent.path, parentIdentity(parent)),
  }, options.overwrite);
}
