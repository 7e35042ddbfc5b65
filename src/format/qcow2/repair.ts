// Repair plan for one qcow2 file: each stored refcount that differs from the references counted
// by the scan is rewritten (one small write each: a leak fixed is at worst a leak again after a
// kill), then the dirty bit is cleared.
import type { RepairStep } from '../registry';
import { hasFeature, HEADER_OFFSETS, INCOMPAT } from './header';
import { refcountBlockEntries, refcountEntrySpan, setRefcount } from './refcountTable';
import { Qcow2Scan } from './check';

export function planQcow2Repair(scan: Qcow2Scan): RepairStep[] {
  const h = scan.header;
  if (!h) return [];
  const steps: RepairStep[] = [];
  const perBlock = refcountBlockEntries(h.clusterBits, h.refcountOrder);
  // Raise too-low counts first (references are live), then lower leaks.
  const fixes = scan.fixes.filter((f) => f.blockAt !== 0).sort((a, b) => (b.actual - b.stored) - (a.actual - a.stored));
  for (const f of fixes) {
    const i = f.cluster % perBlock;
    const span = refcountEntrySpan(i, h.refcountOrder);
    const at = f.blockAt + span.start;
    steps.push({
      structure: 'refcount block', offset: at,
      message: f.actual < f.stored ? `cluster ${f.cluster}: refcount ${f.stored} -> ${f.actual} (leak)` : `cluster ${f.cluster}: refcount ${f.stored} -> ${f.actual}`,
      apply: async (file) => {
        // Sub-byte refcounts share their byte with neighbours: start from the byte as it is now.
        const block = Buffer.alloc(scan.clusterSize);
        await file.readInto(block.subarray(span.start, span.start + span.length), at);
        setRefcount(block, i, h.refcountOrder, f.actual);
        await file.writeAt(block.subarray(span.start, span.start + span.length), at);
      },
    });
  }
  if (hasFeature(h.incompatibleFeatures, INCOMPAT.dirty) && scan.unfixable === 0) {
    steps.push({
      structure: 'qcow2 header', offset: HEADER_OFFSETS.incompatibleFeatures,
      message: 'clear the dirty bit (refcounts are now exact)',
      apply: async (file) => {
        const b = await file.readExact(HEADER_OFFSETS.incompatibleFeatures, 8, 'qcow2 header');
        b.writeBigUInt64BE(b.readBigUInt64BE(0) & ~(1n << BigInt(INCOMPAT.dirty)), 0);
        await file.writeAt(b, HEADER_OFFSETS.incompatibleFeatures);
      },
    });
  }
  return steps;
}
