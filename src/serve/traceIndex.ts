/**
 * An index over the trace `diskimg serve --trace` writes (one JSON object a line:
 * `{"t","export","op","offset","length","layer"}`), built once and appended to as lines arrive, so
 * that "which blocks were written between t0 and t1" and "every write of block b" are answered
 * without a pass over the whole trace per question. Pure (no fs, no vscode): the extension host
 * and the tests both use it.
 *
 * Records live in growable typed arrays in arrival order; the server stamps them in completion
 * order, so they are normally sorted by time already (a record older than the last one makes the
 * index sort itself before the next query). Per-block write lists are kept as one CSR table
 * (start offsets per block + record numbers in time order), rebuilt lazily after appends. A brush
 * reads a compact copy of the data-changing records only (time, first and last block), appended to
 * as records arrive, so it touches neither reads nor the wide record arrays; a brush that reaches
 * the end of the trace ("All", "#k → now") is a filter over a per-block last-write table kept for
 * the written blocks only. `snapshot` lines are kept apart, as the marks of the time axis.
 */

export type TraceRecordOp = 'read' | 'write' | 'trim' | 'zero' | 'flush' | 'snapshot';

export interface TraceRecord {
  t: number;
  export: string;
  op: TraceRecordOp;
  offset: number;
  length: number;
  layer: string;
}

/** One write as the timeline and the JSON export show it. */
export interface TraceWrite {
  t: number;
  offset: number;
  length: number;
  layer: string;
  op: TraceRecordOp;
}

const OPS: TraceRecordOp[] = ['read', 'write', 'trim', 'zero', 'flush', 'snapshot'];
const OP_CODE = new Map(OPS.map((o, i) => [o, i]));
const READ = 0;
/** Grids up to this many blocks keep a per-block last-write table (8 bytes a block) for brushes that reach the end. */
const SWEEP_MAX_BLOCKS = 1 << 22;
const FLUSH = 4;

/** Ops that change what the disk reads (write, trim, write-zeroes). */
export function changesData(op: TraceRecordOp): boolean {
  return op === 'write' || op === 'trim' || op === 'zero';
}

/** Parses one trace line; null for a blank, malformed or foreign line (the trace is only appended to, a torn last line is normal). */
export function parseTraceLine(line: string): TraceRecord | null {
  const s = line.trim();
  if (!s || s[0] !== '{') return null;
  let o: unknown;
  try {
    o = JSON.parse(s);
  } catch {
    return null;
  }
  if (!o || typeof o !== 'object') return null;
  const r = o as Record<string, unknown>;
  if (typeof r.t !== 'number' || !Number.isFinite(r.t)) return null;
  if (typeof r.op !== 'string' || !OP_CODE.has(r.op as TraceRecordOp)) return null;
  const offset = typeof r.offset === 'number' && Number.isFinite(r.offset) && r.offset >= 0 ? r.offset : 0;
  const length = typeof r.length === 'number' && Number.isFinite(r.length) && r.length >= 0 ? r.length : 0;
  return {
    t: r.t,
    export: typeof r.export === 'string' ? r.export : '',
    op: r.op as TraceRecordOp,
    offset,
    length,
    layer: typeof r.layer === 'string' ? r.layer : '',
  };
}

/** Splits appended text into lines, keeping a torn last line for the next chunk. */
export class TraceLineSplitter {
  private rest = '';
  push(chunk: string): string[] {
    const text = this.rest + chunk;
    const lines = text.split('\n');
    this.rest = lines.pop() ?? '';
    return lines;
  }
}

export interface BlocksInRange {
  /** Block numbers written in the range, ascending. */
  blocks: Uint32Array;
  /** For each of `blocks`, the time of its last write in the range. */
  lastWrite: Float64Array;
  /** For each of `blocks`, how many writes reached it in the range (empty when asked without counts). */
  writes: Uint32Array;
  /** Write records in the range (each once, however many blocks it spans). */
  records: number;
}

/** A snapshot the server took, at its place on the trace's clock. */
export interface SnapshotMark {
  t: number;
  /** The frozen layer's file name. */
  layer: string;
}

export interface Density {
  from: number;
  to: number;
  reads: Uint32Array;
  writes: Uint32Array;
}

export interface TraceIndexOptions {
  /** Bytes per block of the grid the questions are asked in (the editor's heatmap grid). */
  blockSize: number;
  /** Only records of this export count; all when undefined. */
  exportName?: string;
  /** Blocks past this are clamped out (the disk's block count); unbounded when undefined. */
  blockCount?: number;
}

export class TraceIndex {
  readonly blockSize: number;
  readonly exportName: string | undefined;
  private blockCount: number;
  private readonly fixedBlocks: boolean;
  private n = 0;
  private t = new Float64Array(1024);
  private offset = new Float64Array(1024);
  private length = new Float64Array(1024);
  private op = new Uint8Array(1024);
  private layer = new Uint16Array(1024);
  private readonly layers: string[] = [];
  private readonly layerCode = new Map<string, number>();
  private sorted = true;
  private csrStart: Uint32Array | null = null;
  private csrRecords: Uint32Array | null = null;
  /** The data-changing records in time order: time, first and last block (first > last: outside the grid). */
  private wN = 0;
  private wT = new Float64Array(1024);
  private wFirst = new Uint32Array(1024);
  private wLast = new Uint32Array(1024);
  /** Prefix counts kept while records arrive in order (rebuilt after a sort). */
  private wBefore = new Uint32Array(1025);
  private rBefore = new Uint32Array(1025);
  private readonly marks: SnapshotMark[] = [];
  private marksSorted = true;
  /** Scratch per block for range queries (zero between queries): 1 + index of the last write in the range. */
  private lastOf: Uint32Array | null = null;
  /**
   * Per block, the time of its last write among the first `lastTimeUpTo` entries of the write view
   * (NaN: none), caught up lazily: a brush that reaches the end of the trace ("All", "#k → now")
   * is then a sequential filter over it instead of a random access per write.
   */
  private lastTime: Float64Array | null = null;
  private lastTimeUpTo = 0;
  /** The blocks with a last write in that table, ascending. */
  private everWritten = new Uint32Array(0);
  private touched: Uint32Array | null = null;
  private scratchCount: Uint32Array | null = null;

  constructor(options: TraceIndexOptions) {
    if (!(options.blockSize > 0)) throw new Error('trace index: block size must be positive');
    this.blockSize = options.blockSize;
    this.exportName = options.exportName;
    this.blockCount = options.blockCount ?? 0;
    this.fixedBlocks = options.blockCount !== undefined;
  }

  get size(): number {
    return this.n;
  }

  /** Time of the first and last record, or null when empty. */
  get timeRange(): { from: number; to: number } | null {
    if (this.n === 0) return null;
    this.ensureSorted();
    return { from: this.t[0], to: this.t[this.n - 1] };
  }

  /** Blocks the grid covers: the given block count, or as far as the trace reached. */
  get blocks(): number {
    return this.blockCount;
  }

  /** Adds a record (ignored when it belongs to another export); returns whether it was kept. */
  add(r: TraceRecord): boolean {
    if (this.exportName !== undefined && r.export !== this.exportName) return false;
    if (r.op === 'snapshot') {
      if (this.marks.length > 0 && r.t < this.marks[this.marks.length - 1].t) this.marksSorted = false;
      this.marks.push({ t: r.t, layer: r.layer });
      return true;
    }
    if (this.n === this.t.length) this.grow();
    const i = this.n++;
    if (i > 0 && r.t < this.t[i - 1]) this.sorted = false;
    this.t[i] = r.t;
    this.offset[i] = r.offset;
    this.length[i] = r.length;
    const code = OP_CODE.get(r.op)!;
    this.op[i] = code;
    let l = this.layerCode.get(r.layer);
    if (l === undefined) {
      l = this.layers.length;
      if (l > 0xffff) throw new Error('trace index: more than 65536 layer names');
      this.layers.push(r.layer);
      this.layerCode.set(r.layer, l);
    }
    this.layer[i] = l;
    if (!this.fixedBlocks && code !== READ && code !== FLUSH && r.length > 0) {
      const last = Math.floor((r.offset + r.length - 1) / this.blockSize);
      if (last + 1 > this.blockCount) this.blockCount = last + 1;
    }
    if (this.sorted) this.appendDerived(i);
    this.csrStart = null;
    this.csrRecords = null;
    return true;
  }

  /** Adds the records of complete trace lines; returns how many were kept. */
  addLines(lines: Iterable<string>): number {
    let kept = 0;
    for (const line of lines) {
      const r = parseTraceLine(line);
      if (r && this.add(r)) kept++;
    }
    return kept;
  }

  private recordAt(i: number): TraceWrite {
    return { t: this.t[i], offset: this.offset[i], length: this.length[i], layer: this.layers[this.layer[i]], op: OPS[this.op[i]] };
  }

  private grow(): void {
    const cap = this.t.length * 2;
    const g = <T extends Float64Array | Uint8Array | Uint16Array>(a: T, C: new (n: number) => T): T => {
      const b = new C(cap);
      b.set(a);
      return b;
    };
    this.t = g(this.t, Float64Array);
    this.offset = g(this.offset, Float64Array);
    this.length = g(this.length, Float64Array);
    this.op = g(this.op, Uint8Array);
    this.layer = g(this.layer, Uint16Array);
  }

  /** Extends the write view and the prefix counts by record `i` (records in time order). */
  private appendDerived(i: number): void {
    if (i + 2 > this.wBefore.length) {
      const cap = this.wBefore.length * 2;
      const w = new Uint32Array(cap); w.set(this.wBefore); this.wBefore = w;
      const r = new Uint32Array(cap); r.set(this.rBefore); this.rBefore = r;
    }
    const write = this.isWrite(i);
    this.wBefore[i + 1] = this.wBefore[i] + (write ? 1 : 0);
    this.rBefore[i + 1] = this.rBefore[i] + (this.op[i] === READ ? 1 : 0);
    if (!write) return;
    if (this.wN === this.wT.length) {
      const cap = this.wT.length * 2;
      const t = new Float64Array(cap); t.set(this.wT); this.wT = t;
      const f = new Uint32Array(cap); f.set(this.wFirst); this.wFirst = f;
      const l = new Uint32Array(cap); l.set(this.wLast); this.wLast = l;
    }
    const j = this.wN++;
    const first = Math.floor(this.offset[i] / this.blockSize);
    const last = Math.min(Math.floor((this.offset[i] + this.length[i] - 1) / this.blockSize), this.fixedBlocks ? this.blockCount - 1 : Infinity);
    this.wT[j] = this.t[i];
    // Past the grid (or past 2^32 blocks): an empty span, counted as a write but painting nothing.
    if (first > 0xfffffffe || last < first) { this.wFirst[j] = 1; this.wLast[j] = 0; return; }
    this.wFirst[j] = first;
    this.wLast[j] = Math.min(last, 0xfffffffe);
  }

  /** Rebuilds the write view and prefix counts from the (now sorted) records. */
  private rebuildDerived(): void {
    this.wN = 0;
    this.lastTimeUpTo = 0;
    this.lastTime?.fill(NaN);
    this.everWritten = new Uint32Array(0);
    this.wBefore[0] = 0;
    this.rBefore[0] = 0;
    for (let i = 0; i < this.n; i++) this.appendDerived(i);
  }

  /** Snapshot marks in time order. */
  get snapshots(): SnapshotMark[] {
    if (!this.marksSorted) {
      this.marks.sort((a, b) => a.t - b.t);
      this.marksSorted = true;
    }
    return this.marks.map((m) => ({ ...m }));
  }

  /** Stable sort by time (only after an out-of-order record). */
  private ensureSorted(): void {
    if (this.sorted) return;
    const order = new Uint32Array(this.n);
    for (let i = 0; i < this.n; i++) order[i] = i;
    const t = this.t;
    order.sort((a, b) => (t[a] - t[b]) || (a - b));
    const perm = <T extends Float64Array | Uint8Array | Uint16Array>(a: T): T => {
      const b = a.slice() as T;
      for (let i = 0; i < this.n; i++) b[i] = a[order[i]];
      return b;
    };
    this.t = perm(this.t);
    this.offset = perm(this.offset);
    this.length = perm(this.length);
    this.op = perm(this.op);
    this.layer = perm(this.layer);
    this.sorted = true;
    this.rebuildDerived();
  }

  private isWrite(i: number): boolean {
    const c = this.op[i];
    return c !== READ && c !== FLUSH && this.length[i] > 0;
  }

  /** First record index with t >= time. */
  private lowerBound(time: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.t[mid] < time) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** First record index with t > time. */
  private upperBound(time: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.t[mid] <= time) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** First write-view index with time >= `time` (or > `time` when `after`). */
  private writeBound(time: number, after: boolean): number {
    const t = this.wT;
    let lo = 0;
    let hi = this.wN;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (t[mid] < time || (after && t[mid] === time)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private blockSpan(i: number): [number, number] {
    const first = Math.floor(this.offset[i] / this.blockSize); // past the grid: last < first, an empty span
    const last = Math.min(Math.floor((this.offset[i] + this.length[i] - 1) / this.blockSize), this.blockCount - 1);
    return [first, last];
  }

  private ensureCsr(): void {
    if (this.csrStart) return;
    this.ensureSorted();
    const blocks = this.blockCount;
    const start = new Uint32Array(blocks + 1);
    let total = 0;
    for (let i = 0; i < this.n; i++) {
      if (!this.isWrite(i)) continue;
      const [a, b] = this.blockSpan(i);
      for (let k = a; k <= b; k++) start[k + 1]++;
      total += b >= a ? b - a + 1 : 0;
    }
    for (let k = 0; k < blocks; k++) start[k + 1] += start[k];
    const fill = start.slice(0, blocks);
    const records = new Uint32Array(total);
    for (let i = 0; i < this.n; i++) {
      if (!this.isWrite(i)) continue;
      const [a, b] = this.blockSpan(i);
      for (let k = a; k <= b; k++) records[fill[k]++] = i;
    }
    this.csrStart = start;
    this.csrRecords = records;
  }

  /**
   * Blocks written with from <= t <= to, with the time of the last write to each and the count:
   * one pass over the records in the range, no pass over the whole trace. `counts: false` leaves
   * `writes` empty (the timeline's brush does not show them) and saves a random access per block.
   */
  blocksWritten(from: number, to: number, options: { counts?: boolean } = {}): BlocksInRange {
    this.ensureSorted();
    const withCounts = options.counts !== false;
    const blocks = this.blockCount;
    this.ensureScratch();
    // lastOf[b]: 1 + the write-view index of b's last write in the range, 0 when untouched; all
    // zero again when the query returns (only the touched entries are cleared).
    const lastOf = this.lastOf!;
    const touched = this.touched!;
    const count = this.scratchCount!;
    const wFirst = this.wFirst;
    const wLast = this.wLast;
    const j0 = this.writeBound(from, false);
    const j1 = this.writeBound(to, true);
    if (!withCounts && j1 === this.wN && (j1 - j0) * 8 > blocks && blocks <= SWEEP_MAX_BLOCKS) return this.suffixBlocks(from, j1 - j0);
    let k = 0;
    for (let j = j0; j < j1; j++) {
      const b = wLast[j];
      const mark = j + 1;
      for (let a = wFirst[j]; a <= b; a++) {
        if (lastOf[a] === 0) {
          touched[k++] = a;
          if (withCounts) count[a] = 0;
        }
        lastOf[a] = mark;
        if (withCounts) count[a]++;
      }
    }
    // Ascending block numbers: sort the few touched, or sweep when many were (sequential reads of
    // a million entries cost less than sorting hundreds of thousands).
    let out: Uint32Array;
    if (k * 16 > blocks) {
      out = new Uint32Array(k);
      let o = 0;
      for (let b = 0; o < k; b++) if (lastOf[b] !== 0) out[o++] = b;
    } else {
      out = touched.slice(0, k).sort();
    }
    const wT = this.wT;
    const lastWrite = new Float64Array(k);
    const writes = new Uint32Array(withCounts ? k : 0);
    for (let j = 0; j < k; j++) {
      const b = out[j];
      lastWrite[j] = wT[lastOf[b] - 1];
      if (withCounts) writes[j] = count[b];
      lastOf[b] = 0;
    }
    return { blocks: out, lastWrite, writes, records: j1 - j0 };
  }

  private ensureScratch(): void {
    if (this.lastOf && this.lastOf.length >= this.blockCount) return;
    const size = Math.max(this.blockCount, 1);
    this.lastOf = new Uint32Array(size);
    this.touched = new Uint32Array(size);
    this.scratchCount = new Uint32Array(size);
  }

  /** Brings the per-block last-write table and the list of written blocks up to the last write. */
  private catchUpLastTime(): void {
    const blocks = this.blockCount;
    if (!this.lastTime || this.lastTime.length < blocks) {
      this.lastTime = new Float64Array(Math.max(blocks, 1)).fill(NaN);
      this.lastTimeUpTo = 0;
      this.everWritten = new Uint32Array(0);
    }
    const lt = this.lastTime;
    const wT = this.wT;
    const wFirst = this.wFirst;
    const wLast = this.wLast;
    // Catch up with the writes appended since the last such brush; blocks written for the first
    // time are merged into the ascending list of written blocks, the only ones a brush looks at.
    const fresh = this.touched!;
    let f = 0;
    for (let j = this.lastTimeUpTo; j < this.wN; j++) {
      const t = wT[j];
      for (let a = wFirst[j], b = wLast[j]; a <= b; a++) {
        if (lt[a] !== lt[a]) fresh[f++] = a;
        lt[a] = t;
      }
    }
    this.lastTimeUpTo = this.wN;
    if (f > 0) {
      const add = fresh.subarray(0, f).sort();
      const old = this.everWritten;
      const merged = new Uint32Array(old.length + f);
      let i = 0;
      let j = 0;
      let o = 0;
      while (i < old.length && j < f) merged[o++] = old[i] < add[j] ? old[i++] : add[j++];
      while (i < old.length) merged[o++] = old[i++];
      while (j < f) merged[o++] = add[j++];
      this.everWritten = merged;
    }
  }

  /** A range that reaches the last write: the blocks whose last write overall is at or after `from`. */
  private suffixBlocks(from: number, records: number): BlocksInRange {
    this.catchUpLastTime();
    const lt = this.lastTime!;
    const wT = this.wT;
    const all = this.everWritten;
    const m = all.length;
    let out: Uint32Array;
    if (this.wN > 0 && from <= wT[0]) {
      out = all.slice();
    } else {
      // Two passes (count, then fill) instead of a block-sized scratch for the answer.
      let k = 0;
      for (let i = 0; i < m; i++) if (lt[all[i]] >= from) k++;
      out = new Uint32Array(k);
      for (let i = 0, o = 0; o < k; i++) if (lt[all[i]] >= from) out[o++] = all[i];
    }
    const lastWrite = new Float64Array(out.length);
    for (let i = 0; i < out.length; i++) lastWrite[i] = lt[out[i]];
    return { blocks: out, lastWrite, writes: new Uint32Array(0), records };
  }

  /**
   * The brush answer as the timeline posts it (packBrush of blocksWritten without counts), made
   * straight from the last-write table when the range reaches the last write.
   */
  brushPacked(from: number, to: number): PackedBrush & { records: number; count: number } {
    this.ensureSorted();
    const blocks = this.blockCount;
    const j0 = this.writeBound(from, false);
    const j1 = this.writeBound(to, true);
    if (!(j1 === this.wN && (j1 - j0) * 8 > blocks && blocks <= SWEEP_MAX_BLOCKS)) {
      const r = this.blocksWritten(from, to, { counts: false });
      return { ...packBrush(r, from, to, blocks), records: r.records, count: r.blocks.length };
    }
    this.ensureScratch();
    this.catchUpLastTime();
    const lt = this.lastTime!;
    const all = this.everWritten;
    const m = all.length;
    let k = 0;
    for (let i = 0; i < m; i++) if (lt[all[i]] >= from) k++;
    const ranks = new Uint16Array(k);
    const span = to - from;
    const dense = k * 32 > blocks;
    const written = new Uint8Array(dense ? (blocks + 7) >>> 3 : 0);
    const list = new Uint32Array(dense ? 0 : k);
    for (let i = 0, o = 0; o < k; i++) {
      const b = all[i];
      const t = lt[b];
      if (!(t >= from)) continue;
      // packBrush's rounding of (t - from) / span, clamped (t <= to here).
      const x = span > 0 ? (t - from) / span : 1;
      ranks[o] = Math.round(RANK_MAX * (x > 1 ? 1 : x));
      if (dense) written[b >>> 3] |= 1 << (b & 7);
      else list[o] = b;
      o++;
    }
    return { blocks: list, written, ranks, records: j1 - j0, count: k };
  }

  /** Every write that reached `block` (time order), optionally only those with from <= t <= to. */
  writesOfBlock(block: number, from = -Infinity, to = Infinity): TraceWrite[] {
    this.ensureCsr();
    if (block < 0 || block >= this.blockCount) return [];
    const s = this.csrStart![block];
    const e = this.csrStart![block + 1];
    const out: TraceWrite[] = [];
    for (let j = s; j < e; j++) {
      const i = this.csrRecords![j];
      if (this.t[i] < from || this.t[i] > to) continue;
      out.push(this.recordAt(i));
    }
    return out;
  }

  /** Number of writes that reached `block`. */
  writeCountOfBlock(block: number): number {
    this.ensureCsr();
    if (block < 0 || block >= this.blockCount) return 0;
    return this.csrStart![block + 1] - this.csrStart![block];
  }

  /** Every data-changing record with from <= t <= to, in time order (the JSON export). */
  writesBetween(from: number, to: number): TraceWrite[] {
    this.ensureSorted();
    const out: TraceWrite[] = [];
    const i1 = this.upperBound(to);
    for (let i = this.lowerBound(from); i < i1; i++) if (this.isWrite(i)) out.push(this.recordAt(i));
    return out;
  }

  /** Reads and writes per time bin, `bins` equal bins over [from, to] (the timeline's density strip). */
  density(from: number, to: number, bins: number): Density {
    this.ensureSorted();
    const w = this.wBefore;
    const r = this.rBefore;
    const reads = new Uint32Array(bins);
    const writes = new Uint32Array(bins);
    const width = (to - from) / bins;
    let prev = this.lowerBound(from);
    for (let b = 0; b < bins; b++) {
      const next = b === bins - 1 ? this.upperBound(to) : this.lowerBound(from + width * (b + 1));
      reads[b] = r[next] - r[prev];
      writes[b] = w[next] - w[prev];
      prev = next;
    }
    return { from, to, reads, writes };
  }

  /** The selection as the timeline exports it. */
  exportJson(from: number, to: number): { from: number; to: number; writes: Array<{ t: number; offset: number; length: number; layer: string }> } {
    return { from, to, writes: this.writesBetween(from, to).map((w) => ({ t: w.t, offset: w.offset, length: w.length, layer: w.layer })) };
  }
}

/** A brush answer as the webview gets it: a few bytes a written block instead of 12 (the message's copy dominated the redraw). */
export interface PackedBrush {
  /** The written blocks, ascending; empty when `written` holds them. */
  blocks: Uint32Array;
  /** Bit b (least significant first) set when block b was written; empty when `blocks` is the smaller form. */
  written: Uint8Array;
  /** Each written block's last write in block order: 0 = from .. 65535 = to (the colour scale's resolution and more). */
  ranks: Uint16Array;
}

export const RANK_MAX = 65535;

/** Packs `r` (blocks of a grid of `blockCount`) for the brushed range [from, to]. */
export function packBrush(r: Pick<BlocksInRange, 'blocks' | 'lastWrite'>, from: number, to: number, blockCount: number): PackedBrush {
  const k = r.blocks.length;
  const span = to - from;
  const ranks = new Uint16Array(k);
  for (let i = 0; i < k; i++) {
    const x = span > 0 ? (r.lastWrite[i] - from) / span : 1;
    ranks[i] = Math.round(RANK_MAX * (x < 0 ? 0 : x > 1 ? 1 : x));
  }
  // A bitmap costs blockCount / 8 bytes, the list 4 a block.
  if (k * 32 <= blockCount || (k > 0 && r.blocks[k - 1] >= blockCount)) return { blocks: r.blocks, written: new Uint8Array(0), ranks };
  const written = new Uint8Array((blockCount + 7) >>> 3);
  for (let i = 0; i < k; i++) {
    const b = r.blocks[i];
    if (b < blockCount) written[b >>> 3] |= 1 << (b & 7);
  }
  return { blocks: new Uint32Array(0), written, ranks };
}
