import { CommitStaged, DiskImage, DiskTypeName, FieldLocation, ImageField, LayerRun, ParentCandidates, ParentLinkCheck, ParentReference, ReadBelow, WritePiece } from '../diskImage';
import { DiskImageError } from '../errors';
import { ImageFile } from '../../io/imageFile';
import { StagedCommits } from '../stagedCommits';
import { writeInChunks } from '../bulkWrite';
import { decompressCluster } from './compressedCluster';
import { hasFeature, HEADER_OFFSETS, INCOMPAT, MAX_BACKING_FILE_NAME, parseHeader, Qcow2Header, V3_HEADER_LENGTH_WITH_COMPRESSION } from './header';
import { EXTENSION, HeaderExtensions, parseHeaderExtensions, serializeHeaderExtension } from './headerExtension';
import { COPIED_FLAG, L1_ENTRY_SIZE, l1Entry, l1EntriesNeeded, l1ReservedBits, l2OffsetOf, MAX_L1_BYTES } from './l1Table';
import { ClusterKind, decodeL2Entry, L2Entry, l2TableWords, normalL2Word, setCopiedNormalL2Entry, SUBCLUSTERS_PER_CLUSTER } from './l2Table';
import { backingNameProblem, qcow2ParentCandidates } from './locatorPaths';
import { backingFileName, checkQcow2Parent, qemuFormatName } from './parentLink';
import { addRefcounts, getRefcount, lastNonZeroRefcount, MAX_REFCOUNT_TABLE_BYTES, maxRefcount, REFCOUNT_TABLE_ENTRY_SIZE, refcountBlockEntries, refcountEntrySpan, REFT_OFFSET_MASK, setRefcount } from './refcountTable';
import { MAX_SNAPSHOTS, MAX_SNAPSHOT_EXTRA, parseSnapshotTable, SNAPSHOT_FIXED_SIZE, SnapshotEntry } from './snapshotTable';

export interface Qcow2OpenOptions {
  writable?: boolean;
  linkOnly?: boolean;
}

/** One L2 table's clusters as kept in memory: kind per cluster, host cluster index, subcluster bits. */
interface L2Slot {
  /** File offset of the table. */
  offset: number;
  copied: boolean;
  kinds: Uint8Array;
  /** Host offset / cluster size (normal, zero-with-data and mixed clusters); 0 otherwise. */
  host: Float64Array;
  /** Extended L2 only: allocation and zero bits per cluster. */
  alloc: Uint32Array | null;
  zero: Uint32Array | null;
  /** Copied flag per cluster (refcount 1: writable in place). */
  copiedBits: Uint8Array;
}

export interface Qcow2Layout {
  header: Qcow2Header;
  extensions: HeaderExtensions;
  headerBytes: Buffer;
  backingFile: string | null;
  snapshots: SnapshotEntry[];
}

const ALL_BITS = 0xffffffff;
/** L2 entries compared at once against zeros when decoding a table (a power of two). */
const L2_SKIP = 256;
/** Zeros as long as L2_SKIP entries of the widest (extended, 16-byte) kind. */
const ZERO_ENTRIES = Buffer.alloc(L2_SKIP * 16);
/** Damaged entries listed one by one in the warnings; the rest are counted (check lists them all). */
const MAX_ENTRY_WARNINGS = 8;
const NIL_UUID = '00000000-0000-0000-0000-000000000000';

/**
 * The nil identity is how the chain layer knows a parent may be raw (no signature to probe): for
 * backing_fmt=raw, and when no backing format is recorded, where qemu probes the backing file's
 * content and takes it as raw when no format matches. Any other format is then still found by its
 * signature first.
 */
function parentIdentity(backingFormat: string | null): string {
  return backingFormat === 'raw' || backingFormat === null ? NIL_UUID : '';
}

/** Clusters of a staged batch that go the same way: `count` from guest cluster `cluster`, their data back to back (and, in place, at host offset `at`). */
interface StageRange { cluster: number; at: number; count: number; data: Buffer }

export class Qcow2Image implements DiskImage {
  readonly format = 'qcow2' as const;
  readonly warnings: string[] = [];
  readonly diskType: DiskTypeName;
  readonly virtualSize: number;
  readonly sectorSize = 512;
  readonly blockSize: number;
  readonly blockCount: number;
  readonly uuid = '';
  readonly parent: ParentReference | null = null;
  readonly clusterBits: number;
  readonly extendedL2: boolean;
  readonly l2Entries: number;
  readonly l2EntryBytes: number;
  readonly subclusterSize: number;
  readonly dirty: boolean;
  readonly corrupt: boolean;
  private l1: Buffer;
  private slots: Array<L2Slot | null> = [];
  /** L1 entries that are damaged (1 per index): their whole range reads as ClusterKind.Bad. */
  private badL1: Uint8Array = new Uint8Array(0);
  /** Damaged L1/L2 entries found at open (each also a warning, up to MAX_ENTRY_WARNINGS). */
  damagedEntries = 0;
  private allocated = 0;
  /** Clusters of kind Zero or Mixed: while none, zeroRuns has nothing to split (map stays one step per run). */
  private zeroOrMixed = 0;
  private refcountTable: Buffer = Buffer.alloc(0);
  private readonly refcountBlocks = new Map<number, Buffer>();
  private decompressed: { at: number; data: Buffer } | null = null;

  private constructor(
    readonly path: string,
    readonly file: ImageFile,
    readonly layout: Qcow2Layout,
    readonly linkOnly: boolean,
  ) {
    const h = layout.header;
    this.clusterBits = h.clusterBits;
    this.blockSize = 2 ** h.clusterBits;
    this.virtualSize = h.size;
    this.blockCount = Math.ceil(h.size / this.blockSize);
    this.extendedL2 = hasFeature(h.incompatibleFeatures, INCOMPAT.extendedL2);
    this.l2EntryBytes = this.extendedL2 ? 16 : 8;
    this.l2Entries = this.blockSize / this.l2EntryBytes;
    this.subclusterSize = this.extendedL2 ? this.blockSize / SUBCLUSTERS_PER_CLUSTER : this.blockSize;
    this.dirty = hasFeature(h.incompatibleFeatures, INCOMPAT.dirty);
    this.corrupt = hasFeature(h.incompatibleFeatures, INCOMPAT.corrupt);
    this.diskType = layout.backingFile !== null ? 'differencing' : 'dynamic';
    this.l1 = Buffer.alloc(0);
    if (layout.backingFile !== null) {
      (this as { parent: ParentReference | null }).parent = {
        uuid: parentIdentity(layout.extensions.backingFormat),
        timestamp: null,
        name: layout.backingFile,
        locators: [{ platform: 'backing file', path: layout.backingFile }],
      };
    }
  }

  get header(): Qcow2Header { return this.layout.header; }
  get writable(): boolean { return this.file.writable; }
  get fileSize(): number { return this.file.size; }
  get created(): string | null { return null; }
  get backingFormat(): string | null { return this.layout.extensions.backingFormat; }
  get snapshots(): SnapshotEntry[] { return this.layout.snapshots; }
  get clusterSize(): number { return this.blockSize; }

  static async open(path: string, options: Qcow2OpenOptions = {}): Promise<Qcow2Image> {
    const file = await ImageFile.open(path, options.writable ?? false);
    try {
      const img = await Qcow2Image.load(path, file, options);
      return img;
    } catch (e) {
      await file.close().catch(() => undefined);
      throw e;
    }
  }

  /** For check: the image over a file already open (read tolerantly by the caller). */
  static async fromOpenFile(path: string, file: ImageFile): Promise<Qcow2Image> {
    return Qcow2Image.load(path, file, { writable: false });
  }

  /** Reads header, extensions, backing name, snapshots, L1 and (unless linkOnly) L2 and refcount tables. */
  private static async load(path: string, file: ImageFile, options: Qcow2OpenOptions): Promise<Qcow2Image> {
    const fileSize = file.size;
    const first = Buffer.alloc(Math.min(fileSize, V3_HEADER_LENGTH_WITH_COMPRESSION));
    await file.readInto(first, 0);
    const header = parseHeader(first, path);
    const clusterSize = 2 ** header.clusterBits;
    const err = (what: string, structure: string, at: number, code = 'EHEADER') => new DiskImageError(path, what, structure, at, code);
    if (header.cryptMethod !== 0) {
      throw err(`encrypted qcow2 images are not supported (crypt method ${header.cryptMethod === 1 ? 'AES' : header.cryptMethod === 2 ? 'LUKS' : header.cryptMethod})`, 'qcow2 header', HEADER_OFFSETS.cryptMethod, 'EUNSUPPORTED');
    }
    if (hasFeature(header.incompatibleFeatures, INCOMPAT.externalDataFile)) {
      throw err('images with an external data file are not supported', 'qcow2 header', HEADER_OFFSETS.incompatibleFeatures, 'EUNSUPPORTED');
    }
    if (hasFeature(header.incompatibleFeatures, INCOMPAT.extendedL2) && header.clusterBits < 14) {
      throw err(`extended L2 entries need clusters of at least 16 KiB (cluster bits ${header.clusterBits})`, 'qcow2 header', HEADER_OFFSETS.clusterBits);
    }
    const headBytes = Buffer.alloc(Math.min(fileSize, clusterSize));
    await file.readInto(headBytes, 0);
    if (headBytes.length < header.headerLength) throw err(`file ends after ${headBytes.length} of ${header.headerLength} header bytes`, 'qcow2 header', 0, 'ETRUNC');
    // Backing file name: inside the first cluster, as QEMU requires.
    let backingFile: string | null = null;
    if (header.backingFileOffset !== 0) {
      if (header.backingFileOffset + header.backingFileSize > clusterSize) {
        throw err(`backing file name (${header.backingFileSize} bytes at ${header.backingFileOffset}) is not inside the first cluster`, 'qcow2 header', HEADER_OFFSETS.backingFileOffset);
      }
      if (header.backingFileOffset + header.backingFileSize > headBytes.length) {
        throw err('file ends inside the backing file name', 'backing file name', header.backingFileOffset, 'ETRUNC');
      }
      backingFile = headBytes.toString('utf8', header.backingFileOffset, header.backingFileOffset + header.backingFileSize);
    }
    const extEnd = header.backingFileOffset > header.headerLength ? header.backingFileOffset : headBytes.length;
    const extensions = header.version === 3
      ? parseHeaderExtensions(headBytes.subarray(header.headerLength, Math.max(header.headerLength, extEnd)), header.headerLength, path)
      : parseHeaderExtensions(headBytes.subarray(header.headerLength, Math.max(header.headerLength, extEnd)), header.headerLength, path);
    for (const x of extensions.list) {
      if (x.type === EXTENSION.fullDiskEncryption) throw err('encrypted qcow2 images are not supported (full disk encryption header)', 'header extension', x.offset, 'EUNSUPPORTED');
    }
    const snapshots = await Qcow2Image.readSnapshots(path, file, header);
    const layout: Qcow2Layout = { header, extensions, headerBytes: headBytes.subarray(0, Math.min(headBytes.length, extensions.endOffset + 8)), backingFile, snapshots };
    const img = new Qcow2Image(path, file, layout, options.linkOnly ?? false);
    if (img.corrupt) {
      if (options.writable) throw err('image is marked corrupt: it is opened read-only (run diskimg check)', 'qcow2 header', HEADER_OFFSETS.incompatibleFeatures, 'ECORRUPT');
      img.warnings.push('image is marked corrupt (incompatible feature bit 1): opened read-only');
    }
    if (img.dirty) img.warnings.push('image is marked dirty (lazy refcounts not written back): refcounts may be stale; diskimg repair rebuilds them');
    if (backingFile !== null) {
      if (extensions.backingFormat === null) img.warnings.push(`backing file format not recorded (no backing_fmt): the format of '${backingFile}' is probed from its content, as qemu does (raw when no format matches)`);
      const problem = backingNameProblem(backingFile);
      if (problem) img.warnings.push(problem);
      else if (backingFile.split(/[\\/]/).includes('..')) img.warnings.push(`backing file '${backingFile}' lies outside the image's folder ('..')`);
    }
    if (extensions.bitmapCount !== null) img.warnings.push(`${extensions.bitmapCount} persistent dirty bitmap(s) present (listed, not used)`);
    await img.loadL1();
    if (!img.linkOnly) {
      await img.loadL2Tables();
      await img.loadRefcountTable();
    }
    return img;
  }

  private static async readSnapshots(path: string, file: ImageFile, h: Qcow2Header): Promise<SnapshotEntry[]> {
    if (h.nbSnapshots === 0) return [];
    const at = h.snapshotsOffset;
    const clusterSize = 2 ** h.clusterBits;
    if (h.nbSnapshots > MAX_SNAPSHOTS) throw new DiskImageError(path, `${h.nbSnapshots} snapshots exceed ${MAX_SNAPSHOTS}`, 'qcow2 header', HEADER_OFFSETS.nbSnapshots, 'EHEADER');
    if (at % clusterSize !== 0 || at === 0) throw new DiskImageError(path, `snapshot table offset ${at} is not cluster aligned`, 'qcow2 header', HEADER_OFFSETS.snapshotsOffset, 'EHEADER');
    // Entries are at least 40 bytes and at most 40 + 1024 + 2 * 65535: read what the file holds of that.
    const most = Math.min(file.size - at, h.nbSnapshots * (SNAPSHOT_FIXED_SIZE + MAX_SNAPSHOT_EXTRA + 2 * 65535 + 8));
    if (most < h.nbSnapshots * SNAPSHOT_FIXED_SIZE) throw new DiskImageError(path, `snapshot table of ${h.nbSnapshots} entries runs past the end of the file`, 'snapshot table', at, 'ETRUNC');
    const table = Buffer.alloc(most);
    await file.readInto(table, at);
    return parseSnapshotTable(table, at, h.nbSnapshots, path);
  }

  private async loadL1(): Promise<void> {
    const h = this.header;
    const needed = l1EntriesNeeded(h.size, h.clusterBits, this.l2EntryBytes);
    if (h.l1Size * L1_ENTRY_SIZE > MAX_L1_BYTES) throw new DiskImageError(this.path, `L1 table of ${h.l1Size} entries exceeds ${MAX_L1_BYTES} bytes`, 'qcow2 header', HEADER_OFFSETS.l1Size, 'EHEADER');
    if (h.l1Size < needed) throw new DiskImageError(this.path, `L1 table of ${h.l1Size} entries is too small for ${h.size} bytes (needs ${needed})`, 'qcow2 header', HEADER_OFFSETS.l1Size, 'EHEADER');
    if (h.l1Size === 0) return;
    if (h.l1TableOffset % this.blockSize !== 0 || h.l1TableOffset === 0) throw new DiskImageError(this.path, `L1 table offset ${h.l1TableOffset} is not cluster aligned`, 'qcow2 header', HEADER_OFFSETS.l1TableOffset, 'EHEADER');
    if (h.l1TableOffset + h.l1Size * L1_ENTRY_SIZE > this.file.size) {
      throw new DiskImageError(this.path, `L1 table of ${h.l1Size} entries at ${h.l1TableOffset} runs past the end of the file (${this.file.size} bytes)`, 'L1 table', h.l1TableOffset, 'ETRUNC');
    }
    // Only the entries the disk needs are used; qemu may keep more.
    this.l1 = await this.file.readExact(h.l1TableOffset, h.l1Size * L1_ENTRY_SIZE, 'L1 table');
  }

  l1EntryAt(i: number): bigint {
    return this.l1.readBigUInt64BE(i * L1_ENTRY_SIZE);
  }

  private l1Used(): number {
    return Math.min(this.header.l1Size, l1EntriesNeeded(this.virtualSize, this.clusterBits, this.l2EntryBytes));
  }

  private async loadL2Tables(): Promise<void> {
    const n = this.l1Used();
    this.slots = new Array(n).fill(null);
    this.badL1 = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      // An empty entry (most of a big sparse image's L1) is checked without BigInts.
      if (this.l1.readUInt32BE(i * L1_ENTRY_SIZE) === 0 && this.l1.readUInt32BE(i * L1_ENTRY_SIZE + 4) === 0) continue;
      const e = this.l1EntryAt(i);
      const off = l2OffsetOf(e);
      const problem = this.l1EntryProblem(i);
      if (problem) {
        // One damaged entry costs only its own range: the rest of the image opens and reads.
        this.badL1[i] = 1;
        this.allocated += Math.max(0, Math.min(this.l2Entries, this.blockCount - i * this.l2Entries));
        this.noteDamage(problem);
        continue;
      }
      if (off === 0) continue;
      const table = await this.file.readExact(off, this.blockSize, 'L2 table');
      this.slots[i] = this.decodeL2Table(i, off, (e & COPIED_FLAG) !== 0n, table);
    }
    if (this.damagedEntries > MAX_ENTRY_WARNINGS) {
      this.warnings.push(`${this.damagedEntries - MAX_ENTRY_WARNINGS} more damaged L1/L2 entries (diskimg check reports them); reads of their clusters fail`);
    }
  }

  /** What is wrong with L1 entry `i` (reserved bits, an L2 table unaligned, in the header or past the file), or null. */
  private l1EntryProblem(i: number): DiskImageError | null {
    const e = this.l1EntryAt(i);
    const at = this.header.l1TableOffset + i * L1_ENTRY_SIZE;
    const fail = (what: string) => new DiskImageError(this.path, what, 'L1 table', at, 'EL1');
    if (l1ReservedBits(e) !== 0n) return fail(`L1 entry ${i} has reserved bits set (0x${e.toString(16)})`);
    const off = l2OffsetOf(e);
    if (off === 0) return null;
    if (off % this.blockSize !== 0) return fail(`L1 entry ${i}: L2 table offset ${off} is not cluster aligned`);
    if (off < this.blockSize) return fail(`L1 entry ${i}: L2 table offset ${off} points into the header`);
    if (off + this.blockSize > this.file.size) return fail(`L1 entry ${i}: L2 table at ${off} runs past the end of the file`);
    return null;
  }

  private noteDamage(problem: DiskImageError): void {
    this.damagedEntries++;
    if (this.damagedEntries <= MAX_ENTRY_WARNINGS) this.warnings.push(`damaged entry: ${problem.what} (${problem.structure} at offset ${problem.offset}); reads of the clusters it maps fail`);
  }

  /**
   * The error of a read or write that touches guest cluster `cluster`, of kind Bad: its L1 entry's,
   * or its L2 entry's (read again from the file, so nothing per damaged entry is kept in memory).
   */
  private async damagedClusterError(cluster: number): Promise<DiskImageError> {
    const l1i = Math.floor(cluster / this.l2Entries);
    if (this.badL1[l1i]) return this.l1EntryProblem(l1i)!;
    const at = this.l2EntryOffset(cluster);
    const raw = await this.file.readExact(at, this.l2EntryBytes, 'L2 table');
    const e = decodeL2Entry(raw.readBigUInt64BE(0), this.extendedL2 ? raw.readBigUInt64BE(8) : null, this.clusterBits);
    return this.l2EntryProblem(e, at, cluster) ?? new DiskImageError(this.path, `cluster ${cluster}: L2 entry changed since open`, 'L2 table', at, 'EL2');
  }

  private newSlot(offset: number, copied: boolean): L2Slot {
    const n = this.l2Entries;
    return {
      offset, copied,
      kinds: new Uint8Array(n), host: new Float64Array(n), copiedBits: new Uint8Array(n),
      alloc: this.extendedL2 ? new Uint32Array(n) : null, zero: this.extendedL2 ? new Uint32Array(n) : null,
    };
  }

  private decodeL2Table(l1Index: number, offset: number, copied: boolean, table: Buffer): L2Slot {
    const slot = this.newSlot(offset, copied);
    const first = l1Index * this.l2Entries;
    const end = Math.min(this.l2Entries, this.blockCount - first);
    const words = this.extendedL2 ? null : l2TableWords(table);
    for (let j = 0; j < end; j++) {
      const at = j * this.l2EntryBytes;
      // A stretch of empty entries (most of a sparse image's tables) skipped with one native compare.
      if ((j & (L2_SKIP - 1)) === 0 && j + L2_SKIP <= end && table.compare(ZERO_ENTRIES, 0, L2_SKIP * this.l2EntryBytes, at, at + L2_SKIP * this.l2EntryBytes) === 0) {
        j += L2_SKIP - 1;
        continue;
      }
      if (words) {
        // Fast path for the common entries, read as two u32 (a BigInt per entry was most of the
        // time of opening a 1 GiB image): empty, or a plain normal cluster with no flag but COPIED.
        const hi = words[2 * j];
        const lo = words[2 * j + 1];
        if (hi === 0 && lo === 0) continue;
        // Bits 62 (compressed), 56-61 and 1-8 (reserved) and 0 (zero flag) clear: the general path otherwise.
        if ((hi & 0x7f000000) === 0 && (lo & 0x1ff) === 0) {
          const host = (hi & 0x00ffffff) * 2 ** 32 + lo;
          if (host !== 0 && host % this.blockSize === 0 && host >= this.blockSize) {
            slot.kinds[j] = ClusterKind.Normal;
            slot.host[j] = host / this.blockSize;
            slot.copiedBits[j] = hi >>> 31;
            this.allocated++;
            continue;
          }
        }
      }
      const word = table.readBigUInt64BE(at);
      const bitmap = this.extendedL2 ? table.readBigUInt64BE(at + 8) : null;
      if (word === 0n && (bitmap === null || bitmap === 0n)) continue;
      const e = decodeL2Entry(word, bitmap, this.clusterBits);
      const problem = this.l2EntryProblem(e, offset + at, first + j);
      if (problem) {
        slot.kinds[j] = ClusterKind.Bad;
        this.allocated++;
        this.noteDamage(problem);
        continue;
      }
      this.storeEntry(slot, j, e);
    }
    return slot;
  }

  /** What is wrong with an L2 entry (unaligned, in the header, contradictory bits), or null. */
  private l2EntryProblem(e: L2Entry, at: number, cluster: number): DiskImageError | null {
    const fail = (what: string) => new DiskImageError(this.path, `cluster ${cluster}: ${what}`, 'L2 table', at, 'EL2');
    if (e.kind === ClusterKind.Compressed) {
      if (this.extendedL2 && (e.allocBits || e.zeroBits)) return fail('compressed cluster with a subcluster bitmap');
      if (e.hostOffset < this.blockSize) return fail(`compressed data at ${e.hostOffset} points into the header`);
      return null;
    }
    if (this.extendedL2 && (e.allocBits & e.zeroBits) !== 0) return fail('subclusters both allocated and zero');
    if (e.hostOffset !== 0) {
      if (e.hostOffset % this.blockSize !== 0) return fail(`data offset ${e.hostOffset} is not cluster aligned`);
      if (e.hostOffset < this.blockSize) return fail(`data offset ${e.hostOffset} points into the header`);
    } else if (e.allocBits !== 0) {
      return fail('allocated subclusters without a data offset');
    }
    return null;
  }

  private storeEntry(slot: L2Slot, j: number, e: L2Entry): void {
    this.storeFields(slot, j, e.kind, e.kind === ClusterKind.Compressed ? 0 : e.hostOffset / this.blockSize, e.copied, e.allocBits, e.zeroBits);
  }

  /** An entry's fields into its slot, with the counts of allocated and zero/mixed clusters kept (plain arguments: no object per entry in merges). */
  private storeFields(slot: L2Slot, j: number, kind: ClusterKind, hostCluster: number, copied: boolean, allocBits: number, zeroBits: number): void {
    const before = slot.kinds[j] !== ClusterKind.Unallocated;
    const wasZeroOrMixed = slot.kinds[j] === ClusterKind.Zero || slot.kinds[j] === ClusterKind.Mixed;
    slot.kinds[j] = kind;
    slot.host[j] = hostCluster;
    slot.copiedBits[j] = copied ? 1 : 0;
    if (slot.alloc && slot.zero) { slot.alloc[j] = allocBits; slot.zero[j] = zeroBits; }
    const after = kind !== ClusterKind.Unallocated;
    this.allocated += (after ? 1 : 0) - (before ? 1 : 0);
    this.zeroOrMixed += (kind === ClusterKind.Zero || kind === ClusterKind.Mixed ? 1 : 0) - (wasZeroOrMixed ? 1 : 0);
  }

  private async loadRefcountTable(): Promise<void> {
    const h = this.header;
    const bytes = h.refcountTableClusters * this.blockSize;
    if (bytes > MAX_REFCOUNT_TABLE_BYTES) throw new DiskImageError(this.path, `refcount table of ${h.refcountTableClusters} clusters exceeds ${MAX_REFCOUNT_TABLE_BYTES} bytes`, 'qcow2 header', HEADER_OFFSETS.refcountTableClusters, 'EHEADER');
    if (h.refcountTableOffset % this.blockSize !== 0) throw new DiskImageError(this.path, `refcount table offset ${h.refcountTableOffset} is not cluster aligned`, 'qcow2 header', HEADER_OFFSETS.refcountTableOffset, 'EHEADER');
    if (h.refcountTableOffset + bytes > this.file.size) throw new DiskImageError(this.path, `refcount table at ${h.refcountTableOffset} runs past the end of the file`, 'refcount table', h.refcountTableOffset, 'ETRUNC');
    // Read-only opens never need refcounts; keep the table only when writing.
    if (this.writable) this.refcountTable = await this.file.readExact(h.refcountTableOffset, bytes, 'refcount table');
  }

  // ---- DiskImage: locating, parent link -------------------------------------------------------

  locate(field: ImageField): FieldLocation {
    switch (field) {
      case 'diskType': return { structure: 'qcow2 header', offset: HEADER_OFFSETS.backingFileOffset };
      case 'virtualSize': return { structure: 'qcow2 header', offset: HEADER_OFFSETS.size };
      case 'blockCount': return { structure: 'qcow2 header', offset: HEADER_OFFSETS.l1Size };
      case 'parentLink': return { structure: 'backing file name', offset: this.header.backingFileOffset || HEADER_OFFSETS.backingFileOffset };
      case 'parentId': {
        const x = this.layout.extensions.list.find((e) => e.type === EXTENSION.backingFileFormat);
        return x ? { structure: 'backing file format extension', offset: x.offset } : { structure: 'qcow2 header', offset: HEADER_OFFSETS.backingFileOffset };
      }
    }
  }

  parentCandidates(): ParentCandidates {
    if (this.diskType !== 'differencing') return { candidates: [], unreadable: [], sources: [] };
    return qcow2ParentCandidates(this.path, this.layout.backingFile, this.header.backingFileOffset);
  }

  checkParent(parent: DiskImage): ParentLinkCheck {
    if (this.diskType !== 'differencing') throw new DiskImageError(this.path, 'has no backing file', 'qcow2 header', HEADER_OFFSETS.backingFileOffset, 'ENOTDIFF');
    return checkQcow2Parent(this.backingFormat, parent, this.locate('parentId'));
  }

  /**
   * Re-links to `parent`: the backing file name and format extension are rewritten within the first
   * cluster, in one write of the header's tail and one of the name area, ordered so that a crash
   * leaves either link readable: the new name goes where no live field is, then one header write
   * switches offset, length and extensions together.
   */
  async writeParentLink(parent: DiskImage): Promise<void> {
    this.requireWritable();
    const name = backingFileName(this.path, parent.path);
    await this.rewriteBacking(name, qemuFormatName(parent.format));
    await this.file.sync();
  }

  /** Writes extensions (backing format first, keeping the others) and the backing name in the first cluster. */
  async rewriteBacking(name: string | null, format: string | null): Promise<void> {
    const h = this.header;
    const nameBytes = name === null ? Buffer.alloc(0) : Buffer.from(name, 'utf8');
    if (nameBytes.length > MAX_BACKING_FILE_NAME) throw new DiskImageError(this.path, `backing file name of ${nameBytes.length} bytes is too long`, 'backing file name', h.backingFileOffset, 'EARG');
    const parts: Buffer[] = [];
    if (h.version === 3) {
      if (format !== null) parts.push(serializeHeaderExtension(EXTENSION.backingFileFormat, Buffer.from(format, 'latin1')));
      for (const x of this.layout.extensions.list) if (x.type !== EXTENSION.backingFileFormat) parts.push(serializeHeaderExtension(x.type, x.data));
      parts.push(Buffer.alloc(8));
    }
    const ext = Buffer.concat(parts);
    const headerLength = h.version === 3 ? h.headerLength : 72;
    const nameAt = headerLength + ext.length;
    if (nameAt + nameBytes.length > this.blockSize) throw new DiskImageError(this.path, 'header extensions and backing file name do not fit in the first cluster', 'header extension', headerLength, 'EARG');
    // New layout as one buffer from the backing offset field to the end of the name: header fields 8..19
    // and everything from the header's end. A kill between is impossible to observe half-done only if
    // it is one write: build the whole first-cluster prefix and write it at once.
    const head = Buffer.from(this.layout.headerBytes.subarray(0, headerLength));
    head.writeBigUInt64BE(BigInt(name === null ? 0 : nameAt), 8);
    head.writeUInt32BE(nameBytes.length, 16);
    const whole = Buffer.concat([head, ext, nameBytes]);
    await this.file.writeAt(whole, 0);
    const reread = await this.file.readExact(0, Math.min(this.file.size, this.blockSize), 'qcow2 header');
    this.layout.headerBytes = reread.subarray(0, whole.length);
    h.backingFileOffset = name === null ? 0 : nameAt;
    h.backingFileSize = nameBytes.length;
    this.layout.backingFile = name;
    this.layout.extensions = parseHeaderExtensions(reread.subarray(headerLength, name === null ? reread.length : nameAt), headerLength, this.path);
    (this as { parent: ParentReference | null }).parent = name === null ? null : { uuid: parentIdentity(format), timestamp: null, name, locators: [{ platform: 'backing file', path: name }] };
  }

  // ---- DiskImage: data ------------------------------------------------------------------------

  private requireBlocks(): void {
    if (this.linkOnly) throw new DiskImageError(this.path, 'internal: clusters of an image opened for its backing link only', 'L1 table', this.header.l1TableOffset, 'EINTERNAL');
  }

  private requireWritable(): void {
    if (!this.file.writable) throw new DiskImageError(this.path, 'image is opened read-only', undefined, undefined, 'EREADONLY');
  }

  private slotOf(cluster: number): L2Slot | null {
    return this.slots[Math.floor(cluster / this.l2Entries)] ?? null;
  }

  /** Kind of guest cluster `cluster` in this layer. */
  clusterKind(cluster: number): ClusterKind {
    const s = this.slotOf(cluster);
    if (s) return s.kinds[cluster % this.l2Entries] as ClusterKind;
    return this.badL1[Math.floor(cluster / this.l2Entries)] ? ClusterKind.Bad : ClusterKind.Unallocated;
  }

  isBlockAllocated(block: number): boolean {
    this.requireBlocks();
    return this.clusterKind(block) !== ClusterKind.Unallocated;
  }

  nextAllocatedBlock(from: number): number {
    this.requireBlocks();
    // Whole L2 tables that are absent are skipped at once (a 2 TiB image has 33,554,432 clusters).
    const per = this.l2Entries;
    for (let b = Math.max(0, from); b < this.blockCount;) {
      const slot = this.slots[Math.floor(b / per)];
      if (!slot && this.badL1[Math.floor(b / per)]) return b;
      if (!slot) { b = (Math.floor(b / per) + 1) * per; continue; }
      const end = Math.min(this.blockCount, (Math.floor(b / per) + 1) * per);
      for (; b < end; b++) if (slot.kinds[b % per] !== ClusterKind.Unallocated) return b;
    }
    return -1;
  }

  /** Zero cluster, or (extended L2) some subclusters zero and none with data: this layer adds only zeros. */
  isBlockZero(block: number): boolean {
    const kind = this.clusterKind(block);
    if (kind === ClusterKind.Zero) return true;
    if (kind !== ClusterKind.Mixed) return false;
    const { alloc, zero } = this.bitsOf(block);
    return alloc === 0 && zero !== 0;
  }

  allocatedBlockCount(): number {
    this.requireBlocks();
    return this.allocated;
  }

  /** Clusters reading as zeros without data in this layer (counted for the map's "zero" state). */
  zeroClusterCount(): number {
    let n = 0;
    for (const s of this.slots) if (s) for (let j = 0; j < s.kinds.length; j++) if (s.kinds[j] === ClusterKind.Zero) n++;
    return n;
  }

  /** Subcluster allocation/zero bits of a cluster (standard L2: derived from its kind). */
  private bitsOf(cluster: number): { alloc: number; zero: number } {
    const s = this.slotOf(cluster);
    if (!s) return { alloc: 0, zero: 0 };
    const j = cluster % this.l2Entries;
    if (s.alloc && s.zero) return { alloc: s.alloc[j], zero: s.zero[j] };
    switch (s.kinds[j]) {
      case ClusterKind.Normal: case ClusterKind.Compressed: return { alloc: ALL_BITS, zero: 0 };
      case ClusterKind.Zero: return { alloc: 0, zero: ALL_BITS };
      default: return { alloc: 0, zero: 0 };
    }
  }

  async readBlockBitmap(block: number): Promise<Uint8Array | null> {
    this.requireBlocks();
    const kind = this.clusterKind(block);
    if (kind === ClusterKind.Unallocated) return null;
    const sectors = this.blockSize / 512;
    const bitmap = new Uint8Array(Math.ceil(sectors / 8));
    const { alloc, zero } = this.bitsOf(block);
    const held = kind === ClusterKind.Compressed ? ALL_BITS : (alloc | zero) >>> 0;
    const perSub = this.subclusterSize / 512;
    for (let s = 0; s < sectors; s++) {
      const sub = this.extendedL2 ? Math.floor(s / perSub) : 0;
      if (this.extendedL2 ? (held >>> sub) & 1 : held !== 0) bitmap[s >> 3] |= 0x80 >> (s & 7);
    }
    return bitmap;
  }

  blockFileOffset(block: number): number | null {
    this.requireBlocks();
    const s = this.slotOf(block);
    if (!s) return null;
    const j = block % this.l2Entries;
    const k = s.kinds[j];
    if (k === ClusterKind.Unallocated || k === ClusterKind.Compressed || s.host[j] === 0) return null;
    return s.host[j] * this.blockSize;
  }

  /** Whether the byte at guest offset `pos` is held by this layer, and until where that stays so within its cluster. */
  private pieceAt(pos: number): { present: boolean; end: number } {
    const cluster = Math.floor(pos / this.blockSize);
    const clusterEnd = (cluster + 1) * this.blockSize;
    const kind = this.clusterKind(cluster);
    if (kind !== ClusterKind.Mixed) return { present: kind !== ClusterKind.Unallocated, end: clusterEnd };
    const { alloc, zero } = this.bitsOf(cluster);
    const held = (alloc | zero) >>> 0;
    let sub = Math.floor((pos - cluster * this.blockSize) / this.subclusterSize);
    const present = ((held >>> sub) & 1) === 1;
    while (sub < SUBCLUSTERS_PER_CLUSTER && (((held >>> sub) & 1) === 1) === present) sub++;
    return { present, end: cluster * this.blockSize + sub * this.subclusterSize };
  }

  async runs(offset: number, length: number): Promise<LayerRun[]> {
    return this.runsNow(offset, length);
  }

  /** runs() as a plain function (its loop, hot in merges, is then compiled on its own: see stageWrites). */
  private runsNow(offset: number, length: number): LayerRun[] {
    this.requireBlocks();
    const out: LayerRun[] = [];
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      // Whole missing L2 tables are skipped in one step (a sparse 2 TiB disk has few).
      const l1i = Math.floor(pos / (this.blockSize * this.l2Entries));
      let piece: { present: boolean; end: number };
      const slot = this.slots[l1i];
      if (!slot) piece = { present: this.badL1[l1i] === 1, end: (l1i + 1) * this.blockSize * this.l2Entries };
      else if (slot.kinds[Math.floor(pos / this.blockSize) % this.l2Entries] === ClusterKind.Mixed) piece = this.pieceAt(pos);
      else {
        // Whole clusters: the run goes on while the next ones are present (or absent) alike.
        const base = l1i * this.l2Entries;
        const stopAt = Math.min(this.l2Entries, Math.ceil(end / this.blockSize) - base);
        let j = Math.floor(pos / this.blockSize) - base;
        const present = slot.kinds[j] !== ClusterKind.Unallocated;
        for (j++; j < stopAt; j++) {
          const k = slot.kinds[j];
          if (k === ClusterKind.Mixed || (k !== ClusterKind.Unallocated) !== present) break;
        }
        piece = { present, end: (base + j) * this.blockSize };
      }
      const stop = Math.min(piece.end, end);
      const last = out[out.length - 1];
      if (last && last.present === piece.present && last.offset + last.length === pos) last.length += stop - pos;
      else out.push({ offset: pos, length: stop - pos, present: piece.present });
      pos = stop;
    }
    return out;
  }

  /** Within a held range: the parts held as zeros (zero clusters, zero subclusters) and the parts with data. */
  zeroRuns(offset: number, length: number): Array<{ offset: number; length: number; zero: boolean }> {
    if (this.zeroOrMixed === 0) return [{ offset, length, zero: false }];
    const out: Array<{ offset: number; length: number; zero: boolean }> = [];
    const end = offset + length;
    for (let pos = offset; pos < end;) {
      const cluster = Math.floor(pos / this.blockSize);
      const kind = this.clusterKind(cluster);
      let zero = kind === ClusterKind.Zero;
      let stop = Math.min(end, (cluster + 1) * this.blockSize);
      if (kind === ClusterKind.Mixed) {
        const { zero: zeroBits } = this.bitsOf(cluster);
        let sub = Math.floor((pos - cluster * this.blockSize) / this.subclusterSize);
        zero = ((zeroBits >>> sub) & 1) === 1;
        while (sub < SUBCLUSTERS_PER_CLUSTER && (((zeroBits >>> sub) & 1) === 1) === zero) sub++;
        stop = Math.min(end, cluster * this.blockSize + sub * this.subclusterSize);
      }
      const last = out[out.length - 1];
      if (last && last.zero === zero && last.offset + last.length === pos) last.length += stop - pos;
      else out.push({ offset: pos, length: stop - pos, zero });
      pos = stop;
    }
    return out;
  }

  async readOwn(offset: number, target: Buffer): Promise<void> {
    this.requireBlocks();
    let done = 0;
    while (done < target.length) {
      const pos = offset + done;
      const cluster = Math.floor(pos / this.blockSize);
      const inCluster = pos - cluster * this.blockSize;
      const kind = this.clusterKind(cluster);
      let n = Math.min(this.blockSize - inCluster, target.length - done);
      const slice = () => target.subarray(done, done + n);
      if (kind === ClusterKind.Bad) {
        throw await this.damagedClusterError(cluster);
      } else if (kind === ClusterKind.Compressed) {
        const data = await this.readCompressed(cluster);
        data.copy(target, done, inCluster, inCluster + n);
      } else if (kind === ClusterKind.Zero) {
        slice().fill(0);
      } else if (kind === ClusterKind.Normal) {
        // Clusters laid out back to back in the file are read in one call.
        n = Math.min(n + this.contiguousAfter(cluster, Math.ceil((target.length - done - n) / this.blockSize)) * this.blockSize, target.length - done);
        await this.readHost(cluster, inCluster, slice());
      } else if (kind === ClusterKind.Mixed) {
        const sub = Math.floor(inCluster / this.subclusterSize);
        n = Math.min(n, (sub + 1) * this.subclusterSize - inCluster);
        const { alloc, zero } = this.bitsOf(cluster);
        if ((zero >>> sub) & 1) slice().fill(0);
        else if ((alloc >>> sub) & 1) await this.readHost(cluster, inCluster, slice());
        else throw new DiskImageError(this.path, `internal: read of unallocated subcluster ${sub} of cluster ${cluster}`, 'L2 table', 0, 'EINTERNAL');
      } else {
        throw new DiskImageError(this.path, `internal: read of unallocated cluster ${cluster}`, 'L2 table', 0, 'EINTERNAL');
      }
      done += n;
    }
  }

  /** How many of the (up to `max`) clusters after a normal `cluster` are normal and follow it in the file, in its L2 table (a plain loop: see stageWrites). */
  private contiguousAfter(cluster: number, max: number): number {
    const slot = this.slotOf(cluster)!;
    const first = cluster % this.l2Entries;
    const host = slot.host[first];
    let j = first + 1;
    while (j - first <= max && j < this.l2Entries && slot.kinds[j] === ClusterKind.Normal && slot.host[j] === host + (j - first)) j++;
    return j - first - 1;
  }

  private l2EntryOffset(cluster: number): number {
    const s = this.slotOf(cluster)!;
    return s.offset + (cluster % this.l2Entries) * this.l2EntryBytes;
  }

  private async readHost(cluster: number, inCluster: number, target: Buffer): Promise<void> {
    const host = this.blockFileOffset(cluster)!;
    const got = await this.file.readInto(target, host + inCluster);
    if (got < target.length) {
      throw new DiskImageError(this.path, `cluster ${cluster}: data at ${host} runs past the end of the file`, 'L2 table', this.l2EntryOffset(cluster), 'ETRUNC');
    }
  }

  private async readCompressed(cluster: number): Promise<Buffer> {
    const at = this.l2EntryOffset(cluster);
    if (this.decompressed?.at === at) return this.decompressed.data;
    const word = (await this.file.readExact(at, 8, 'L2 table')).readBigUInt64BE(0);
    const e = decodeL2Entry(word, null, this.clusterBits);
    if (e.hostOffset >= this.file.size) {
      throw new DiskImageError(this.path, `cluster ${cluster}: compressed data at ${e.hostOffset} lies past the end of the file`, 'compressed cluster descriptor', at, 'ECOMPRESSED');
    }
    const data = Buffer.alloc(e.compressedLength);
    const got = await this.file.readInto(data, e.hostOffset);
    // qemu does not pad the file after the last compressed cluster: its final sector may be short.
    if (got < data.length && e.hostOffset + e.compressedLength - this.file.size >= 512) {
      throw new DiskImageError(this.path, `cluster ${cluster}: compressed data (${e.compressedLength} bytes at ${e.hostOffset}) runs past the end of the file`, 'compressed cluster descriptor', at, 'ECOMPRESSED');
    }
    const out = decompressCluster(data.subarray(0, got), this.blockSize, this.header.compressionType, this.path, at);
    this.decompressed = { at, data: out };
    return out;
  }

  /** The range as this layer shows it: own bytes where present, else `below`. */
  private async readView(offset: number, target: Buffer, below: ReadBelow): Promise<void> {
    for (const run of await this.runs(offset, target.length)) {
      const slice = target.subarray(run.offset - offset, run.offset - offset + run.length);
      if (run.present) await this.readOwn(run.offset, slice);
      else await below(run.offset, slice);
    }
  }

  // ---- writing ----------------------------------------------------------------------------------

  /**
   * Writes guest data. A cluster that is normal with refcount 1 is written in place. Any other
   * cluster gets a new host cluster holding its full content (its current view, from this layer or
   * the backing chain, with the new bytes laid over), written before its refcount and before its
   * L2 entry; a kill -9 at any point leaves at most a leaked cluster.
   */
  async write(offset: number, data: Buffer, below: ReadBelow): Promise<void> {
    this.requireWritable();
    this.requireBlocks();
    if (offset < 0 || offset + data.length > this.virtualSize) {
      throw new DiskImageError(this.path, `write of ${data.length} bytes at ${offset} goes past the virtual size ${this.virtualSize}`, undefined, undefined, 'ERANGE');
    }
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const cluster = Math.floor(pos / this.blockSize);
      const inCluster = pos - cluster * this.blockSize;
      const n = Math.min(this.blockSize - inCluster, data.length - done);
      const piece = data.subarray(done, done + n);
      const s = this.slotOf(cluster);
      const j = cluster % this.l2Entries;
      // A damaged entry is not overwritten: its old target may be another structure (check, then repair by hand).
      if (this.clusterKind(cluster) === ClusterKind.Bad) throw await this.damagedClusterError(cluster);
      if (s && s.kinds[j] === ClusterKind.Normal && await this.ownsInPlace(s, j)) {
        await this.file.writeAt(piece, s.host[j] * this.blockSize + inCluster);
      } else {
        await this.rewriteCluster(cluster, inCluster, piece, below);
      }
      done += n;
    }
  }

  private async rewriteCluster(cluster: number, inCluster: number, piece: Buffer, below: ReadBelow): Promise<void> {
    const start = cluster * this.blockSize;
    const full = Buffer.alloc(this.blockSize);
    const valid = Math.min(this.blockSize, this.virtualSize - start);
    if (inCluster > 0 || piece.length < valid) await this.readView(start, full.subarray(0, valid), below);
    piece.copy(full, inCluster);
    const s = this.slotOf(cluster);
    const j = cluster % this.l2Entries;
    const oldKind = s ? s.kinds[j] : ClusterKind.Unallocated;
    const oldHost = s ? s.host[j] : 0;
    const reusable = s !== null && oldHost !== 0 && oldKind !== ClusterKind.Compressed && await this.ownsInPlace(s, j);
    let host: number;
    if (reusable) {
      // Zero or partly allocated cluster with its own data cluster: fill it in place; the entry still
      // says zero/unallocated for what is not yet valid until it is rewritten below.
      host = oldHost * this.blockSize;
      await this.file.writeAt(full, host);
    } else {
      host = await this.allocateClusters(1);
      await this.file.writeAt(full, host);
      await this.addRefcount(host, 1, 1);
    }
    const oldCompressed = oldKind === ClusterKind.Compressed ? await this.compressedSpan(cluster) : null;
    await this.setL2Entry(cluster, { kind: ClusterKind.Normal, hostOffset: host, compressedLength: 0, copied: true, allocBits: ALL_BITS, zeroBits: 0, reserved: 0n });
    // The old data is no longer referenced from here: release it (a kill before this only leaks).
    if (!reusable && oldHost !== 0) await this.addRefcount(oldHost * this.blockSize, 1, -1);
    if (oldCompressed) await this.addRefcount(oldCompressed.start, oldCompressed.clusters, -1);
  }

  /**
   * Merge's bulk path (see DiskImage.stageWrites), for whole clusters: the batch's new clusters are
   * allocated together at the end of the file, their data written in as few vectored writes as
   * lie back to back, and counted at once (a refcount with no L2 entry is only a leak, which a kill
   * may leave); their L2 entries are written at commit, once the caller has made the data durable.
   * Clusters this layer owns (copied, normal; with internal snapshots, refcount 1 too) are written
   * in place. Normal clusters it shares (with a snapshot) are copied on write in the same batch:
   * new clusters like the unallocated ones, the old ones released at commit after the L2 entries
   * that no longer point at them (a kill in between leaves only leaks). Anything else (partial,
   * compressed, zero-with-data or subcluster-mixed clusters) goes to write().
   */
  async stageWrites(pieces: WritePiece[], _below: ReadBelow): Promise<CommitStaged | null> {
    this.requireWritable();
    this.requireBlocks();
    const cs = this.blockSize;
    const per = this.l2Entries;
    // The per-cluster loops are in plain (synchronous) methods: V8 optimizes a hot loop inside an
    // async function by compiling the whole async function, several times over (0.2 s of CPU per
    // 512 MiB of 64 KiB clusters, against 0.02 s for VHDX's 32 MiB blocks).
    const plan = this.planStage(pieces, this.snapshots.length > 0 ? await this.ownedUnderSnapshots(pieces) : null);
    if (!plan) return null;
    const { inPlace, moved, releases } = plan;
    // L2 tables first (a new, empty table or a copy of a shared one changes no view), so the data
    // clusters lie together after them. A table is asked about once per batch.
    const ownTable = new Set<number>();
    for (const m of moved) {
      for (let l1i = Math.floor(m.cluster / per); l1i <= Math.floor((m.cluster + m.count - 1) / per); l1i++) {
        if (ownTable.has(l1i)) continue;
        const slot = this.slots[l1i];
        if (!slot || !slot.copied || (this.snapshots.length > 0 && await this.hostRefcount(slot.offset) !== 1)) await this.newL2Table(l1i);
        ownTable.add(l1i);
      }
    }
    // The new clusters go at the first run of uncounted clusters from the cluster-aligned end of the
    // file (see firstFreeRun: past it when clusters there are counted already, leaving a hole in the
    // file before them); the data writes below extend the file over all of them (whole clusters),
    // so no ftruncate first (one per batch cost a pool round trip and an inode update each). Nothing
    // else allocates until they are written, and allocation starts at the end of the file, so none
    // takes them before countClusters counts them.
    const movedCount = moved.reduce((n, m) => n + m.count, 0);
    const first = movedCount > 0 ? (await this.firstFreeRun(Math.ceil(this.file.size / cs), movedCount)) * cs : 0;
    // Writes in file order, runs of adjacent ranges in one writev.
    let run: { at: number; end: number; parts: Buffer[] } | null = null;
    const flushRun = async () => { if (run) await writeInChunks(this.file, run.parts, run.at); run = null; };
    const put = async (at: number, data: Buffer) => {
      if (run && run.end === at && run.parts.length < 512) run.parts.push(data);
      else { await flushRun(); run = { at, end: at, parts: [data] }; }
      run.end = at + data.length;
    };
    for (const x of inPlace) await put(x.at, x.data);
    let host = first;
    for (const m of moved) { await put(host, m.data); host += m.data.length; }
    await flushRun();
    if (movedCount === 0) return this.stagedL2.add({ runs: [], releases: [] }); // still queued: committing it commits the stages before it
    await this.countClusters(first, movedCount);
    return this.stagedL2.add({ runs: this.recordMoved(moved, first), releases });
  }

  /**
   * Splits a batch into clusters written in place and clusters moved to new space (and the shared
   * ones those replace), as ranges of clusters that go the same way and lie back to back in memory;
   * null when some cluster cannot be staged. `ownedSet`: with snapshots, the clusters checked as
   * this layer's alone (see ownsInPlace); without, the copied flags decide.
   */
  private planStage(pieces: WritePiece[], ownedSet: Set<number> | null): { inPlace: StageRange[]; moved: StageRange[]; releases: number[] } | null {
    const cs = this.blockSize;
    const per = this.l2Entries;
    const inPlace: StageRange[] = [];
    const moved: StageRange[] = [];
    const releases: number[] = [];
    const add = (list: StageRange[], cluster: number, at: number, data: Buffer, k: number) => {
      const last = list[list.length - 1];
      if (last && last.cluster + last.count === cluster && (at < 0 || last.at + last.count * cs === at)
        && last.data.buffer === data.buffer && last.data.byteOffset + last.count * cs === data.byteOffset + k * cs) last.count++;
      else list.push({ cluster, at, count: 1, data: data.subarray(k * cs) });
    };
    let lastCluster = -1;
    for (const p of pieces) {
      if (p.offset % cs !== 0 || p.data.length % cs !== 0 || p.offset < 0 || p.offset + p.data.length > this.virtualSize) return null;
      const firstCluster = p.offset / cs;
      if (firstCluster <= lastCluster) return null;
      const count = p.data.length / cs;
      lastCluster = firstCluster + count - 1;
      for (let k = 0; k < count; k++) {
        const cluster = firstCluster + k;
        const slot = this.slots[Math.floor(cluster / per)] ?? null;
        const j = cluster % per;
        const kind = slot ? slot.kinds[j] : ClusterKind.Unallocated;
        const fresh = kind === ClusterKind.Unallocated || (kind === ClusterKind.Zero && slot!.host[j] === 0);
        const owned = slot !== null && kind === ClusterKind.Normal && slot.copied && slot.copiedBits[j] === 1 && (ownedSet === null || ownedSet.has(cluster));
        const shared = !owned && slot !== null && kind === ClusterKind.Normal && slot.host[j] !== 0;
        if (!owned && !fresh && !shared) return null;
        if (owned) add(inPlace, cluster, slot!.host[j] * cs, p.data, k);
        else {
          if (shared) releases.push(slot!.host[j] * cs);
          add(moved, cluster, -1, p.data, k);
        }
      }
    }
    for (const r of [...inPlace, ...moved]) r.data = Buffer.from(r.data.buffer, r.data.byteOffset, r.count * cs);
    return { inPlace, moved, releases };
  }

  /** With internal snapshots: the batch's clusters that this layer may write in place (ownsInPlace asks the refcounts). */
  private async ownedUnderSnapshots(pieces: WritePiece[]): Promise<Set<number>> {
    const cs = this.blockSize;
    const owned = new Set<number>();
    for (const p of pieces) {
      if (p.offset % cs !== 0 || p.data.length % cs !== 0 || p.offset < 0 || p.offset + p.data.length > this.virtualSize) continue;
      for (let cluster = p.offset / cs; cluster < (p.offset + p.data.length) / cs; cluster++) {
        const slot = this.slotOf(cluster);
        const j = cluster % this.l2Entries;
        // Only what planStage could write in place (COPIED) is worth the refcount lookups.
        if (slot && slot.kinds[j] === ClusterKind.Normal && slot.copied && slot.copiedBits[j] === 1 && await this.ownsInPlace(slot, j)) owned.add(cluster);
      }
    }
    return owned;
  }

  /**
   * The L2 entries of moved clusters (new space from `first` on, in order), kept in memory now
   * (later stages see these clusters as this layer's); returned as one buffer per run of entries
   * that lie next to each other in a table, for the commit to write.
   */
  private recordMoved(moved: StageRange[], first: number): Array<{ at: number; bytes: Buffer[] }> {
    const cs = this.blockSize;
    const per = this.l2Entries;
    const eb = this.l2EntryBytes;
    const l2Runs: Array<{ at: number; bytes: Buffer[]; length: number }> = [];
    let host = first;
    for (const m of moved) {
      for (let done = 0; done < m.count;) {
        const cluster = m.cluster + done;
        const slot = this.slotOf(cluster)!;
        const j0 = cluster % per;
        const n = Math.min(m.count - done, per - j0);
        const entries = Buffer.alloc(n * eb);
        const view = new DataView(entries.buffer, entries.byteOffset, entries.length);
        for (let i = 0; i < n; i++) {
          setCopiedNormalL2Entry(view, i * eb, host, this.extendedL2);
          this.storeFields(slot, j0 + i, ClusterKind.Normal, host / cs, true, ALL_BITS, 0);
          host += cs;
        }
        const at = slot.offset + j0 * eb;
        const last = l2Runs[l2Runs.length - 1];
        if (last && last.at + last.length === at) { last.bytes.push(entries); last.length += entries.length; }
        else l2Runs.push({ at, bytes: [entries], length: entries.length });
        done += n;
      }
    }
    return l2Runs.map(({ at, bytes }) => ({ at, bytes }));
  }

  /**
   * L2 entries of staged clusters, written at commit (entries next to each other across stages in
   * one write); then the shared clusters they replaced are released.
   */
  private readonly stagedL2 = new StagedCommits<{ runs: Array<{ at: number; bytes: Buffer[] }>; releases: number[] }>(async (stages) => {
    // Counts before the entries that point at their clusters (normally written by the flush before this).
    await this.writeKeptRefcounts();
    const runs = stages.flatMap((s) => s.runs).sort((a, b) => a.at - b.at);
    for (let i = 0; i < runs.length;) {
      const bytes = [...runs[i].bytes];
      const at = runs[i].at;
      let len = bytes.reduce((n, b) => n + b.length, 0);
      let j = i + 1;
      while (j < runs.length && runs[j].at === at + len) {
        for (const b of runs[j++].bytes) { bytes.push(b); len += b.length; }
      }
      await this.file.writeAt(bytes.length === 1 ? bytes[0] : Buffer.concat(bytes), at);
      i = j;
    }
    for (const old of stages.flatMap((s) => s.releases).sort((a, b) => a - b)) await this.addRefcount(old, 1, -1);
  });

  /** Adds one to the refcounts of `count` host clusters from `start`: one write per refcount block touched. */
  private async countClusters(start: number, count: number): Promise<void> {
    const perBlock = refcountBlockEntries(this.clusterBits, this.refcountOrder);
    let index = start / this.blockSize;
    const end = index + count;
    while (index < end) {
      const ti = Math.floor(index / perBlock);
      const upto = Math.min(end, (ti + 1) * perBlock);
      let blockAt = this.refcountBlockOffset(ti);
      if (blockAt === 0) blockAt = await this.newRefcountBlock(ti);
      const block = await this.refcountBlock(blockAt);
      const over = addRefcounts(block, index % perBlock, index % perBlock + (upto - index), this.refcountOrder, 1);
      if (over >= 0) throw new DiskImageError(this.path, `refcount of host cluster ${ti * perBlock + over} would become ${getRefcount(block, over, this.refcountOrder) + 1}`, 'refcount block', blockAt, 'EREFCOUNT');
      const a = refcountEntrySpan(index % perBlock, this.refcountOrder);
      const b = refcountEntrySpan((upto - 1) % perBlock, this.refcountOrder);
      // Written at the next flush or L2 commit, whichever comes first (see keptRefcounts).
      this.keepRefcounts(blockAt, a.start, b.start + b.length);
      index = upto;
    }
  }

  private async compressedSpan(cluster: number): Promise<{ start: number; clusters: number }> {
    const word = (await this.file.readExact(this.l2EntryOffset(cluster), 8, 'L2 table')).readBigUInt64BE(0);
    const e = decodeL2Entry(word, null, this.clusterBits);
    const first = Math.floor(e.hostOffset / this.blockSize);
    const last = Math.floor((e.hostOffset + e.compressedLength - 1) / this.blockSize);
    return { start: first * this.blockSize, clusters: last - first + 1 };
  }

  /** Encodes and writes one L2 entry; allocates (or copies a shared) L2 table first when needed. */
  private async setL2Entry(cluster: number, e: L2Entry): Promise<void> {
    const l1i = Math.floor(cluster / this.l2Entries);
    let s = this.slots[l1i];
    if (!s || !s.copied || (this.snapshots.length > 0 && await this.hostRefcount(s.offset) !== 1)) s = await this.newL2Table(l1i);
    const j = cluster % this.l2Entries;
    const b = Buffer.alloc(this.l2EntryBytes);
    b.writeBigUInt64BE(e.kind === ClusterKind.Zero && !this.extendedL2 ? 1n | (e.hostOffset ? normalL2Word(e.hostOffset, e.copied) : 0n) : (e.hostOffset ? normalL2Word(e.hostOffset, e.copied) : 0n), 0);
    if (this.extendedL2) b.writeBigUInt64BE((BigInt(e.zeroBits >>> 0) << 32n) | BigInt(e.allocBits >>> 0), 8);
    await this.file.writeAt(b, s.offset + j * this.l2EntryBytes);
    this.storeEntry(s, j, e);
  }

  /**
   * Gives L1 entry `l1i` a table of its own: a new cluster holding the old table's entries (a
   * shared one's, from a snapshot) or zeros, counted, then linked from L1; the old one released.
   */
  private async newL2Table(l1i: number): Promise<L2Slot> {
    const old = this.slots[l1i];
    const table = old ? await this.file.readExact(old.offset, this.blockSize, 'L2 table') : Buffer.alloc(this.blockSize);
    const at = await this.allocateClusters(1);
    await this.file.writeAt(table, at);
    await this.addRefcount(at, 1, 1);
    const entry = Buffer.alloc(8);
    entry.writeBigUInt64BE(l1Entry(at, true), 0);
    await this.file.writeAt(entry, this.header.l1TableOffset + l1i * L1_ENTRY_SIZE);
    entry.copy(this.l1, l1i * L1_ENTRY_SIZE);
    if (old) await this.addRefcount(old.offset, 1, -1);
    const slot = old ? { ...old, offset: at, copied: true } : this.newSlot(at, true);
    this.slots[l1i] = slot;
    return slot;
  }

  /**
   * Whether entry `j` of table `s` may be written in place: its L2 table and its data cluster are
   * this image's alone. The copied flags say so; with internal snapshots the refcounts are asked as
   * well, since a wrong flag there would overwrite a snapshot's data (qemu-img check calls such a
   * flag an error, but it must not cost the snapshot).
   */
  async ownsInPlace(s: L2Slot, j: number): Promise<boolean> {
    if (!s.copied || s.copiedBits[j] !== 1 || s.host[j] === 0) return false;
    if (this.snapshots.length === 0) return true;
    return await this.hostRefcount(s.offset) === 1 && await this.hostRefcount(s.host[j] * this.blockSize) === 1;
  }

  /** Guest cluster `cluster` can take a write in place (bulk writers ask before writing data clusters directly). */
  async clusterWritableInPlace(cluster: number): Promise<boolean> {
    const s = this.slotOf(cluster);
    return s !== null && s.kinds[cluster % this.l2Entries] === ClusterKind.Normal && this.ownsInPlace(s, cluster % this.l2Entries);
  }

  /** The refcount of the host cluster at `offset` (0 when no refcount block covers it). */
  private async hostRefcount(offset: number): Promise<number> {
    const perBlock = refcountBlockEntries(this.clusterBits, this.refcountOrder);
    const index = Math.floor(offset / this.blockSize);
    const blockAt = this.refcountBlockOffset(Math.floor(index / perBlock));
    if (blockAt === 0) return 0;
    return getRefcount(await this.refcountBlock(blockAt), index % perBlock, this.refcountOrder);
  }

  // ---- refcounts ----------------------------------------------------------------------------------

  private get refcountOrder(): number { return this.header.refcountOrder; }

  /**
   * Appends `count` clusters' worth of space at the cluster-aligned end of the file, past any
   * clusters there that are counted already (see firstFreeRun); returns their offset. The file is
   * extended over them at once: the end of the file is where the next allocation starts.
   */
  private async allocateClusters(count: number): Promise<number> {
    const at = (await this.firstFreeRun(Math.ceil(this.file.size / this.blockSize), count)) * this.blockSize;
    await this.file.truncate(at + count * this.blockSize);
    return at;
  }

  /**
   * The first host cluster from `from` (the end of the file) such that it and the `count - 1` after
   * it all have refcount 0: new space is never a counted cluster, as in qemu. Clusters past the end
   * of the file may be counted: a kill can land a refcount write before the data write it counts
   * (merge's writes in flight), and other tools can leave the same; allocated again they would have
   * refcount 2. Clusters no refcount block covers (or past the table's reach) count as 0. Each
   * block is scanned in one loop, without an await when it is cached (bulk allocation: countClusters
   * touches the same blocks right after).
   */
  private async firstFreeRun(from: number, count: number): Promise<number> {
    const perBlock = refcountBlockEntries(this.clusterBits, this.refcountOrder);
    const reach = Math.floor(this.refcountTable.length / REFCOUNT_TABLE_ENTRY_SIZE) * perBlock;
    let start = from;
    // Clusters from `start` up to `index` are known to be free.
    let index = from;
    while (index < start + count && index < reach) {
      const ti = Math.floor(index / perBlock);
      const upto = Math.min(start + count, (ti + 1) * perBlock);
      const blockAt = this.refcountBlockOffset(ti);
      if (blockAt !== 0) {
        const block = this.refcountBlocks.get(blockAt) ?? await this.refcountBlock(blockAt);
        const last = lastNonZeroRefcount(block, index - ti * perBlock, upto - ti * perBlock, this.refcountOrder);
        if (last >= 0) start = ti * perBlock + last + 1;
      }
      index = upto;
    }
    return start;
  }

  private async refcountBlock(offset: number): Promise<Buffer> {
    let b = this.refcountBlocks.get(offset);
    if (!b) {
      b = await this.file.readExact(offset, this.blockSize, 'refcount block');
      if (this.refcountBlocks.size >= 64) {
        // The oldest block with no counts kept back (those stay until written: see keptRefcounts).
        for (const at of this.refcountBlocks.keys()) {
          if (!this.keptRefcounts.has(at)) { this.refcountBlocks.delete(at); break; }
        }
      }
      this.refcountBlocks.set(offset, b);
    }
    return b;
  }

  /**
   * Refcount entries that merge's bulk path (countClusters) changed in memory and has not written
   * yet, by refcount block: the byte range to write. Written by writeKeptRefcounts, which flush()
   * runs before its fsync and every L2 commit runs first, so the counts are on disk before any L2
   * entry points at their clusters (a kill before that leaves clusters neither counted nor
   * referenced: space past the old end of the file, no leak). Why: a small buffered write into the
   * file while a direct write of the copy is in flight waits for that write's inode lock (ext4
   * holds it for the whole direct write), so one refcount write per batch cost a whole direct
   * write each (0.69 s of 1.15 s of a 512 MiB merge, 2026-12-03); kept back, they go together.
   */
  private readonly keptRefcounts = new Map<number, { start: number; end: number }>();

  private keepRefcounts(blockAt: number, start: number, end: number): void {
    const k = this.keptRefcounts.get(blockAt);
    if (k) { k.start = Math.min(k.start, start); k.end = Math.max(k.end, end); } else this.keptRefcounts.set(blockAt, { start, end });
  }

  /** Writes the refcount entries kept back by countClusters (see keptRefcounts), in file order. */
  private async writeKeptRefcounts(): Promise<void> {
    if (this.keptRefcounts.size === 0) return;
    for (const at of [...this.keptRefcounts.keys()].sort((a, b) => a - b)) {
      const { start, end } = this.keptRefcounts.get(at)!;
      await this.file.writeAt(this.refcountBlocks.get(at)!.subarray(start, end), at + start);
      this.keptRefcounts.delete(at);
    }
  }

  /** Adds `delta` to the refcounts of `clusters` host clusters from `start`, creating refcount blocks as needed. */
  async addRefcount(start: number, clusters: number, delta: number): Promise<void> {
    const perBlock = refcountBlockEntries(this.clusterBits, this.refcountOrder);
    for (let c = 0; c < clusters; c++) {
      const index = start / this.blockSize + c;
      const ti = Math.floor(index / perBlock);
      let blockAt = this.refcountBlockOffset(ti);
      if (blockAt === 0) {
        if (delta < 0) continue;
        blockAt = await this.newRefcountBlock(ti);
      }
      const block = await this.refcountBlock(blockAt);
      const i = index % perBlock;
      const now = getRefcount(block, i, this.refcountOrder);
      const next = now + delta;
      if (next < 0 || next > maxRefcount(this.refcountOrder)) {
        throw new DiskImageError(this.path, `refcount of host cluster ${index} would become ${next}`, 'refcount block', blockAt, 'EREFCOUNT');
      }
      setRefcount(block, i, this.refcountOrder, next);
      const span = refcountEntrySpan(i, this.refcountOrder);
      await this.file.writeAt(block.subarray(span.start, span.start + span.length), blockAt + span.start);
    }
  }

  /** Offset of refcount block `ti` (0: none); a damaged entry stops the write before anything is written through it. */
  private refcountBlockOffset(ti: number): number {
    if ((ti + 1) * REFCOUNT_TABLE_ENTRY_SIZE > this.refcountTable.length) return 0;
    const raw = this.refcountTable.readBigUInt64BE(ti * REFCOUNT_TABLE_ENTRY_SIZE);
    const at = raw & REFT_OFFSET_MASK;
    if (at === 0n) return 0;
    if (raw !== at || at % BigInt(this.blockSize) !== 0n || at < BigInt(this.blockSize) || at + BigInt(this.blockSize) > BigInt(this.file.size)) {
      throw new DiskImageError(this.path, `refcount table entry ${ti} (0x${raw.toString(16)}) is not a cluster-aligned refcount block inside the file: run diskimg check`,
        'refcount table', this.header.refcountTableOffset + ti * REFCOUNT_TABLE_ENTRY_SIZE, 'EREFCOUNT');
    }
    return Number(at);
  }

  /**
   * A refcount block for table entry `ti`, appended at the end of the file and counting itself
   * when it lies in its own range; the table grows (to a new place) when it is full. The block is
   * written before the table entry that links it.
   */
  private async newRefcountBlock(ti: number): Promise<number> {
    if ((ti + 1) * REFCOUNT_TABLE_ENTRY_SIZE > this.refcountTable.length) {
      await this.growRefcountTable(ti + 1);
      // Growing may have made this very block (when the new table lies in its range).
      const made = this.refcountBlockOffset(ti);
      if (made !== 0) return made;
    }
    const perBlock = refcountBlockEntries(this.clusterBits, this.refcountOrder);
    const at = await this.allocateClusters(1);
    const block = Buffer.alloc(this.blockSize);
    const own = at / this.blockSize;
    if (Math.floor(own / perBlock) === ti) setRefcount(block, own % perBlock, this.refcountOrder, 1);
    await this.file.writeAt(block, at);
    this.refcountBlocks.set(at, block);
    const entry = Buffer.alloc(8);
    entry.writeBigUInt64BE(BigInt(at), 0);
    await this.file.writeAt(entry, this.header.refcountTableOffset + ti * REFCOUNT_TABLE_ENTRY_SIZE);
    entry.copy(this.refcountTable, ti * REFCOUNT_TABLE_ENTRY_SIZE);
    // A block outside its own range is counted by whichever block covers it.
    if (Math.floor(own / perBlock) !== ti) await this.addRefcount(at, 1, 1);
    return at;
  }

  /**
   * Moves the refcount table to a bigger place at the end of the file (past any clusters counted
   * there, see firstFreeRun): the new table (with a refcount block for its own range when none
   * covers it) is written and counted first, then one header write switches to it, then the old
   * table's clusters are released.
   */
  private async growRefcountTable(minEntries: number): Promise<void> {
    const perBlock = refcountBlockEntries(this.clusterBits, this.refcountOrder);
    const entriesPerCluster = this.blockSize / REFCOUNT_TABLE_ENTRY_SIZE;
    let start = Math.ceil(this.file.size / this.blockSize);
    const hasBlock = (ti: number) => this.refcountBlockOffset(ti) !== 0;
    // Table clusters k, then m new refcount blocks, for the ranges [start, start + k + m) falls in
    // that have no block yet; settle k and m together, then move start past counted clusters
    // (which changes the ranges) until the k + m clusters from start are all free.
    let k = Math.max(this.header.refcountTableClusters * 2, Math.ceil(minEntries / entriesPerCluster));
    let ranges: number[] = [];
    for (;;) {
      for (;;) {
        const end = start + k + ranges.length;
        const need: number[] = [];
        for (let ti = Math.floor(start / perBlock); ti <= Math.floor((end - 1) / perBlock); ti++) if (!hasBlock(ti)) need.push(ti);
        const kNeeded = Math.max(k, Math.ceil((Math.floor((end + need.length) / perBlock) + 1) / entriesPerCluster));
        const settled = need.length === ranges.length && kNeeded === k;
        // Taken even when settled: after start moved, as many ranges may be other ones.
        ranges = need;
        k = kNeeded;
        if (settled) break;
      }
      const free = await this.firstFreeRun(start, k + ranges.length);
      if (free === start) break;
      start = free;
    }
    if (k * this.blockSize > MAX_REFCOUNT_TABLE_BYTES) throw new DiskImageError(this.path, 'refcount table would exceed its 8 MiB limit', 'refcount table', this.header.refcountTableOffset, 'ETOOBIG');
    // The file is extended over the new clusters before any of them is written or linked (the new
    // table's entries for its blocks must point inside the file).
    const tableAt = start * this.blockSize;
    await this.file.truncate(tableAt + (k + ranges.length) * this.blockSize);
    const table = Buffer.alloc(k * this.blockSize);
    this.refcountTable.copy(table);
    const blocks = ranges.map((ti, n) => ({ ti, at: tableAt + (k + n) * this.blockSize, block: Buffer.alloc(this.blockSize) }));
    for (const x of blocks) table.writeBigUInt64BE(BigInt(x.at), x.ti * REFCOUNT_TABLE_ENTRY_SIZE);
    // Count every new cluster: in a new block, or in an existing one (the old table already reaches those).
    const first = tableAt / this.blockSize;
    for (let c = first; c < first + k + ranges.length; c++) {
      const nb = blocks.find((x) => x.ti === Math.floor(c / perBlock));
      if (nb) setRefcount(nb.block, c % perBlock, this.refcountOrder, 1);
      else await this.addRefcount(c * this.blockSize, 1, 1);
    }
    for (const x of blocks) { await this.file.writeAt(x.block, x.at); this.refcountBlocks.set(x.at, x.block); }
    await this.file.writeAt(table, tableAt);
    await this.file.sync();
    const old = { at: this.header.refcountTableOffset, clusters: this.header.refcountTableClusters };
    const hdr = Buffer.alloc(12);
    hdr.writeBigUInt64BE(BigInt(tableAt), 0);
    hdr.writeUInt32BE(k, 8);
    await this.file.writeAt(hdr, HEADER_OFFSETS.refcountTableOffset);
    hdr.copy(this.layout.headerBytes, HEADER_OFFSETS.refcountTableOffset);
    this.header.refcountTableOffset = tableAt;
    this.header.refcountTableClusters = k;
    this.refcountTable = table;
    await this.addRefcount(old.at, old.clusters, -1);
  }

  async flush(): Promise<void> {
    await this.writeKeptRefcounts();
    await this.file.sync();
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}

