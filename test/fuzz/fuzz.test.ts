// The fuzzer's short run inside `npm test`: a few thousand seeded cases over the parsers and the
// info, map, read, check and diff paths. `npm run fuzz -- --cases 100000` runs the long campaign.
import { strict as assert } from 'assert';
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import { campaign, CaseResult, Fuzzer, targetsAvailable } from './fuzzer';

const CASES = Number(process.env.FUZZ_CASES ?? 3000);
const SEED = Number(process.env.FUZZ_SEED ?? 20261128);

function scratch(): string {
  try {
    return mkdtempSync(path.join('/dev/shm', 'diskimg-fuzz-'));
  } catch {
    return mkdtempSync(path.join(tmpdir(), 'diskimg-fuzz-'));
  }
}

function describeFailure(f: CaseResult): string {
  return `case ${f.index} (seed image ${f.seed}; ${f.mutations.join('; ')}): ${f.failure!.kind} in ${f.failure!.target}: `
    + `${f.failure!.detail.split('\n').slice(0, 4).join(' | ')}\n  re-run: npm run fuzz -- --seed ${SEED} --case ${f.index}`;
}

describe(`fuzz: ${CASES} seeded mutation cases (seed ${SEED})`, function () {
  this.timeout(600_000);
  let work: string;
  let fuzzer: Fuzzer;
  before(async () => {
    work = scratch();
    fuzzer = new Fuzzer(SEED, work);
    await fuzzer.init();
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('mutations are reproducible from (seed, case)', () => {
    const a = fuzzer.prepare(17);
    const b = fuzzer.prepare(17);
    assert.deepEqual(a.mutations, b.mutations);
    assert.equal(a.seed, b.seed);
  });

  it('no case throws anything but a DiskImageError, takes over 1 s of CPU, or allocates beyond the files\' size', async () => {
    const sum = await campaign(fuzzer, 0, CASES);
    assert.equal(sum.cases, CASES);
    // The cases must reach deep: most open, many map and read, and the errors are typed ones.
    const opened = sum.outcomeCounts.open?.ok ?? 0;
    const read = sum.outcomeCounts.read?.ok ?? 0;
    assert.ok(opened > CASES * 0.4, `only ${opened} of ${CASES} cases opened`);
    assert.ok(read > CASES * 0.25, `only ${read} of ${CASES} cases read through`);
    assert.ok(Object.keys(sum.outcomeCounts.open ?? {}).length >= 3, `open outcomes: ${JSON.stringify(sum.outcomeCounts.open)}`);
    if (targetsAvailable.check) assert.ok(sum.outcomeCounts.check, 'check ran');
    if (targetsAvailable.diff) assert.ok(sum.outcomeCounts.diff, 'diff ran');
    assert.deepEqual(sum.failures.map(describeFailure), []);
  });
});
