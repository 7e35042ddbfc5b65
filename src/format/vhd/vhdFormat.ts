// The VHD entry of the format registry: how the rest of the program reaches everything in this folder.
import type { DiskFormat, FormatScan } from '../registry';
import { DiskImage } from '../diskImage';
import { DiskImageError } from '../errors';
import { formatBytes } from '../../formatBytes';
import { scanVhd, VhdScan } from './check';
import { createImage } from './create';
import { createVhdChild } from './createChild';
import { DiskType, formatCreatorVersion, hasFooterCookie, trimCode } from './footer';
import { chsSizeBytes, Geometry, geometryForSize } from './geometry';
import { creatorLabel, describeHeader } from './headerFields';
import { planVhdRepair } from './repair';
import { VhdImage } from './vhdImage';

function asVhd(image: DiskImage): VhdImage {
  if (image.format !== 'vhd') throw new DiskImageError(image.path, `is a ${image.format} image, not a VHD`, undefined, undefined, 'EFORMAT');
  return image as VhdImage;
}

/** A template's geometry when it is exact for the size (export keeps the source's), else the spec's. */
function geometryLike(template: DiskImage | undefined, size: number): Geometry | undefined {
  if (!template || template.format !== 'vhd') return undefined;
  const g = (template as VhdImage).footer.geometry;
  return chsSizeBytes(g) === size ? { ...g } : geometryForSize(size);
}

export const vhdFormat: DiskFormat = {
  name: 'vhd',
  extensions: ['.vhd', '.avhd'],
  creatableTypes: ['dynamic', 'fixed'],

  // A footer cookie at the end (512 or, before Virtual PC 2004, 511 bytes) or its copy at offset 0.
  probe(head, tail) {
    return hasFooterCookie(head)
      || (tail.length === 512 && hasFooterCookie(tail))
      || (tail.length >= 511 && hasFooterCookie(tail.subarray(tail.length - 511)));
  },

  // Differencing when any footer copy says so (open() picks between them: stay as lenient).
  mayHaveParent: (head, tail) => [head, tail, tail.subarray(tail.length - 511)]
    .some((f) => f.length >= 64 && hasFooterCookie(f) && f.readUInt32BE(60) === DiskType.Differencing),

  open: (path, options) => VhdImage.open(path, options),

  create(path, options) {
    if (options.logicalSectorSize !== undefined && options.logicalSectorSize !== 512) {
      throw new DiskImageError(path, `a VHD has 512-byte sectors only (asked for ${options.logicalSectorSize})`, undefined, undefined, 'EARG');
    }
    return createImage(path, { ...options, geometry: geometryLike(options.template, options.size) });
  },

  createChild: (parent, childPath, options) => createVhdChild(parent, childPath, options),

  scan: (path, file, options) => scanVhd(path, file, options),

  planRepair: (scan: FormatScan) => planVhdRepair(scan as VhdScan),

  headerFields: (image) => describeHeader(asVhd(image)),

  summary(image) {
    const img = asVhd(image);
    const f = img.footer;
    const blockSize = img.header ? img.blockSize : null;
    const fields = {
      originalSize: f.originalSize,
      chsSize: img.chsSize,
      geometry: { ...f.geometry },
      blockSize,
      uuid: img.uuid,
      creatorApplication: trimCode(f.creatorApplication),
      creatorVersion: formatCreatorVersion(f.creatorVersion),
      creatorHostOs: trimCode(f.creatorHostOs),
      timestamp: img.created,
      footerChecksumValid: img.footerChecksumValid,
      headerChecksumValid: img.headerChecksumValid,
    };
    const lines: Array<[string, string]> = [
      ['original size', String(fields.originalSize)],
      ['CHS', `${f.geometry.cylinders}/${f.geometry.heads}/${f.geometry.sectorsPerTrack} = ${fields.chsSize}`],
      ['block size', blockSize === null ? '-' : `${blockSize} (${formatBytes(blockSize)})`],
      ['blocks', `${img.allocatedBlockCount()} of ${img.blockCount} allocated`],
      ['uuid', img.uuid],
      ['creator', `${fields.creatorApplication} ${fields.creatorVersion} on ${fields.creatorHostOs}`],
      ['created', fields.timestamp],
      ['footer checksum', fields.footerChecksumValid ? 'ok' : 'WRONG'],
      ['header checksum', fields.headerChecksumValid === null ? '-' : fields.headerChecksumValid ? 'ok' : 'WRONG'],
    ];
    return { fields, lines, creator: creatorLabel(img) };
  },
};
