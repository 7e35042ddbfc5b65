/** Block Allocation Table: big-endian uint32 sector offsets, one per block; all ones = not allocated. */
export const BAT_UNUSED = 0xffffffff;

export function batSizeBytes(entries: number): number {
  return Math.ceil((entries * 4) / 512) * 512;
}

/** Entries compared at once against all ones: a natively compared stretch of unused entries costs no JavaScript per entry. */
const SKIP = 1024;
const UNUSED_BYTES = Buffer.alloc(SKIP * 4, 0xff);

export class Bat {
  /** The entries' bytes (same memory), for the native comparison. */
  private readonly bytes: Buffer;

  private constructor(readonly entries: Uint32Array) {
    this.bytes = Buffer.from(entries.buffer, entries.byteOffset, entries.byteLength);
  }

  /** Whether a whole stretch of unused entries [i, i + SKIP) starts at i (all ones, whatever the byte order). */
  private unusedStretchAt(i: number): boolean {
    return i % SKIP === 0 && i + SKIP <= this.entries.length
      && this.bytes.compare(UNUSED_BYTES, 0, SKIP * 4, i * 4, (i + SKIP) * 4) === 0;
  }

  get length(): number {
    return this.entries.length;
  }

  static parse(bytes: Buffer, count: number): Bat {
    // One native copy and byte swap instead of a million readUInt32BE calls (2 TiB: 1,048,576 entries).
    const entries = new Uint32Array(count);
    const view = Buffer.from(entries.buffer, 0, count * 4);
    bytes.copy(view, 0, 0, count * 4);
    if (new Uint8Array(new Uint32Array([1]).buffer)[0] === 1) view.swap32();
    return new Bat(entries);
  }

  /** Takes over `table`, read from the file as is (big-endian), swapping it in place on little-endian hosts. */
  static fromBigEndian(table: Uint32Array): Bat {
    if (new Uint8Array(new Uint32Array([1]).buffer)[0] === 1) Buffer.from(table.buffer, table.byteOffset, table.byteLength).swap32();
    return new Bat(table);
  }

  static empty(count: number): Bat {
    return new Bat(new Uint32Array(count).fill(BAT_UNUSED));
  }

  isAllocated(block: number): boolean {
    return block < this.entries.length && this.entries[block] !== BAT_UNUSED;
  }

  /** Byte offset of the block (its bitmap first), or -1 when not allocated. */
  blockOffset(block: number): number {
    const s = block < this.entries.length ? this.entries[block] : BAT_UNUSED;
    return s === BAT_UNUSED ? -1 : s * 512;
  }

  /** The first allocated block at or after `from`, or -1. */
  nextAllocated(from: number): number {
    const e = this.entries;
    // A sparse 2 TiB map (1,048,576 entries) is mostly unused: whole stretches are skipped natively.
    for (let i = Math.max(0, from); i < e.length;) {
      if (this.unusedStretchAt(i)) { i += SKIP; continue; }
      if (e[i] !== BAT_UNUSED) return i;
      i++;
    }
    return -1;
  }

  allocatedCount(): number {
    const e = this.entries;
    let n = 0;
    for (let i = 0; i < e.length;) {
      if (this.unusedStretchAt(i)) { i += SKIP; continue; }
      if (e[i] !== BAT_UNUSED) n++;
      i++;
    }
    return n;
  }

  /** The entry's 4 bytes, for writing one entry in place. */
  static entryBytes(sectorOffset: number): Buffer {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(sectorOffset >>> 0, 0);
    return b;
  }

  serialize(): Buffer {
    const b = Buffer.alloc(batSizeBytes(this.entries.length), 0xff);
    for (let i = 0; i < this.entries.length; i++) b.writeUInt32BE(this.entries[i], i * 4);
    return b;
  }
}
