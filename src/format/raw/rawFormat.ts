// The raw entry of the format registry: files and block devices that no other format recognises.
import type { DiskFormat } from '../registry';
import { DiskImage } from '../diskImage';
import { DiskImageError } from '../errors';
import { bytesLabel } from '../headerFields';
import { ProblemList } from '../checkProblems';
import { RawImage } from './rawImage';

function asRaw(image: DiskImage): RawImage {
  if (image.format !== 'raw') throw new DiskImageError(image.path, `is a ${image.format} image, not raw`, undefined, undefined, 'EFORMAT');
  return image as RawImage;
}

export const rawFormat: DiskFormat = {
  name: 'raw',
  // No extension: a name never makes a file raw, and `create` never makes raw files.
  extensions: [],
  creatableTypes: [],
  // Raw has no signature: the registry falls back to it only where a raw image may stand (a
  // block device, a parent), after every other format's probe said no.
  fallback: true,
  // Content no other format recognises, under a raw dump's usual names, opens as raw (qemu's rule).
  fallbackExtensions: ['.img', '.raw', '.iso', '.dd'],
  probe: () => false,

  open: (path, options) => RawImage.open(path, options),

  async create(path) {
    throw new DiskImageError(path, 'raw images are not created by diskimg (use export --format raw)', undefined, undefined, 'EARG');
  },

  // No createChild: a child of a raw parent is made in another format (VHD by default).

  async scan(path) {
    return { path, problems: new ProblemList(), link: null };
  },

  planRepair: () => [],

  headerFields(image) {
    const img = asRaw(image);
    return {
      fields: [{
        structure: img.isBlockDevice ? 'block device' : 'raw file',
        name: 'size',
        offset: 0,
        size: 0,
        hex: '',
        decoded: `${bytesLabel(img.virtualSize)}${img.isBlockDevice ? ' (from /sys/dev/block)' : ''}; no header: every byte is data`,
      }],
      checksums: [],
    };
  },

  summary(image) {
    const img = asRaw(image);
    const kind = img.isBlockDevice ? 'block device' : img.remoteKind ? `raw on ${img.remoteKind}` : 'raw file';
    const holes = img.holesKnown;
    const data = img.allocatedBlockCount();
    return {
      fields: { kind, device: img.isBlockDevice ? img.path : null, holes: holes ? 'from the file system (SEEK_DATA/SEEK_HOLE): holes read as zeros and map as no data' : 'not detected (no SEEK_HOLE here): every byte counts as data' },
      lines: [['kind', kind], ['blocks', holes ? `${img.blockCount} nominal ${bytesLabel(img.blockSize)} blocks, ${data} with data (holes from SEEK_HOLE)` : `${img.blockCount} nominal ${bytesLabel(img.blockSize)} blocks, all data`]],
      creator: kind,
    };
  },
};
