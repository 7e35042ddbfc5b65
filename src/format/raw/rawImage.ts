// A raw image: a plain file or a block device whose bytes are the virtual disk, one layer, no parent.
import { statSync } from 'fs';
import { ImageFile } from '../../io/imageFile';
import { DiskImage, FieldLocation, LayerRun, ParentCandidates, ParentLinkCheck, ReadBelow } from '../diskImage';
import { DiskImageError } from '../errors';
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

  nextAllocatedBlock(from: number): number {
    return from < this.blockCount ? Math.max(0, from) : -1;
  }

  isBlockAllocated(block: number): boolean {
    return block >= 0 && block < this.blockCount;
  }

  allocatedBlockCount(): number {
    return this.blockCount;
  }

  async readBlockBitmap(block: number): Promise<Uint8Array | null> {
    if (!this.isBlockAllocated(block)) return null;
    return new Uint8Array(RAW_BLOCK_SIZE / SECTOR / 8).fill(0xff);
  }

  blockFileOffset(block: number): number | null {
    return this.isBlockAllocated(block) ? block * RAW_BLOCK_SIZE : null;
  }

  async runs(offset: number, length: number): Promise<LayerRun[]> {
    if (length <= 0) return [];
    return [{ offset, length, present: true }];
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
