// The VHDX entry of the format registry: how the rest of the program reaches everything in this folder.
import type { DiskFormat, FormatScan } from '../registry';
import { DiskImage } from '../diskImage';
import { DiskImageError } from '../errors';
import { formatBytes } from '../../formatBytes';
import { scanVhdx, VhdxScan } from './check';
import { createVhdx } from './create';
import { createVhdxChild } from './createChild';
import { hasFileIdentifierSignature } from './fileIdentifier';
import { describeVhdxHeader } from './headerFields';
import { planVhdxRepair } from './repair';
import { VhdxImage } from './vhdxImage';

function asVhdx(image: DiskImage): VhdxImage {
  if (image.format !== 'vhdx') throw new DiskImageError(image.path, `is a ${image.format} image, not a VHDX`, undefined, undefined, 'EFORMAT');
  return image as VhdxImage;
}

export const vhdxFormat: DiskFormat = {
  name: 'vhdx',
  extensions: ['.vhdx', '.avhdx'],
  creatableTypes: ['dynamic', 'fixed'],

  // The file type identifier "vhdxfile" at offset 0.
  probe: (head) => hasFileIdentifierSignature(head),

  open: (path, options) => VhdxImage.open(path, options),

  create(path, options) {
    const template = options.template;
    // A template's logical sector size carries over (export keeps 4096-byte-sector disks so).
    const logicalSectorSize = options.logicalSectorSize ?? (template && (template.sectorSize === 512 || template.sectorSize === 4096) ? template.sectorSize : 512);
    const blockSize = options.blockSize ?? (template?.format === 'vhdx' && template.diskType !== 'fixed' ? template.blockSize : undefined);
    return createVhdx(path, { size: options.size, type: options.type, blockSize, logicalSectorSize, overwrite: options.overwrite });
  },

  createChild: (parent, childPath, options) => createVhdxChild(parent, childPath, options),

  scan: (path, file, options) => scanVhdx(path, file, options),

  planRepair: (scan: FormatScan) => planVhdxRepair(scan as VhdxScan),

  headerFields: (image) => describeVhdxHeader(asVhdx(image)),

  summary(image) {
    const img = asVhdx(image);
    const fields = {
      blockSize: img.blockSize,
      logicalSectorSize: img.sectorSize,
      physicalSectorSize: img.physicalSectorSize,
      uuid: img.uuid,
      dataWriteGuid: img.dataWriteGuid,
      fileWriteGuid: img.fileWriteGuid,
      creator: img.layout.creator,
      headerSequenceNumber: img.header.sequenceNumber.toString(),
      logReplayedInMemory: img.layout.replayedInMemory,
    };
    const lines: Array<[string, string]> = [
      ['block size', `${img.blockSize} (${formatBytes(img.blockSize)})`],
      ['sector size', `${img.sectorSize} logical, ${img.physicalSectorSize} physical`],
      ['blocks', `${img.allocatedBlockCount()} of ${img.blockCount} allocated`],
      ['uuid', img.uuid],
      ['DataWriteGuid', img.dataWriteGuid],
      ['creator', img.layout.creator || '-'],
      ['log', img.layout.replayedInMemory ? `${img.layout.replayedEntries} entries not yet applied (replayed in memory)` : 'empty'],
    ];
    return { fields, lines, creator: img.layout.creator || 'unknown' };
  },
};
