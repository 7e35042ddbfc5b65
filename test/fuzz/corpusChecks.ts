// What the corpus tests of every format assert about one case: the error's code, file, structure
// and offset (and the CLI's one-line form), and that a chain that opens maps and reads to its end.
import { strict as assert } from 'assert';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { DiskImageError } from '../../src/format/errors';
import { checkImage } from '../../src/chain/check';
import { describeImage } from '../../src/chain/info';
import { CheckExpectation, CorpusCase, ErrorExpectation } from './corpus';

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

/**
 * One case's info, map/read and check outcomes against its expectation. `strict` also demands no
 * info warnings beyond the expected ones and no problems from a clean check (the qcow2 corpus).
 */
export async function expectCaseOutcome(c: CorpusCase, strict: boolean): Promise<void> {
  const info = await outcome(() => describeImage(c.image));
  if (c.info === 'ok') {
    if (!info.ok) throw new Error(`info: expected success, got ${(info.error as Error)?.message}`);
    const warnings = (info.value as { warnings: string[] }).warnings;
    for (const w of c.warnings ?? []) assert.ok(warnings.some((x) => w.test(x)), `info warnings lack ${w}: ${JSON.stringify(warnings)}`);
    if (strict && !c.warnings) assert.deepEqual(warnings, [], 'info: unexpected warnings');
  } else {
    if (info.ok) throw new Error('info: expected an error, it succeeded');
    matchError(info.error, c.info, c.image, 'info');
  }
  const read = await outcome(() => readAll(c.image));
  if (c.read === 'ok') {
    if (!read.ok) throw new Error(`map/read: expected success, got ${(read.error as Error)?.message}`);
  } else {
    if (read.ok) throw new Error('map/read: expected an error, it succeeded');
    matchError(read.error, c.read, c.image, 'map/read');
  }
  const check = await outcome(() => checkImage(c.image));
  if ('code' in c.check) {
    if (check.ok) throw new Error(`check: expected an error, it reported ${JSON.stringify(check.value)}`);
    matchError(check.error, c.check, c.image, 'check');
  } else {
    const x = c.check as CheckExpectation;
    if (!check.ok) throw new Error(`check: expected a report, it threw ${(check.error as Error)?.message}`);
    const r = check.value as { ok: boolean; problems: Array<{ severity: string; structure: string; offset: number; message: string }> };
    assert.equal(r.ok, x.ok, `check ok: ${JSON.stringify(r.problems)}`);
    if (strict && x.ok && x.has.length === 0) assert.deepEqual(r.problems, [], 'check: no problems expected');
    for (const h of x.has) {
      assert.ok(r.problems.some((p) => p.severity === h.severity && p.structure === h.structure && (h.offset === undefined || p.offset === h.offset) && h.message.test(p.message)),
        `check lacks ${h.severity} ${h.structure}@${h.offset} ${h.message}: ${JSON.stringify(r.problems)}`);
    }
  }
}
