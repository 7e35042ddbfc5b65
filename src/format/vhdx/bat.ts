/**
 * Block allocation table: 64-bit entries, state in bits 0–2 and the file offset in MiB in bits
 * 20–63. Payload entries and sector-bitmap entries are interleaved: after every `chunkRatio`
 * payload entries comes the sector-bitmap entry of that chunk.
 */
export const BAT_ENTRY_SIZE = 8;
export const MIB = 1024 * 1024;

export enum PayloadBlockState {
  NotPresent = 0,
  Undefined = 1,
  Zero = 2,
  Unmapped = 3,
  FullyPresent = 6,
  PartiallyPresent = 7,
}

export enum SectorBitmapState {
  NotPresent = 0,
  Present = 6,
}

export const PAYLOAD_STATE_NAMES: Record<number, string> = {
  0: 'not present', 1: 'undefined', 2: 'zero', 3: 'unmapped', 6: 'fully present', 7: 'partially present',
};

/** Payload blocks per sector-bitmap block: 2^23 sectors are covered by one 1 MiB bitmap. */
export function chunkRatio(logicalSectorSize: number, blockSize: number): number {
  return (2 ** 23 * logicalSectorSize) / blockSize;
}

export interface BatGeometry {
  chunkRatio: number;
  payloadBlocks: number;
  sectorBitmapBlocks: number;
  /** Entries the table must hold. */
  totalEntries: number;
}

export function batGeometry(virtualSize: number, blockSize: number, logicalSectorSize: number, hasParent: boolean): BatGeometry {
  const ratio = chunkRatio(logicalSectorSize, blockSize);
  const payloadBlocks = Math.ceil(virtualSize / blockSize);
  const sectorBitmapBlocks = Math.ceil(payloadBlocks / ratio);
  const totalEntries = hasParent
    ? sectorBitmapBlocks * (ratio + 1)
    : payloadBlocks + Math.floor(Math.max(0, payloadBlocks - 1) / ratio);
  return { chunkRatio: ratio, payloadBlocks, sectorBitmapBlocks, totalEntries };
}

export function payloadEntryIndex(block: number, ratio: number): number {
  return block + Math.floor(block / ratio);
}

export function sectorBitmapEntryIndex(chunk: number, ratio: number): number {
  return chunk * (ratio + 1) + ratio;
}

export function entryState(lo: number): number {
  return lo & 7;
}

/** File offset in bytes from an entry's two 32-bit halves (offsets stay below 2^53 bytes). */
export function entryOffset(lo: number, hi: number): number {
  return (hi * 2 ** 12 + (lo >>> 20)) * MIB;
}

export function encodeEntry(state: number, fileOffset: number): Buffer {
  const b = Buffer.alloc(BAT_ENTRY_SIZE);
  b.writeBigUInt64LE((BigInt(fileOffset / MIB) << 20n) | BigInt(state & 7), 0);
  return b;
}

/** The table in memory as two 32-bit halves per entry (no BigInt per lookup). */
export class Bat {
  constructor(readonly lo: Uint32Array, readonly hi: Uint32Array) {}

  static parse(b: Buffer, entries: number): Bat {
    const lo = new Uint32Array(entries);
    const hi = new Uint32Array(entries);
    for (let i = 0; i < entries; i++) {
      lo[i] = b.readUInt32LE(i * 8);
      hi[i] = b.readUInt32LE(i * 8 + 4);
    }
    return new Bat(lo, hi);
  }

  get length(): number {
    return this.lo.length;
  }

  state(index: number): number {
    return this.lo[index] & 7;
  }

  offset(index: number): number {
    return entryOffset(this.lo[index], this.hi[index]);
  }

  set(index: number, state: number, fileOffset: number): void {
    const mb = fileOffset / MIB;
    this.lo[index] = (((mb % 4096) << 20) | (state & 7)) >>> 0;
    this.hi[index] = Math.floor(mb / 4096);
  }
}
