// A reader process for the concurrency test: opens the image again and again while another process
// appends blocks to it, and exercises open, info, map and read. Exits 1 on any thrown value that is
// not a DiskImageError; prints a JSON summary on stdout.
import { existsSync } from 'fs';
import { openChain } from '../../src/chain/chain';
import { describeImage } from '../../src/chain/info';
import { DiskImageError } from '../../src/format/errors';

async function main(): Promise<void> {
  const [image, stopFile, maxRounds] = process.argv.slice(2);
  let rounds = 0;
  let typedErrors = 0;
  const messages = new Set<string>();
  let lastAllocated = 0;
  while (!existsSync(stopFile) && rounds < Number(maxRounds)) {
    rounds++;
    try {
      const info = await describeImage(image);
      lastAllocated = info.allocatedBlocks;
      const chain = await openChain(image);
      try {
        const extents = await chain.map();
        for (const e of extents.slice(0, 64)) {
          if (!e.data) continue;
          const b = await chain.readRange(e.start, Math.min(e.length, 64 * 1024));
          if (b.length !== Math.min(e.length, 64 * 1024)) throw new Error('short read');
        }
      } finally {
        await chain.close();
      }
    } catch (e) {
      if (!(e instanceof DiskImageError)) {
        process.stderr.write(`UNTYPED ${(e as Error)?.stack ?? String(e)}\n`);
        process.exit(1);
      }
      typedErrors++;
      messages.add(e.message);
    }
  }
  process.stdout.write(`${JSON.stringify({ rounds, typedErrors, messages: [...messages], lastAllocated })}\n`);
}

main().catch((e) => {
  process.stderr.write(`UNTYPED ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(1);
});
