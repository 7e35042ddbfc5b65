import { strict as assert } from 'assert';
import { changesData, packBrush, parseTraceLine, TraceIndex, TraceLineSplitter, TraceRecord, TraceRecordOp } from '../../src/serve/traceIndex';

/** xorshift32: reproducible random traces. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x / 0x100000000;
  };
}

const BLOCK = 2 * 1024 * 1024;
const SECTOR = 512;

/** A trace like a guest's: mostly small writes and reads, some spanning blocks, hot spots, a few flushes, equal times. */
function randomTrace(count: number, blocks: number, seed: number, shuffled = 0): TraceRecord[] {
  const r = rng(seed);
  const out: TraceRecord[] = [];
  let t = 0;
  const layers = ['disk.session-1.vhd', 'disk.session-1.1.vhd', 'disk.session-1.2.vhd'];
  for (let i = 0; i < count; i++) {
    if (r() < 0.7) t += Math.round(r() * 2000) / 1e6; // some records share a time stamp
    const p = r();
    const op: TraceRecordOp = p < 0.45 ? 'read' : p < 0.9 ? 'write' : p < 0.94 ? 'zero' : p < 0.97 ? 'trim' : 'flush';
    const hot = r() < 0.3;
    const block = hot ? Math.floor(r() * 8) : Math.floor(r() * blocks);
    const offset = op === 'flush' ? 0 : block * BLOCK + Math.floor(r() * (BLOCK / SECTOR)) * SECTOR;
    const sectors = r() < 0.05 ? 1 + Math.floor(r() * 16384) : 1 + Math.floor(r() * 256);
    const length = op === 'flush' ? 0 : Math.min(sectors * SECTOR, blocks * BLOCK - offset);
    out.push({ t: Math.round(t * 1e6) / 1e6, export: i % 50 === 0 ? 'other' : 'disk', op, offset, length, layer: layers[Math.min(2, Math.floor((i / count) * 3))] });
  }
  for (let k = 0; k < shuffled; k++) {
    const a = Math.floor(r() * count);
    const b = Math.min(count - 1, a + 1 + Math.floor(r() * 5));
    [out[a], out[b]] = [out[b], out[a]];
  }
  return out;
}

/** The naive model: every question answered by a pass over every record. */
class Naive {
  readonly recs: TraceRecord[];
  constructor(all: TraceRecord[], exportName: string | undefined) {
    const kept = all.map((r, i) => ({ r, i })).filter(({ r }) => exportName === undefined || r.export === exportName);
    kept.sort((a, b) => a.r.t - b.r.t || a.i - b.i);
    this.recs = kept.map(({ r }) => r);
  }
  private static blocksOf(r: TraceRecord): number[] {
    if (!changesData(r.op) || r.length === 0) return [];
    const out: number[] = [];
    for (let b = Math.floor(r.offset / BLOCK); b <= Math.floor((r.offset + r.length - 1) / BLOCK); b++) out.push(b);
    return out;
  }
  blocksWritten(from: number, to: number): Map<number, { last: number; count: number }> {
    const m = new Map<number, { last: number; count: number }>();
    for (const r of this.recs) {
      if (r.t < from || r.t > to) continue;
      for (const b of Naive.blocksOf(r)) {
        const e = m.get(b) ?? { last: -1, count: 0 };
        e.last = r.t;
        e.count++;
        m.set(b, e);
      }
    }
    return m;
  }
  perBlock(): Map<number, TraceRecord[]> {
    const m = new Map<number, TraceRecord[]>();
    for (const r of this.recs) for (const b of Naive.blocksOf(r)) (m.get(b) ?? m.set(b, []).get(b)!).push(r);
    return m;
  }
}

function timed<T>(label: string, fn: () => T): T {
  const s = process.hrtime.bigint();
  const v = fn();
  console.log(`      ${label}: ${(Number(process.hrtime.bigint() - s) / 1e6).toFixed(1)} ms`);
  return v;
}

function checkRange(index: TraceIndex, naive: Naive, from: number, to: number): number {
  const got = index.blocksWritten(from, to);
  const want = naive.blocksWritten(from, to);
  assert.equal(got.blocks.length, want.size, `blocks written in [${from}, ${to}]`);
  const wantBlocks = [...want.keys()].sort((a, b) => a - b);
  for (let j = 0; j < wantBlocks.length; j++) {
    assert.equal(got.blocks[j], wantBlocks[j]);
    assert.equal(got.lastWrite[j], want.get(wantBlocks[j])!.last, `last write of block ${wantBlocks[j]}`);
    assert.equal(got.writes[j], want.get(wantBlocks[j])!.count, `writes to block ${wantBlocks[j]}`);
  }
  // Without counts (the timeline's brush; a range reaching the last write is then a filter over
  // the per-block last-write table): the same blocks and times.
  const lean = index.blocksWritten(from, to, { counts: false });
  assert.equal(lean.records, got.records);
  assert.equal(lean.writes.length, 0);
  assert.deepEqual([...lean.blocks], [...got.blocks], `blocks written in [${from}, ${to}] without counts`);
  assert.deepEqual([...lean.lastWrite], [...got.lastWrite], `last writes in [${from}, ${to}] without counts`);
  // The packed answer the timeline posts: what packBrush makes of the full one.
  const packed = index.brushPacked(from, to);
  const want2 = packBrush(got, from, to, index.blocks);
  assert.equal(packed.count, got.blocks.length);
  assert.equal(packed.records, got.records);
  assert.deepEqual([...packed.ranks], [...want2.ranks], `ranks in [${from}, ${to}]`);
  assert.deepEqual([...packed.blocks], [...want2.blocks]);
  assert.deepEqual([...packed.written], [...want2.written]);
  return got.blocks.length;
}

describe('trace index', function () {
  this.timeout(600_000);

  it('parses trace lines, skipping torn, foreign and malformed ones', () => {
    assert.deepEqual(parseTraceLine('{"t":1.5,"export":"d","op":"write","offset":512,"length":1024,"layer":"x.vhd"}'),
      { t: 1.5, export: 'd', op: 'write', offset: 512, length: 1024, layer: 'x.vhd' });
    assert.equal(parseTraceLine('{"t":1.5,"export":"d","op":"wri'), null);
    assert.equal(parseTraceLine(''), null);
    assert.equal(parseTraceLine('serving d on nbd://x'), null);
    assert.equal(parseTraceLine('{"t":"soon","op":"write"}'), null);
    assert.equal(parseTraceLine('{"t":1,"op":"erase"}'), null);
    assert.equal(parseTraceLine('[1,2]'), null);
    const s = new TraceLineSplitter();
    assert.deepEqual(s.push('{"a":1}\n{"b"'), ['{"a":1}']);
    assert.deepEqual(s.push(':2}\n'), ['{"b":2}']);
  });

  it('answers small hand-made questions exactly (spans, bounds inclusive, other exports ignored)', () => {
    const idx = new TraceIndex({ blockSize: 1000, exportName: 'd' });
    idx.add({ t: 1, export: 'd', op: 'write', offset: 1500, length: 1000, layer: 'a' }); // blocks 1, 2
    idx.add({ t: 2, export: 'd', op: 'read', offset: 0, length: 5000, layer: 'a' });
    idx.add({ t: 3, export: 'e', op: 'write', offset: 9000, length: 10, layer: 'a' });
    idx.add({ t: 3, export: 'd', op: 'zero', offset: 4000, length: 1000, layer: 'b' }); // block 4 only
    idx.add({ t: 4, export: 'd', op: 'flush', offset: 0, length: 0, layer: 'b' });
    assert.equal(idx.size, 4);
    assert.deepEqual([...idx.blocksWritten(0, 10).blocks], [1, 2, 4]);
    assert.deepEqual([...idx.blocksWritten(1, 1).blocks], [1, 2]);
    assert.deepEqual([...idx.blocksWritten(1.5, 3).blocks], [4]);
    assert.deepEqual([...idx.blocksWritten(3.5, 10).blocks], []);
    assert.deepEqual(idx.writesOfBlock(2), [{ t: 1, offset: 1500, length: 1000, layer: 'a', op: 'write' }]);
    assert.deepEqual(idx.writesOfBlock(3), []);
    const d = idx.density(0, 4, 4);
    assert.deepEqual([...d.writes], [0, 1, 0, 1]);
    assert.deepEqual([...d.reads], [0, 0, 1, 0]);
    assert.deepEqual(idx.exportJson(2, 3), { from: 2, to: 3, writes: [{ t: 3, offset: 4000, length: 1000, layer: 'b' }] });
  });

  it('matches the naive model on a random trace of 1,000,000 records (time range -> blocks, per-block writes, density)', () => {
    const blocks = 4096;
    const trace = randomTrace(1_000_000, blocks, 0x5eed);
    const naive = timed('naive model sort', () => new Naive(trace, 'disk'));
    const index = new TraceIndex({ blockSize: BLOCK, exportName: 'disk' });
    timed('index 1,000,000 records', () => { for (const r of trace) index.add(r); });
    assert.equal(index.size, naive.recs.length);
    const span = index.timeRange!;
    assert.equal(span.from, naive.recs[0].t);
    assert.equal(span.to, naive.recs[naive.recs.length - 1].t);

    // The whole trace, then random ranges from narrow to wide, including empty ones and exact record times.
    timed('blocksWritten over the whole trace', () => index.blocksWritten(span.from, span.to));
    checkRange(index, naive, span.from, span.to);
    const r = rng(7);
    let brushMs = 0;
    for (let q = 0; q < 40; q++) {
      const width = (span.to - span.from) * (q % 4 === 0 ? 0.0001 : q % 4 === 1 ? 0.01 : q % 4 === 2 ? 0.2 : 0.9);
      let from = span.from + r() * (span.to - span.from - width);
      if (q % 5 === 0) from = naive.recs[Math.floor(r() * naive.recs.length)].t;
      const to = q === 3 ? from - 1 : from + width;
      const s = process.hrtime.bigint();
      index.blocksWritten(from, to);
      brushMs += Number(process.hrtime.bigint() - s) / 1e6;
      checkRange(index, naive, from, to);
    }
    console.log(`      40 brushes: ${(brushMs / 40).toFixed(2)} ms each on average`);
    // Ranges that reach the end of the trace ("All", "#k → now"), open-ended ones included.
    timed('whole trace without counts', () => index.blocksWritten(span.from, span.to, { counts: false }));
    // From exactly a block's last write (bounds inclusive): the oldest last write, and one in the middle.
    const whole = index.blocksWritten(span.from, span.to);
    const exact = [Math.min(...whole.lastWrite), whole.lastWrite[whole.lastWrite.length >> 1]];
    for (const f of [...exact, -Infinity, span.from, naive.recs[Math.floor(naive.recs.length / 3)].t, span.from + (span.to - span.from) * 0.95, span.to, span.to + 1]) {
      checkRange(index, naive, f, span.to);
      checkRange(index, naive, f, Infinity);
    }

    // Every block's write list, compared with the naive one record by record.
    const perBlock = naive.perBlock();
    timed('per-block lists (first question builds them)', () => index.writesOfBlock(0));
    for (let b = 0; b < blocks; b++) {
      const want = perBlock.get(b) ?? [];
      assert.equal(index.writeCountOfBlock(b), want.length, `writes of block ${b}`);
      if (b % 97 !== 0 && b >= 8) continue; // full comparison for the hot blocks and a sample
      const got = index.writesOfBlock(b);
      assert.deepEqual(got, want.map((w) => ({ t: w.t, offset: w.offset, length: w.length, layer: w.layer, op: w.op })));
    }
    const mid = (span.from + span.to) / 2;
    assert.deepEqual(index.writesOfBlock(3, span.from, mid).map((w) => w.t), (perBlock.get(3) ?? []).filter((w) => w.t <= mid).map((w) => w.t));

    // Density: each bin's counts, against a pass that bins every record.
    const bins = 500;
    const d = timed('density, 500 bins', () => index.density(span.from, span.to, bins));
    const wantR = new Uint32Array(bins);
    const wantW = new Uint32Array(bins);
    const width = (span.to - span.from) / bins;
    for (const rec of naive.recs) {
      let b = 0;
      // The index's bin edges: bin b holds from + width*b <= t < from + width*(b+1), the last one closed.
      while (b < bins - 1 && rec.t >= span.from + width * (b + 1)) b++;
      if (rec.op === 'read') wantR[b]++;
      else if (changesData(rec.op) && rec.length > 0) wantW[b]++;
    }
    assert.deepEqual([...d.reads], [...wantR]);
    assert.deepEqual([...d.writes], [...wantW]);

    // The JSON export of a range: the data-changing records in it, in time order.
    const from = span.from + (span.to - span.from) * 0.4;
    const to = from + (span.to - span.from) * 0.01;
    const json = index.exportJson(from, to);
    const want = naive.recs.filter((w) => w.t >= from && w.t <= to && changesData(w.op) && w.length > 0)
      .map((w) => ({ t: w.t, offset: w.offset, length: w.length, layer: w.layer }));
    assert.deepEqual(json, { from, to, writes: want });
  });

  it('keeps answering exactly while records are appended live, out-of-order ones included', () => {
    const blocks = 512;
    const trace = randomTrace(200_000, blocks, 99, 2000);
    const index = new TraceIndex({ blockSize: BLOCK });
    const r = rng(3);
    let pos = 0;
    while (pos < trace.length) {
      const step = 1 + Math.floor(r() * 40_000);
      for (const rec of trace.slice(pos, pos + step)) index.add(rec);
      pos += step;
      const naive = new Naive(trace.slice(0, pos), undefined);
      const span = index.timeRange!;
      const from = span.from + r() * (span.to - span.from);
      checkRange(index, naive, from, from + (span.to - span.from) * 0.1);
      checkRange(index, naive, span.from + (span.to - span.from) * r() * 0.2, span.to);
      const b = Math.floor(r() * 8);
      assert.deepEqual(index.writesOfBlock(b).map((w) => [w.t, w.offset]), (naive.perBlock().get(b) ?? []).map((w) => [w.t, w.offset]));
    }
  });

  it('keeps snapshot marks apart from the records: in time order, not counted as writes or reads, other exports ignored', () => {
    assert.deepEqual(parseTraceLine('{"t":2.5,"export":"d","op":"snapshot","offset":0,"length":0,"layer":"d.session-1.vhd"}'),
      { t: 2.5, export: 'd', op: 'snapshot', offset: 0, length: 0, layer: 'd.session-1.vhd' });
    const idx = new TraceIndex({ blockSize: 1000, exportName: 'd' });
    idx.add({ t: 1, export: 'd', op: 'write', offset: 0, length: 10, layer: 's0' });
    idx.add({ t: 5, export: 'd', op: 'snapshot', offset: 0, length: 0, layer: 's1' });
    idx.add({ t: 6, export: 'd', op: 'write', offset: 3000, length: 10, layer: 's2' });
    idx.add({ t: 2, export: 'd', op: 'snapshot', offset: 0, length: 0, layer: 's0' });
    idx.add({ t: 3, export: 'e', op: 'snapshot', offset: 0, length: 0, layer: 'other' });
    assert.equal(idx.size, 2);
    assert.deepEqual(idx.snapshots, [{ t: 2, layer: 's0' }, { t: 5, layer: 's1' }]);
    assert.deepEqual([...idx.density(0, 6, 6).writes], [0, 1, 0, 0, 0, 1]);
    const [, second] = idx.snapshots;
    assert.deepEqual([...idx.blocksWritten(second.t, 6).blocks], [3]);
    assert.deepEqual([...idx.blocksWritten(0, second.t).blocks], [0]);
  });

  it('clamps writes past a fixed block count out of the grid', () => {
    const idx = new TraceIndex({ blockSize: 100, blockCount: 3 });
    idx.add({ t: 0, export: '', op: 'write', offset: 250, length: 200, layer: 'x' }); // blocks 2..4 -> 2
    idx.add({ t: 1, export: '', op: 'write', offset: 1000, length: 10, layer: 'x' }); // block 10 -> none
    assert.equal(idx.blocks, 3);
    assert.deepEqual([...idx.blocksWritten(0, 1).blocks], [2]);
    assert.equal(idx.writeCountOfBlock(2), 1);
    assert.deepEqual(idx.writesOfBlock(10), []);
  });
});
