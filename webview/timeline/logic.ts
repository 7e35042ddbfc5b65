/** The timeline's arithmetic, pure (unit-tested): time <-> pixels, brushed range -> per-block ages, sparkline samples. */

/** The x pixel of time `t` on an axis of `width` pixels spanning [from, to]. */
export function timeToX(t: number, from: number, to: number, width: number): number {
  return to > from ? ((t - from) / (to - from)) * width : 0;
}

/** The time at x pixel `x` (clamped to the axis). */
export function xToTime(x: number, from: number, to: number, width: number): number {
  const f = width > 0 ? Math.min(1, Math.max(0, x / width)) : 0;
  return from + f * (to - from);
}

/** A brush from two x positions, ordered. */
export function brushRange(x0: number, x1: number, from: number, to: number, width: number): { from: number; to: number } {
  const a = xToTime(Math.min(x0, x1), from, to, width);
  const b = xToTime(Math.max(x0, x1), from, to, width);
  return { from: a, to: b };
}

/**
 * Per-block colour position for the heatmap: the block's last write in the range, 0 at `from`
 * (oldest) to 1 at `to` (newest); -1 for blocks not written in the range.
 */
export function blockAges(blockCount: number, blocks: ArrayLike<number>, lastWrite: ArrayLike<number>, from: number, to: number, into?: Float32Array): Float32Array {
  // `into` (blockCount long) is reused across brushes instead of a new array each time.
  const age = (into && into.length === blockCount ? into : new Float32Array(blockCount)).fill(-1);
  const span = to - from;
  for (let i = 0; i < blocks.length; i++) {
    const b = blocks[i];
    if (b >= blockCount) continue;
    age[b] = span > 0 ? Math.min(1, Math.max(0, (lastWrite[i] - from) / span)) : 1;
  }
  return age;
}

/** A brush answer as the host posts it: the full form, or packed (src/serve/traceIndex.ts packBrush). */
export interface BrushMessage {
  from: number;
  to: number;
  blocks: Uint32Array;
  lastWrite: ArrayLike<number>;
  ranks?: Uint16Array;
  written?: Uint8Array;
}

/** The newest rank (src/serve/traceIndex.ts RANK_MAX). */
export const RANK_MAX = 65535;

/**
 * The written blocks of a brush answer, ascending, with each one's last write as a rank (0 at
 * `from`, oldest .. 65535 at `to`, newest): the sparse form the brush painter reads, whatever the
 * wire form.
 */
export function brushBlocks(m: BrushMessage): { blocks: Uint32Array; ranks: Uint16Array } {
  if (!m.ranks) {
    const k = m.blocks.length;
    const ranks = new Uint16Array(k);
    const span = m.to - m.from;
    for (let i = 0; i < k; i++) {
      const x = span > 0 ? (m.lastWrite[i] - m.from) / span : 1;
      ranks[i] = Math.round(RANK_MAX * (x < 0 ? 0 : x > 1 ? 1 : x));
    }
    return { blocks: m.blocks, ranks };
  }
  const k = m.ranks.length;
  const bits = m.written;
  if (!bits || bits.length === 0) return { blocks: m.blocks, ranks: m.ranks };
  const blocks = new Uint32Array(k);
  let o = 0;
  for (let i = 0; i < bits.length && o < k; i++) {
    let v = bits[i];
    while (v !== 0) {
      const low = v & -v;
      blocks[o++] = (i << 3) + 31 - Math.clz32(low);
      v ^= low;
    }
  }
  if (o !== k) throw new Error(`timeline: ${o} written blocks in the bitmap, ${k} ranks`);
  return { blocks, ranks: m.ranks };
}

/** The replay's next brush end: `speed` trace seconds per wall second, wrapping to stop at `to`. */
export function replayStep(current: number, elapsedMs: number, speed: number, to: number): { t: number; done: boolean } {
  const t = current + (elapsedMs / 1000) * speed;
  return t >= to ? { t: to, done: true } : { t, done: false };
}

/** A fixed-length history of rates for the sparkline (the newest last). */
export class RateHistory {
  readonly values: number[];
  constructor(readonly length = 60) {
    this.values = new Array(length).fill(0);
  }
  push(v: number): void {
    this.values.push(v);
    if (this.values.length > this.length) this.values.shift();
  }
  get max(): number {
    return Math.max(1, ...this.values);
  }
}

/** How long a live write's flash takes to fade out, and how long it stays at full strength first. */
export const FLASH_FADE_MS = 2500;
export const FLASH_HOLD_MS = 150;

/**
 * Opacity of a block's write flash `elapsedMs` after the write was seen: full for a moment, then an
 * ease-out to 0 (gradual, not on/off), so a burst of writes reads as a trail, newest brightest.
 */
export function flashAlpha(elapsedMs: number, fadeMs = FLASH_FADE_MS, holdMs = FLASH_HOLD_MS): number {
  if (elapsedMs < 0) return 1;
  if (elapsedMs <= holdMs) return 1;
  if (elapsedMs >= fadeMs) return 0;
  const p = (elapsedMs - holdMs) / (fadeMs - holdMs);
  return 1 - p * p * (3 - 2 * p);
}
