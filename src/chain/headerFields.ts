import { DiskImage } from '../format/diskImage';
import { HeaderDescription } from '../format/headerFields';
import { getFormat } from '../format/registry';

export type { ChecksumCheck, HeaderDescription, HeaderField } from '../format/headerFields';
export { hexOf, showCode } from '../format/headerFields';

/** The field table the image's format gives for the editor's Header view. */
export function describeHeader(img: DiskImage): HeaderDescription {
  return getFormat(img.format).headerFields(img);
}

/** Who made the image, as the overview shows it. */
export function creatorLabel(img: DiskImage): string {
  return getFormat(img.format).summary(img).creator;
}
