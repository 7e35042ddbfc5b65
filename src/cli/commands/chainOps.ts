import { Command, Option } from 'commander';
import { discardChild } from '../../chain/discard';
import { exportImage, ExportFormat } from '../../chain/export';
import { exportFormatChoices, formatByExtension } from '../../format/registry';
import { mergeChild } from '../../chain/merge';
import { reparent } from '../../chain/reparent';
import { snapshot } from '../../chain/snapshot';
import { progressReporter } from '../progress';
import { formatBytes } from '../units';

const out = (s: string) => process.stdout.write(s);

/** `--search a --search b` collects both (a variadic option would swallow the image argument after it). */
function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Ctrl-C stops a long operation cleanly between blocks instead of killing it mid-write. */
function cancelOnSigint(): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const onSig = () => controller.abort();
  process.once('SIGINT', onSig);
  return { signal: controller.signal, dispose: () => process.removeListener('SIGINT', onSig) };
}

/** merge, discard, reparent, snapshot, and export --format: the operations that change chains. */
export function register(program: Command): void {
  program.command('merge')
    .argument('<child>')
    .option('--into <ancestor>', 'merge every layer down to this ancestor (default: the parent)')
    .option('--force', 'merge even though other images use the target as their parent')
    .option('--search <dir>', 'another folder to scan for other children (repeatable)', collect, [] as string[])
    .description('commit a differencing child (or a cascade) into its parent; newest data wins')
    .action(async (child: string, opts: { into?: string; force?: boolean; search?: string[] }) => {
      const progress = progressReporter('merge');
      const cancel = cancelOnSigint();
      try {
        const r = await mergeChild(child, { ...opts, onProgress: progress.update, signal: cancel.signal });
        progress.stop();
        out(`merged ${r.merged.join(', ')} into ${r.target}: ${formatBytes(r.bytesWritten)} written\n`);
        for (const c of r.relink) out(`re-linked ${c} to ${r.target}\n`);
        for (const p of r.merged) out(`${r.kept.includes(p) ? 'kept (still a parent)' : 'deleted'} ${p}\n`);
        for (const s of r.siblings) out(`warning: ${s} used the target as its parent and now reads differently\n`);
      } finally {
        progress.stop();
        cancel.dispose();
      }
    });

  program.command('discard')
    .argument('<child>')
    .option('--search <dir>', 'another folder to scan for images that use it as a parent (repeatable)', collect, [] as string[])
    .description('throw a differencing child away (undo); the parent is untouched')
    .action(async (child: string, opts: { search?: string[] }) => {
      const r = await discardChild(child, opts);
      out(`discarded ${r.deleted}\n`);
    });

  program.command('reparent')
    .argument('<child>')
    .argument('<parent>')
    .option('--ignore-id-mismatch', 'link even though the parent UUID differs (records the new one)')
    .description('point a child at a moved parent: rewrite its locators and parent name')
    .action(async (child: string, parent: string, opts: { ignoreIdMismatch?: boolean }) => {
      const r = await reparent(child, parent, opts);
      out(`re-linked ${r.child} to ${r.parent}${r.uuidChanged ? ` (parent UUID ${r.previousParentUuid} -> ${r.parentUuid})` : ''}\n`);
    });

  program.command('snapshot')
    .argument('<top>')
    .description('freeze the current top and create the next differencing child; prints its path')
    .action(async (top: string) => {
      out(`${await snapshot(top)}\n`);
    });
}

/** The export command with its --format option (raw by default). */
export function registerExport(program: Command): void {
  program.command('export')
    .argument('<image>')
    .argument('<out>', 'a file, a device or a pipe; - for standard output (raw only)')
    .addOption(new Option('--format <format>', 'output format (default: dynamic in the format the name says, .vhd .vhdx .qcow2; else raw)').choices(exportFormatChoices()))
    .description("the chain's whole virtual disk as a flat raw file, or a new fixed or dynamic VHD, VHDX or qcow2")
    .action(async (image: string, output: string, opts: { format?: ExportFormat }) => {
      const progress = progressReporter('export');
      const cancel = cancelOnSigint();
      try {
        const named = formatByExtension(output);
        const format = opts.format ?? (named?.creatableTypes.includes('dynamic') ? `${named.name}-dynamic` : 'raw');
        await exportImage(image, output, { format, onProgress: progress.update, signal: cancel.signal });
      } finally {
        progress.stop();
        cancel.dispose();
      }
    });
}
