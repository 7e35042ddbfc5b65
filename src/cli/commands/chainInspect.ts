import { Command } from 'commander';
import { DiskImageError } from '../../format/errors';
import { CheckProblem, checkImage } from '../../chain/check';
import { openChain } from '../../chain/chain';
import { describeParentSource, ParentSource } from '../../chain/parentSource';
import { diffImages, diffLayers, DiffResult, LayerDiffResult } from '../../chain/diff';
import { repairImage } from '../../chain/repair';
import { ExitCode } from '../main';
import { progressReporter } from '../progress';
import { formatBytes } from '../units';

const out = (s: string) => process.stdout.write(s);

function printProblems(problems: CheckProblem[], indent = '  '): void {
  const w = Math.max(0, ...problems.map((p) => p.structure.length));
  for (const p of problems) out(`${indent}${p.severity.padEnd(7)}  ${p.structure.padEnd(w)}  at ${String(p.offset).padStart(10)}  ${p.message}\n`);
}

function summary(problems: CheckProblem[]): string {
  const e = problems.filter((p) => p.severity === 'error').length;
  const w = problems.length - e;
  const parts = [];
  if (e) parts.push(`${e} error${e === 1 ? '' : 's'}`);
  if (w) parts.push(`${w} warning${w === 1 ? '' : 's'}`);
  return e ? parts.join(', ') : `ok${w ? ` (${parts.join(', ')})` : ''}`;
}

function printDiff(r: DiffResult | LayerDiffResult, a: string, b: string | null): void {
  const layers = 'ownedBytes' in r;
  const what = layers ? `${a} against its parent` : `${a} and ${b}`;
  if (r.identical) {
    out(layers
      ? `${a} holds ${formatBytes(r.ownedBytes)} that all equal its parent's view: no changes\n`
      : `identical: ${what} (${r.virtualSize} bytes; ${formatBytes(r.comparedBytes)} read and compared, the rest unallocated on both sides or shared)\n`);
  } else {
    out(`${layers ? `${a} changes` : `differ: ${what}:`} ${formatBytes(r.differingBytes)} (${r.differingBytes} bytes) in ${r.ranges.length} range${r.ranges.length === 1 ? '' : 's'}, ${r.blocks.length} block${r.blocks.length === 1 ? '' : 's'} of ${formatBytes(r.blockSize)}${layers ? ` (of ${formatBytes(r.ownedBytes)} it holds)` : ''}\n`);
  }
  if (r.tail) {
    const longer = r.tail.longer === 'a' ? a : b;
    out(`sizes differ: ${a} is ${r.sizes.a} bytes, ${b} is ${r.sizes.b} bytes; the extra ${formatBytes(r.tail.length)} of ${longer} (from ${r.tail.start}) ${r.tail.allZero ? 'is all zeros, which counts as equal' : 'holds non-zero data, which counts as different'}\n`);
  }
  if (r.ranges.length > 0) {
    out(`${'start'.padStart(16)} ${'length'.padStart(14)}  ${'end'.padStart(16)}\n`);
    for (const x of r.ranges) out(`${String(x.start).padStart(16)} ${String(x.length).padStart(14)}  ${String(x.start + x.length).padStart(16)}\n`);
  }
}

/** diff, check and repair: compare images, find and fix structural problems. */
export function register(program: Command): void {
  program.command('diff')
    .argument('<a>')
    .argument('[b]')
    .option('--json', 'print one JSON object')
    .option('--layers', 'with one differencing image: what it changes relative to its parent')
    .description('compare the virtual contents of two images (exit 0 identical, 1 different, 2 error)')
    .action(async (a: string, b: string | undefined, opts: { json?: boolean; layers?: boolean }) => {
      if (opts.layers ? b !== undefined : b === undefined) {
        throw new DiskImageError(a, opts.layers ? '--layers takes one differencing image' : 'diff needs two images (or one with --layers)', undefined, undefined, 'EARG');
      }
      const progress = opts.json ? { update: () => undefined, stop: () => undefined } : progressReporter('diff');
      let r: DiffResult | LayerDiffResult;
      try {
        r = opts.layers ? await diffLayers(a, { onProgress: progress.update }) : await diffImages(a, b!, { onProgress: progress.update });
      } finally {
        progress.stop();
      }
      if (opts.json) out(`${JSON.stringify(r)}\n`);
      else printDiff(r, a, opts.layers ? null : b!);
      if (!r.identical) throw new ExitCode(1);
    });

  program.command('check')
    .argument('<image>')
    .option('--json', 'print {ok, problems:[{severity, structure, offset, message}]}')
    .description('check the structures of an image (exit 0 clean, 1 problems, 2 could not read)')
    .action(async (image: string, opts: { json?: boolean }) => {
      const r = await checkImage(image);
      if (opts.json) {
        // `parent` only for a parent on a server, a raw file or a device: {ok, problems} stays as it was otherwise.
        const parent = await parentSourceOf(image);
        out(`${JSON.stringify({ ok: r.ok, problems: r.problems, ...(parent ? { parent } : {}) })}\n`);
      } else {
        out(`${image}: ${summary(r.problems)}\n`);
        printProblems(r.problems);
      }
      if (!r.ok) throw new ExitCode(1);
    });

  program.command('repair')
    .argument('<image>')
    .option('--dry-run', 'only print what would change')
    .description('restore the end footer or its copy, fix checksums, clear BAT entries pointing outside the file or overlapping; never touches data sectors (exit 0 clean afterwards, 1 problems remain)')
    .action(async (image: string, opts: { dryRun?: boolean }) => {
      const r = await repairImage(image, { dryRun: opts.dryRun });
      out(`${image}: ${summary(r.before.problems)}\n`);
      printProblems(r.before.problems);
      if (r.changes.length === 0) {
        out('nothing to change\n');
      } else {
        out(`${opts.dryRun ? 'would change' : 'changed'} (${r.changes.length}):\n`);
        for (const c of r.changes) out(`  ${c.structure} at ${c.offset}: ${c.message}\n`);
      }
      if (r.after) {
        out(`after repair: ${summary(r.after.problems)}\n`);
        printProblems(r.after.problems);
        if (!r.after.ok) throw new ExitCode(1);
      } else if (r.changes.length > 0 || !r.before.ok) {
        throw new ExitCode(1);
      }
    });
}

/** The parent as a source (server, raw file, device) for `check --json`; null for an image file or when the image itself cannot be opened. */
async function parentSourceOf(image: string): Promise<ParentSource | null> {
  let chain;
  try {
    chain = await openChain(image, { tolerant: true });
  } catch {
    return null;
  }
  try {
    return describeParentSource(chain);
  } finally {
    await chain.close();
  }
}
