// The fuzzer's short run inside `npm test`: a few thousand seeded cases over the parsers and the
// info, map, read, check, diff, write and editor paths, in a worker process under a watchdog (a case
// that hangs is killed and reported), exactly as `npm run fuzz -- --cases 100000` runs the long one.
import { strict as assert } from 'assert';
import { spawn } from 'child_process';
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import { CPU_LIMIT_MS, Fuzzer, targetsAvailable } from './fuzzer';
import { ROOT } from '../helpers/util';

const CASES = Number(process.env.FUZZ_CASES ?? 3000);
const SEED = Number(process.env.FUZZ_SEED ?? 20261128);

interface Report {
  cases: number;
  failures: number;
  hangs: number[];
  outcomes: Record<string, Record<string, number>>;
  failureList: Array<{ i: number; seedName?: string; mutations?: string[]; failure: { kind: string; target?: string; detail?: string } }>;
  slowestCase: { index: number; cpuMs: number };
}

function runCampaign(out: string): Promise<{ code: number | null; report: Report; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--require', 'tsx/cjs', path.join('test', 'fuzz', 'run.ts'), '--cases', String(CASES), '--seed', String(SEED), '--out', out, '--hang-ms', '30000'],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('exit', (code) => {
      try {
        resolve({ code, report: JSON.parse(stdout), stderr });
      } catch (e) {
        reject(new Error(`no report (exit ${code}): ${stderr.slice(-2000)}`));
      }
    });
  });
}

describe(`fuzz: ${CASES} seeded mutation cases (seed ${SEED})`, function () {
  this.timeout(900_000);
  let out: string;
  before(() => { out = mkdtempSync(path.join(tmpdir(), 'diskimg-fuzz-out-')); });
  after(() => rmSync(out, { recursive: true, force: true }));

  it('mutations are reproducible from (seed, case)', async () => {
    const work = mkdtempSync(path.join(tmpdir(), 'diskimg-fuzz-'));
    try {
      const f = new Fuzzer(SEED, work);
      await f.init();
      const a = f.prepare(17);
      const b = f.prepare(17);
      assert.deepEqual(a.mutations, b.mutations);
      assert.equal(a.seed, b.seed);
      assert.notDeepEqual(f.prepare(18).mutations, [], 'every case mutates');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('no case throws anything but a DiskImageError, hangs, runs away with the CPU, or allocates beyond the files\' size', async () => {
    const { code, report } = await runCampaign(out);
    const described = report.failureList.map((f) => `case ${f.i} (${f.seedName ?? '?'}; ${(f.mutations ?? []).join('; ')}): ${f.failure.kind}`
      + ` in ${f.failure.target ?? '?'}: ${String(f.failure.detail ?? '').split('\n').slice(0, 4).join(' | ')}\n  re-run: npm run fuzz -- --seed ${SEED} --case ${f.i}`);
    assert.deepEqual(described, []);
    assert.deepEqual(report.hangs, []);
    assert.equal(code, 0);
    assert.equal(report.cases, CASES);
    // The cases must reach deep: most open, many map and read, and the errors are typed ones.
    const opened = report.outcomes.open?.ok ?? 0;
    const read = report.outcomes.read?.ok ?? 0;
    assert.ok(opened > CASES * 0.4, `only ${opened} of ${CASES} cases opened`);
    assert.ok(read > CASES * 0.25, `only ${read} of ${CASES} cases read through`);
    assert.ok((report.outcomes.write?.ok ?? 0) > CASES * 0.2, `writes: ${JSON.stringify(report.outcomes.write)}`);
    assert.ok(Object.keys(report.outcomes.open ?? {}).length >= 3, `open outcomes: ${JSON.stringify(report.outcomes.open)}`);
    if (targetsAvailable.check) assert.ok(report.outcomes.check, 'check ran');
    if (targetsAvailable.diff) assert.ok(report.outcomes.diff, 'diff ran');
    assert.ok(report.slowestCase.cpuMs < CPU_LIMIT_MS);
  });
});
