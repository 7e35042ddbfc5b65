/** Rebuilds the owner map (and zero flags) that `init` may carry as runs (src/extension/model.ts firstBlocks). */
import { NO_OWNER } from './heatmap/render';

export function ownersFromRuns(blockCount: number, runs: Uint32Array): { owner: Uint16Array; zero?: Uint8Array } {
  const owner = new Uint16Array(blockCount).fill(NO_OWNER);
  let zero: Uint8Array | undefined;
  for (let k = 0; k + 2 < runs.length; k += 3) {
    const first = Math.min(runs[k], blockCount);
    const end = Math.min(runs[k + 1], blockCount);
    const v = runs[k + 2];
    owner.fill(v & 0xffff, first, end);
    if (v >>> 16) (zero ??= new Uint8Array(blockCount)).fill(1, first, end);
  }
  // No zero flags: no `zero` (as the host leaves it out of a map without zero blocks).
  return zero ? { owner, zero } : { owner };
}
