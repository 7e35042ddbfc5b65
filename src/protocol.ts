/**
 * Every message between the extension host and the editor's webview, typed in one place and
 * imported by both sides. One discriminated union per direction. The webview starts with `ready`;
 * the host answers with `init` and later sends `update` when a file of the chain changes on disk.
 * Per-block data travels as typed arrays, never as arrays of objects. Every string in here may come
 * from an image's bytes (paths, names, creator codes): the webview shows them as text only.
 */

import type { HeaderField, ChecksumCheck } from './format/headerFields';
import type { Partition } from './chain/partitions';
import type { BlockMap } from './chain/blockMap';
import type { ParentSource } from './chain/parentSource';

export type DiskTypeLabel = 'fixed' | 'dynamic' | 'differencing';

export interface OverviewModel {
  fileName: string;
  path: string;
  diskType: DiskTypeLabel;
  virtualSize: number;
  blockSize: number;
  blockCount: number;
  allocatedBlocks: number;
  uuid: string;
  creator: string;
  created: string;
  warnings: string[];
  /** File names from this image down to the ultimate parent. */
  chain: string[];
  chainComplete: boolean;
}

/** The core's descriptions, used as they are (type-only imports: nothing of the core reaches the webview bundle). */
export type HeaderFieldModel = HeaderField;
export type ChecksumModel = ChecksumCheck;

export interface ChainLayerModel {
  index: number;
  path: string;
  fileName: string;
  diskType: DiskTypeLabel;
  virtualSize: number;
  fileSize: number;
  allocatedBlocks: number;
  blockCount: number;
  uuid: string;
  /** What this layer records of its parent (differencing only). */
  parentUuid: string | null;
  parentName: string | null;
  /** Where the parent's bytes come from when it is on a server, a raw file or a block device (else null). */
  parentSource?: ParentSource | null;
  /** Link from this layer to the next one down; null for the last layer when it has no parent. */
  link: null | {
    resolvedPath: string | null;
    via: string | null;
    uuidMatches: boolean | null;
    timestampMatches: boolean | null;
    problem: string | null;
  };
}

export type PartitionModel = Partition;

/** Everything the views need except per-block data. */
export interface ImageModel {
  overview: OverviewModel;
  header: { fields: HeaderFieldModel[]; checksums: ChecksumModel[]; json: string };
  chain: ChainLayerModel[];
  partitions: { scheme: 'none' | 'mbr' | 'gpt'; list: PartitionModel[]; warnings: string[] };
  /** False in an untrusted workspace: commands that write are not offered. */
  canWrite: boolean;
}

/** Per-block arrays on the grid of the top image's blocks, as src/chain/blockMap.ts documents them. */
export type BlockData = Omit<BlockMap, 'virtualSize'> & {
  /**
   * Only in `init`: the owner map (and zero flags) as runs, when that is smaller than the map itself:
   * triples [first, end, owner | zero << 16], `owner` then empty. The webview rebuilds both
   * (webview/ownerRuns.ts); `blocks` brings every array in full right after.
   */
  ownerRuns?: Uint32Array;
};

export interface DiffData {
  otherPath: string;
  otherName: string;
  identical: boolean;
  differingBytes: number;
  /** 1 where the block differs. */
  changed: Uint8Array;
  /** Differing byte ranges (the first ones, when there are very many). */
  ranges: Array<{ start: number; length: number }>;
  rangesTruncated: boolean;
}

export interface LayerBlockModel {
  index: number;
  fileName: string;
  allocated: boolean;
  /** File offset of the block's data in this layer, or null. */
  fileOffset: number | null;
  /** The block's sector bitmap in this layer (null: not allocated); all ones for dynamic/fixed. */
  bitmap: Uint8Array | null;
}

export interface SectorLayerModel {
  index: number;
  fileName: string;
  /** This layer's own bytes for the sector, or null when it does not hold it. */
  bytes: Uint8Array | null;
}

/** Commands the webview may ask the host to run on this image. */
/** Milliseconds spent by the host: opening the chain, building the model and the block map, and from setting the page to the webview's `ready`. */
export interface LoadTimings { openMs: number; modelMs: number; blocksMs: number; readyMs: number; /** Epoch ms when the host started opening the image. */ openedAt: number }

export type EditorCommand =
  | 'relinkParent' | 'diffWith' | 'createChild' | 'snapshot' | 'mergeIntoParent' | 'check' | 'repair' | 'export' | 'discard' | 'startSession' | 'openTrace';

export type ViewName = 'overview' | 'header' | 'blocks' | 'chain' | 'timeline';
export type HeatmapMode = 'allocated' | 'fill' | 'owner' | 'changed' | 'timeline';

/** One write of the trace as the timeline lists and exports it (`t` in seconds since the server started). */
export interface TimelineWrite { t: number; offset: number; length: number; layer: string }

// ---- webview -> host -------------------------------------------------------------------------

export type WebviewMessage =
  | { type: 'ready' }
  | { type: 'requestBlock'; requestId: number; block: number }
  | { type: 'requestSector'; requestId: number; sector: number }
  /** One sector of this image and of the image of the last diff, for the side-by-side view. */
  | { type: 'requestDiffSector'; requestId: number; sector: number }
  | { type: 'copyText'; text: string }
  | { type: 'runCommand'; command: EditorCommand }
  /** Blocks written with from <= t <= to (the brushed range). */
  | { type: 'timelineQuery'; requestId: number; from: number; to: number }
  /** The writes of one block in the range. */
  | { type: 'timelineBlock'; requestId: number; block: number; from: number; to: number }
  /** Save the range as JSON `{from, to, writes:[{t, offset, length, layer}]}`. */
  | { type: 'timelineExport'; from: number; to: number }
  /** Lets tests and the status bar know what is on screen (time to first heatmap draw, in ms). */
  | { type: 'rendered'; view: ViewName; heatmapMs: number | null };

// ---- host -> webview -------------------------------------------------------------------------

export type HostMessage =
  /**
   * The first answer to `ready`. To paint the overview sooner, `blocks` may carry only `owner`
   * (`allocated`, `fill` and `ownerSector` empty, `complete` false); `blocks` follows with all of it.
   */
  | { type: 'init'; model: ImageModel; blocks: BlockData; complete: boolean; diff: DiffData | null; timings?: LoadTimings }
  | { type: 'blocks'; blocks: BlockData }
  /** A file of the chain changed: new data; the webview keeps zoom, mode and selection, and flashes `changedBlocks`. */
  | { type: 'update'; model: ImageModel; blocks: BlockData; changedBlocks: Uint32Array }
  | { type: 'diff'; diff: DiffData }
  | { type: 'blockDetail'; requestId: number; block: number; layers: LayerBlockModel[] }
  | { type: 'sectorDetail'; requestId: number; sector: number; layers: SectorLayerModel[]; winner: number | null; effective: Uint8Array }
  | { type: 'diffSector'; requestId: number; sector: number; aName: string; bName: string; a: Uint8Array; b: Uint8Array }
  | { type: 'showView'; view: ViewName; block?: number }
  /** Blocks an emulator session just wrote (from its trace): a fading flash, no model reload. */
  | { type: 'liveWrites'; blocks: Uint32Array; writesPerSecond: number }
  /** The trace behind the timeline: its span, read/write density over `bins`, and the session's snapshots on its time axis. */
  | { type: 'timeline'; source: string; from: number; to: number; reads: Uint32Array; writes: Uint32Array; records: number; live: boolean;
      snapshots: Array<{ label: string; t: number; layer?: string }> }
  | { type: 'timelineRange'; requestId: number; from: number; to: number; blocks: Uint32Array; lastWrite: Float64Array; records: number;
      /** Compact form (packBrush): each written block's last write as a rank, 0 = from .. 65535 = to, in block order; `lastWrite` is then empty. */
      ranks?: Uint16Array;
      /** With `ranks`, when smaller than the list: bit b (least significant first) set when block b was written; `blocks` is then empty. */
      written?: Uint8Array }
  | { type: 'timelineWrites'; requestId: number; block: number; writes: TimelineWrite[] }
  | { type: 'error'; requestId?: number; message: string };

const WEBVIEW_TYPES = new Set(['ready', 'requestBlock', 'requestSector', 'requestDiffSector', 'copyText', 'runCommand', 'rendered', 'timelineQuery', 'timelineBlock', 'timelineExport']);
const EDITOR_COMMANDS = new Set<EditorCommand>(['relinkParent', 'diffWith', 'createChild', 'snapshot', 'mergeIntoParent', 'check', 'repair', 'export', 'discard', 'startSession', 'openTrace']);
const VIEWS = new Set<ViewName>(['overview', 'header', 'blocks', 'chain', 'timeline']);

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Validates a message from the webview (the host never trusts its shape). */
export function parseWebviewMessage(raw: unknown): WebviewMessage | null {
  if (typeof raw !== 'object' || raw === null) return null;
  const m = raw as Record<string, unknown>;
  if (typeof m.type !== 'string' || !WEBVIEW_TYPES.has(m.type)) return null;
  switch (m.type) {
    case 'ready': return { type: 'ready' };
    case 'requestBlock': return isInt(m.requestId) && isInt(m.block) ? { type: 'requestBlock', requestId: m.requestId, block: m.block } : null;
    case 'requestSector': return isInt(m.requestId) && isInt(m.sector) ? { type: 'requestSector', requestId: m.requestId, sector: m.sector } : null;
    case 'requestDiffSector': return isInt(m.requestId) && isInt(m.sector) ? { type: 'requestDiffSector', requestId: m.requestId, sector: m.sector } : null;
    case 'copyText': return typeof m.text === 'string' ? { type: 'copyText', text: m.text } : null;
    case 'runCommand': return typeof m.command === 'string' && EDITOR_COMMANDS.has(m.command as EditorCommand) ? { type: 'runCommand', command: m.command as EditorCommand } : null;
    case 'timelineQuery': return isInt(m.requestId) && isTime(m.from) && isTime(m.to) ? { type: 'timelineQuery', requestId: m.requestId, from: m.from, to: m.to } : null;
    case 'timelineBlock': return isInt(m.requestId) && isInt(m.block) && isTime(m.from) && isTime(m.to)
      ? { type: 'timelineBlock', requestId: m.requestId, block: m.block, from: m.from, to: m.to } : null;
    case 'timelineExport': return isTime(m.from) && isTime(m.to) ? { type: 'timelineExport', from: m.from, to: m.to } : null;
    case 'rendered':
      return typeof m.view === 'string' && VIEWS.has(m.view as ViewName) && (m.heatmapMs === null || typeof m.heatmapMs === 'number')
        ? { type: 'rendered', view: m.view as ViewName, heatmapMs: m.heatmapMs as number | null } : null;
    default: return null;
  }
}

/** Block indices whose allocation, fill, owner or zero state differ between two block maps of the same grid. */
export function changedBlocks(before: BlockData, after: BlockData): Uint32Array {
  if (before.blockCount !== after.blockCount) return new Uint32Array(0);
  const out: number[] = [];
  for (let i = 0; i < after.blockCount; i++) {
    // A block that moved to another place in the file (or to another layer) changed too.
    if (before.allocated[i] !== after.allocated[i] || before.fill[i] !== after.fill[i] || before.owner[i] !== after.owner[i]
      || before.ownerSector[i] !== after.ownerSector[i] || (before.zero?.[i] ?? 0) !== (after.zero?.[i] ?? 0)) out.push(i);
  }
  return Uint32Array.from(out);
}
