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

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Entries per page of the in-memory table (32 KiB of entries). */
export const BAT_PAGE_ENTRIES = 4096;
const ZERO_PAGE = new Uint8Array(BAT_PAGE_ENTRIES * BAT_ENTRY_SIZE);

/**
 * The table in memory as two 32-bit words per entry (low half first), in pages of 4096 entries; a
 * page whose entries are all zero (not present, no offset: most of a sparse 2 TiB table) is not
 * kept. The file is read through one reused buffer: a fresh 16 MiB buffer for a 2 TiB table of
 * 1 MiB blocks costs ~65 ms of page faults alone on this machine, a reused 1 MiB one ~5 ms.
 */
export class Bat {
  private readonly pages: Array<Uint32Array | null>;

  constructor(readonly length: number) {
    this.pages = new Array<Uint32Array | null>(Math.ceil(length / BAT_PAGE_ENTRIES)).fill(null);
  }

  /** A table from its bytes as on disk (entries × 8, little-endian). */
  static parse(b: Uint8Array, entries: number): Bat {
    const bat = new Bat(entries);
    for (let p = 0; p * BAT_PAGE_ENTRIES < entries; p++) {
      const from = p * BAT_PAGE_ENTRIES * BAT_ENTRY_SIZE;
      bat.loadPage(p, b.subarray(from, Math.min(entries * BAT_ENTRY_SIZE, from + BAT_PAGE_ENTRIES * BAT_ENTRY_SIZE)));
    }
    return bat;
  }

  /** Takes page `p`'s bytes as on disk (copied, or dropped when all zero: one native compare). */
  loadPage(p: number, bytes: Uint8Array): void {
    if (Buffer.compare(bytes, ZERO_PAGE.subarray(0, bytes.length)) === 0) { this.pages[p] = null; return; }
    const words = new Uint32Array(BAT_PAGE_ENTRIES * 2);
    const n = bytes.length >> 2;
    if (LITTLE_ENDIAN) {
      new Uint8Array(words.buffer, 0, bytes.length).set(bytes);
    } else {
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
      for (let i = 0; i < n; i++) words[i] = view.getUint32(i * 4, true);
    }
    this.pages[p] = words;
  }

  private low(index: number): number {
    const page = this.pages[Math.floor(index / BAT_PAGE_ENTRIES)];
    return page ? page[2 * (index % BAT_PAGE_ENTRIES)] : 0;
  }

  state(index: number): number {
    return this.low(index) & 7;
  }

  offset(index: number): number {
    const page = this.pages[Math.floor(index / BAT_PAGE_ENTRIES)];
    if (!page) return 0;
    const k = 2 * (index % BAT_PAGE_ENTRIES);
    return entryOffset(page[k], page[k + 1]);
  }

  set(index: number, state: number, fileOffset: number): void {
    const p = Math.floor(index / BAT_PAGE_ENTRIES);
    const page = this.pages[p] ??= new Uint32Array(BAT_PAGE_ENTRIES * 2);
    const k = 2 * (index % BAT_PAGE_ENTRIES);
    const mb = fileOffset / MIB;
    page[k] = (((mb % 4096) << 20) | (state & 7)) >>> 0;
    page[k + 1] = Math.floor(mb / 4096);
  }

  /** The first entry at or after `i` that is not all zero, or `length`; pages not kept are skipped at once. */
  nextNonZero(i: number): number {
    for (let k = Math.max(0, i); k < this.length;) {
      const p = Math.floor(k / BAT_PAGE_ENTRIES);
      const page = this.pages[p];
      const end = Math.min(this.length, (p + 1) * BAT_PAGE_ENTRIES);
      if (!page) { k = end; continue; }
      for (; k < end; k++) {
        const j = 2 * (k % BAT_PAGE_ENTRIES);
        if (page[j] !== 0 || page[j + 1] !== 0) return k;
      }
    }
    return this.length;
  }

  /**
   * Payload blocks per state (index 0–7) over the first `payloadBlocks` payload entries, and how many
   * entries (payload or sector bitmap) hold a state the spec does not define, with the first of them.
   * Only entries that are not zero are looked at one by one (zero is "not present" for both kinds).
   */
  scan(payloadBlocks: number, ratio: number): { byState: Uint32Array; bad: number; firstBad: number } {
    const byState = new Uint32Array(8);
    let bad = 0;
    let firstBad = -1;
    // Valid payload states 0-3, 6, 7; valid sector-bitmap states 0 and 6 (bit masks over the state).
    const PAYLOAD_OK = 0b11001111;
    const BITMAP_OK = 0b01000001;
    let others = 0;
    for (let i = this.nextNonZero(0); i < this.length; i = this.nextNonZero(i + 1)) {
      const st = this.state(i);
      if ((i + 1) % (ratio + 1) === 0) {
        if (((BITMAP_OK >> st) & 1) === 0) { bad++; if (firstBad < 0) firstBad = i; }
        continue;
      }
      if (((PAYLOAD_OK >> st) & 1) === 0) { bad++; if (firstBad < 0) firstBad = i; }
      if (st !== 0 && i - Math.floor(i / (ratio + 1)) < payloadBlocks) { byState[st]++; others++; }
    }
    // Every payload block has its entry (the geometry is checked at open): the rest are not present.
    byState[0] = Math.max(0, payloadBlocks - others);
    return { byState, bad, firstBad };
  }
}
