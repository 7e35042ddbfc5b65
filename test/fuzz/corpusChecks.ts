// What the corpus tests of every format assert about one case: the error's code, file, structure
// and offset (and the CLI's one-line form), and that a chain that opens maps and reads to its end.
import { strict as assert } from 'assert';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { DiskImageError } from '../../src/format/errors';
import { ErrorExpectation } from './corpus';

export function matchError(e: unknown, x: ErrorExpectation, image: string, what: string): void {
  if (!(e instanceof DiskImageError)) throw new Error(`${what}: expected a DiskImageError, got ${(e as Error)?.stack ?? e}`);
  const msg = `${what}: ${e.message}`;
  assert.equal(e.code, x.code, msg);
  assert.equal(path.basename(e.file), x.file ?? path.basename(image), msg);
  assert.equal(e.structure, x.structure, msg);
  assert.equal(e.offset, x.offset, msg);
  assert.match(e.message, x.message, msg);
  // The one-line form the CLI prints: file: what (structure at offset N).
  if (x.structure !== undefined && x.offset !== undefined) assert.ok(e.message.endsWith(`(${x.structure} at offset ${x.offset})`), msg);
}

export async function outcome(fn: () => Promise<unknown>): Promise<{ ok: true; value: unknown } | { ok: false; error: unknown }> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

export async function readAll(image: string): Promise<void> {
  const chain = await openChain(image);
  try {
    const map = await chain.map();
    assert.equal(map.reduce((a, e) => a + e.length, 0), chain.virtualSize);
    for (let pos = 0; pos < chain.virtualSize; pos += 1 << 20) await chain.readRange(pos, Math.min(1 << 20, chain.virtualSize - pos));
  } finally {
    await chain.close();
  }
}
