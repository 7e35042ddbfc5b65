/**
 * The format-neutral view of one image file (one layer of a chain). Everything above `format/`
 * (chain, cli, extension, serve) speaks only this interface and the registry (registry.ts); each
 * format (vhd/, later vhdx/, qcow2/) implements it in its own folder.
 */
export type DiskTypeName = 'fixed' | 'dynamic' | 'differencing';

/** A byte range of the virtual disk and whether this layer holds it (false: ask the parent, or zeros). */
export interface LayerRun {
  offset: number;
  length: number;
  present: boolean;
}

export interface ParentLocatorInfo {
  /** The format's name for where the path came from (VHD: platform code `W2ru`; VHDX: `relative_path`). */
  platform: string;
  /** Decoded path, or null when the data cannot be read or is an opaque blob. */
  path: string | null;
}

/** What a differencing image records about its parent. */
export interface ParentReference {
  /** The parent identity the child records (VHD: the parent's UUID; VHDX: its DataWriteGuid). */
  uuid: string;
  /** The recorded parent time as ISO 8601, or null when the format records none. */
  timestamp: string | null;
  /** The parent's name as recorded (VHD: the unicode name; may be empty). */
  name: string;
  locators: ParentLocatorInfo[];
}

/** One place to look for the parent: a path derived from one recorded locator (or name). */
export interface ParentCandidate {
  /** Which locator it came from, as shown in messages (`W2ru`, `unicode name`, `relative_path`). */
  via: string;
  /** The path as recorded. */
  raw: string;
  /** The path to try on this machine. */
  path: string;
}

/** One recorded locator, for checks that judge each on its own (a stale one is a warning). */
export interface ParentLocatorSource {
  /** As shown in messages, e.g. `W2ku locator`. */
  label: string;
  structure: string;
  offset: number;
  /** The decoded path. */
  raw: string;
  /** The paths this locator alone leads to, in order. */
  candidates: ParentCandidate[];
}

/** Where to look for the parent, in the order to try, derived by the format from what it records. */
export interface ParentCandidates {
  candidates: ParentCandidate[];
  /** Locators that could not be read, as lines for "tried …" messages (e.g. `W2ku: unreadable (…)`). */
  unreadable: string[];
  /** Each readable locator with the candidates it alone gives (unicode names and such not included). */
  sources: ParentLocatorSource[];
}

/** Where a field lives in the file, for error messages: `(structure at offset N)`. */
export interface FieldLocation {
  structure: string;
  offset: number;
}

/**
 * Fields the chain layer names in its errors. `parentLink`: the locators as a whole; `parentId`:
 * the recorded parent identity.
 */
export type ImageField = 'diskType' | 'virtualSize' | 'blockCount' | 'parentLink' | 'parentId';

/** How a child's recorded parent identity compares with an image that is to be its parent. */
export interface ParentLinkCheck {
  /** Name of the identity in messages: `UUID` (VHD), `DataWriteGuid` (VHDX). */
  idName: string;
  /** The identity the child records. */
  expected: string;
  /** The candidate parent's identity. */
  found: string;
  idMatches: boolean;
  /** Null when the format records no parent time. */
  timestampMatches: boolean | null;
  /** Why the time does not match (text without file name), or null. */
  timestampProblem: string | null;
  idLocation: FieldLocation;
  timestampLocation: FieldLocation;
}

/** Reads the virtual disk as the layers below this one see it (used for partial-sector writes). */
export type ReadBelow = (offset: number, target: Buffer) => Promise<void>;

/** Bytes for one place of the virtual disk (a bulk write's unit). */
export interface WritePiece {
  offset: number;
  data: Buffer;
}

/** Records the metadata of staged writes (see DiskImage.stageWrites); call only once their data is durable. */
export type CommitStaged = () => Promise<void>;

export interface DiskImage {
  readonly path: string;
  /** The registry name of the format (`vhd`, `vhdx`, …). */
  readonly format: string;
  readonly diskType: DiskTypeName;
  readonly virtualSize: number;
  readonly sectorSize: number;
  /** Allocation unit; for fixed images a nominal 2 MiB so maps and heatmaps have a grid. */
  readonly blockSize: number;
  readonly blockCount: number;
  readonly uuid: string;
  readonly parent: ParentReference | null;
  readonly warnings: string[];
  readonly writable: boolean;
  /** Size of the file now (it grows as blocks are appended). */
  readonly fileSize: number;
  /** When the image was created, ISO 8601, or null when the format does not record it. */
  readonly created: string | null;

  isBlockAllocated(block: number): boolean;
  allocatedBlockCount(): number;
  /**
   * The block's sector bitmap, one bit per `sectorSize` sector, most significant bit first (formats
   * that store another order convert), or null when the block is not allocated (fixed: all ones).
   */
  readBlockBitmap(block: number): Promise<Uint8Array | null>;
  /**
   * True when this layer holds the whole block as zeros without data (qcow2 zero clusters), for the
   * map's "zero" state. Absent: formats without such blocks.
   */
  isBlockZero?(block: number): boolean;
  /**
   * The first block at or after `from` that isBlockAllocated is true of, or -1: lets maps over
   * millions of mostly empty blocks skip the empty ones in one pass over the table. Absent: callers
   * ask isBlockAllocated block by block.
   */
  nextAllocatedBlock?(from: number): number;
  /** File offset of the block's data (for the editor), or null when it is not allocated. */
  blockFileOffset(block: number): number | null;
  /** Splits [offset, offset+length) into ranges this layer holds or not, adjacent equal runs merged. */
  runs(offset: number, length: number): Promise<LayerRun[]>;
  /**
   * Within a range this layer holds: which parts it holds as zeros without data (qcow2 zero
   * clusters and subclusters), so `map` reports them as qemu-img map does (zero, no data).
   */
  zeroRuns?(offset: number, length: number): Array<{ offset: number; length: number; zero: boolean }>;
  /**
   * Where this layer keeps [offset, offset+length), from what is in memory (no I/O): `'none'` when
   * it holds none of it (the layers below supply it, or zeros), the local file and position when it
   * holds all of it as plain bytes in one contiguous run of its file (the NBD server sends those
   * straight from the file), null otherwise (partly held, split, transformed, or not known without
   * a read). Absent: always null.
   */
  fileExtent?(offset: number, length: number): { fd: number; position: number } | 'none' | null;
  /** Reads bytes this layer holds (every byte of the range must be present). */
  readOwn(offset: number, target: Buffer): Promise<void>;
  /** Writes into this layer; partial sectors not held here are completed from `below`. */
  write(offset: number, data: Buffer, below: ReadBelow): Promise<void>;
  /** Writes what is kept back (see deferMetadataWrites), then makes every write durable (fsync). */
  flush(): Promise<void>;
  /**
   * Bulk writes (merge): writes the data of `pieces` (in order, not overlapping) where no reader
   * of the file sees it yet (new blocks not yet in the BAT/L2) or in place where this layer already
   * holds those bytes, and returns the step that records the metadata pointing at the new data.
   * The caller makes the data durable (flush) before calling it, so one barrier serves many blocks;
   * later stages may run before an earlier commit, and a stage's commit also records every earlier
   * stage not yet committed (call the newest one per barrier). Returns null, having written
   * nothing, when it cannot take the batch as a whole (then use write()). Absent: write().
   */
  stageWrites?(pieces: WritePiece[], below: ReadBelow): Promise<CommitStaged | null>;
  /** Writes what is kept back, then closes. */
  close(): Promise<void>;
  /**
   * Lets small writes keep their metadata updates (VHD: sector bitmaps) in memory until
   * writeMetadata(), flush() or close(): fewer file writes per request (the NBD server). A kill
   * then loses writes not yet flushed, never leaves metadata claiming data that was not written.
   * Absent: every write is complete in the file when it returns.
   */
  deferMetadataWrites?(): void;
  /** Writes the metadata updates kept back by deferMetadataWrites (without fsync). */
  writeMetadata?(): Promise<void>;

  /** Where `field` is stored, for errors that name the structure and offset. */
  locate(field: ImageField): FieldLocation;
  /** Differencing images: the paths to try for the parent, in order (none for others). */
  parentCandidates(): ParentCandidates;
  /** Differencing images: compares the recorded parent identity (and time) with `parent`. */
  checkParent(parent: DiskImage): ParentLinkCheck;
  /**
   * Differencing images opened writable: records `parent` (open, at its final path) as the parent,
   * crash-safely (the old link or the new one, never a mix); flushed when it returns.
   */
  writeParentLink(parent: DiskImage): Promise<void>;
  /**
   * Formats whose identity (as children record it) changes on the first write after open (VHDX:
   * DataWriteGuid): picks that next identity now and returns it, so a merge can have the child
   * accept it before it takes effect. Absent or null: the identity never changes (VHD's UUID).
   */
  reserveNextIdentity?(): string | null;
  /**
   * Differencing images opened writable: accept `next` as well as `parent`'s current identity
   * (VHDX: parent_linkage2), crash-safely, so the link holds before and after the parent changes.
   */
  acceptParentIdentity?(parent: DiskImage, next: string): Promise<void>;
}
