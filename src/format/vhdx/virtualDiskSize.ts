/** Virtual disk size metadata item (8 bytes): the disk's size in bytes, a multiple of the logical sector size. */
export const VIRTUAL_DISK_SIZE_SIZE = 8;
/** The spec's limit: 64 TiB. */
export const MAX_VHDX_VIRTUAL_SIZE = 64 * 1024 ** 4;

export function parseVirtualDiskSize(b: Buffer): bigint {
  return b.readBigUInt64LE(0);
}

export function serializeVirtualDiskSize(size: number): Buffer {
  const b = Buffer.alloc(VIRTUAL_DISK_SIZE_SIZE);
  b.writeBigUInt64LE(BigInt(size), 0);
  return b;
}
