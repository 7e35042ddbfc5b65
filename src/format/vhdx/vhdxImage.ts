import * as nodePath from 'path';
import { statSync } from 'fs';
import { CommitStaged, DiskImage, DiskTypeName, FieldLocation, ImageField, LayerRun, ParentCandidates, ParentLinkCheck, ParentReference, ReadBelow, WritePiece } from '../diskImage';
import { vhdxParentCandidates } from './locatorPaths';
import { checkVhdxParent, locatorPairs, parentIdentity } from './parentLink';
import { DiskImageError } from '../errors';
import { ImageFile } from '../../io/imageFile';
import {
  Bat, BAT_ENTRY_SIZE, BAT_PAGE_ENTRIES, batGeometry, BatGeometry, encodeEntry, MIB, payloadEntryIndex, PayloadBlockState,
  sectorBitmapEntryIndex, SectorBitmapState,
} from './bat';
import { FILE_PARAMETERS_SIZE, FileParameters, isValidBlockSize, parseFileParameters } from './fileParameters';
import { FILE_IDENTIFIER_SIZE, hasFileIdentifierSignature, parseFileIdentifier } from './fileIdentifier';
import { formatGuid, isZeroGuid, newGuid, parseGuid } from './guid';
import { Header, HEADER_OFFSETS, HEADER_SIZE, isHeaderValid, parseHeader, serializeHeader } from './header';
import { findActiveSequence, LOG_SECTOR_SIZE, LogError, LogWrite, MAX_LOG_FILE_GROWTH, MAX_LOG_LENGTH, serializeLogEntry } from './log';
import { MAX_METADATA_ENTRIES, METADATA_ITEM, METADATA_TABLE_SIGNATURE, METADATA_TABLE_SIZE, MetadataTable, parseMetadataTable } from './metadataTable';
import { parsePage83Data, PAGE83_DATA_SIZE } from './page83Data';
import { locatorValue, ParentLocator, ParentLocatorError, parseParentLocator, serializeParentLocator } from './parentLocator';
import {
  BAT_REGION_GUID, isRegionTableValid, METADATA_REGION_GUID, parseRegionTable, REGION_TABLE_OFFSETS, REGION_TABLE_SIZE,
  RegionTable, RegionTableEntry,
} from './regionTable';
import { bitRunLength, SECTOR_BITMAP_BLOCK_SIZE, setBitRange, testBit } from './sectorBitmap';
import { isValidSectorSize, parseSectorSize, SECTOR_SIZE_ITEM_SIZE } from './sectorSize';
import { MAX_VHDX_VIRTUAL_SIZE, parseVirtualDiskSize, VIRTUAL_DISK_SIZE_SIZE } from './virtualDiskSize';
import { readLayerView } from '../layerView';
import { planStagedBlocks, StagedCommits } from '../stagedCommits';
import { writeInChunks } from '../bulkWrite';

/** Entries we hold in memory at most (two 32-bit words each): 64 TiB at 4 MiB blocks. */
export const MAX_BAT_ENTRIES = 1 << 24;
/** Largest metadata item we read (a parent locator is a few hundred bytes). */
export const MAX_METADATA_ITEM = 1024 * 1024;
const FIRST_REGION = MIB;

export interface VhdxOpenOptions {
  writable?: boolean;
  /** Only headers, region tables and metadata (scanning folders for children): no BAT. */
  linkOnly?: boolean;
}

/** Where each structure is, for check, the editor's header view and tests. */
export interface VhdxLayout {
  fileSize: number;
  creator: string;
  headers: Array<Header | null>;
  /** Index (0 or 1) of the header in use. */
  currentHeader: number;
  regionTables: RegionTable[];
  currentRegionTable: number;
  bat: RegionTableEntry;
  metadata: RegionTableEntry;
  metadataTable: MetadataTable;
  /** Raw bytes for the editor's header view: both headers, the start of both region tables, the metadata table's used part. */
  raw: { headers: Buffer[]; regionTables: Buffer[]; metadataTable: Buffer; items: Map<string, Buffer> };
  /** The log's active sequence when replayed in memory (check reports it; repair replays it). */
  pendingLog: LogWrite[];
  /** Log entries replayed at open (in memory for read-only opens, into the file for writable). */
  replayedEntries: number;
  replayedInMemory: boolean;
}

/**
 * Reads the file with the replayed log laid over it: a read-only open must see what the log says
 * without changing the file.
 */
class OverlayReader {
  constructor(readonly file: ImageFile, readonly overlay: LogWrite[]) {}

  async read(target: Buffer, pos: number): Promise<number> {
    let n = await this.file.readInto(target, pos);
    for (const w of this.overlay) {
      const s = Math.max(pos, w.fileOffset);
      const e = Math.min(pos + target.length, w.fileOffset + w.length);
      if (s >= e) continue;
      if (w.data) w.data.copy(target, s - pos, s - w.fileOffset, e - w.fileOffset);
      else target.fill(0, s - pos, e - pos);
      if (e - pos > n) { target.fill(0, n, s - pos); n = e - pos; }
    }
    return n;
  }

  async readExact(pos: number, length: number, structure: string, path: string): Promise<Buffer> {
    const b = Buffer.alloc(length);
    const n = await this.read(b, pos);
    if (n < length) throw new DiskImageError(path, `file ends after ${n} of ${length} bytes`, structure, pos, 'ETRUNC');
    return b;
  }
}

export class VhdxImage implements DiskImage {
  readonly format = 'vhdx' as const;
  readonly warnings: string[] = [];
  readonly diskType: DiskTypeName;
  readonly virtualSize: number;
  readonly sectorSize: number;
  readonly physicalSectorSize: number;
  readonly blockSize: number;
  readonly blockCount: number;
  readonly uuid: string;
  readonly parent: ParentReference | null = null;
  readonly parentLocator: ParentLocator | null;
  readonly fileParameters: FileParameters;
  readonly geometry: BatGeometry;
  readonly sectorsPerBlock: number;
  private readonly bitmapCache = new Map<number, Buffer>();
  private static readonly BITMAP_CACHE_ENTRIES = 16;
  /** Set once the first write after open has renewed the write GUIDs and opened a log session. */
  /** Set by reserveNextIdentity: the DataWriteGuid the first data write takes. */
  private nextDataWriteGuid: Buffer | null = null;
  private session: { logGuid: Buffer; sequence: bigint; position: number; dataGuidRenewed: boolean } | null = null;
  /**
   * End of the space given to staged blocks. Their writes extend the file as they go (writing into
   * space a truncate made ahead cost 2-3x the system time: `copy_folio_from_iter_atomic`); the
   * commit extends the file over whole blocks before the BAT points at them.
   */
  private reservedEnd = 0;
  /** Newest content of metadata sectors that staged writes changed and no commit has written yet. */
  private readonly unsettled = new Map<number, Buffer>();

  private constructor(
    readonly path: string,
    readonly file: ImageFile,
    private readonly reader: OverlayReader,
    readonly header: Header,
    readonly layout: VhdxLayout,
    readonly bat: Bat | null,
    meta: { fileParameters: FileParameters; virtualSize: number; logicalSectorSize: number; physicalSectorSize: number; page83: string; parentLocator: ParentLocator | null },
    warnings: string[],
  ) {
    this.warnings.push(...warnings);
    this.fileParameters = meta.fileParameters;
    this.virtualSize = meta.virtualSize;
    this.sectorSize = meta.logicalSectorSize;
    this.physicalSectorSize = meta.physicalSectorSize;
    this.blockSize = meta.fileParameters.blockSize;
    this.uuid = meta.page83;
    this.parentLocator = meta.parentLocator;
    this.diskType = meta.fileParameters.hasParent ? 'differencing' : meta.fileParameters.leaveBlocksAllocated ? 'fixed' : 'dynamic';
    this.geometry = batGeometry(this.virtualSize, this.blockSize, this.sectorSize, meta.fileParameters.hasParent);
    this.blockCount = this.geometry.payloadBlocks;
    this.sectorsPerBlock = this.blockSize / this.sectorSize;
    if (meta.parentLocator) this.setParentReference(meta.parentLocator);
  }

  private setParentReference(l: ParentLocator): void {
    const linkage = locatorValue(l, 'parent_linkage') ?? '';
    const name = locatorValue(l, 'relative_path') ?? locatorValue(l, 'absolute_win32_path') ?? locatorValue(l, 'volume_path') ?? '';
    (this as { parent: ParentReference | null }).parent = {
      uuid: linkage.replace(/[{}]/g, '').toLowerCase(),
      timestamp: null,
      name: name.split(/[\\/]/).pop() ?? '',
      locators: l.entries.map((e) => ({ platform: e.key, path: e.value })),
    };
  }

  get writable(): boolean {
    return this.file.writable;
  }

  get fileSize(): number {
    return this.file.size;
  }

  /** VHDX records no creation time. */
  get created(): string | null {
    return null;
  }

  /** File offset of a metadata item's data, or null when the table has no such item. */
  itemOffset(itemId: string): number | null {
    const e = this.layout.metadataTable.entries.find((x) => x.itemId === itemId);
    return e ? this.layout.metadata.fileOffset + e.offset : null;
  }

  locate(field: ImageField): FieldLocation {
    const mo = this.layout.metadata.fileOffset;
    const item = (id: string, structure: string): FieldLocation => ({ structure, offset: this.itemOffset(id) ?? mo });
    switch (field) {
      case 'diskType': return item(METADATA_ITEM.fileParameters, 'file parameters');
      case 'virtualSize': return item(METADATA_ITEM.virtualDiskSize, 'virtual disk size');
      case 'blockCount': return { structure: 'BAT region', offset: this.layout.bat.fileOffset };
      case 'parentLink': return item(METADATA_ITEM.parentLocator, 'parent locator');
      case 'parentId': {
        const at = this.itemOffset(METADATA_ITEM.parentLocator) ?? mo;
        const e = this.parentLocator?.entries.find((x) => x.key === 'parent_linkage');
        return { structure: 'parent locator', offset: at + (e?.at ?? 0) };
      }
    }
  }

  parentCandidates(): ParentCandidates {
    if (this.diskType !== 'differencing') return { candidates: [], unreadable: [], sources: [] };
    return vhdxParentCandidates(this.path, this.parentLocator, this.itemOffset(METADATA_ITEM.parentLocator) ?? 0);
  }

  checkParent(parent: DiskImage): ParentLinkCheck {
    if (this.diskType !== 'differencing') throw new DiskImageError(this.path, `is a ${this.diskType} image: it has no parent`, 'file parameters', this.locate('diskType').offset, 'ENOTDIFF');
    return checkVhdxParent(this.parentLinkages, parent, this.locate('parentId'));
  }

  /**
   * Re-links to `parent`: a new parent locator item goes to free space of the metadata region and
   * the table entry is pointed at it, both sectors in one log entry, so a kill leaves the old link
   * or the new one. Only FileWriteGuid changes (the disk's data does not): this image's own
   * children stay linked to it.
   */
  async writeParentLink(parent: DiskImage): Promise<void> {
    await this.rewriteParentLocator(locatorPairs(this.path, parent.path, parentIdentity(parent)));
  }

  /** The DataWriteGuid the next first write will set (a merge lets the child accept it first). */
  reserveNextIdentity(): string | null {
    if (this.session?.dataGuidRenewed) return null;
    this.nextDataWriteGuid ??= newGuid();
    return formatGuid(this.nextDataWriteGuid);
  }

  /** parent_linkage: the parent's identity now; parent_linkage2: the one it is about to take. */
  async acceptParentIdentity(parent: DiskImage, next: string): Promise<void> {
    const pairs = locatorPairs(this.path, parent.path, parentIdentity(parent));
    pairs.splice(1, 0, ['parent_linkage2', `{${next}}`]);
    await this.rewriteParentLocator(pairs);
  }

  private async rewriteParentLocator(pairs: Array<[string, string]>): Promise<void> {
    if (this.diskType !== 'differencing') throw new DiskImageError(this.path, `is a ${this.diskType} image: it has no parent link`, 'file parameters', this.locate('diskType').offset, 'ENOTDIFF');
    if (!this.file.writable) throw new DiskImageError(this.path, 'image is opened read-only', undefined, undefined, 'EREADONLY');
    const item = serializeParentLocator(pairs);
    const mt = this.layout.metadataTable;
    const entry = mt.entries.find((x) => x.itemId === METADATA_ITEM.parentLocator);
    if (!entry) throw new DiskImageError(this.path, 'no parent locator item to rewrite', 'metadata table', this.layout.metadata.fileOffset, 'ECORRUPT');
    // Free space past the other items, on a 4 KiB boundary so the log's sectors hold nothing else;
    // if the current locator sits there, right after it (two slots used in turn, never a growing trail).
    let end = 64 * 1024;
    for (const e of mt.entries) if (e !== entry) end = Math.max(end, e.offset + e.length);
    const span = Math.ceil(item.length / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
    let at = Math.ceil(end / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
    if (at < entry.offset + entry.length && entry.offset < at + span) at = Math.ceil((entry.offset + entry.length) / LOG_SECTOR_SIZE) * LOG_SECTOR_SIZE;
    if (at + span > this.layout.metadata.length) {
      throw new DiskImageError(this.path, 'no room left in the metadata region for a new parent locator', 'metadata region', this.layout.metadata.fileOffset, 'ENOSPC');
    }
    await this.beginSession(false);
    const mo = this.layout.metadata.fileOffset;
    const pending = new Map<number, Buffer>();
    for (let k = 0; k < span; k += LOG_SECTOR_SIZE) {
      const sector = Buffer.alloc(LOG_SECTOR_SIZE);
      item.copy(sector, 0, k, Math.min(item.length, k + LOG_SECTOR_SIZE));
      pending.set(mo + at + k, sector);
    }
    const tableSector = await this.metadataSector(pending, mo + entry.at);
    const inSector = (mo + entry.at) % LOG_SECTOR_SIZE;
    tableSector.writeUInt32LE(at, inSector + 16);
    tableSector.writeUInt32LE(item.length, inSector + 20);
    await this.commitMetadata(pending);
    entry.offset = at;
    entry.length = item.length;
    const next = parseParentLocator(item);
    (this as { parentLocator: ParentLocator | null }).parentLocator = next;
    this.setParentReference(next);
  }

  get dataWriteGuid(): string {
    return formatGuid(this.header.dataWriteGuid);
  }

  get fileWriteGuid(): string {
    return formatGuid(this.header.fileWriteGuid);
  }

  /** parent_linkage and parent_linkage2, without braces, lower case. */
  get parentLinkages(): string[] {
    if (!this.parentLocator) return [];
    return ['parent_linkage', 'parent_linkage2']
      .map((k) => locatorValue(this.parentLocator!, k))
      .filter((v): v is string => v !== undefined && parseGuid(v) !== null)
      .map((v) => formatGuid(parseGuid(v)!));
  }

  /** True when `parent` is the image this child was made from (its DataWriteGuid is one of the linkages). */
  linksTo(parent: VhdxImage): boolean {
    return this.parentLinkages.includes(parent.dataWriteGuid);
  }

  static async open(path: string, options: VhdxOpenOptions = {}): Promise<VhdxImage> {
    const file = await ImageFile.open(path, options.writable ?? false);
    try {
      return await VhdxImage.fromFile(path, file, options.linkOnly ?? false, false);
    } catch (e) {
      await file.close().catch(() => undefined);
      throw e;
    }
  }

  /** True when the bytes start with the VHDX file type identifier. */
  static probe(head: Uint8Array): boolean {
    return hasFileIdentifierSignature(head);
  }

  /**
   * Reads an image from a file the caller keeps open (check's scan): the log is replayed in memory
   * even when the file is writable, so a scan never changes the file. Do not close the result.
   */
  static async fromOpenFile(path: string, file: ImageFile): Promise<VhdxImage> {
    return VhdxImage.fromFile(path, file, false, true);
  }

  private static async fromFile(path: string, file: ImageFile, linkOnly: boolean, replayInMemory: boolean): Promise<VhdxImage> {
    const warnings: string[] = [];
    const size = file.size;
    const fail = (what: string, structure: string, offset: number, code = 'ECORRUPT'): never => {
      throw new DiskImageError(path, what, structure, offset, code);
    };
    const headLen = REGION_TABLE_OFFSETS[1] + REGION_TABLE_SIZE;
    if (size < headLen) fail(`file is too small to be a VHDX (${size} bytes)`, 'file identifier', 0, 'EFORMAT');
    const head = await file.readExact(0, headLen, 'file identifier');
    if (!hasFileIdentifierSignature(head)) {
      fail(`not a VHDX: no 'vhdxfile' signature (found '${head.toString('latin1', 0, 8).replace(/[^\x20-\x7e]/g, '.')}')`, 'file identifier', 0, 'EFORMAT');
    }
    const creator = parseFileIdentifier(head.subarray(0, FILE_IDENTIFIER_SIZE)).creator;

    // Headers: the valid one with the higher sequence number is current.
    const headers = HEADER_OFFSETS.map((o) => parseHeader(head.subarray(o, o + HEADER_SIZE)));
    const valid = headers.map(isHeaderValid);
    headers.forEach((h, i) => {
      if (!valid[i]) {
        warnings.push(h.signature !== 'head'
          ? `header ${i + 1} at offset ${HEADER_OFFSETS[i]} has no 'head' signature`
          : `header ${i + 1} at offset ${HEADER_OFFSETS[i]} has a wrong checksum (stored 0x${hex32(h.checksum)}, computed 0x${hex32(h.computedChecksum)})`);
      }
    });
    if (!valid[0] && !valid[1]) fail('neither header is valid (signature or CRC-32C checksum)', 'header', HEADER_OFFSETS[0]);
    const current = !valid[1] ? 0 : !valid[0] ? 1 : headers[1].sequenceNumber > headers[0].sequenceNumber ? 1 : 0;
    const header = headers[current];
    const ho = HEADER_OFFSETS[current];
    if (header.version !== 1) fail(`unsupported format version ${header.version}`, 'header', ho + 66, 'EFORMAT');

    // The log: a non-empty one is replayed before anything else is trusted.
    const logDirty = !isZeroGuid(header.logGuid);
    const logBad = header.logOffset < FIRST_REGION || header.logOffset % MIB !== 0 || header.logLength % MIB !== 0
      || header.logOffset + header.logLength > size;
    if (logBad && (logDirty || header.logLength !== 0)) {
      const what = `log of ${header.logLength} bytes at offset ${header.logOffset} is not 1 MiB aligned or lies outside the file (${size} bytes)`;
      if (logDirty) fail(what, 'header', ho + 68);
      warnings.push(what);
    }
    let overlay: LogWrite[] = [];
    let replayedEntries = 0;
    if (logDirty) {
      if (header.logLength > MAX_LOG_LENGTH) fail(`log of ${header.logLength} bytes is larger than ${MAX_LOG_LENGTH} bytes`, 'header', ho + 68, 'EUNSUPPORTED');
      if (header.logLength === 0) fail('the log GUID is set but the log is empty', 'header', ho + 48);
      const log = await file.readExact(header.logOffset, header.logLength, 'log');
      let seq;
      try {
        seq = findActiveSequence(log, header.logGuid);
      } catch (e) {
        if (e instanceof LogError) fail(e.message, 'log', header.logOffset + e.position);
        throw e;
      }
      if (seq) {
        const last = seq.entries[seq.entries.length - 1].header;
        for (const e of seq.entries) {
          const at = header.logOffset + e.position;
          if (e.header.flushedFileOffset > size) fail(`log entry says the file held ${e.header.flushedFileOffset} bytes but it has ${size} (truncated)`, 'log entry', at + 48);
          if (e.header.lastFileOffset > size + MAX_LOG_FILE_GROWTH) fail(`log entry last file offset ${e.header.lastFileOffset} is far past the end of the file (${size} bytes)`, 'log entry', at + 56);
          for (const w of e.writes) {
            if (w.fileOffset < FIRST_REGION || w.fileOffset + w.length > Math.max(size, last.lastFileOffset)) {
              fail(`log entry writes ${w.length} bytes at offset ${w.fileOffset}, outside the file's regions`, 'log entry', at);
            }
            if (w.fileOffset < header.logOffset + header.logLength && header.logOffset < w.fileOffset + w.length) {
              fail(`log entry writes into the log itself (offset ${w.fileOffset})`, 'log entry', at);
            }
          }
          overlay.push(...e.writes);
        }
        replayedEntries = seq.entries.length;
      }
    }

    const reader = new OverlayReader(file, overlay);
    const headersOut: Array<Header | null> = headers.map((h, i) => (valid[i] ? h : null));
    const inMemory = overlay.length > 0 && (!file.writable || replayInMemory);
    if (logDirty && file.writable && !replayInMemory) {
      // Writable open: replay into the file, flush, then mark the log empty (spec: before any other write).
      for (const w of overlay) await writeZerosOrData(file, w);
      await file.sync();
      const next = await updateHeaders(file, headersOut, current, { ...header, logGuid: Buffer.alloc(16), fileWriteGuid: newGuid() });
      headersOut.splice(0, 2, ...next.headers);
      overlay = [];
      reader.overlay.length = 0;
      warnings.push(`replayed ${replayedEntries} log entr${replayedEntries === 1 ? 'y' : 'ies'} into the file`);
      return VhdxImage.fromFile(path, file, linkOnly, false).then((img) => { img.warnings.unshift(...warnings); return img; });
    }
    if (inMemory) warnings.push(`the log holds ${replayedEntries} entr${replayedEntries === 1 ? 'y' : 'ies'} not yet applied; replayed in memory (the file is unchanged)`);

    // Region tables, through the replayed log.
    const tables: RegionTable[] = [];
    for (const o of REGION_TABLE_OFFSETS) tables.push(parseRegionTable(await reader.readExact(o, REGION_TABLE_SIZE, 'region table', path)));
    const tValid = tables.map(isRegionTableValid);
    tables.forEach((t, i) => {
      if (!tValid[i]) {
        warnings.push(t.signature !== 'regi'
          ? `region table ${i + 1} at offset ${REGION_TABLE_OFFSETS[i]} has no 'regi' signature`
          : t.entryCount > 2047 ? `region table ${i + 1} at offset ${REGION_TABLE_OFFSETS[i]} has ${t.entryCount} entries (more than 2047)`
            : `region table ${i + 1} at offset ${REGION_TABLE_OFFSETS[i]} has a wrong checksum (stored 0x${hex32(t.checksum)}, computed 0x${hex32(t.computedChecksum)})`);
      }
    });
    if (!tValid[0] && !tValid[1]) fail('neither region table is valid (signature, entry count or CRC-32C checksum)', 'region table', REGION_TABLE_OFFSETS[0]);
    const ti = tValid[0] ? 0 : 1;
    const table = tables[ti];
    const to = REGION_TABLE_OFFSETS[ti];
    let batRegion: RegionTableEntry | undefined;
    let metaRegion: RegionTableEntry | undefined;
    const claimed: Array<{ name: string; start: number; end: number }> = [];
    if (header.logLength > 0 && !logBad) claimed.push({ name: 'the log', start: header.logOffset, end: header.logOffset + header.logLength });
    for (const e of table.entries) {
      const name = e.guid === BAT_REGION_GUID ? 'BAT region' : e.guid === METADATA_REGION_GUID ? 'metadata region' : `region ${e.guid}`;
      if (e.guid !== BAT_REGION_GUID && e.guid !== METADATA_REGION_GUID) {
        if (e.required) fail(`unknown required region ${e.guid}`, 'region table entry', to + e.at, 'EUNSUPPORTED');
        continue;
      }
      if ((e.guid === BAT_REGION_GUID && batRegion) || (e.guid === METADATA_REGION_GUID && metaRegion)) fail(`${name} is listed twice`, 'region table entry', to + e.at);
      if (e.fileOffset < FIRST_REGION || e.fileOffset % MIB !== 0 || e.length === 0 || e.length % MIB !== 0) {
        fail(`${name} at offset ${e.fileOffset} (${e.length} bytes) is not 1 MiB aligned or lies in the first megabyte`, 'region table entry', to + e.at + 16);
      }
      if (e.fileOffset + e.length > size) fail(`${name} (${e.fileOffset}..${e.fileOffset + e.length}) runs past the end of the file (${size} bytes)`, 'region table entry', to + e.at + 16);
      const hit = claimed.find((c) => e.fileOffset < c.end && c.start < e.fileOffset + e.length);
      if (hit) fail(`${name} (${e.fileOffset}..${e.fileOffset + e.length}) overlaps ${hit.name} (${hit.start}..${hit.end})`, 'region table entry', to + e.at + 16);
      claimed.push({ name, start: e.fileOffset, end: e.fileOffset + e.length });
      if (e.guid === BAT_REGION_GUID) batRegion = e; else metaRegion = e;
    }
    if (!batRegion) fail('the region table has no BAT region', 'region table', to);
    if (!metaRegion) fail('the region table has no metadata region', 'region table', to);
    if (tValid[0] && tValid[1] && !tables[0].entries.every((e, i) => JSON.stringify(e) === JSON.stringify(tables[1].entries[i]))) {
      warnings.push('the two region tables differ; using the first');
    }

    // Metadata table and items.
    const mo = metaRegion!.fileOffset;
    const mtBytes = await reader.readExact(mo, METADATA_TABLE_SIZE, 'metadata table', path);
    const mt = parseMetadataTable(mtBytes);
    const rawItems = new Map<string, Buffer>();
    if (mt.signature !== METADATA_TABLE_SIGNATURE) fail(`no 'metadata' signature`, 'metadata table', mo);
    if (mt.entryCount > MAX_METADATA_ENTRIES) fail(`${mt.entryCount} entries (more than ${MAX_METADATA_ENTRIES})`, 'metadata table', mo + 10);
    const known = new Set<string>(Object.values(METADATA_ITEM));
    const seen = new Set<string>();
    for (const e of mt.entries) {
      if (seen.has(e.itemId)) fail(`metadata item ${e.itemId} is listed twice`, 'metadata table entry', mo + e.at);
      seen.add(e.itemId);
      if (!known.has(e.itemId) && e.isRequired) fail(`unknown required metadata item ${e.itemId}`, 'metadata table entry', mo + e.at, 'EUNSUPPORTED');
      if (e.length > 0 && (e.offset < METADATA_TABLE_SIZE || e.offset + e.length > metaRegion!.length)) {
        fail(`item ${e.itemId} (${e.offset}, ${e.length} bytes) lies outside the metadata region`, 'metadata table entry', mo + e.at + 16);
      }
    }
    const item = async (id: string, min: number, required: boolean): Promise<Buffer | null> => {
      const e = mt.entries.find((x) => x.itemId === id);
      if (!e) {
        if (required) fail(`the required metadata item ${itemName(id)} is missing`, 'metadata table', mo);
        return null;
      }
      if (e.length < min || e.length > MAX_METADATA_ITEM) fail(`${itemName(id)} item has ${e.length} bytes (expected ${min === e.length ? '' : 'at least '}${min})`, 'metadata table entry', mo + e.at + 20);
      const bytes = await reader.readExact(mo + e.offset, e.length, itemName(id), path);
      rawItems.set(id, bytes);
      return bytes;
    };
    const itemOffset = (id: string) => mo + (mt.entries.find((x) => x.itemId === id)?.offset ?? 0);
    const fileParameters = parseFileParameters((await item(METADATA_ITEM.fileParameters, FILE_PARAMETERS_SIZE, true))!);
    if (!isValidBlockSize(fileParameters.blockSize)) fail(`block size ${fileParameters.blockSize} is not a power of two from 1 MiB to 256 MiB`, 'file parameters', itemOffset(METADATA_ITEM.fileParameters));
    const logicalSectorSize = parseSectorSize((await item(METADATA_ITEM.logicalSectorSize, SECTOR_SIZE_ITEM_SIZE, true))!);
    if (!isValidSectorSize(logicalSectorSize)) fail(`logical sector size ${logicalSectorSize} is neither 512 nor 4096`, 'logical sector size', itemOffset(METADATA_ITEM.logicalSectorSize));
    const physicalSectorSize = parseSectorSize((await item(METADATA_ITEM.physicalSectorSize, SECTOR_SIZE_ITEM_SIZE, true))!);
    if (!isValidSectorSize(physicalSectorSize)) warnings.push(`physical sector size ${physicalSectorSize} is neither 512 nor 4096`);
    const vsz = parseVirtualDiskSize((await item(METADATA_ITEM.virtualDiskSize, VIRTUAL_DISK_SIZE_SIZE, true))!);
    if (vsz === 0n || vsz > BigInt(MAX_VHDX_VIRTUAL_SIZE) || vsz % BigInt(logicalSectorSize) !== 0n) {
      fail(`virtual disk size ${vsz} is not a positive multiple of the logical sector size up to 64 TiB`, 'virtual disk size', itemOffset(METADATA_ITEM.virtualDiskSize));
    }
    const virtualSize = Number(vsz);
    const p83 = await item(METADATA_ITEM.page83Data, PAGE83_DATA_SIZE, false);
    if (!p83) warnings.push('no page 83 data (virtual disk identifier) item');
    const page83 = p83 ? parsePage83Data(p83) : '00000000-0000-0000-0000-000000000000';
    let parentLocator: ParentLocator | null = null;
    if (fileParameters.hasParent) {
      const pl = await item(METADATA_ITEM.parentLocator, 20, true);
      try {
        parentLocator = parseParentLocator(pl!);
      } catch (e) {
        if (e instanceof ParentLocatorError) fail(e.message, 'parent locator', itemOffset(METADATA_ITEM.parentLocator) + e.at);
        throw e;
      }
      warnings.push(...parentLocator!.problems.map((p) => `parent locator: ${p}`));
      if (!locatorValue(parentLocator!, 'parent_linkage')) warnings.push('parent locator has no parent_linkage');
    }

    // The BAT, its size checked against the region before anything is allocated.
    const geo = batGeometry(virtualSize, fileParameters.blockSize, logicalSectorSize, fileParameters.hasParent);
    if (geo.totalEntries > MAX_BAT_ENTRIES) fail(`the BAT would need ${geo.totalEntries} entries (more than ${MAX_BAT_ENTRIES})`, 'BAT region', batRegion!.fileOffset, 'EUNSUPPORTED');
    if (geo.totalEntries * BAT_ENTRY_SIZE > batRegion!.length) {
      fail(`the BAT needs ${geo.totalEntries} entries (${geo.totalEntries * BAT_ENTRY_SIZE} bytes) but its region holds ${batRegion!.length} bytes`, 'region table entry', to + batRegion!.at + 24);
    }
    let bat: Bat | null = null;
    if (!linkOnly) {
      // In 1 MiB pieces through one buffer, page by page into the table (see Bat on why not one read).
      bat = new Bat(geo.totalEntries);
      const chunk = Buffer.alloc(Math.min(MIB, geo.totalEntries * BAT_ENTRY_SIZE));
      const pageBytes = BAT_PAGE_ENTRIES * BAT_ENTRY_SIZE;
      for (let i = 0; i < geo.totalEntries; i += chunk.length / BAT_ENTRY_SIZE) {
        const n = Math.min(chunk.length / BAT_ENTRY_SIZE, geo.totalEntries - i);
        const part = chunk.subarray(0, n * BAT_ENTRY_SIZE);
        const got = await reader.read(part, batRegion!.fileOffset + i * BAT_ENTRY_SIZE);
        if (got < part.length) fail('file ends inside the BAT', 'BAT', batRegion!.fileOffset + i * BAT_ENTRY_SIZE, 'ETRUNC');
        for (let at = 0; at < part.length; at += pageBytes) bat.loadPage((i * BAT_ENTRY_SIZE + at) / pageBytes, part.subarray(at, at + pageBytes));
      }
    }
    const layout: VhdxLayout = {
      raw: {
        headers: HEADER_OFFSETS.map((o) => Buffer.from(head.subarray(o, o + HEADER_SIZE))),
        regionTables: REGION_TABLE_OFFSETS.map((o) => Buffer.from(head.subarray(o, o + 16 + 32 * 8))),
        metadataTable: Buffer.from(mtBytes.subarray(0, 32 + 32 * Math.min(mt.entries.length, 127))),
        items: rawItems,
      },
      pendingLog: inMemory ? overlay : [],
      fileSize: size, creator, headers: headersOut, currentHeader: current, regionTables: tables, currentRegionTable: ti,
      bat: batRegion!, metadata: metaRegion!, metadataTable: mt, replayedEntries, replayedInMemory: inMemory,
    };
    const img = new VhdxImage(path, file, reader, header, layout, bat, {
      fileParameters, virtualSize, logicalSectorSize, physicalSectorSize, page83, parentLocator,
    }, warnings);
    if (bat) img.checkStates();
    return img;
  }

  /** Unknown block states are damage: warned once here, refused when the block is read. */
  private checkStates(): void {
    const { bad, firstBad } = this.bat!.scan(this.blockCount, this.geometry.chunkRatio);
    if (bad > 0) this.warnings.push(`${bad} BAT entr${bad === 1 ? 'y has' : 'ies have'} an unknown state (first: entry ${firstBad} at offset ${this.layout.bat.fileOffset + firstBad * 8})`);
  }

  /** Payload blocks per state (index = state 0–7), counted in one pass over the BAT. */
  payloadStateCounts(): Uint32Array {
    if (!this.bat) {
      const c = new Uint32Array(8);
      c[this.diskType === 'fixed' ? PayloadBlockState.FullyPresent : PayloadBlockState.NotPresent] = this.blockCount;
      return c;
    }
    this.stateCountCache ??= this.bat.scan(this.blockCount, this.geometry.chunkRatio).byState;
    return this.stateCountCache;
  }

  private stateCountCache: Uint32Array | null = null;

  private batEntryOffset(index: number): number {
    return this.layout.bat.fileOffset + index * BAT_ENTRY_SIZE;
  }

  /** State of a payload block (blocks past the table read as not present). */
  blockState(block: number): number {
    if (!this.bat) return this.diskType === 'fixed' ? PayloadBlockState.FullyPresent : PayloadBlockState.NotPresent;
    const i = payloadEntryIndex(block, this.geometry.chunkRatio);
    return i < this.bat.length ? this.bat.state(i) : PayloadBlockState.NotPresent;
  }

  /** Whether this layer supplies the block's bytes itself (data or zeros) rather than its parent. */
  private holdsBlock(state: number): boolean {
    if (state === PayloadBlockState.FullyPresent || state === PayloadBlockState.PartiallyPresent) return true;
    // Zero and unmapped blocks of a differencing image read as zeros, hiding the parent.
    return this.diskType === 'differencing' && (state === PayloadBlockState.Zero || state === PayloadBlockState.Unmapped);
  }

  isBlockAllocated(block: number): boolean {
    return this.holdsBlock(this.blockState(block));
  }

  nextAllocatedBlock(from: number): number {
    if (!this.bat) return this.diskType === 'fixed' && from < this.blockCount ? Math.max(0, from) : -1;
    // Straight over the words: the payload entry of block b is b + floor(b / ratio).
    const ratio = this.geometry.chunkRatio;
    const entries = this.bat.length;
    const blocks = this.blockCount;
    let held = 0;
    for (let st = 0; st < 8; st++) if (this.holdsBlock(st)) held |= 1 << st;
    for (let b = Math.max(0, from); b < blocks;) {
      const i = payloadEntryIndex(b, ratio);
      // Zero entries (not present) are skipped natively; `nz` may land on a sector-bitmap entry, whose
      // block number below is that of the next payload entry.
      const nz = this.bat.nextNonZero(i);
      if (nz >= entries) return -1;
      if (nz > i) { b = nz - Math.floor(nz / (ratio + 1)); continue; }
      if ((held >> this.bat.state(i)) & 1) return b;
      b++;
    }
    return -1;
  }

  allocatedBlockCount(): number {
    // Counted from the per-state totals (blocks only change state through setBatEntry, which clears them).
    const c = this.payloadStateCounts();
    let n = 0;
    for (let st = 0; st < 8; st++) if (this.holdsBlock(st)) n += c[st];
    return n;
  }

  /** File offset of a present block's data, checked against the file and the fixed regions. */
  private dataOffset(block: number): number {
    const i = payloadEntryIndex(block, this.geometry.chunkRatio);
    const off = this.bat!.offset(i);
    this.checkExtent(off, this.blockSize, `block ${block}`, i);
    return off;
  }

  /**
   * dataOffset for a write: a block whose entry points into the log, the BAT or the metadata region
   * is refused, since writing there would corrupt that structure (and the log's next entry would
   * overwrite the data). Reads of such a block are left to checkExtent (check reports the overlap).
   */
  private writableDataOffset(block: number): number {
    const off = this.dataOffset(block);
    const l = this.layout;
    const fixed: Array<[string, number, number]> = [
      ['the log', this.header.logOffset, this.header.logLength],
      ['the BAT region', l.bat.fileOffset, l.bat.length],
      ['the metadata region', l.metadata.fileOffset, l.metadata.length],
    ];
    for (const [name, start, length] of fixed) {
      if (off < start + length && start < off + this.blockSize) {
        const i = payloadEntryIndex(block, this.geometry.chunkRatio);
        throw new DiskImageError(this.path, `block ${block} (${off}..${off + this.blockSize}) lies in ${name}: refusing to write into it`, 'BAT entry', this.batEntryOffset(i), 'ECORRUPT');
      }
    }
    return off;
  }

  private checkExtent(off: number, length: number, what: string, index: number): void {
    const limit = Math.max(this.file.size, this.layout.replayedInMemory ? this.maxOverlayEnd() : 0);
    if (off < FIRST_REGION) {
      throw new DiskImageError(this.path, `${what} points at offset ${off}, inside the headers`, 'BAT entry', this.batEntryOffset(index), 'ECORRUPT');
    }
    if (off + length > limit) {
      throw new DiskImageError(this.path, `${what} (${off}..${off + length}) runs past the end of the file (${limit} bytes)`, 'BAT entry', this.batEntryOffset(index), 'ECORRUPT');
    }
  }

  private maxOverlayEnd(): number {
    let m = 0;
    for (const w of this.reader.overlay) m = Math.max(m, w.fileOffset + w.length);
    return m;
  }

  /** The chunk's 1 MiB sector bitmap, or null when its entry says not present. */
  private async chunkBitmap(chunk: number): Promise<Buffer | null> {
    const cached = this.bitmapCache.get(chunk);
    if (cached) return cached;
    const i = sectorBitmapEntryIndex(chunk, this.geometry.chunkRatio);
    if (i >= this.bat!.length || this.bat!.state(i) !== SectorBitmapState.Present) return null;
    const off = this.bat!.offset(i);
    this.checkExtent(off, SECTOR_BITMAP_BLOCK_SIZE, `sector bitmap block ${chunk}`, i);
    const b = await this.reader.readExact(off, SECTOR_BITMAP_BLOCK_SIZE, 'sector bitmap block', this.path);
    if (this.bitmapCache.size >= VhdxImage.BITMAP_CACHE_ENTRIES) this.bitmapCache.delete(this.bitmapCache.keys().next().value!);
    this.bitmapCache.set(chunk, b);
    return b;
  }

  /** The block's sector bitmap as the interface gives it: most significant bit first. */
  async readBlockBitmap(block: number): Promise<Uint8Array | null> {
    const own = await this.ownBitmap(block);
    if (!own) return null;
    const out = Buffer.alloc(own.length);
    for (let i = 0; i < own.length; i++) out[i] = REVERSED_BITS[own[i]];
    return out;
  }

  /** File offset of the block's data, or null when this file holds no data for it. */
  blockFileOffset(block: number): number | null {
    const state = this.blockState(block);
    if (state !== PayloadBlockState.FullyPresent && state !== PayloadBlockState.PartiallyPresent) return null;
    return this.bat!.offset(payloadEntryIndex(block, this.geometry.chunkRatio));
  }

  /** The block's sector bitmap as VHDX stores it (least significant bit first). */
  private async ownBitmap(block: number): Promise<Buffer | null> {
    const state = this.blockState(block);
    if (!this.holdsBlock(state)) return null;
    const bytes = this.sectorsPerBlock / 8;
    if (state !== PayloadBlockState.PartiallyPresent || this.diskType !== 'differencing') return Buffer.alloc(bytes, 0xff);
    const chunk = Math.floor(block / this.geometry.chunkRatio);
    const bm = await this.chunkBitmap(chunk);
    if (!bm) return Buffer.alloc(bytes);
    const from = (block % this.geometry.chunkRatio) * bytes;
    return Buffer.from(bm.subarray(from, from + bytes));
  }

  async runs(offset: number, length: number): Promise<LayerRun[]> {
    const out: LayerRun[] = [];
    const push = (o: number, l: number, present: boolean) => {
      if (l <= 0) return;
      const last = out[out.length - 1];
      if (last && last.present === present && last.offset + last.length === o) last.length += l;
      else out.push({ offset: o, length: l, present });
    };
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const block = Math.floor(pos / this.blockSize);
      const blockStart = block * this.blockSize;
      const pieceEnd = Math.min(blockStart + this.blockSize, end);
      const state = this.blockState(block);
      if (state === PayloadBlockState.PartiallyPresent && this.diskType === 'differencing') {
        const bitmap = (await this.ownBitmap(block))!;
        const ss = this.sectorSize;
        const sEnd = Math.ceil((pieceEnd - blockStart) / ss);
        let s = Math.floor((pos - blockStart) / ss);
        while (s < sEnd) {
          const set = testBit(bitmap, s);
          const n = bitRunLength(bitmap, s, sEnd, set);
          const rs = Math.max(blockStart + s * ss, pos);
          const re = Math.min(blockStart + (s + n) * ss, pieceEnd);
          push(rs, re - rs, set);
          s += n;
        }
      } else if (state > PayloadBlockState.Unmapped && state !== PayloadBlockState.FullyPresent && state !== PayloadBlockState.PartiallyPresent) {
        throw new DiskImageError(this.path, `block ${block} has unknown state ${state}`, 'BAT entry', this.batEntryOffset(payloadEntryIndex(block, this.geometry.chunkRatio)), 'ECORRUPT');
      } else {
        push(pos, pieceEnd - pos, this.holdsBlock(state));
      }
      pos = pieceEnd;
    }
    return out;
  }

  async readOwn(offset: number, target: Buffer): Promise<void> {
    let done = 0;
    while (done < target.length) {
      const pos = offset + done;
      const block = Math.floor(pos / this.blockSize);
      const inBlock = pos - block * this.blockSize;
      const n = Math.min(this.blockSize - inBlock, target.length - done);
      const slice = target.subarray(done, done + n);
      const state = this.blockState(block);
      if (state === PayloadBlockState.FullyPresent || state === PayloadBlockState.PartiallyPresent) {
        const at = this.dataOffset(block) + inBlock;
        const got = await this.reader.read(slice, at);
        // A block inside the file's size but past its written end (a sparse tail) reads as zeros.
        if (got < n) slice.fill(0, got);
      } else if (state <= PayloadBlockState.Unmapped) {
        slice.fill(0);
      } else {
        throw new DiskImageError(this.path, `block ${block} has unknown state ${state}`, 'BAT entry', this.batEntryOffset(payloadEntryIndex(block, this.geometry.chunkRatio)), 'ECORRUPT');
      }
      done += n;
    }
  }

  // ---- Writing ----

  /**
   * The first change after open: new FileWriteGuid and DataWriteGuid (the spec asks for both
   * before the first modification) and a fresh LogGuid, so entries of earlier sessions never count.
   */
  private async beginSession(dataChange = true): Promise<void> {
    if (this.session && (this.session.dataGuidRenewed || !dataChange)) return;
    const logGuid = this.session?.logGuid ?? newGuid();
    const next = await updateHeaders(this.file, this.layout.headers, this.layout.currentHeader, {
      ...this.header,
      fileWriteGuid: this.session ? this.header.fileWriteGuid : newGuid(),
      dataWriteGuid: dataChange ? this.nextDataWriteGuid ?? newGuid() : this.header.dataWriteGuid,
      logGuid,
    });
    this.layout.headers = next.headers;
    this.layout.currentHeader = next.current;
    (this as { header: Header }).header = next.headers[next.current]!;
    if (this.session) this.session.dataGuidRenewed = dataChange;
    else this.session = { logGuid, sequence: 1n, position: 0, dataGuidRenewed: dataChange };
  }

  /**
   * Writes metadata sectors through the log as the spec intends: the entry, flush, the sectors in
   * place, flush. A kill at any point leaves either the old metadata or a log whose replay
   * completes the change.
   */
  private async commitMetadata(sectors: Map<number, Buffer>, dataDurable = false): Promise<void> {
    if (sectors.size === 0) return;
    const s = this.session!;
    const len = this.header.logLength;
    const writes: LogWrite[] = [...sectors.entries()].sort((a, b) => a[0] - b[0]).map(([fileOffset, data]) => ({ fileOffset, length: LOG_SECTOR_SIZE, data }));
    // Payload written so far must be durable before metadata points at it (staged writes: the caller's barrier did it).
    if (!dataDurable) await this.file.sync();
    const entry = serializeLogEntry({
      writes, sequenceNumber: s.sequence, logGuid: s.logGuid, tail: s.position,
      flushedFileOffset: this.file.size, lastFileOffset: this.file.size,
    });
    if (entry.length > len / 2) {
      throw new DiskImageError(this.path, `a metadata update of ${entry.length} bytes does not fit the ${len}-byte log`, 'log', this.header.logOffset, 'EINTERNAL');
    }
    const first = Math.min(entry.length, len - s.position);
    await this.file.writeAt(entry.subarray(0, first), this.header.logOffset + s.position);
    if (first < entry.length) await this.file.writeAt(entry.subarray(first), this.header.logOffset);
    await this.file.sync();
    for (const w of writes) await this.file.writeAt(w.data!, w.fileOffset);
    await this.file.sync();
    s.position = (s.position + entry.length) % len;
    s.sequence++;
  }

  /** Most 4 KiB sectors one log entry carries (the log also holds the entry's descriptor sectors). */
  private get maxSectorsPerEntry(): number {
    // At most half the ring (less descriptor sectors): the next entry can then never overwrite the
    // newest complete one, which a crash may need to replay.
    return Math.max(1, Math.floor(this.header.logLength / LOG_SECTOR_SIZE / 2) - 6);
  }

  private async metadataSector(pending: Map<number, Buffer>, fileOffset: number): Promise<Buffer> {
    const at = fileOffset - (fileOffset % LOG_SECTOR_SIZE);
    let s = pending.get(at);
    if (!s) {
      // A sector a staged write changed starts from that change (the file has it only once committed).
      const staged = this.unsettled.get(at);
      if (staged) {
        s = Buffer.from(staged);
      } else {
        s = Buffer.alloc(LOG_SECTOR_SIZE);
        const got = await this.reader.read(s, at);
        if (got < LOG_SECTOR_SIZE) s.fill(0, got);
      }
      pending.set(at, s);
    }
    return s;
  }

  private async setBatEntry(pending: Map<number, Buffer>, index: number, state: number, fileOffset: number): Promise<void> {
    const at = this.batEntryOffset(index);
    const sector = await this.metadataSector(pending, at);
    encodeEntry(state, fileOffset).copy(sector, at % LOG_SECTOR_SIZE);
    this.bat!.set(index, state, fileOffset);
    this.stateCountCache = null;
  }

  /** Extends the file by `length` bytes at the next 1 MiB boundary (a hole: reads as zeros). */
  private async appendSpace(length: number): Promise<number> {
    await this.file.refreshSize();
    const at = Math.ceil(Math.max(this.file.size, this.reservedEnd) / MIB) * MIB;
    if (at + length > 2 ** 52) throw new DiskImageError(this.path, 'file too large for BAT offsets', 'BAT', this.layout.bat.fileOffset, 'ERANGE');
    await this.file.truncate(at + length);
    return at;
  }

  async write(offset: number, data: Buffer, below: ReadBelow): Promise<void> {
    if (!this.file.writable) throw new DiskImageError(this.path, 'image is opened read-only', undefined, undefined, 'EREADONLY');
    if (!this.bat) throw new DiskImageError(this.path, 'image was opened without its BAT', undefined, undefined, 'EINTERNAL');
    if (offset < 0 || offset + data.length > this.virtualSize) {
      throw new DiskImageError(this.path, `write of ${data.length} bytes at ${offset} goes past the virtual size ${this.virtualSize}`, undefined, undefined, 'ERANGE');
    }
    if (data.length === 0) return;
    await this.beginSession();
    const pending = new Map<number, Buffer>();
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const block = Math.floor(pos / this.blockSize);
      const inBlock = pos - block * this.blockSize;
      const n = Math.min(this.blockSize - inBlock, data.length - done);
      await this.writeInBlock(block, inBlock, data.subarray(done, done + n), below, pending);
      done += n;
      // One block adds at most a BAT sector, a bitmap BAT sector and 16 bitmap sectors (256 MiB blocks).
      if (pending.size >= this.maxSectorsPerEntry - 24) {
        await this.commitMetadata(pending);
        pending.clear();
      }
    }
    await this.commitMetadata(pending);
  }

  private async writeInBlock(block: number, inBlock: number, piece: Buffer, below: ReadBelow, pending: Map<number, Buffer>): Promise<void> {
    const ratio = this.geometry.chunkRatio;
    const index = payloadEntryIndex(block, ratio);
    const state = this.blockState(block);
    const blockStart = block * this.blockSize;
    const ss = this.sectorSize;
    const s0 = Math.floor(inBlock / ss);
    const s1 = Math.ceil((inBlock + piece.length) / ss);
    const alignedStart = s0 * ss;
    const whole = inBlock === 0 && piece.length === this.blockSize;

    const differencing = this.diskType === 'differencing';
    if (state === PayloadBlockState.FullyPresent || (state === PayloadBlockState.PartiallyPresent && !differencing)) {
      await this.file.writeAt(piece, this.writableDataOffset(block) + inBlock);
      return;
    }
    // Whole sectors: partial ones are completed from this layer's current view.
    let sectors = piece;
    if (differencing && (inBlock % ss !== 0 || (inBlock + piece.length) % ss !== 0)) {
      sectors = Buffer.alloc((s1 - s0) * ss);
      await readLayerView(this, blockStart + alignedStart, sectors.subarray(0, ss), below);
      await readLayerView(this, blockStart + (s1 - 1) * ss, sectors.subarray(sectors.length - ss), below);
      piece.copy(sectors, inBlock - alignedStart);
    }
    if (state === PayloadBlockState.PartiallyPresent && differencing) {
      const at = this.writableDataOffset(block);
      await this.file.writeAt(sectors, at + alignedStart);
      await this.markSectors(block, s0, s1 - s0, pending);
      return;
    }
    if (state > PayloadBlockState.Unmapped && state !== PayloadBlockState.PartiallyPresent) {
      throw new DiskImageError(this.path, `block ${block} has unknown state ${state}; refusing to write into it`, 'BAT entry', this.batEntryOffset(index), 'ECORRUPT');
    }
    // A new block: its data first (the rest of a fresh block is a hole of zeros), the BAT after.
    const at = await this.appendSpace(this.blockSize);
    if (!differencing || whole || state === PayloadBlockState.Zero || state === PayloadBlockState.Unmapped) {
      // Not differencing (or a differencing block that read as zeros): the rest of the block reads as zeros, as before.
      await this.file.writeAt(piece, at + inBlock);
      await this.setBatEntry(pending, index, PayloadBlockState.FullyPresent, at);
      return;
    }
    await this.file.writeAt(sectors, at + alignedStart);
    await this.setBatEntry(pending, index, PayloadBlockState.PartiallyPresent, at);
    await this.markSectors(block, s0, s1 - s0, pending);
  }

  /**
   * Merge's bulk path (see DiskImage.stageWrites): the batch's new blocks get one extension of the
   * file and their data in as few vectored writes as lie back to back; their BAT entries go into
   * one log entry at commit, once the caller has made the data durable (instead of a flush and a
   * log entry per write). Blocks already present (and, outside differencing images, partly present)
   * are written in place. Partial sectors and blocks whose sector bitmap would change go to write().
   */
  async stageWrites(pieces: WritePiece[], _below: ReadBelow): Promise<CommitStaged | null> {
    if (!this.file.writable || !this.bat) return null;
    const ss = this.sectorSize;
    const differencing = this.diskType === 'differencing';
    const plans = planStagedBlocks(pieces, { sectorSize: ss, blockSize: this.blockSize, virtualSize: this.virtualSize }, (block, inBlock, n) => {
      const state = this.blockState(block);
      const whole = inBlock === 0 && n === this.blockSize;
      if (state === PayloadBlockState.FullyPresent || (state === PayloadBlockState.PartiallyPresent && !differencing)) return 'inPlace';
      const fresh = state <= PayloadBlockState.Unmapped && (!differencing || whole || state === PayloadBlockState.Zero || state === PayloadBlockState.Unmapped);
      return fresh ? 'fresh' : null;
    });
    if (!plans) return null;
    const fresh = plans.filter((x) => x.fresh);
    // Every new block's BAT entry must fit one log entry (with room to spare, as write() keeps).
    if (fresh.length > this.maxSectorsPerEntry - 24) return null;
    if (plans.length === 0) return this.stagedMetadata.add({ sectors: new Map(), end: 0 }); // still queued: committing it commits the stages before it
    await this.beginSession();
    for (const plan of plans) {
      if (plan.fresh) continue;
      // A block staged earlier may still end past the file (its later pieces are being written).
      const own = this.bat.offset(payloadEntryIndex(plan.block, this.geometry.chunkRatio));
      const at = own >= MIB && own + this.blockSize <= this.reservedEnd ? own : this.writableDataOffset(plan.block);
      for (const part of plan.parts) await writeInChunks(this.file, [part.data], at + part.inBlock);
    }
    if (fresh.length === 0) return this.stagedMetadata.add({ sectors: new Map(), end: 0 });
    // The new space is a hole (zeros) until written: only the parts go in, runs of them in one writev.
    await this.file.refreshSize();
    const start = Math.ceil(Math.max(this.file.size, this.reservedEnd) / MIB) * MIB;
    const end = start + fresh.length * this.blockSize;
    if (end > 2 ** 52) throw new DiskImageError(this.path, 'file too large for BAT offsets', 'BAT', this.layout.bat.fileOffset, 'ERANGE');
    this.reservedEnd = end;
    let run: { at: number; end: number; parts: Buffer[] } | null = null;
    const flushRun = async () => { if (run) await writeInChunks(this.file, run.parts, run.at); run = null; };
    const pending = new Map<number, Buffer>();
    for (let i = 0; i < fresh.length; i++) {
      const blockAt = start + i * this.blockSize;
      for (const part of fresh[i].parts) {
        const at = blockAt + part.inBlock;
        if (run && run.end === at && run.parts.length < 512) run.parts.push(part.data);
        else { await flushRun(); run = { at, end: at, parts: [part.data] }; }
        run.end = at + part.data.length;
      }
      await this.setBatEntry(pending, payloadEntryIndex(fresh[i].block, this.geometry.chunkRatio), PayloadBlockState.FullyPresent, blockAt);
    }
    await flushRun();
    for (const [at, sector] of pending) this.unsettled.set(at, sector);
    return this.stagedMetadata.add({ sectors: pending, end });
  }

  /**
   * Metadata sectors of staged writes: every stage waiting goes into one log entry (a later stage's
   * copy of a sector includes the earlier changes), split only where the log would overflow.
   */
  private readonly stagedMetadata = new StagedCommits<{ sectors: Map<number, Buffer>; end: number }>(async (stages) => {
    const all = new Map<number, Buffer>();
    for (const stage of stages) for (const [at, sector] of stage.sectors) all.set(at, sector);
    // Every block the entries point at lies wholly inside the file first (a tail never written is a hole).
    const end = Math.max(...stages.map((x) => x.end));
    if (end > (await this.file.refreshSize())) await this.file.truncate(end);
    const limit = Math.max(1, this.maxSectorsPerEntry - 24);
    const entries = [...all.entries()];
    for (let i = 0; i < entries.length; i += limit) await this.commitMetadata(new Map(entries.slice(i, i + limit)), true);
    for (const [at, sector] of all) if (this.unsettled.get(at) === sector) this.unsettled.delete(at);
  });

  /** Sets the block's sectors in its chunk's bitmap (allocating the bitmap block first if needed). */
  private async markSectors(block: number, s0: number, count: number, pending: Map<number, Buffer>): Promise<void> {
    const ratio = this.geometry.chunkRatio;
    const chunk = Math.floor(block / ratio);
    const sbIndex = sectorBitmapEntryIndex(chunk, ratio);
    let bm = await this.chunkBitmap(chunk);
    if (!bm) {
      const at = await this.appendSpace(SECTOR_BITMAP_BLOCK_SIZE);
      await this.setBatEntry(pending, sbIndex, SectorBitmapState.Present, at);
      bm = Buffer.alloc(SECTOR_BITMAP_BLOCK_SIZE);
      this.bitmapCache.set(chunk, bm);
    }
    const first = (block % ratio) * this.sectorsPerBlock + s0;
    let changed = false;
    for (let i = first; i < first + count; i++) if (!testBit(bm, i)) { changed = true; break; }
    if (!changed) return;
    setBitRange(bm, first, count);
    const base = this.bat!.offset(sbIndex);
    const fromByte = first >>> 3;
    const toByte = (first + count - 1) >>> 3;
    for (let sec = fromByte - (fromByte % LOG_SECTOR_SIZE); sec <= toByte; sec += LOG_SECTOR_SIZE) {
      const s = await this.metadataSector(pending, base + sec);
      bm.copy(s, 0, sec, sec + LOG_SECTOR_SIZE);
    }
  }

  async flush(): Promise<void> {
    await this.file.sync();
  }

  /** Marks the log empty again (all entries are applied and flushed), so other tools open the file read-only. */
  async close(): Promise<void> {
    try {
      // A file with no name left (a merged child, deleted before the chain closes) is never opened again.
      if (this.session && this.file.writable && !(await this.file.unlinked())) {
        await this.file.sync();
        const next = await updateHeaders(this.file, this.layout.headers, this.layout.currentHeader, { ...this.header, logGuid: Buffer.alloc(16) });
        this.layout.headers = next.headers;
        this.layout.currentHeader = next.current;
        (this as { header: Header }).header = next.headers[next.current]!;
        this.session = null;
      }
    } finally {
      await this.file.close();
    }
  }

  /** Finds the parent file: relative_path, then absolute_win32_path and volume_path (their file name next to the child as a fallback). */
  resolveParent(): { resolvedPath: string | null; via: string | null; tried: string[] } {
    const tried: string[] = [];
    if (!this.parentLocator) return { resolvedPath: null, via: null, tried: ['not a differencing image'] };
    const dir = nodePath.dirname(nodePath.resolve(this.path));
    const candidates: Array<{ via: string; path: string }> = [];
    const rel = locatorValue(this.parentLocator, 'relative_path');
    if (rel) candidates.push({ via: 'relative_path', path: nodePath.resolve(dir, rel.replace(/\\/g, '/').replace(/^(\.\/)+/, '')) });
    for (const key of ['absolute_win32_path', 'volume_path']) {
      const v = locatorValue(this.parentLocator, key);
      if (!v) continue;
      if (nodePath.isAbsolute(v) && !/^[a-zA-Z]:|^\\\\/.test(v)) candidates.push({ via: key, path: v });
      candidates.push({ via: key, path: nodePath.join(dir, v.split(/[\\/]/).pop() ?? '') });
    }
    for (const c of candidates) {
      try {
        if (statSync(c.path).isFile()) return { resolvedPath: c.path, via: c.via, tried };
        tried.push(`${c.via} -> ${c.path}: not a regular file`);
      } catch {
        tried.push(`${c.via} -> ${c.path}: not found`);
      }
    }
    if (candidates.length === 0) tried.push('the parent locator names no path');
    return { resolvedPath: null, via: null, tried };
  }
}

const MAX_HEADER_SEQUENCE = 0xffff_ffff_ffff_ffffn;

/**
 * Header update as the spec describes: the new header (sequence + 1) goes into the slot not in
 * use, flush; then into the other slot (sequence + 2), flush. A kill at any point leaves at least
 * one valid header, the newest completed one winning by sequence number.
 */
export async function updateHeaders(file: ImageFile, headers: Array<Header | null>, current: number, next: Header): Promise<{ headers: Array<Header | null>; current: number }> {
  let seq = next.sequenceNumber;
  for (const h of headers) if (h && h.sequenceNumber > seq) seq = h.sequenceNumber;
  // Two more numbers are needed; a header at the 64-bit limit (hostile or damaged) cannot be
  // superseded, so nothing is written rather than a header that would lose to the old one.
  if (seq > MAX_HEADER_SEQUENCE - 2n) {
    throw new DiskImageError(file.path, `header sequence number ${seq} is at the 64-bit limit: the headers cannot be updated, so the image is not written`, 'header', HEADER_OFFSETS[current], 'EFORMAT');
  }
  const out = [...headers];
  let slot = 1 - current;
  for (let k = 0; k < 2; k++) {
    seq += 1n;
    const bytes = serializeHeader({ ...next, sequenceNumber: seq });
    await file.writeAt(bytes, HEADER_OFFSETS[slot]);
    await file.sync();
    out[slot] = parseHeader(bytes);
    current = slot;
    slot = 1 - slot;
  }
  return { headers: out, current };
}

async function writeZerosOrData(file: ImageFile, w: LogWrite): Promise<void> {
  if (w.data) { await file.writeAt(w.data, w.fileOffset); return; }
  const zeros = Buffer.alloc(Math.min(w.length, MIB));
  for (let done = 0; done < w.length; done += zeros.length) {
    await file.writeAt(zeros.subarray(0, Math.min(zeros.length, w.length - done)), w.fileOffset + done);
  }
}

/** Each byte's bits in reverse order (VHDX bitmaps are LSB first, the interface's MSB first). */
const REVERSED_BITS = (() => {
  const t = new Uint8Array(256);
  for (let i = 0; i < 256; i++) {
    let r = 0;
    for (let k = 0; k < 8; k++) if (i & (1 << k)) r |= 0x80 >> k;
    t[i] = r;
  }
  return t;
})();

function itemName(id: string): string {
  const e = Object.entries(METADATA_ITEM).find(([, v]) => v === id);
  return e ? e[0].replace(/[A-Z0-9]+/g, (m) => ` ${m.toLowerCase()}`).trim() : `metadata item ${id}`;
}

export function hex32(v: number): string {
  return (v >>> 0).toString(16).padStart(8, '0');
}
