import { DiskImage, ReadBelow } from './diskImage';

/**
 * A layer's view of a range, as a reader of this layer alone sees it: its own bytes where it holds
 * them, else `below` (a differencing layer's parent chain) or zeros. Formats complete partial-sector
 * writes from it.
 */
export async function readLayerView(layer: DiskImage, offset: number, target: Buffer, below: ReadBelow): Promise<void> {
  for (const run of await layer.runs(offset, target.length)) {
    const slice = target.subarray(run.offset - offset, run.offset - offset + run.length);
    if (run.present) await layer.readOwn(run.offset, slice);
    else if (layer.diskType === 'differencing') await below(run.offset, slice);
    else slice.fill(0);
  }
}
