import { CommitStaged } from './diskImage';

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
