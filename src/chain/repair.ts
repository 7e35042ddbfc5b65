import { ImageFile } from '../io/imageFile';
import { detectFormat, getFormat, RepairChange, RepairStep } from '../format/registry';
import { CheckResult, ImageScan, scanFile, scanImage } from './check';
import { OperationOptions, throwIfCancelled } from './progress';

export type { RepairChange, RepairStep } from '../format/registry';

export interface RepairOptions extends OperationOptions {
  /** Only report what would change. */
  dryRun?: boolean;
}

export interface RepairResult {
  dryRun: boolean;
  changes: RepairChange[];
  /** The check before repairing. */
  before: CheckResult;
  /** The check after repairing (null on a dry run). */
  after: CheckResult | null;
}

const describe = ({ structure, offset, message }: RepairStep): RepairChange => ({ structure, offset, message });

/** The format's repair plan for a scan: crash-safe steps that touch metadata only. */
export function planRepair(scan: ImageScan): RepairStep[] {
  return getFormat(scan.format).planRepair(scan.detail);
}

/**
 * Repairs what the format can repair without touching data (VHD: restores the end footer from the
 * copy or back, fixes checksums, clears BAT entries that point outside the file or at blocks
 * overlapping others or the metadata). Each step leaves a valid image behind, and the file is
 * flushed between steps. Returns the changes made (or, with dryRun, those it would make).
 */
export async function repairImage(path: string, options: RepairOptions = {}): Promise<RepairResult> {
  if (options.dryRun) {
    const before = await scanImage(path, options);
    const steps = planRepair(before);
    return { dryRun: true, changes: steps.map(describe), before: { ok: before.ok, problems: before.problems }, after: null };
  }
  const format = await detectFormat(path);
  // Scan and write under the write lock, so no writer changes the file in between.
  const file = await ImageFile.open(path, true);
  let result: RepairResult;
  try {
    const before = await scanFile(format.name, path, file, options);
    const steps = planRepair(before);
    result = { dryRun: false, changes: steps.map(describe), before: { ok: before.ok, problems: before.problems }, after: null };
    let n = 0;
    for (const step of steps) {
      throwIfCancelled(options.signal, path);
      await step.apply(file);
      await file.sync();
      options.onProgress?.(++n, steps.length);
    }
    const after = await scanFile(format.name, path, file);
    result.after = { ok: after.ok, problems: after.problems };
  } finally {
    await file.close();
  }
  return result;
}
