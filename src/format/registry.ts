/**
 * The formats, in one list. Everything above `format/` finds a format here: by content when a file
 * exists (probe), by name only to pick a default for a file still to be created. Adding a format
 * is its folder plus one line in FORMATS (see docs/adding-a-format.md).
 */
import * as nodePath from 'path';
import { ImageFile } from '../io/imageFile';
import { ProblemList } from './checkProblems';
import { DiskImage, FieldLocation, ParentCandidates, ParentLinkCheck } from './diskImage';
import { DiskImageError } from './errors';
import { HeaderDescription } from './headerFields';
import { vhdFormat } from './vhd/vhdFormat';
import { vhdxFormat } from './vhdx/vhdxFormat';
import { qcow2Format } from './qcow2/qcow2Format';
import { rawFormat } from './raw/rawFormat';

export interface OpenOptions {
  writable?: boolean;
  /**
   * Read only what the parent link needs (scanning a folder for children): the block table is not
   * read, so the image's blocks cannot be read or written.
   */
  linkOnly?: boolean;
  /**
   * Where a raw image may stand (a parent: `child disk.img …`, a VHD child's parent recorded with
   * the nil UUID): content no format recognises opens as raw instead of being explained as a
   * broken image of the default format. Block devices fall back to raw always.
   */
  rawFallback?: boolean;
}

export type CreatableType = 'fixed' | 'dynamic';

export interface CreateImageOptions {
  size: number;
  type?: CreatableType;
  /** Bytes per logical sector where the format has a choice (VHDX: 512 or 4096; VHD: 512 only). */
  logicalSectorSize?: 512 | 4096;
  blockSize?: number;
  /** Keep the byte count as given instead of rounding it as the format likes (VHD: to an exact CHS size). */
  exactSize?: boolean;
  /** Allow replacing an existing file (default: refuse). */
  overwrite?: boolean;
  /** An image whose format details to copy where they fit (export: the source's VHD geometry). */
  template?: DiskImage;
}

export interface CreateChildOptions {
  overwrite?: boolean;
}

export interface ScanOptions {
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

/** What the chain layer needs to follow and judge a differencing file's parent link during check. */
export interface ParentLinkScan {
  /** The recorded parent name, for "parent '…' not found". */
  name: string;
  candidates: ParentCandidates;
  /** Where the locators are (for not found, loops). */
  linkLocation: FieldLocation;
  virtualSize: number;
  sizeLocation: FieldLocation;
  checkParent(parent: DiskImage): ParentLinkCheck;
}

/** A format's tolerant scan of one file: its problems so far and its parent link (differencing only). */
export interface FormatScan {
  path: string;
  problems: ProblemList;
  link: ParentLinkScan | null;
}

/** One change repair makes (or would make): where, and what. */
export interface RepairChange {
  structure: string;
  offset: number;
  message: string;
}

/** One atomic repair step: a single write (or a cut); the file is synced after each. */
export interface RepairStep extends RepairChange {
  apply: (file: ImageFile) => Promise<void>;
}

/** What `info` shows of the format's own fields. */
export interface ImageSummary {
  /** `info --json` fields between `virtualSize` and `totalBlocks`, in order. */
  fields: Record<string, unknown>;
  /** `info` text lines after `virtual size`, in order. */
  lines: Array<[string, string]>;
  /** Who made the image, for the editor's overview. */
  creator: string;
}

export interface DiskFormat {
  /** Registry name, also `DiskImage.format` (`vhd`). */
  readonly name: string;
  /** File name extensions, lower case with the dot: for default names and the editor only, never to decide a format. */
  readonly extensions: string[];
  /**
   * True when this format's children may have a parent of another format (qcow2 over VHD or raw):
   * `child parent.vhd x.qcow2` then makes this format's child because of the name.
   */
  readonly foreignParents?: boolean;
  /** Types `create` and `export --format <name>-<type>` make. */
  readonly creatableTypes: CreatableType[];
  /** True when the bytes are this format's: `head` is the file's first bytes, `tail` its last 512. */
  probe(head: Buffer, tail: Buffer, fileSize: number): boolean;
  /**
   * False when the same bytes already show the image has no parent link (a folder scan for
   * children then skips the file without opening it); absent or true: open it to find out.
   */
  mayHaveParent?(head: Buffer, tail: Buffer, fileSize: number): boolean;
  open(path: string, options?: OpenOptions): Promise<DiskImage>;
  /** Creates a fixed or dynamic image; returns the virtual size used. */
  create(path: string, options: CreateImageOptions): Promise<number>;
  /** Creates a differencing child of the open `parent`; absent (raw): children are made in another format. */
  createChild?(parent: DiskImage, childPath: string, options?: CreateChildOptions): Promise<void>;
  /** Has no signature (raw): never probed; chosen only where a fallback is allowed (see OpenOptions.rawFallback). */
  readonly fallback?: boolean;
  /**
   * Names under which content no format recognises opens as this fallback format (a raw dump named
   * `disk.img`), as qemu reads unknown content as raw; other names still get the default format's
   * explanation of why the file is not one of its images.
   */
  readonly fallbackExtensions?: readonly string[];
  /** The file's own structures, read tolerantly; throws only when the file is not this format at all. */
  scan(path: string, file: ImageFile, options?: ScanOptions): Promise<FormatScan>;
  /** What repair would change, from a scan of this format, in a crash-safe order. */
  planRepair(scan: FormatScan): RepairStep[];
  /** The field table for the editor's Header view. */
  headerFields(image: DiskImage): HeaderDescription;
  summary(image: DiskImage): ImageSummary;
}

/** Every format, in probe order; the first is the default for new files with an unknown extension. */
export const FORMATS: readonly DiskFormat[] = [vhdFormat, vhdxFormat, qcow2Format, rawFormat];

/** Bytes a probe reads from the start and from the end of a file. */
export const PROBE_HEAD = 4096;
export const PROBE_TAIL = 512;

export function getFormat(name: string): DiskFormat {
  const f = FORMATS.find((x) => x.name === name);
  if (!f) throw new Error(`unknown image format '${name}'`);
  return f;
}

/** Every extension some format uses (for pickers and the editor). */
export function imageExtensions(): string[] {
  return FORMATS.flatMap((f) => f.extensions);
}

/** The format a file name suggests, or null (only for names of files still to be created, and to explain a failed probe). */
export function formatByExtension(path: string): DiskFormat | null {
  const ext = nodePath.extname(path).toLowerCase();
  return FORMATS.find((f) => f.extensions.includes(ext)) ?? null;
}

/**
 * The format whose bytes the file holds. When none recognises them, the format its name suggests
 * (else the default) is returned so that its open or scan explains, with structure and offset, why
 * the file is not one.
 */
export async function detectFormat(path: string, options: { rawFallback?: boolean } = {}): Promise<DiskFormat> {
  const file = await ImageFile.openForProbe(path);
  try {
    const size = file.size;
    const head = Buffer.alloc(Math.min(PROBE_HEAD, size));
    await file.readInto(head, 0);
    const tail = Buffer.alloc(Math.min(PROBE_TAIL, size));
    await file.readInto(tail, size - tail.length);
    const found = FORMATS.find((f) => !f.fallback && f.probe(head, tail, size));
    if (found) return found;
    const fallback = FORMATS.find((f) => f.fallback);
    const ext = nodePath.extname(path).toLowerCase();
    if (fallback && (options.rawFallback || file.isBlockDevice || fallback.fallbackExtensions?.includes(ext))) return fallback;
    return formatByExtension(path) ?? FORMATS[0];
  } finally {
    await file.close();
  }
}

/**
 * For folder scans: false when a file's first PROBE_HEAD and last PROBE_TAIL bytes show it cannot be
 * anyone's child — no format recognises them (opening would fail or give a raw image, which has no
 * parent), or the format sees no parent link in them. True means: open it to find out.
 */
export function mayBeDifferencing(head: Buffer, tail: Buffer, fileSize: number): boolean {
  const format = FORMATS.find((f) => !f.fallback && f.probe(head, tail, fileSize));
  return format !== undefined && (format.mayHaveParent?.(head, tail, fileSize) ?? true);
}

/** Opens an image of whatever format its content is. */
export async function openImage(path: string, options: OpenOptions = {}): Promise<DiskImage> {
  return (await detectFormat(path, options)).open(path, options);
}

/** Creates a fixed or dynamic image in the format its name suggests (the default format otherwise). */
export async function createImage(path: string, options: CreateImageOptions & { format?: string }): Promise<number> {
  const format = options.format ? getFormat(options.format) : formatByExtension(path) ?? FORMATS[0];
  return format.create(path, options);
}

/** `export --format` names besides `raw`: `<format>-<type>` (`vhd-dynamic`, `vhd-fixed`). */
export function exportTargets(): string[] {
  return FORMATS.flatMap((f) => f.creatableTypes.map((t) => `${f.name}-${t}`));
}

/** What `export --format` accepts: `raw`, each target, and a bare format name (its dynamic type, as `vhdx`). */
export function exportFormatChoices(): string[] {
  return [...new Set(['raw', ...exportTargets(), ...FORMATS.filter((f) => f.creatableTypes.length > 0).map((f) => f.name)])];
}

/** Splits an export target into its format and type, or throws for an unknown one. */
export function parseExportTarget(target: string): { format: DiskFormat; type: CreatableType } {
  const i = target.lastIndexOf('-');
  const format = FORMATS.find((f) => f.name === (i < 0 ? target : target.slice(0, i)));
  const type = (i < 0 ? 'dynamic' : target.slice(i + 1)) as CreatableType;
  if (!format || !format.creatableTypes.includes(type)) {
    throw new DiskImageError(target, `unknown export format (use raw, ${exportTargets().join(', ')})`, undefined, undefined, 'EARG');
  }
  return { format, type };
}
