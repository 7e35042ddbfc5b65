/**
 * The long fuzz campaign: `npm run fuzz -- --cases 100000 [--seed N] [--from I] [--jobs J] [--out DIR]`.
 * Cases run in worker processes watched by this one: a worker that prints nothing for --hang-ms
 * (default 20 s) is killed, its current case is recorded as a hang, and a new worker resumes after
 * it. Failing inputs are kept in --out (default .fuzz-failures/). One case is re-run with
 * `--case I --seed N --verbose`.
 */
import { spawn } from 'child_process';
import { mkdtempSync, rmSync } from 'fs';
import { tmpdir } from 'os';
import * as path from 'path';
import { createInterface } from 'readline';
import { campaign, CaseResult, Fuzzer } from './fuzzer';

function arg(name: string, def?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}
const flag = (name: string) => process.argv.includes(`--${name}`);

function scratch(): string {
  const base = process.platform === 'linux' ? '/dev/shm' : tmpdir();
  try {
    return mkdtempSync(path.join(base, 'diskimg-fuzz-'));
  } catch {
    return mkdtempSync(path.join(tmpdir(), 'diskimg-fuzz-'));
  }
}

async function worker(): Promise<void> {
  const seed = Number(arg('seed', '1'));
  const from = Number(arg('from', '0'));
  const to = Number(arg('to', '100'));
  const out = arg('out', path.resolve('.fuzz-failures'))!;
  const work = scratch();
  const fuzzer = new Fuzzer(seed, work);
  await fuzzer.init();
  const sum = await campaign(fuzzer, from, to, (r: CaseResult) => {
    const line: Record<string, unknown> = { i: r.index, cpu: Math.round(r.cpuMs), wall: Math.round(r.wallMs) };
    if (r.failure) {
      line.failure = r.failure;
      line.seedName = r.seed;
      line.mutations = r.mutations;
      line.saved = fuzzer.saveCase(r.index, out);
    }
    process.stdout.write(`${JSON.stringify(line)}\n`);
  });
  process.stdout.write(`${JSON.stringify({ summary: { ...sum, failures: sum.failures.length } })}\n`);
  rmSync(work, { recursive: true, force: true });
}

async function single(): Promise<void> {
  const seed = Number(arg('seed', '1'));
  const index = Number(arg('case'));
  const work = scratch();
  const fuzzer = new Fuzzer(seed, work);
  await fuzzer.init();
  const r = await fuzzer.run(index);
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  if (!flag('keep')) rmSync(work, { recursive: true, force: true });
  else process.stdout.write(`case files in ${path.join(work, 'case')}\n`);
}

interface Agg {
  cases: number;
  failures: Array<Record<string, unknown>>;
  hangs: number[];
  slowest: { i: number; cpu: number; wall: number };
  peakRss: number;
  peakArrayBuffers: number;
  maxAllocRatio: number;
  outcomeCounts: Record<string, Record<string, number>>;
}

function runChunk(seed: number, from: number, to: number, out: string, hangMs: number, agg: Agg): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--require', 'tsx/cjs', __filename, '--worker', '--seed', String(seed), '--from', String(from), '--to', String(to), '--out', out],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    let last = from - 1;
    let timer: NodeJS.Timeout;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        agg.hangs.push(last + 1);
        agg.failures.push({ i: last + 1, failure: { kind: 'hang', detail: `no progress for ${hangMs} ms` } });
        child.kill('SIGKILL');
      }, hangMs);
    };
    arm();
    createInterface({ input: child.stdout }).on('line', (text) => {
      arm();
      const o = JSON.parse(text);
      if (o.summary) {
        const s = o.summary;
        agg.peakRss = Math.max(agg.peakRss, s.peakRss);
        agg.peakArrayBuffers = Math.max(agg.peakArrayBuffers, s.peakArrayBuffers);
        agg.maxAllocRatio = Math.max(agg.maxAllocRatio, s.maxAllocRatio);
        for (const [k, m] of Object.entries(s.outcomeCounts as Record<string, Record<string, number>>)) {
          const a = (agg.outcomeCounts[k] ??= {});
          for (const [v, n] of Object.entries(m)) a[v] = (a[v] ?? 0) + n;
        }
        return;
      }
      last = o.i;
      agg.cases++;
      if (o.cpu > agg.slowest.cpu) agg.slowest = { i: o.i, cpu: o.cpu, wall: o.wall };
      if (o.failure) {
        agg.failures.push(o);
        process.stderr.write(`FAIL case ${o.i} (${o.seedName}: ${o.mutations.join('; ')}): ${o.failure.kind} in ${o.failure.target}: ${String(o.failure.detail).split('\n').slice(0, 3).join(' | ')}\n`);
      }
      if (agg.cases % 5000 === 0) process.stderr.write(`${agg.cases} cases, ${agg.failures.length} failures\n`);
    });
    child.on('exit', async () => {
      clearTimeout(timer);
      if (last + 1 < to) {
        // Killed (hang) or crashed: resume after the case it was on.
        if (!agg.hangs.includes(last + 1)) agg.failures.push({ i: last + 1, failure: { kind: 'worker died' } });
        await runChunk(seed, last + 2, to, out, hangMs, agg);
      }
      resolve();
    });
  });
}

async function coordinator(): Promise<void> {
  const cases = Number(arg('cases', '1000'));
  const seed = Number(arg('seed', '1'));
  const from = Number(arg('from', '0'));
  const jobs = Math.max(1, Number(arg('jobs', '1')));
  const hangMs = Number(arg('hang-ms', '20000'));
  const out = path.resolve(arg('out', '.fuzz-failures')!);
  const agg: Agg = { cases: 0, failures: [], hangs: [], slowest: { i: -1, cpu: 0, wall: 0 }, peakRss: 0, peakArrayBuffers: 0, maxAllocRatio: 0, outcomeCounts: {} };
  const t0 = Date.now();
  const per = Math.ceil(cases / jobs);
  await Promise.all(Array.from({ length: jobs }, (_, j) => {
    const a = from + j * per;
    const b = Math.min(from + cases, a + per);
    return a < b ? runChunk(seed, a, b, out, hangMs, agg) : Promise.resolve();
  }));
  const report = {
    seed, from, cases: agg.cases, jobs, seconds: Math.round((Date.now() - t0) / 1000),
    failures: agg.failures.length, hangs: agg.hangs,
    slowestCase: { index: agg.slowest.i, cpuMs: agg.slowest.cpu, wallMs: agg.slowest.wall, rerun: `npm run fuzz -- --seed ${seed} --case ${agg.slowest.i}` },
    peakRssMiB: +(agg.peakRss / 1048576).toFixed(1),
    peakArrayBuffersMiB: +(agg.peakArrayBuffers / 1048576).toFixed(1),
    maxSingleAllocationVsBound: +agg.maxAllocRatio.toFixed(3),
    outcomes: agg.outcomeCounts,
    failureList: agg.failures.slice(0, 50),
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  process.exitCode = agg.failures.length ? 1 : 0;
}

const main = flag('worker') ? worker : arg('case') !== undefined ? single : coordinator;
main().catch((e) => {
  process.stderr.write(`${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(3);
});
