// Remote parent behind an HTTP server with 20 ms latency per request: first full read (through the
// cache) vs curl downloading the parent; second full read (cache full: zero requests) vs the same
// read with a local parent.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { benchDir, compare, load, pairRatios, timed } from './common.mjs';

const MiB = 1024 * 1024;

async function startServer(root, dir) {
  const p = spawn(process.execPath, [join(root, 'bench', 'remoteServer.mjs'), dir, '20'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve) => p.stdout.once('data', (d) => resolve(Number(String(d).trim()))));
  return { p, port };
}

/**
 * The VM boot of the serve issue over a base behind the same kind of server, next to the same boot
 * over a local base: test/vm/remoteBoot.test.ts boots both (one pair: a boot takes minutes) and
 * prints the times. Skipped when the VM assets are not prepared or REMOTE_BENCH_VM=0.
 */
function vmBootRow(root) {
  const ready = join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'disk-image-inspector', 'vm', 'current', 'ready');
  if (process.env.REMOTE_BENCH_VM === '0' || !existsSync(ready)) return [];
  const r = spawnSync('npx', ['mocha', '--no-config', '--require', 'tsx/cjs', '--extension', 'ts', '--timeout', '1800000', 'test/vm/remoteBoot.test.ts'], { cwd: root, encoding: 'utf8' });
  const m = /VM boot: local base ([\d.]+) s, base over HTTP \(20 ms\/request\) ([\d.]+) s/.exec(r.stdout);
  if (r.status !== 0 || !m) throw new Error(`remote VM boot failed (${r.status}): ${r.stdout.slice(-2000)}${r.stderr.slice(-2000)}`);
  const requests = /remote base: (\d+) HTTP requests/.exec(r.stdout)?.[1] ?? '?';
  const [local, remote] = [Number(m[1]), Number(m[2])];
  console.log(`VM boot over a base behind HTTP (20 ms/request): ${remote.toFixed(1)} s vs ${local.toFixed(1)} s over a local base`);
  return [{
    name: 'VM boot (serve --session) over a base behind HTTP, 20 ms/request',
    ours: remote, reference: local, referenceName: 'the same boot over a local base', ratio: remote / local,
    note: `one pair (a boot takes minutes); ${requests} HTTP requests; ${load()}`,
  }];
}

export default async function ({ root }) {
  const d = join(benchDir(root), 'remote');
  rmSync(d, { recursive: true, force: true });
  execFileSync('mkdir', ['-p', join(d, 'server'), join(d, 'client'), join(d, 'local')]);
  const parent = join(d, 'server', 'parent.img');
  const mib = Number(process.env.REMOTE_BENCH_MIB ?? 256);
  execFileSync('sh', ['-c', `head -c ${mib * MiB} /dev/urandom > ${parent}`]);
  const { p, port } = await startServer(root, join(d, 'server'));
  const cli = join(root, 'dist', 'cli.js');
  const url = `http://127.0.0.1:${port}/parent.img`;
  const count = () => Number(execFileSync('curl', ['-s', `http://127.0.0.1:${port}/__count`]).toString());
  try {
    const child = join(d, 'client', 'child.vhd');
    execFileSync(process.execPath, [cli, 'child', url, child]);
    const localChild = join(d, 'local', 'child.vhd');
    execFileSync(process.execPath, [cli, 'child', parent, localChild]);
    const cache = join(d, 'client', '.child.vhd.parent-cache');
    const pairs = Number(process.env.REMOTE_BENCH_PAIRS ?? 5);
    const [first, curl] = compare(pairs, [
      () => timed(cli, ['read', child, '--cache', '--output', '/dev/null']),
      () => timed('curl', ['-s', '-o', '/dev/null', url]),
    ], () => rmSync(cache, { force: true }));
    // Fill the cache once, then read again: no request may reach the server.
    execFileSync(process.execPath, [cli, 'cache', child, '--fill']);
    const before = count();
    const [second, local] = compare(pairs, [
      () => timed(cli, ['read', child, '--output', '/dev/null']),
      () => timed(cli, ['read', localChild, '--output', '/dev/null']),
    ]);
    const requests = count() - before;
    console.log(`remote ${mib} MiB parent, 20 ms latency: first read ${first.seconds.toFixed(3)} s vs curl ${curl.seconds.toFixed(3)} s; second read ${second.seconds.toFixed(3)} s (${requests} requests) vs local parent ${local.seconds.toFixed(3)} s`);
    return [
      ...vmBootRow(root),
      {
        name: `first full read, ${mib} MiB parent over HTTP (20 ms/request), through the cache`,
        ours: first, reference: curl, referenceName: 'curl downloading the parent', ...pairRatios(first, curl),
        goal: '<= 1.3x', note: load(),
      },
      {
        name: 'second full read, cache full',
        ours: second, reference: local, referenceName: 'the same read with a local parent', ...pairRatios(second, local),
        goal: '<= 1.2x, zero requests', note: `${requests} requests to the server during ${second.runs.length} reads; ${load()}`,
      },
    ];
  } finally {
    p.kill();
    if (existsSync(d)) rmSync(d, { recursive: true, force: true });
  }
}
