/**
 * The format-neutral view of one image file (one layer of a chain). VHD implements it first;
 * VHDX or qcow2 can sit beside it without anything above `format/` changing.
 */
export type DiskTypeName = 'fixed' | 'dynamic' | 'differencing';

/** A byte range of the virtual disk and whether this layer holds it (false: ask the parent, or zeros). */
export interface LayerRun {
  offset: number;
  length: number;
  present: boolean;
}

export interface ParentLocatorInfo {
  platform: string;
  /** Decoded path, or null when the data cannot be read or is an opaque blob. */
  path: string | null;
}

export interface ParentReference {
  uuid: string;
  /** Seconds since 2000-01-01 UTC, as stored. */
  timestamp: number;
  name: string;
  locators: ParentLocatorInfo[];
}

/** Reads the virtual disk as the layers below this one see it (used for partial-sector writes). */
export type ReadBelow = (offset: number, target: Buffer) => Promise<void>;

export interface DiskImage {
  readonly path: string;
  readonly format: 'vhd' | 'vhdx';
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

  isBlockAllocated(block: number): boolean;
  allocatedBlockCount(): number;
  /** The block's sector bitmap, or null when the block is not allocated (fixed: all ones). */
  readBlockBitmap(block: number): Promise<Uint8Array | null>;
  /** Splits [offset, offset+length) into ranges this layer holds or not, adjacent equal runs merged. */
  runs(offset: number, length: number): Promise<LayerRun[]>;
  /** Reads bytes this layer holds (every byte of the range must be present). */
  readOwn(offset: number, target: Buffer): Promise<void>;
  /** Writes into this layer; partial sectors not held here are completed from `below`. */
  write(offset: number, data: Buffer, below: ReadBelow): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}
