/**
 * VHD checksum (footer and dynamic header alike): one's complement of the byte sum of the
 * structure, with the 4-byte checksum field itself counted as zero.
 */
export function vhdChecksum(bytes: Uint8Array, checksumOffset: number): number {
  let sum = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (i >= checksumOffset && i < checksumOffset + 4) continue;
    sum += bytes[i];
  }
  return (~sum) >>> 0;
}
