import { formatGuid } from './guid';

/** Page 83 data metadata item: the virtual disk's identifier (a GUID, SCSI page 0x83). */
export const PAGE83_DATA_SIZE = 16;

export function parsePage83Data(b: Buffer): string {
  return formatGuid(b, 0);
}
