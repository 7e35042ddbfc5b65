// `diskimg cache <child> [--fill|--drop|--status]`: the local cache of a parent on a server.
import { Command } from 'commander';
import { openChain } from '../../chain/chain';
import { DiskImageError } from '../../format/errors';
import { isRemoteLocation } from '../../io/byteSource';
import { cacheStatus, dropCache, parentCachePath, syncCachesOnClose } from '../../io/parentCache';
import { formatBytes } from '../units';

/** The layer whose parent is on a server (its cache lives next to it), or null. */
async function remoteLink(child: string): Promise<{ holder: string; url: string } | null> {
  const chain = await openChain(child, { tolerant: true });
  try {
    for (const link of chain.links) {
      const url = link.resolution.resolvedPath;
      if (url && isRemoteLocation(url)) return { holder: chain.layers[link.depth].path, url };
    }
    return null;
  } finally {
    await chain.close();
  }
}

export function register(program: Command): void {
  program.command('cache')
    .argument('<child>')
    .option('--fill', 'read the whole remote parent into the cache now')
    .option('--drop', 'delete the cache (the next read fetches from the server again)')
    .option('--status', 'print the cache state (default)')
    .option('--json', 'print one JSON object')
    .description('the local cache of a parent on a server (.<child>.parent-cache)')
    .action(async (child: string, opts: { fill?: boolean; drop?: boolean; status?: boolean; json?: boolean }) => {
      const link = await remoteLink(child);
      if (!link) throw new DiskImageError(child, 'no parent on a server in this chain: nothing to cache', undefined, undefined, 'EARG');
      const path = parentCachePath(link.holder);
      if (opts.drop) {
        const had = dropCache(path);
        if (!opts.json) process.stdout.write(had ? `dropped ${path}\n` : `no cache at ${path}\n`);
      }
      if (opts.fill) {
        // Warmed on purpose: fsynced at the end, so it outlives a reboot.
        syncCachesOnClose(true);
        const chain = await openChain(link.holder, { cache: true });
        try {
          const parent = chain.layers[1];
          const step = 8 * 1024 * 1024;
          const buf = Buffer.alloc(step);
          // Only the parent's own bytes: reading through the chain would skip what the child holds.
          for (let pos = 0; pos < parent.virtualSize; pos += step) {
            const n = Math.min(step, parent.virtualSize - pos);
            await chain.readParent(pos, buf.subarray(0, n));
          }
        } finally {
          await chain.close();
        }
      }
      const s = cacheStatus(path);
      const out = {
        child: link.holder,
        parent: link.url,
        cache: path,
        present: s !== null,
        size: s?.size ?? null,
        cachedBytes: s?.cachedBytes ?? 0,
        fill: s ? (s.size ? s.cachedBytes / s.size : 1) : 0,
        validator: s?.validator ?? null,
      };
      if (opts.json) process.stdout.write(`${JSON.stringify(out)}\n`);
      else if (!opts.drop || opts.fill || opts.status) {
        process.stdout.write(s
          ? `${path}: ${s.cachedBytes} of ${s.size} bytes of ${link.url} (${(out.fill * 100).toFixed(1)}%, ${formatBytes(s.cachedBytes)})\n`
          : `${path}: no cache of ${link.url}\n`);
      }
    });
}
