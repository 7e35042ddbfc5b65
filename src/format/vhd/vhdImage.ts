import { CommitStaged, DiskImage, DiskTypeName, FieldLocation, ImageField, LayerRun, ParentCandidates, ParentLinkCheck, ParentReference, ReadBelow, WritePiece } from '../diskImage';
import { DiskImageError } from '../errors';
import { allowWriteBehind, ImageFile } from '../../io/imageFile';
import { Bat, BAT_UNUSED } from './bat';
import { DYNAMIC_HEADER_COOKIE, DYNAMIC_HEADER_SIZE, DynamicHeader, parseDynamicHeader, serializeDynamicHeader } from './dynamicHeader';
import { diskTypeName, DiskType, Footer, FOOTER_COOKIE, FOOTER_SIZE, hasFooterCookie, parseFooter, serializeFooter, trimCode } from './footer';
import { chsSizeBytes, SECTOR_SIZE } from './geometry';
import { decodeLocatorPath, isEmptyLocator, locatorSpaceBytes, MAX_LOCATOR_DATA, ParentLocatorEntry } from './parentLocator';
import { allBits, bitmapSizeBytes, runLength, setBits, testBit } from './sectorBitmap';
import { formatUuid } from './uuid';
import { LocatorData, vhdParentCandidates } from './locatorPaths';
import { checkVhdParent, writeVhdParentLink } from './parentLink';
import { vhdTimestampToIso } from './timestamp';
import { readLayerView } from '../layerView';
import { planStagedBlocks, StagedCommits } from '../stagedCommits';
import { writeParts } from '../bulkWrite';
import { alignedBuffer, PAGE } from '../../io/alignedBuffer';

export type { LocatorData } from './locatorPaths';

export const MIN_BLOCK_SIZE = 512;
export const MAX_BLOCK_SIZE = 256 * 1024 * 1024;
/** No VHD is larger (32-bit BAT sector offsets; Hyper-V and qemu stop at 2040 GiB); a bigger size is damage. */
export const MAX_VIRTUAL_SIZE = 2 * 1024 * 1024 * 1024 * 1024;
/** Nominal grid for fixed images, which have no blocks of their own. */
export const FIXED_NOMINAL_BLOCK = 2 * 1024 * 1024;
/**
 * Creators whose current size qemu trusts over CHS (see the format notes). qemu compares the four
 * bytes exactly: `d2v ` is trusted, Disk2vhd's other spelling `d2v\0` is not (checked with qemu-img
 * 7.2; such images get the current size only through the 65535/16/255 rule).
 */
const CURRENT_SIZE_CREATORS = new Set(['win ', 'qem2', 'd2v ', 'tap\0', 'CTXS']);

export interface OpenOptions {
  writable?: boolean;
  /**
   * Read only the footer, header and parent locators (scanning a folder for children): the BAT is
   * not read, so the image's blocks cannot be read or written.
   */
  linkOnly?: boolean;
}

/** Where each structure was found, for the editor and for check/repair. */
export interface VhdLayout {
  fileSize: number;
  /** Offset of the end footer in use (file size - 512, or - 511 for old disks). */
  footerOffset: number;
  footerSource: 'end' | 'copy';
  footerLength: 511 | 512;
  endFooter: Footer | null;
  footerCopy: Footer | null;
  headerOffset: number | null;
  tableOffset: number | null;
}

export class VhdImage implements DiskImage {
  readonly format = 'vhd' as const;
  readonly sectorSize = SECTOR_SIZE;
  readonly warnings: string[] = [];
  readonly diskType: DiskTypeName;
  readonly virtualSize: number;
  readonly blockSize: number;
  readonly blockCount: number;
  readonly uuid: string;
  readonly parent: ParentReference | null;
  readonly sectorsPerBlock: number;
  readonly bitmapSize: number;
  readonly locatorData: LocatorData[] = [];
  /** Bitmaps read so far; bounded so memory stays flat on huge images. */
  private readonly bitmapCache = new Map<number, Buffer>();
  private static readonly BITMAP_CACHE_BYTES = 16 * 1024 * 1024;
  /**
   * Sector bitmaps changed by writes and not written yet (deferMetadataWrites), by block: the
   * bitmap (kept here even when the cache lets it go) and the changed byte range, whole sectors.
   */
  private deferredBitmaps: Map<number, { bitmap: Buffer; from: number; to: number }> | null = null;
  /** Past this many blocks with unwritten bitmaps, a write writes them all (memory stays bounded). */
  private static readonly DEFERRED_BITMAPS_MAX = 4096;
  private footerBytes: Buffer;
  /** Opened without its BAT (see OpenOptions.linkOnly). */
  private linkOnly = false;

  private constructor(
    readonly path: string,
    readonly file: ImageFile,
    readonly footer: Footer,
    readonly header: DynamicHeader | null,
    readonly bat: Bat | null,
    readonly layout: VhdLayout,
    warnings: string[],
  ) {
    this.warnings.push(...warnings);
    this.diskType = diskTypeName(footer.diskType)!;
    this.virtualSize = footer.currentSize;
    this.blockSize = header ? header.blockSize : FIXED_NOMINAL_BLOCK;
    this.blockCount = header ? header.maxTableEntries : Math.ceil(this.virtualSize / FIXED_NOMINAL_BLOCK);
    this.sectorsPerBlock = this.blockSize / SECTOR_SIZE;
    this.bitmapSize = header ? bitmapSizeBytes(this.sectorsPerBlock) : 0;
    this.uuid = formatUuid(footer.uniqueId);
    this.parent = null;
    this.footerBytes = serializeFooter(footer);
  }

  get writable(): boolean {
    return this.file.writable;
  }

  get fileSize(): number {
    return this.layout.fileSize;
  }

  get created(): string {
    return vhdTimestampToIso(this.footer.timestamp);
  }

  get footerChecksumValid(): boolean {
    return this.footer.checksum === this.footer.computedChecksum;
  }

  get headerChecksumValid(): boolean | null {
    return this.header ? this.header.checksum === this.header.computedChecksum : null;
  }

  get chsSize(): number {
    return chsSizeBytes(this.footer.geometry);
  }

  /** The virtual size qemu would report: CHS unless the creator is one it trusts. */
  get qemuVirtualSize(): number {
    return qemuTrustsCurrentSize(this.footer) ? this.virtualSize : this.chsSize;
  }

  static async open(path: string, options: OpenOptions = {}): Promise<VhdImage> {
    const file = await ImageFile.open(path, options.writable ?? false);
    try {
      return await VhdImage.fromFile(path, file, options.linkOnly ?? false);
    } catch (e) {
      await file.close().catch(() => undefined);
      throw e;
    }
  }

  private static async fromFile(path: string, file: ImageFile, linkOnly: boolean): Promise<VhdImage> {
    const warnings: string[] = [];
    const size = file.size;
    if (size < 511) {
      throw new DiskImageError(path, `file is too small to be a VHD (${size} bytes)`, 'footer', 0, 'EFORMAT');
    }
    const tailLen = Math.min(size, FOOTER_SIZE);
    const tail = Buffer.alloc(tailLen);
    await file.readInto(tail, size - tailLen);
    let endFooter: Footer | null = null;
    let footerOffset = size - FOOTER_SIZE;
    let footerLength: 511 | 512 = 512;
    if (tailLen === 512 && hasFooterCookie(tail)) {
      endFooter = parseFooter(tail);
    } else if (hasFooterCookie(tail.subarray(tailLen - 511))) {
      endFooter = parseFooter(tail.subarray(tailLen - 511));
      footerOffset = size - 511;
      footerLength = 511;
      warnings.push('511-byte footer (written by Virtual PC before 2004)');
    }
    let footerCopy: Footer | null = null;
    if (size >= FOOTER_SIZE) {
      const head = Buffer.alloc(FOOTER_SIZE);
      await file.readInto(head, 0);
      if (hasFooterCookie(head) && footerOffset !== 0) footerCopy = parseFooter(head);
    }
    const isSparse = (f: Footer | null) => f !== null && (f.diskType === DiskType.Dynamic || f.diskType === DiskType.Differencing);
    const checksumOk = (f: Footer | null) => f !== null && f.checksum === f.computedChecksum;

    let footer: Footer;
    let footerSource: 'end' | 'copy' = 'end';
    if (endFooter && checksumOk(endFooter)) {
      footer = endFooter;
      if (isSparse(endFooter) && footerCopy && !footerCopy.raw.equals(endFooter.raw)) {
        warnings.push(checksumOk(footerCopy)
          ? 'the footer copy at offset 0 differs from the end footer'
          : 'the footer copy at offset 0 has a wrong checksum');
      }
    } else if (endFooter) {
      if (isSparse(endFooter) && footerCopy && checksumOk(footerCopy)) {
        footer = footerCopy;
        footerSource = 'copy';
        warnings.push(`end footer checksum is wrong (stored 0x${hex32(endFooter.checksum)}, computed 0x${hex32(endFooter.computedChecksum)}); using the copy at offset 0`);
      } else {
        footer = endFooter;
        warnings.push(`footer checksum is wrong (stored 0x${hex32(endFooter.checksum)}, computed 0x${hex32(endFooter.computedChecksum)})`);
      }
    } else if (footerCopy && isSparse(footerCopy)) {
      footer = footerCopy;
      footerSource = 'copy';
      footerOffset = Math.ceil(size / SECTOR_SIZE) * SECTOR_SIZE;
      warnings.push('no footer at the end of the file (crash while appending a block?); using the copy at offset 0');
      if (!checksumOk(footerCopy)) {
        warnings.push(`footer checksum is wrong (stored 0x${hex32(footerCopy.checksum)}, computed 0x${hex32(footerCopy.computedChecksum)})`);
      }
    } else {
      const found = tail.subarray(0, 8).toString('latin1').replace(/[^\x20-\x7e]/g, '.');
      throw new DiskImageError(path, `not a VHD: no '${FOOTER_COOKIE}' footer (found '${found}')`, 'footer', size - tailLen, 'EFORMAT');
    }
    const fo = footerSource === 'end' ? footerOffset : 0;
    const type = diskTypeName(footer.diskType);
    if (!type) {
      throw new DiskImageError(path, `unsupported disk type ${footer.diskType}`, 'footer', fo + 60, 'EFORMAT');
    }
    if (footer.currentSize > MAX_VIRTUAL_SIZE) {
      throw new DiskImageError(path, `current size ${footer.currentSize} is larger than a VHD can be (${MAX_VIRTUAL_SIZE} bytes)`, 'footer', fo + 48, 'EFORMAT');
    }
    if (footer.formatVersion !== 0x00010000) warnings.push(`unusual format version 0x${hex32(footer.formatVersion)}`);
    if ((footer.features & 2) === 0) warnings.push('reserved feature bit 0x2 is not set');
    const chs = chsSizeBytes(footer.geometry);
    if (chs !== footer.currentSize) {
      const g = footer.geometry;
      const qemuUsesChs = !qemuTrustsCurrentSize(footer);
      warnings.push(`CHS geometry ${g.cylinders}/${g.heads}/${g.sectorsPerTrack} gives ${chs} bytes but current size is ${footer.currentSize}; using current size${qemuUsesChs ? ` (qemu reports ${chs})` : ''}`);
    }
    if (footer.currentSize % SECTOR_SIZE !== 0) warnings.push(`current size ${footer.currentSize} is not a multiple of 512`);

    const layout: VhdLayout = {
      fileSize: size, footerOffset, footerSource, footerLength, endFooter, footerCopy,
      headerOffset: null, tableOffset: null,
    };

    if (type === 'fixed') {
      if (footer.currentSize > footerOffset) {
        warnings.push(`file holds ${footerOffset} data bytes but the footer says ${footer.currentSize}; the missing tail reads as zeros`);
      }
      if (footer.dataOffset !== 0xffffffffffffffffn) warnings.push('fixed disk data offset is not all ones');
      return new VhdImage(path, file, footer, null, null, layout, warnings);
    }

    // Dynamic and differencing: the header, then the BAT, each checked against the file size first.
    const headerOffsetBig = footer.dataOffset;
    if (headerOffsetBig < 512n || headerOffsetBig + BigInt(DYNAMIC_HEADER_SIZE) > BigInt(size)) {
      throw new DiskImageError(path, `dynamic header offset ${headerOffsetBig} is outside the file (${size} bytes)`, 'footer', fo + 16, 'EFORMAT');
    }
    const headerOffset = Number(headerOffsetBig);
    layout.headerOffset = headerOffset;
    const header = parseDynamicHeader(await file.readExact(headerOffset, DYNAMIC_HEADER_SIZE, 'dynamic header'));
    if (header.cookie !== DYNAMIC_HEADER_COOKIE) {
      throw new DiskImageError(path, `bad dynamic header cookie '${header.cookie.replace(/[^\x20-\x7e]/g, '.')}'`, 'dynamic header', headerOffset, 'EFORMAT');
    }
    if (header.checksum !== header.computedChecksum) {
      warnings.push(`dynamic header checksum is wrong (stored 0x${hex32(header.checksum)}, computed 0x${hex32(header.computedChecksum)})`);
    }
    const bs = header.blockSize;
    if (bs < MIN_BLOCK_SIZE || bs > MAX_BLOCK_SIZE || (bs & (bs - 1)) !== 0) {
      throw new DiskImageError(path, `block size ${bs} is not a power of two from 512 bytes to 256 MiB`, 'dynamic header', headerOffset + 32, 'EFORMAT');
    }
    const entries = header.maxTableEntries;
    const tableOffset = header.tableOffset;
    if (tableOffset < 512 || tableOffset + entries * 4 > size) {
      throw new DiskImageError(path, `BAT of ${entries} entries at offset ${tableOffset} does not fit in the file (${size} bytes)`, 'dynamic header', headerOffset + 16, 'EFORMAT');
    }
    layout.tableOffset = tableOffset;
    const needed = Math.ceil(footer.currentSize / bs);
    if (entries < needed) {
      warnings.push(`BAT has ${entries} entries but the size needs ${needed}; blocks past the table read as zeros`);
    }
    let bat = Bat.empty(0);
    if (!linkOnly) {
      // Straight into the table's own memory: copying a 4 MiB read into fresh memory pays its page faults twice.
      const table = new Uint32Array(entries);
      const got = await file.readInto(new Uint8Array(table.buffer), tableOffset);
      if (got < entries * 4) throw new DiskImageError(path, `file ends after ${got} of ${entries * 4} bytes`, 'BAT', tableOffset, 'ETRUNC');
      bat = Bat.fromBigEndian(table);
    }
    const image = new VhdImage(path, file, footer, header, bat, layout, warnings);
    image.linkOnly = linkOnly;
    if (type === 'differencing') await image.loadParentReference();
    return image;
  }

  private async loadParentReference(): Promise<void> {
    const h = this.header!;
    const headerOffset = this.layout.headerOffset!;
    for (const entry of h.locators) {
      if (isEmptyLocator(entry)) continue;
      const at = `${entry.platformCode.replace(/[^\x20-\x7e]/g, '.')} locator`;
      const entryOffset = headerOffset + 576 + entry.index * 24;
      let problem: string | undefined;
      if (entry.platformDataLength > MAX_LOCATOR_DATA) {
        problem = `data length ${entry.platformDataLength} is too large`;
      } else if (entry.platformDataOffset + entry.platformDataLength > this.layout.fileSize) {
        problem = `data at offset ${entry.platformDataOffset} (+${entry.platformDataLength}) is past the end of the file`;
      } else if (entry.platformDataLength > locatorSpaceBytes(entry)) {
        problem = `data length ${entry.platformDataLength} exceeds its data space ${locatorSpaceBytes(entry)}`;
      }
      if (problem) {
        this.warnings.push(`${at} (entry at offset ${entryOffset}): ${problem}`);
        this.locatorData.push({ entry, path: null, problem });
        continue;
      }
      const data = await this.file.readExact(entry.platformDataOffset, entry.platformDataLength, at);
      const path = decodeLocatorPath(entry.platformCode, data) ?? null;
      this.locatorData.push({ entry, path });
    }
    (this as { parent: ParentReference | null }).parent = {
      uuid: formatUuid(h.parentUniqueId),
      timestamp: vhdTimestampToIso(h.parentTimestamp),
      name: h.parentUnicodeName,
      locators: this.locatorData.map((l) => ({ platform: trimCode(l.entry.platformCode) || l.entry.platformCode, path: l.path })),
    };
  }

  isBlockAllocated(block: number): boolean {
    return this.bat ? this.bat.isAllocated(block) : block < this.blockCount;
  }

  nextAllocatedBlock(from: number): number {
    if (this.bat) return this.bat.nextAllocated(from);
    return from < this.blockCount ? Math.max(0, from) : -1;
  }

  allocatedBlockCount(): number {
    return this.bat ? this.bat.allocatedCount() : this.blockCount;
  }

  /**
   * File offset where the block's data starts (after its bitmap), checked against the file. The size
   * is re-read before calling a block past the end: another process may have appended it (and
   * pointed the BAT at it) between our stat and our BAT read.
   */
  private async blockDataOffset(block: number): Promise<number> {
    const off = this.bat!.blockOffset(block);
    const data = off + this.bitmapSize;
    if (data + this.blockSize > this.file.size) await this.file.refreshSize();
    if (data + this.blockSize > this.file.size) {
      throw new DiskImageError(this.path, `block ${block} (${off}..${data + this.blockSize}) runs past the end of the file (${this.file.size} bytes)`, 'BAT entry', this.layout.tableOffset! + block * 4, 'ECORRUPT');
    }
    if (off < 512) {
      throw new DiskImageError(this.path, `block ${block} points at offset ${off}, inside the footer copy`, 'BAT entry', this.layout.tableOffset! + block * 4, 'ECORRUPT');
    }
    return data;
  }

  async readBlockBitmap(block: number): Promise<Uint8Array | null> {
    if (!this.bat) return block < this.blockCount ? Buffer.alloc(bitmapSizeBytes(this.sectorsPerBlock), 0xff) : null;
    if (!this.bat.isAllocated(block)) return null;
    const pending = this.deferredBitmaps?.get(block);
    if (pending) return pending.bitmap;
    const cached = this.bitmapCache.get(block);
    if (cached) return cached;
    const dataOffset = await this.blockDataOffset(block);
    const bitmap = await this.file.readExact(dataOffset - this.bitmapSize, this.bitmapSize, `sector bitmap of block ${block}`);
    this.cacheBitmap(block, bitmap);
    return bitmap;
  }

  private cacheBitmap(block: number, bitmap: Buffer): void {
    if (this.bitmapCache.size * this.bitmapSize >= VhdImage.BITMAP_CACHE_BYTES) {
      const first = this.bitmapCache.keys().next().value;
      if (first !== undefined) this.bitmapCache.delete(first);
    }
    this.bitmapCache.set(block, bitmap);
  }

  /** Forgets cached bitmaps (after another process changed the file). */
  invalidateCaches(): void {
    this.bitmapCache.clear();
  }

  async runs(offset: number, length: number): Promise<LayerRun[]> {
    if (this.linkOnly) throw new DiskImageError(this.path, 'internal: blocks of an image opened for its parent link only', 'BAT', this.layout.tableOffset ?? 0, 'EINTERNAL');
    const out: LayerRun[] = [];
    const push = (o: number, l: number, present: boolean) => {
      const last = out[out.length - 1];
      if (last && last.present === present && last.offset + last.length === o) last.length += l;
      else out.push({ offset: o, length: l, present });
    };
    const end = offset + length;
    if (!this.bat) {
      // A truncated fixed image (warned at open) holds no data past its end: that tail is a hole of
      // zeros, so map, diff and export skip it instead of reading gigabytes of nothing.
      const held = Math.min(end, Math.max(offset, this.layout.footerOffset));
      if (held > offset) push(offset, held - offset, true);
      if (end > held) push(held, end - held, false);
      return out;
    }
    let pos = offset;
    while (pos < end) {
      const block = Math.floor(pos / this.blockSize);
      const blockStart = block * this.blockSize;
      const pieceEnd = Math.min(blockStart + this.blockSize, end);
      if (block >= this.bat.length) {
        // Past the table (a size that needs more entries than the BAT has): one hole, not a loop per block.
        push(pos, end - pos, false);
        break;
      }
      if (!this.bat.isAllocated(block)) {
        push(pos, pieceEnd - pos, false);
      } else if (this.diskType === 'dynamic') {
        push(pos, pieceEnd - pos, true);
      } else {
        const bitmap = (await this.readBlockBitmap(block))!;
        const sEnd = Math.ceil((pieceEnd - blockStart) / SECTOR_SIZE);
        let s = Math.floor((pos - blockStart) / SECTOR_SIZE);
        while (s < sEnd) {
          const set = testBit(bitmap, s);
          const n = runLength(bitmap, s, sEnd, set);
          const rs = Math.max(blockStart + s * SECTOR_SIZE, pos);
          const re = Math.min(blockStart + (s + n) * SECTOR_SIZE, pieceEnd);
          push(rs, re - rs, set);
          s += n;
        }
      }
      pos = pieceEnd;
    }
    return out;
  }

  async readOwn(offset: number, target: Buffer): Promise<void> {
    if (!this.bat) {
      const n = await this.file.readInto(target, offset);
      // A truncated fixed image (warned at open) reads as zeros past its end.
      if (n < target.length) target.fill(0, n);
      return;
    }
    // Blocks that follow each other in the file (only their sector bitmaps between them, as writers
    // append them) are read in one preadv, the bitmaps into a scratch buffer: one request per run.
    let run: { file: number; end: number; parts: Buffer[]; blocks: number[] } | null = null;
    const flush = async (r: NonNullable<typeof run>) => {
      const want = r.end - r.file;
      const got = r.parts.length === 1 ? await this.file.readInto(r.parts[0], r.file) : await this.file.readvInto(r.parts, r.file);
      if (got < want) {
        throw new DiskImageError(this.path, `block ${r.blocks[0]} data ends early at file offset ${r.file + got}`, 'block data', r.file, 'ETRUNC');
      }
    };
    let done = 0;
    while (done < target.length) {
      const pos = offset + done;
      const block = Math.floor(pos / this.blockSize);
      const inBlock = pos - block * this.blockSize;
      const n = Math.min(this.blockSize - inBlock, target.length - done);
      if (!this.bat.isAllocated(block)) {
        throw new DiskImageError(this.path, `internal: read of unallocated block ${block}`, 'BAT entry', this.layout.tableOffset! + block * 4, 'EINTERNAL');
      }
      const fileOffset = (await this.blockDataOffset(block)) + inBlock;
      const slice = target.subarray(done, done + n);
      const gap = run ? fileOffset - run.end : -1;
      if (run && gap === 0) {
        run.parts.push(slice);
      } else if (run && gap === this.bitmapSize && inBlock === 0 && run.parts.length < 64) {
        run.parts.push(this.gapScratch(), slice);
      } else {
        if (run) await flush(run);
        run = { file: fileOffset, end: fileOffset, parts: [slice], blocks: [block] };
      }
      run.end = fileOffset + n;
      done += n;
    }
    if (run) await flush(run);
  }

  fileExtent(offset: number, length: number): { fd: number; position: number } | 'none' | null {
    const fd = this.file.localFd;
    if (fd === null || this.linkOnly || length <= 0 || offset < 0 || offset + length > this.virtualSize) return null;
    if (!this.bat) return offset + length <= this.layout.footerOffset ? { fd, position: offset } : null;
    const block = Math.floor(offset / this.blockSize);
    const inBlock = offset - block * this.blockSize;
    // One block only: blocks lie apart in the file (their sector bitmaps between them).
    if (inBlock + length > this.blockSize || block >= this.bat.length) return null;
    if (!this.bat.isAllocated(block)) return 'none';
    const data = this.bat.blockOffset(block) + this.bitmapSize;
    // What readOwn would refuse or check with I/O (a block past the file as known, an unsafe entry) goes that way.
    if (data + this.blockSize > this.file.size || data - this.bitmapSize < 512 || this.unsafeReason(block)) return null;
    if (this.diskType === 'differencing') {
      const bitmap = this.deferredBitmaps?.get(block)?.bitmap ?? this.bitmapCache.get(block);
      if (!bitmap) return null;
      const s0 = Math.floor(inBlock / SECTOR_SIZE);
      const count = Math.ceil((inBlock + length) / SECTOR_SIZE) - s0;
      if (allBits(bitmap, s0, count, false)) return 'none';
      if (!allBits(bitmap, s0, count, true)) return null;
    }
    return { fd, position: data + inBlock };
  }

  private scratch: Buffer | null = null;

  /** Where the sector bitmaps between coalesced blocks are read to (never looked at, so shared). */
  private gapScratch(): Buffer {
    return this.scratch ??= Buffer.allocUnsafe(this.bitmapSize);
  }

  async write(offset: number, data: Buffer, below: ReadBelow): Promise<void> {
    if (!this.file.writable) throw new DiskImageError(this.path, 'image is opened read-only', undefined, undefined, 'EREADONLY');
    if (offset < 0 || offset + data.length > this.virtualSize) {
      throw new DiskImageError(this.path, `write of ${data.length} bytes at ${offset} goes past the virtual size ${this.virtualSize}`, undefined, undefined, 'ERANGE');
    }
    if (!this.bat) {
      // A truncated fixed image: writing past the data it holds would bury its footer mid-file.
      if (offset + data.length > this.layout.footerOffset) {
        throw new DiskImageError(this.path, `the file holds only ${this.layout.footerOffset} of ${this.virtualSize} data bytes (truncated?); refusing to write past them`, 'footer', this.layout.footerOffset, 'ECORRUPT');
      }
      await this.file.writeAt(data, offset);
      return;
    }
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const block = Math.floor(pos / this.blockSize);
      const inBlock = pos - block * this.blockSize;
      const n = Math.min(this.blockSize - inBlock, data.length - done);
      await this.writeInBlock(block, inBlock, data.subarray(done, done + n), below);
      done += n;
    }
  }

  private async writeInBlock(block: number, inBlock: number, piece: Buffer, below: ReadBelow): Promise<void> {
    const unsafe = this.bat!.isAllocated(block) ? this.unsafeReason(block) : null;
    if (unsafe) {
      throw new DiskImageError(this.path, `block ${block} ${unsafe}; refusing to write into it (diskimg repair clears such entries)`, 'BAT entry', this.layout.tableOffset! + block * 4, 'ECORRUPT');
    }
    const blockStart = block * this.blockSize;
    const s0 = Math.floor(inBlock / SECTOR_SIZE);
    const s1 = Math.ceil((inBlock + piece.length) / SECTOR_SIZE);
    const alignedStart = s0 * SECTOR_SIZE;
    const alignedLen = (s1 - s0) * SECTOR_SIZE;
    let sectors = piece;
    if (inBlock % SECTOR_SIZE !== 0 || (inBlock + piece.length) % SECTOR_SIZE !== 0) {
      // Partial sectors: bring the rest of the first and last sector up from the current view.
      sectors = Buffer.alloc(alignedLen);
      if (inBlock % SECTOR_SIZE !== 0) await readLayerView(this, blockStart + alignedStart, sectors.subarray(0, SECTOR_SIZE), below);
      if ((inBlock + piece.length) % SECTOR_SIZE !== 0 && (s1 - 1 > s0 || inBlock % SECTOR_SIZE === 0)) {
        await readLayerView(this, blockStart + (s1 - 1) * SECTOR_SIZE, sectors.subarray(alignedLen - SECTOR_SIZE), below);
      }
      piece.copy(sectors, inBlock - alignedStart);
    }
    if (block >= this.bat!.length) {
      throw new DiskImageError(this.path, `block ${block} is beyond the BAT (${this.bat!.length} entries)`, 'BAT', this.layout.tableOffset!, 'ERANGE');
    }
    if (!this.bat!.isAllocated(block)) {
      await this.allocateBlock(block, alignedStart, sectors, s0, s1 - s0);
      return;
    }
    const dataOffset = await this.blockDataOffset(block);
    // Data first, bitmap after: a crash in between leaves the sectors unowned (old view intact).
    await this.file.writeAt(sectors, dataOffset + alignedStart);
    if (this.diskType === 'differencing') {
      const bitmap = (await this.readBlockBitmap(block)) as Buffer;
      if (!allBits(bitmap, s0, s1 - s0, true)) {
        setBits(bitmap, s0, s1 - s0);
        const firstSector = Math.floor((s0 >> 3) / SECTOR_SIZE);
        const lastSector = Math.floor(((s1 - 1) >> 3) / SECTOR_SIZE);
        const from = firstSector * SECTOR_SIZE;
        const to = (lastSector + 1) * SECTOR_SIZE;
        if (this.deferredBitmaps) {
          // The data is written; its bits reach the file with the next writeMetadata (flush, close).
          const pending = this.deferredBitmaps.get(block);
          if (pending) {
            pending.from = Math.min(pending.from, from);
            pending.to = Math.max(pending.to, to);
          } else {
            this.deferredBitmaps.set(block, { bitmap, from, to });
          }
          if (this.deferredBitmaps.size > VhdImage.DEFERRED_BITMAPS_MAX) await this.writeMetadata();
        } else {
          await this.file.writeAt(bitmap.subarray(from, to), dataOffset - this.bitmapSize + from);
        }
      }
    }
  }

  /**
   * Merge's bulk path (see DiskImage.stageWrites). All new blocks of the batch are appended in one
   * vectored write (the moved footer first, as in appendRegion) and enter the BAT only at commit,
   * once the caller has made them durable; pieces in blocks a dynamic image already holds are
   * written in place (nothing points anew at them). Partial sectors, fixed images and allocated
   * blocks of a differencing image (their bitmaps change) are left to write().
   */
  async stageWrites(pieces: WritePiece[], _below: ReadBelow): Promise<CommitStaged | null> {
    if (!this.bat || !this.file.writable) return null;
    const bat = this.bat;
    const plans = planStagedBlocks(pieces, { sectorSize: SECTOR_SIZE, blockSize: this.blockSize, virtualSize: this.virtualSize }, (block) => {
      if (block >= bat.length) return null;
      if (!bat.isAllocated(block)) return 'fresh';
      return this.diskType === 'differencing' || this.unsafeReason(block) ? null : 'inPlace';
    });
    if (!plans) return null;
    // With direct writes on (merge), each new block's data starts on a page: its bitmap fills the
    // sectors just before, zeros the rest of that page (gaps between blocks are allowed; Hyper-V
    // aligns its blocks too). The data then goes to the disk around the page cache; bitmap, padding
    // and footer stay buffered (a direct write over a page the footer was just written into would
    // wait for that page's writeback first).
    const align = this.file.writesDirect && this.blockSize % PAGE === 0 ? PAGE : SECTOR_SIZE;
    const span = this.bitmapSize + this.blockSize + (align - SECTOR_SIZE);
    const freshCount = plans.reduce((n, x) => n + (x.fresh ? 1 : 0), 0);
    if ((Math.ceil(this.layout.footerOffset / SECTOR_SIZE) * SECTOR_SIZE + freshCount * span) / SECTOR_SIZE >= BAT_UNUSED) return null;
    // In place first (blocks already referenced), then one append for every new block.
    for (const plan of plans) {
      if (plan.fresh) continue;
      const dataOffset = await this.blockDataOffset(plan.block);
      for (const part of plan.parts) await this.file.writeAt(part.data, dataOffset + part.inBlock);
    }
    const fresh = plans.filter((x) => x.fresh);
    if (fresh.length === 0) return this.stagedBat.add([]); // still queued: committing it commits the stages before it
    // The blocks go where the end footer is, one after another (each block's data on the next
    // `align` boundary after its bitmap); appendRegion moves the footer behind them first.
    const where = { structure: 'BAT entry', offset: this.layout.tableOffset! + fresh[0].block * 4 };
    const start = this.appendStart(where);
    const vector: Buffer[] = [];
    const bitmaps: Buffer[] = [];
    const bitmapAt: number[] = [];
    let end = start;
    // Going direct, a block whose space starts on a page (every one but the first appended to a
    // file whose footer was not on one) has padding and bitmap filling whole pages: built in
    // page-aligned memory that may stay in flight, they go direct in one call with its data.
    // Buffered, each would wait for the whole direct write in flight before it (ext4's inode
    // lock): 0.34 s of a 0.79 s merge of 512 MiB (2026-12-03).
    const headBytes = Math.ceil(this.bitmapSize / PAGE) * PAGE;
    const heads = align === PAGE ? alignedBuffer(fresh.length * headBytes) : null;
    if (heads) allowWriteBehind(heads);
    for (const [i, plan] of fresh.entries()) {
      const bitmap = Buffer.alloc(this.bitmapSize);
      if (this.diskType === 'dynamic') bitmap.fill(0xff);
      for (const part of plan.parts) {
        if (this.diskType !== 'dynamic') setBits(bitmap, part.inBlock / SECTOR_SIZE, part.data.length / SECTOR_SIZE);
      }
      const dataAt = Math.ceil((end + this.bitmapSize) / align) * align;
      bitmapAt.push(dataAt - this.bitmapSize);
      if (heads && end % PAGE === 0 && dataAt - end === headBytes) {
        const head = heads.subarray(i * headBytes, (i + 1) * headBytes);
        bitmap.copy(head, headBytes - this.bitmapSize);
        vector.push(head);
      } else {
        vector.push(...zeroBytes(dataAt - this.bitmapSize - end), bitmap);
      }
      let at = 0;
      for (const part of plan.parts) {
        vector.push(...zeroBytes(part.inBlock - at), part.data);
        at = part.inBlock + part.data.length;
      }
      vector.push(...zeroBytes(this.blockSize - at));
      bitmaps.push(bitmap);
      end = dataAt + this.blockSize;
    }
    // Each run of parts that can go direct in one call (writeParts); appendRegion keeps the order.
    await this.appendRegion(vector, where, (parts, at) => writeParts(this.file, parts, at));
    // Entries of blocks next to each other in the BAT go in one write.
    const runs: Array<{ block: number; bytes: Buffer[] }> = [];
    fresh.forEach((plan, i) => {
      const sectorOffset = bitmapAt[i] / SECTOR_SIZE;
      bat.entries[plan.block] = sectorOffset;
      this.cacheBitmap(plan.block, bitmaps[i]);
      const run = runs[runs.length - 1];
      if (run && run.block + run.bytes.length === plan.block) run.bytes.push(Bat.entryBytes(sectorOffset));
      else runs.push({ block: plan.block, bytes: [Bat.entryBytes(sectorOffset)] });
    });
    return this.stagedBat.add(runs);
  }

  /** BAT entries of staged blocks, written at commit (entries next to each other across stages in one write). */
  private readonly stagedBat = new StagedCommits<Array<{ block: number; bytes: Buffer[] }>>(async (stages) => {
    const runs = stages.flat().sort((a, b) => a.block - b.block);
    for (let i = 0; i < runs.length;) {
      const first = runs[i];
      const bytes = [...first.bytes];
      let j = i + 1;
      while (j < runs.length && runs[j].block === first.block + bytes.length) bytes.push(...runs[j++].bytes);
      await this.file.writeAt(Buffer.concat(bytes), this.layout.tableOffset! + first.block * 4);
      i = j;
    }
  });

  private unsafe: { reason: Uint8Array; other: Uint32Array; regions: Array<{ name: string; start: number; end: number }>; fileSize: number } | null = null;

  /**
   * Why an allocated block must not be written, or null: it overlaps the footer copy, the dynamic
   * header, the BAT or parent locator data, or another block, or it runs into the end footer or past the file as
   * it was opened (an append would later land inside it). Reading such blocks is harmless; writing
   * would damage what they overlap. Worked out once for the whole BAT (typed arrays and one native
   * sort, so a hostile table of a million entries costs milliseconds); the text only when asked.
   */
  private unsafeReason(block: number): string | null {
    const u = this.unsafe ?? (this.unsafe = this.findUnsafeBlocks());
    const why = u.reason[block];
    if (!why) return null;
    const start = this.bat!.blockOffset(block);
    const range = `(${start}..${start + this.bitmapSize + this.blockSize})`;
    if (why === 1) return `${range} runs past the end of the data (${u.fileSize}, where the end footer or the file ends)`;
    if (why === 2) { const r = u.regions[u.other[block]]; return `${range} overlaps ${r.name} (${r.start}..${r.end})`; }
    return `${range} overlaps block ${u.other[block]}`;
  }

  private findUnsafeBlocks(): NonNullable<VhdImage['unsafe']> {
    const bat = this.bat!;
    const n = bat.length;
    const reason = new Uint8Array(n);
    const other = new Uint32Array(n);
    const span = this.bitmapSize + this.blockSize;
    // Blocks end where the end footer starts: one that reaches into it would be overwritten by the
    // next append (which moves the footer) and would overwrite that appended block in turn.
    const fileSize = Math.min(this.layout.fileSize, this.layout.footerOffset);
    const regions: Array<{ name: string; start: number; end: number }> = [{ name: 'the footer copy', start: 0, end: FOOTER_SIZE }];
    const ho = this.layout.headerOffset!;
    regions.push({ name: 'the dynamic header', start: ho, end: ho + DYNAMIC_HEADER_SIZE });
    const to = this.layout.tableOffset!;
    regions.push({ name: 'the BAT', start: to, end: to + Math.ceil((n * 4) / SECTOR_SIZE) * SECTOR_SIZE });
    for (const l of this.locatorData) {
      if (l.path === null && l.problem) continue;
      // The data itself, not its space: writers disagree on whether the space is bytes or sectors.
      const len = l.entry.platformDataLength;
      if (len > 0) regions.push({ name: `${trimCode(l.entry.platformCode) || 'parent'} locator data`, start: l.entry.platformDataOffset, end: l.entry.platformDataOffset + len });
    }
    let candidates = 0;
    for (let b = 0; b < n; b++) {
      const e = bat.entries[b];
      if (e === BAT_UNUSED) continue;
      const start = e * SECTOR_SIZE;
      const end = start + span;
      if (end > fileSize) { reason[b] = 1; continue; }
      const hit = regions.findIndex((r) => start < r.end && r.start < end);
      if (hit >= 0) { reason[b] = 2; other[b] = hit; continue; }
      candidates++;
    }
    // Blocks against each other: (sector << 32 | block) sorted natively, then one sweep.
    const keys = new BigUint64Array(candidates);
    let k = 0;
    for (let b = 0; b < n; b++) {
      const e = bat.entries[b];
      if (e !== BAT_UNUSED && reason[b] === 0) keys[k++] = (BigInt(e) << 32n) | BigInt(b);
    }
    keys.sort();
    let reach = -1;
    let reachBlock = 0;
    for (let i = 0; i < keys.length; i++) {
      const b = Number(keys[i] & 0xffffffffn);
      const start = Number(keys[i] >> 32n) * SECTOR_SIZE;
      if (start < reach) {
        reason[b] = 3;
        other[b] = reachBlock;
        if (reason[reachBlock] === 0) { reason[reachBlock] = 3; other[reachBlock] = b; }
      }
      if (start + span > reach) { reach = start + span; reachBlock = b; }
    }
    return { reason, other, regions, fileSize };
  }

  /**
   * Appends a new block where the end footer is (see appendSparse: the moved footer goes first);
   * only then points the BAT entry at it. A crash before the BAT write leaves an unreferenced block
   * and a valid file. Only the bitmap and the sectors written are written: the rest of the data
   * area lies past the old end of the file, so it is a file hole that reads as zeros (what the
   * 2 MiB of zeros written before held), and a differencing block reads those sectors from its
   * parent anyway (their bits are clear).
   */
  private async allocateBlock(block: number, alignedStart: number, sectors: Buffer, s0: number, count: number): Promise<void> {
    const bitmap = Buffer.alloc(this.bitmapSize);
    if (this.diskType === 'dynamic') bitmap.fill(0xff);
    else setBits(bitmap, s0, count);
    const pieces = [{ offset: 0, data: bitmap }, { offset: this.bitmapSize + alignedStart, data: sectors }];
    const at = await this.appendSparse(this.bitmapSize + this.blockSize, pieces, { structure: 'BAT entry', offset: this.layout.tableOffset! + block * 4 });
    const sectorOffset = at / SECTOR_SIZE;
    await this.file.writeAt(Bat.entryBytes(sectorOffset), this.layout.tableOffset! + block * 4);
    this.bat!.entries[block] = sectorOffset;
    this.cacheBitmap(block, bitmap);
  }

  /**
   * Appends a region of `length` bytes (a multiple of the sector size) where the end footer is, of
   * which only `pieces` (offsets relative to the region, in order, not overlapping) are written:
   * the moved footer first, behind the region (growing the file), then the pieces. What lies
   * between them past the old end of the file is a hole (reads as zeros); between them but before
   * the old end (the old footer's sector) gets written zeros, so the region reads exactly as if
   * it had been written whole. Returns the region's offset.
   */
  private async appendSparse(length: number, pieces: Array<{ offset: number; data: Buffer }>, where: { structure: string; offset: number }): Promise<number> {
    const at = this.appendStart(where);
    const oldEnd = this.file.size;
    const writes: Array<{ at: number; parts: Buffer[] }> = [];
    const add = (pos: number, data: Buffer) => {
      const last = writes[writes.length - 1];
      const lastEnd = last ? last.at + last.parts.reduce((n, b) => n + b.length, 0) : -1;
      if (last && lastEnd === pos) last.parts.push(data);
      else writes.push({ at: pos, parts: [data] });
    };
    let cursor = at;
    for (const piece of [...pieces, { offset: length, data: Buffer.alloc(0) }]) {
      const start = at + piece.offset;
      // A gap still inside the old file (the old footer): zeros, as a whole write would have left.
      const zeroEnd = Math.min(start, oldEnd);
      for (const z of zeroEnd > cursor ? zeroBytes(zeroEnd - cursor) : []) {
        add(cursor, z);
        cursor += z.length;
      }
      if (piece.data.length > 0) add(start, piece.data);
      cursor = start + piece.data.length;
    }
    await this.file.writeAt(this.footerBytes, at + length);
    for (const w of writes) {
      if (w.parts.length === 1) await this.file.writeAt(w.parts[0], w.at);
      else await this.file.writevAt(w.parts, w.at);
    }
    this.appendEnd(at + length);
    return at;
  }

  /** Where an append starts (the end footer's sector), checked against 32-bit BAT offsets. */
  private appendStart(where: { structure: string; offset: number }): number {
    if (!this.bat) throw new DiskImageError(this.path, 'a fixed image has no room to append to', where.structure, where.offset, 'EINTERNAL');
    // Judge the existing BAT against the file as it was, before it grows (see unsafeReason).
    this.unsafe ??= this.findUnsafeBlocks();
    const at = Math.ceil(this.layout.footerOffset / SECTOR_SIZE) * SECTOR_SIZE;
    if (at / SECTOR_SIZE >= BAT_UNUSED) {
      throw new DiskImageError(this.path, 'file too large for 32-bit BAT sector offsets', where.structure, where.offset, 'ERANGE');
    }
    return at;
  }

  /** The end footer now lies at `footerOffset` (written there by the append). */
  private appendEnd(footerOffset: number): void {
    this.layout.footerOffset = footerOffset;
    this.layout.footerSource = 'end';
    this.layout.footerLength = 512;
    this.layout.fileSize = this.layout.footerOffset + FOOTER_SIZE;
  }

  /**
   * Appends `data` (padded to whole sectors) where the end footer is, with the footer moved behind
   * it. The moved footer is written first (one sector, which a kill cannot tear), then the data over
   * the old footer: a large write can stop part-way when the process is killed, and the file must
   * end in a valid footer at every instant. Returns the data's offset.
   */
  async appendRegion(
    data: Buffer | Buffer[],
    where: { structure: string; offset: number } = { structure: 'footer', offset: this.layout.footerOffset },
    write: (parts: Buffer[], at: number) => Promise<void> = (parts, at) => this.file.writevAt(parts, at),
  ): Promise<number> {
    const at = this.appendStart(where);
    const parts = Array.isArray(data) ? data : [data];
    const length = parts.reduce((n, b) => n + b.length, 0);
    const padded = Math.ceil(length / SECTOR_SIZE) * SECTOR_SIZE;
    await this.file.writeAt(this.footerBytes, at + padded);
    await write([...parts, ...zeroBytes(padded - length)].filter((b) => b.length > 0), at);
    this.appendEnd(at + padded);
    return at;
  }

  /**
   * From now on a write into an allocated block of this differencing image keeps its sector bitmap
   * change in memory until writeMetadata(), flush() or close(): one file write per small write
   * instead of two (the NBD server). Data is always written before the bits that claim it, so a
   * kill loses the writes whose bits were not written yet (unflushed writes) and the file stays valid.
   */
  deferMetadataWrites(): void {
    if (this.diskType === 'differencing' && this.file.writable) this.deferredBitmaps ??= new Map();
  }

  /** Writes the sector bitmaps kept back by deferMetadataWrites (no fsync), in file order. */
  async writeMetadata(): Promise<void> {
    const pending = this.deferredBitmaps;
    if (!pending || pending.size === 0) return;
    // Writes that land meanwhile start a new set: their bitmaps are written by the next call.
    this.deferredBitmaps = new Map();
    const blocks = [...pending.keys()].sort((a, b) => this.bat!.blockOffset(a) - this.bat!.blockOffset(b));
    try {
      for (const block of blocks) {
        const { bitmap, from, to } = pending.get(block)!;
        await this.file.writeAt(bitmap.subarray(from, to), this.bat!.blockOffset(block) + from);
      }
    } catch (e) {
      // Not written: keep them pending, so a later flush tries again instead of losing the bits.
      for (const [block, p] of pending) {
        const later = this.deferredBitmaps.get(block);
        this.deferredBitmaps.set(block, later ? { bitmap: p.bitmap, from: Math.min(p.from, later.from), to: Math.max(p.to, later.to) } : p);
      }
      throw e;
    }
  }

  async flush(): Promise<void> {
    await this.writeMetadata();
    await this.file.sync();
  }

  async close(): Promise<void> {
    try {
      await this.writeMetadata();
    } finally {
      await this.file.close();
    }
  }

  blockFileOffset(block: number): number | null {
    if (!this.bat) return block < this.blockCount ? block * this.blockSize : null;
    return this.bat.isAllocated(block) ? this.bat.blockOffset(block) + this.bitmapSize : null;
  }

  locate(field: ImageField): FieldLocation {
    const fo = this.layout.footerSource === 'end' ? this.layout.footerOffset : 0;
    const ho = this.layout.headerOffset ?? 0;
    switch (field) {
      case 'diskType': return { structure: 'footer', offset: fo + 60 };
      case 'virtualSize': return { structure: 'footer', offset: fo + 48 };
      case 'blockCount': return { structure: 'dynamic header', offset: ho + 28 };
      case 'parentLink': return { structure: 'parent locators', offset: ho + 576 };
      case 'parentId': return { structure: 'dynamic header', offset: ho + 40 };
    }
  }

  parentCandidates(): ParentCandidates {
    if (this.diskType !== 'differencing' || !this.header) return { candidates: [], unreadable: [], sources: [] };
    return vhdParentCandidates(this.path, this.layout.headerOffset!, this.locatorData, this.header.parentUnicodeName);
  }

  checkParent(parent: DiskImage): ParentLinkCheck {
    if (!this.header) throw new DiskImageError(this.path, `is a ${this.diskType} image: it has no parent`, 'footer', this.locate('diskType').offset, 'ENOTDIFF');
    return checkVhdParent({ parentUniqueId: this.header.parentUniqueId, parentTimestamp: this.header.parentTimestamp, headerOffset: this.layout.headerOffset! }, parent);
  }

  async writeParentLink(parent: DiskImage): Promise<void> {
    if (this.diskType !== 'differencing') throw new DiskImageError(this.path, `is a ${this.diskType} image: it has no parent link`, 'footer', this.locate('diskType').offset, 'ENOTDIFF');
    await writeVhdParentLink(this, parent);
  }

  /** Rewrites the dynamic header in place (used by re-link); keeps the checksum right. */
  async rewriteHeader(next: Parameters<typeof serializeDynamicHeader>[0]): Promise<void> {
    const bytes = serializeDynamicHeader(next);
    await this.file.writeAt(bytes, this.layout.headerOffset!);
    // What this object says about its parent must follow the file.
    (this as { header: DynamicHeader | null }).header = parseDynamicHeader(bytes);
    if (this.diskType === 'differencing') {
      this.locatorData.length = 0;
      await this.loadParentReference();
    }
  }

  /** Serialized footer as this image currently writes it. */
  get currentFooterBytes(): Buffer {
    return this.footerBytes;
  }
}

function qemuTrustsCurrentSize(f: Footer): boolean {
  const g = f.geometry;
  return CURRENT_SIZE_CREATORS.has(f.creatorApplication) || (g.cylinders === 65535 && g.heads === 16 && g.sectorsPerTrack === 255);
}

/** Shared zeros for padding writes (never written to). */
const ZEROS = Buffer.alloc(1024 * 1024);
/** `n` zero bytes as pieces of one shared 1 MiB buffer: a huge block size never allocates its size in zeros. */
function zeroBytes(n: number): Buffer[] {
  const parts: Buffer[] = [];
  for (let left = n; left > 0; left -= ZEROS.length) parts.push(ZEROS.subarray(0, Math.min(left, ZEROS.length)));
  return parts;
}

export function hex32(v: number): string {
  return (v >>> 0).toString(16).padStart(8, '0');
}
