/** File parameters metadata item: block size, LeaveBlocksAllocated and HasParent. */
export const FILE_PARAMETERS_SIZE = 8;
export const MIN_VHDX_BLOCK_SIZE = 1024 * 1024;
export const MAX_VHDX_BLOCK_SIZE = 256 * 1024 * 1024;

export interface FileParameters {
  blockSize: number;
  leaveBlocksAllocated: boolean;
  hasParent: boolean;
}

export function parseFileParameters(b: Buffer): FileParameters {
  const flags = b.readUInt32LE(4);
  return { blockSize: b.readUInt32LE(0), leaveBlocksAllocated: (flags & 1) !== 0, hasParent: (flags & 2) !== 0 };
}

export function serializeFileParameters(p: FileParameters): Buffer {
  const b = Buffer.alloc(FILE_PARAMETERS_SIZE);
  b.writeUInt32LE(p.blockSize, 0);
  b.writeUInt32LE((p.leaveBlocksAllocated ? 1 : 0) | (p.hasParent ? 2 : 0), 4);
  return b;
}

export function isValidBlockSize(n: number): boolean {
  return n >= MIN_VHDX_BLOCK_SIZE && n <= MAX_VHDX_BLOCK_SIZE && (n & (n - 1)) === 0;
}
