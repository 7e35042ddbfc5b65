// A qcow2 overlay over an open image of any format: backing file name relative to the overlay's
// folder, backing_fmt in QEMU's name for the parent's format.
import { DiskImage } from '../diskImage';
import { createQcow2, DEFAULT_CLUSTER_SIZE } from './create';
import { backingFileName, qemuFormatName } from './parentLink';

export async function createQcow2Child(parent: DiskImage, childPath: string, options: { overwrite?: boolean } = {}): Promise<void> {
  const fromParent = parent.format === 'qcow2' ? parent as DiskImage & { clusterSize: number; extendedL2: boolean } : null;
  await createQcow2(childPath, {
    size: parent.virtualSize,
    clusterSize: fromParent?.clusterSize ?? DEFAULT_CLUSTER_SIZE,
    extendedL2: fromParent?.extendedL2 ?? false,
    backingFile: backingFileName(childPath, parent.path),
    backingFormat: qemuFormatName(parent.format),
    overwrite: options.overwrite,
  });
}
