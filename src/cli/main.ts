import { Command, CommanderError, Option } from 'commander';
import { exitWhenIdle } from './fastExit';
import { createReadStream, createWriteStream } from 'fs';
import * as nodePath from 'path';
import { alignedBuffer } from '../io/alignedBuffer';
import { DiskImageError } from '../format/errors';
import { createImage } from '../format/registry';
import { openChain, useParentCache } from '../chain/chain';
import { createChild } from '../chain/createChild';
import { describeImageWithLines, ImageDescription } from '../chain/info';
import { formatBytes, parseSize } from './units';
import { progressReporter } from './progress';
import { commandModules } from './commands';

/** Thrown for a result that is not an error but needs a non-zero exit (diff: 1 = different). */
declare const DISKIMG_VERSION: string | undefined;

export class ExitCode extends Error {
  constructor(readonly code: number) { super(`exit ${code}`); }
}

function printInfo({ info, lines: formatLines }: ImageDescription): void {
  const lines: Array<[string, string]> = [
    ['path', info.path],
    ['disk type', info.diskType],
    ['virtual size', `${info.virtualSize} (${formatBytes(info.virtualSize)})`],
    ...formatLines,
  ];
  if (info.parent) {
    lines.push(['parent uuid', info.parent.uuid], ['parent time', info.parent.timestamp ?? '-'], ['parent name', info.parent.name]);
    for (const l of info.parent.locators) lines.push([`locator ${l.platform}`, l.path ?? '(unreadable)']);
    lines.push(['parent', info.parent.resolvedPath ?? 'NOT FOUND']);
  }
  const w = Math.max(...lines.map(([k]) => k.length));
  for (const [k, v] of lines) process.stdout.write(`${k.padEnd(w)}  ${v}\n`);
  process.stdout.write(`chain (${info.chain.length}):\n`);
  info.chain.forEach((c, i) => process.stdout.write(`  ${i}  ${c.diskType.padEnd(12)}  ${c.uuid}  ${c.path}\n`));
  for (const warning of info.warnings) process.stdout.write(`warning: ${warning}\n`);
}

function intOption(text: string, what: string): number {
  const v = parseSize(text, what);
  if (v < 0) throw new Error(`${what} must not be negative`);
  return v;
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('diskimg')
    .description('Inspect and manage virtual disk images (VHD) and their differencing chains')
    .version(typeof DISKIMG_VERSION === 'string' ? DISKIMG_VERSION : 'dev')
    .showHelpAfterError(false)
    .configureOutput({ writeErr: (s) => process.stderr.write(`diskimg: ${s.replace(/^error: /, '')}`) })
    .exitOverride();

  program.command('info')
    .argument('<image>')
    .option('--json', 'print one JSON object')
    .description('this image, its parent link, and the resolved chain')
    .action(async (image: string, opts: { json?: boolean }) => {
      const description = await describeImageWithLines(image);
      if (opts.json) process.stdout.write(`${JSON.stringify(description.info, null, 2)}\n`);
      else printInfo(description);
    });

  program.command('create')
    .argument('<image>')
    .requiredOption('--size <size>', 'virtual size, N[K|M|G|T]')
    .addOption(new Option('--type <type>', 'image type').choices(['dynamic', 'fixed']).default('dynamic'))
    .option('--block-size <size>', 'block size, N[K|M] (default: VHD 2M, VHDX 32M)')
    .addOption(new Option('--logical-sector <bytes>', 'logical sector size (VHDX; VHD has 512 only)').choices(['512', '4096']))
    .option('--exact-size', 'keep the size as given instead of rounding up to an exact CHS size')
    .description('create a fixed or dynamic image (its format from the file name: .vhdx/.avhdx VHDX, otherwise VHD)')
    .action(async (image: string, opts: { size: string; type: 'dynamic' | 'fixed'; blockSize?: string; logicalSector?: string; exactSize?: boolean }) => {
      const size = await createImage(image, {
        size: parseSize(opts.size, '--size'),
        type: opts.type,
        blockSize: opts.blockSize ? parseSize(opts.blockSize, '--block-size') : undefined,
        logicalSectorSize: opts.logicalSector ? (Number(opts.logicalSector) as 512 | 4096) : undefined,
        exactSize: opts.exactSize,
      });
      process.stdout.write(`created ${opts.type} image ${image}: ${size} bytes (${formatBytes(size)})\n`);
    });

  program.command('child')
    .argument('<parent>')
    .argument('<child>')
    .description('create a differencing child of <parent>')
    .action(async (parent: string, child: string) => {
      await createChild(parent, child);
      process.stdout.write(`created differencing child ${child} of ${parent}\n`);
    });

  program.command('read')
    .argument('<image>')
    .option('--offset <n>', 'virtual byte offset', '0')
    .option('--length <n>', 'bytes to read (default: to the end of the disk)')
    .option('--output <file>', 'write to a file instead of stdout')
    .description('virtual bytes through the chain')
    .action(async (image: string, opts: { offset: string; length?: string; output?: string }) => {
      const chain = await openChain(image);
      try {
        const offset = intOption(opts.offset, '--offset');
        const size = chain.virtualSize;
        if (offset > size) throw new DiskImageError(image, `offset ${offset} is past the virtual size ${size}`, undefined, undefined, 'ERANGE');
        const length = opts.length !== undefined ? intOption(opts.length, '--length') : size - offset;
        if (offset + length > size) throw new DiskImageError(image, `range ${offset}+${length} is past the virtual size ${size}`, undefined, undefined, 'ERANGE');
        const out = opts.output ? createWriteStream(opts.output) : process.stdout;
        const chunk = 4 * 1024 * 1024;
        // Two buffers in turn, each refilled once its write is done: fresh memory per piece costs a
        // page fault per 4 KiB on first touch, more than the copy into it. Page aligned: reads into
        // malloc'd Buffers stall on 4K aliasing (alignedBuffer.ts).
        const piece = Math.min(chunk, length);
        const buffers = [alignedBuffer(piece), alignedBuffer(piece)];
        const written: Array<Promise<void>> = [Promise.resolve(), Promise.resolve()];
        for (let pos = offset, i = 0; pos < offset + length; pos += chunk, i ^= 1) {
          await written[i];
          const buf = buffers[i].subarray(0, Math.min(chunk, offset + length - pos));
          await chain.read(pos, buf);
          written[i] = new Promise<void>((resolve, reject) => { out.write(buf, (err) => (err ? reject(err) : resolve())); });
          written[i].catch(() => undefined);
        }
        await Promise.all(written);
        if (opts.output) await new Promise<void>((resolve, reject) => (out as ReturnType<typeof createWriteStream>).end((err?: Error | null) => (err ? reject(err) : resolve())));
      } finally {
        await chain.close();
      }
    });

  program.command('write')
    .argument('<image>')
    .requiredOption('--offset <n>', 'virtual byte offset')
    .option('--input <file>', 'read the bytes from a file instead of stdin')
    .description('bytes (stdin by default) into the top layer')
    .action(async (image: string, opts: { offset: string; input?: string }) => {
      const chain = await openChain(image, { writable: true });
      try {
        let pos = intOption(opts.offset, '--offset');
        const input = opts.input ? createReadStream(opts.input, { highWaterMark: 1024 * 1024 }) : process.stdin;
        for await (const piece of input) {
          const data = Buffer.isBuffer(piece) ? piece : Buffer.from(piece as string);
          await chain.write(pos, data);
          pos += data.length;
        }
        await chain.flush();
      } finally {
        await chain.close();
      }
    });

  program.command('map')
    .argument('<image>')
    .option('--json', 'print a JSON list of extents')
    .description('extents: which layer supplies each range')
    .action(async (image: string, opts: { json?: boolean }) => {
      const chain = await openChain(image);
      try {
        const extents = await chain.map();
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(extents)}\n`);
        } else {
          process.stdout.write(`${'start'.padStart(16)} ${'length'.padStart(16)} depth data  file\n`);
          for (const e of extents) {
            process.stdout.write(`${String(e.start).padStart(16)} ${String(e.length).padStart(16)} ${String(e.depth).padStart(5)} ${e.data ? 'yes ' : 'no  '}  ${e.data ? nodePath.basename(chain.layers[e.depth].path) : '(zeros)'}\n`);
          }
        }
      } finally {
        await chain.close();
      }
    });

  for (const register of commandModules) register(program);
  // Every command that reads a chain can keep a remote parent's bytes in a cache next to the child.
  for (const c of program.commands) {
    if (!c.options.some((o) => o.long === '--cache')) c.option('--cache', 'keep what is read from a parent on a server in .<child>.parent-cache');
  }
  program.hook('preAction', (_p, action) => {
    if (action.opts().cache) useParentCache(true);
  });
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof ExitCode) return e.code;
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0) return 0;
      return 2;
    }
    if (e instanceof DiskImageError) {
      process.stderr.write(`diskimg: ${e.message}\n`);
      return 2;
    }
    const err = e as NodeJS.ErrnoException;
    if (err && err.code === 'EPIPE') return 0;
    process.stderr.write(`diskimg: ${err?.message ?? String(e)}\n`);
    return 2;
  }
}

/** Runs one command line and sets the exit status (called by entry.ts, the executable). */
export function run(args: string[]): void {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => { if (e.code === 'EPIPE') process.exit(0); });
  main(args).then((code) => {
    process.exitCode = code;
    exitWhenIdle(code);
  });
}

if (require.main === module) run(process.argv.slice(2));
