import { CommitStaged, WritePiece } from './diskImage';

/**
 * The metadata of staged bulk writes (see DiskImage.stageWrites), waiting in stage order. A stage's
 * commit records it together with every earlier stage still waiting, in one go (VHDX: one log
 * entry for all of them), so one call per barrier serves the whole batch.
 */
export class StagedCommits<T> {
  private waiting: Array<{ stage: T }> = [];

  constructor(private readonly commitAll: (stages: T[]) => Promise<void>) {}

  add(stage: T): CommitStaged {
    const entry = { stage };
    this.waiting.push(entry);
    return async () => {
      const i = this.waiting.indexOf(entry);
      if (i < 0) return; // a later stage's commit already recorded it
      await this.commitAll(this.waiting.splice(0, i + 1).map((e) => e.stage));
    };
  }
}

/** Bytes of one block that a staged batch writes, at their offset in the block. */
export interface StagedPart { inBlock: number; data: Buffer }
/** One block of a staged batch: new (written where nothing points yet) or written in place. */
export interface StagedBlock { block: number; fresh: boolean; parts: StagedPart[] }

/**
 * Cuts a batch's pieces into per-block plans for stageWrites, or null when the batch cannot be
 * staged as a whole (then the caller uses write()): pieces not in whole sectors or past the disk,
 * a block `classify` refuses ('fresh' or 'inPlace' otherwise), a block met again after another or
 * with parts out of order.
 */
export function planStagedBlocks(
  pieces: WritePiece[], geometry: { sectorSize: number; blockSize: number; virtualSize: number },
  classify: (block: number, inBlock: number, length: number) => 'fresh' | 'inPlace' | null,
): StagedBlock[] | null {
  const { sectorSize, blockSize, virtualSize } = geometry;
  const plans: StagedBlock[] = [];
  for (const p of pieces) {
    if (p.offset % sectorSize !== 0 || p.data.length % sectorSize !== 0 || p.offset < 0 || p.offset + p.data.length > virtualSize) return null;
    for (let done = 0; done < p.data.length;) {
      const pos = p.offset + done;
      const block = Math.floor(pos / blockSize);
      const inBlock = pos - block * blockSize;
      const n = Math.min(blockSize - inBlock, p.data.length - done);
      const kind = classify(block, inBlock, n);
      if (!kind) return null;
      const last = plans[plans.length - 1];
      const part = { inBlock, data: p.data.subarray(done, done + n) };
      const lastPart = last?.parts[last.parts.length - 1];
      if (last && last.block === block && lastPart!.inBlock + lastPart!.data.length <= inBlock) last.parts.push(part);
      else if (plans.some((x) => x.block === block)) return null;
      else plans.push({ block, fresh: kind === 'fresh', parts: [part] });
      done += n;
    }
  }
  return plans;
}
