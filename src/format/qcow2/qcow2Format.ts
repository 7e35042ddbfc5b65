// The qcow2 entry of the format registry.
import type { DiskFormat, FormatScan } from '../registry';
import { DiskImage } from '../diskImage';
import { DiskImageError } from '../errors';
import { formatBytes } from '../../formatBytes';
import { Qcow2Scan, scanQcow2 } from './check';
import { createQcow2, isValidClusterSize } from './create';
import { createQcow2Child } from './createChild';
import { hasQcow2Magic } from './header';
import { describeQcow2Header } from './headerFields';
import { planQcow2Repair } from './repair';
import { Qcow2Image } from './qcow2Image';

function asQcow2(image: DiskImage): Qcow2Image {
  if (image.format !== 'qcow2') throw new DiskImageError(image.path, `is a ${image.format} image, not qcow2`, undefined, undefined, 'EFORMAT');
  return image as Qcow2Image;
}

export const qcow2Format: DiskFormat = {
  name: 'qcow2',
  extensions: ['.qcow2'],
  creatableTypes: ['dynamic'],
  foreignParents: true,

  // "QFI\xfb" at offset 0.
  probe: (head) => hasQcow2Magic(head),
  // No backing file offset in the header: no backing file (merge's folder scan skips the file).
  mayHaveParent: (head) => head.length < 16 || head.readBigUInt64BE(8) !== 0n,

  open: (path, options) => Qcow2Image.open(path, options),

  create(path, options) {
    if (options.type === 'fixed') throw new DiskImageError(path, 'qcow2 images are created dynamic (no fixed type)', undefined, undefined, 'EARG');
    const t = options.template?.format === 'qcow2' ? options.template as Qcow2Image : null;
    const clusterSize = options.blockSize ?? t?.clusterSize;
    if (clusterSize !== undefined && !isValidClusterSize(clusterSize)) throw new DiskImageError(path, `cluster size ${clusterSize} is not a power of two from 512 bytes to 2 MiB`, undefined, undefined, 'EARG');
    return createQcow2(path, { size: options.size, clusterSize, extendedL2: t?.extendedL2, overwrite: options.overwrite });
  },

  createChild: (parent, childPath, options) => createQcow2Child(parent, childPath, options),

  scan: (path, file, options) => scanQcow2(path, file, options),

  planRepair: (scan: FormatScan) => planQcow2Repair(scan as Qcow2Scan),

  headerFields: (image) => describeQcow2Header(asQcow2(image)),

  summary(image) {
    const img = asQcow2(image);
    const h = img.header;
    const fields = {
      clusterSize: img.clusterSize,
      qcow2Version: h.version,
      extendedL2: img.extendedL2,
      refcountBits: 1 << h.refcountOrder,
      compressionType: h.compressionType === 0 ? 'zlib' : 'zstd',
      backingFile: img.layout.backingFile,
      backingFormat: img.backingFormat,
      dirty: img.dirty,
      corrupt: img.corrupt,
      snapshots: img.snapshots.map((s) => ({ id: s.id, name: s.name, date: new Date(s.dateSec * 1000).toISOString(), vmStateSize: s.vmStateSize, diskSize: s.diskSize })),
      bitmaps: img.layout.extensions.bitmapCount ?? 0,
    };
    const lines: Array<[string, string]> = [
      ['cluster size', `${img.clusterSize} (${formatBytes(img.clusterSize)})${img.extendedL2 ? `, extended L2 (${img.subclusterSize}-byte subclusters)` : ''}`],
      ['qcow2 version', `${h.version}, ${1 << h.refcountOrder}-bit refcounts, ${h.compressionType === 0 ? 'zlib' : 'zstd'} compression`],
      ['clusters', `${img.allocatedBlockCount()} of ${img.blockCount} allocated`],
    ];
    if (img.layout.backingFile !== null) lines.push(['backing file', `${img.layout.backingFile}${img.backingFormat ? ` (format ${img.backingFormat})` : ' (format not recorded: probed by content)'}`]);
    if (img.dirty || img.corrupt) lines.push(['state', [img.dirty ? 'dirty' : '', img.corrupt ? 'corrupt (read-only)' : ''].filter(Boolean).join(', ')]);
    if (img.layout.extensions.bitmapCount) lines.push(['bitmaps', `${img.layout.extensions.bitmapCount} (listed, not used)`]);
    lines.push(['snapshots', img.snapshots.length === 0 ? 'none' : img.snapshots.map((s) => `${s.id} '${s.name}' ${new Date(s.dateSec * 1000).toISOString()}`).join('; ')]);
    return { fields, lines, creator: 'QEMU qcow2' };
  },
};
