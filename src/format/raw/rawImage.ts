// A raw image: a plain file or a block device whose bytes are the virtual disk, one layer, no parent.
import { statSync } from 'fs';
import { ImageFile } from '../../io/imageFile';
import { DiskImage, FieldLocation, LayerRun, ParentCandidates, ParentLinkCheck, ReadBelow } from '../diskImage';
import { DiskImageError } from '../errors';
import { dataExtents, holesDetectable } from '../../io/seekHole';
import type { OpenOptions } from '../registry';

/**
 * The identity a raw image has: none. Xen's vhd-util marks a VHD child of a raw parent by a nil
 * parent UUID, so a raw image's "UUID" is the nil UUID and such a child's link checks as it should.
 */
export const RAW_IDENTITY = '00000000-0000-0000-0000-000000000000';

/** Nominal grid for maps and heatmaps (a raw file has no blocks of its own). */
export const RAW_BLOCK_SIZE = 2 * 1024 * 1024;

const SECTOR = 512;

export class RawImage implements DiskImage {
  readonly format = 'raw';
  readonly diskType = 'fixed' as const;
  readonly sectorSize = SECTOR;
  readonly blockSize = RAW_BLOCK_SIZE;
  readonly uuid = RAW_IDENTITY;
  readonly parent = null;
  readonly warnings: string[] = [];

  private constructor(
    readonly path: string,
    private readonly file: ImageFile,
    /** Size when opened: a raw layer's virtual size never changes under the chain. */
    readonly virtualSize: number,
    readonly created: string | null,
  ) {}

  /**
   * Opens read-only unless `writable` (merge into a raw target). Holes are not told apart from
   * data: Node exposes no lseek(SEEK_HOLE/SEEK_DATA), so every byte counts as this layer's.
   */
  static async open(path: string, options: OpenOptions = {}): Promise<RawImage> {
    const file = await ImageFile.open(path, options.writable ?? false);
    let created: string | null = null;
    try {
      created = statSync(path).birthtime.toISOString();
    } catch {
      created = null;
    }
    return new RawImage(path, file, file.size, created);
  }

  get writable(): boolean {
    return this.file.writable;
  }

  /** True when the bytes live on a block device (info shows the device, merge asks for --force). */
  get isBlockDevice(): boolean {
    return this.file.isBlockDevice;
  }

  /** `http`, `https`, `nbd`… when the bytes come from a server, else null. */
  get remoteKind(): string | null {
    return this.file.remote?.kind ?? null;
  }

  get fileSize(): number {
    return this.file.size;
  }

  get blockCount(): number {
    return Math.ceil(this.virtualSize / RAW_BLOCK_SIZE);
  }

  /** True when the file system tells this file's holes (a local file, SEEK_HOLE available). */
  get holesKnown(): boolean {
    return this.file.localFd !== null && holesDetectable() && this.extents(0, 0) !== null;
  }

  /** Data extents of a range as the file system reports them, or null: then all of it is data. */
  private extents(offset: number, length: number): Array<{ offset: number; length: number }> | null {
    const fd = this.file.localFd;
    if (fd === null) return null;
    return dataExtents(fd, offset, Math.max(0, Math.min(length, this.virtualSize - offset)));
  }

  private blocksWithData: Uint8Array | null | undefined;

  /** Per nominal block: 1 when any byte of it is data (from one walk over the file's extents). */
  private dataBlocks(): Uint8Array | null {
    if (this.blocksWithData !== undefined) return this.blocksWithData;
    const ext = this.extents(0, this.virtualSize);
    if (!ext) return (this.blocksWithData = null);
    const map = new Uint8Array(this.blockCount);
    for (const e of ext) {
      const last = Math.floor((e.offset + e.length - 1) / RAW_BLOCK_SIZE);
      for (let b = Math.floor(e.offset / RAW_BLOCK_SIZE); b <= last; b++) map[b] = 1;
    }
    return (this.blocksWithData = map);
  }

  nextAllocatedBlock(from: number): number {
    const start = Math.max(0, from);
    if (start >= this.blockCount) return -1;
    const map = this.dataBlocks();
    if (!map) return start;
    return map.indexOf(1, start);
  }

  isBlockAllocated(block: number): boolean {
    if (block < 0 || block >= this.blockCount) return false;
    const map = this.dataBlocks();
    return map ? map[block] === 1 : true;
  }

  allocatedBlockCount(): number {
    const map = this.dataBlocks();
    if (!map) return this.blockCount;
    let n = 0;
    for (const v of map) n += v;
    return n;
  }

  /** Sectors holding data: all of a block, or where SEEK_DATA says (a sector partly data counts as data). */
  async readBlockBitmap(block: number): Promise<Uint8Array | null> {
    if (!this.isBlockAllocated(block)) return null;
    const bits = new Uint8Array(RAW_BLOCK_SIZE / SECTOR / 8);
    const start = block * RAW_BLOCK_SIZE;
    const ext = this.extents(start, RAW_BLOCK_SIZE);
    if (!ext) return bits.fill(0xff);
    for (const e of ext) {
      const last = Math.floor((e.offset + e.length - 1 - start) / SECTOR);
      for (let s = Math.floor((e.offset - start) / SECTOR); s <= last; s++) bits[s >> 3] |= 0x80 >> (s & 7);
    }
    return bits;
  }

  blockFileOffset(block: number): number | null {
    return this.isBlockAllocated(block) ? block * RAW_BLOCK_SIZE : null;
  }

  /** Data and holes as the file system reports them (holes read as zeros); without that, all data. */
  async runs(offset: number, length: number): Promise<LayerRun[]> {
    if (length <= 0) return [];
    const ext = this.extents(offset, length);
    if (!ext) return [{ offset, length, present: true }];
    const out: LayerRun[] = [];
    let pos = offset;
    for (const e of ext) {
      if (e.offset > pos) out.push({ offset: pos, length: e.offset - pos, present: false });
      out.push({ offset: e.offset, length: e.length, present: true });
      pos = e.offset + e.length;
    }
    if (pos < offset + length) out.push({ offset: pos, length: offset + length - pos, present: false });
    return out;
  }

  /** Bytes at `offset`; past the end of the file (a size not a multiple of 512) reads as zeros. */
  async readOwn(offset: number, target: Buffer): Promise<void> {
    const inside = Math.max(0, Math.min(target.length, this.virtualSize - offset));
    const n = inside > 0 ? await this.file.readInto(target.subarray(0, inside), offset) : 0;
    if (n < target.length) target.fill(0, n);
  }

  /**
   * Writes in place (merge into a raw target). Bytes past the end of the file can only be zeros
   * (a child is its raw parent's size rounded up to a sector): anything else is refused rather than
   * growing the file or dropping data.
   */
  async write(offset: number, data: Buffer, _below: ReadBelow): Promise<void> {
    if (!this.file.writable) throw new DiskImageError(this.path, 'raw image opened read-only', undefined, undefined, 'EREADONLY');
    const inside = Math.max(0, Math.min(data.length, this.virtualSize - offset));
    for (let i = inside; i < data.length; i++) {
      if (data[i] !== 0) {
        throw new DiskImageError(this.path, `data at virtual offset ${offset + i} lies past the end of the raw image (${this.virtualSize} bytes)`, undefined, undefined, 'ESIZE');
      }
    }
    if (inside > 0) await this.file.writeAt(data.subarray(0, inside), offset);
  }

  async flush(): Promise<void> {
    await this.file.sync();
  }

  async close(): Promise<void> {
    await this.file.close();
  }

  locate(field: string): FieldLocation {
    return { structure: field === 'virtualSize' ? 'file size' : 'raw image', offset: 0 };
  }

  parentCandidates(): ParentCandidates {
    return { candidates: [], unreadable: [], sources: [] };
  }

  checkParent(_parent: DiskImage): ParentLinkCheck {
    throw new DiskImageError(this.path, 'a raw image has no parent', undefined, undefined, 'ENOTDIFF');
  }

  async writeParentLink(_parent: DiskImage): Promise<void> {
    throw new DiskImageError(this.path, 'a raw image has no parent', undefined, undefined, 'ENOTDIFF');
  }
}
