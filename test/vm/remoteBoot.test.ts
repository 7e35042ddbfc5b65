// The seed's Figure 5 with a real emulator: the guest's disk is an undo session over a child whose
// base lives behind a slow HTTP server (20 ms per request), served by `diskimg serve --session`.
// The same guest plan also boots over the same base as a local file; both boot times are printed
// side by side (the remote bench reads them from here: see bench/remote.bench.mjs).
import { strict as assert } from 'assert';
import { spawn } from 'child_process';
import { mkdirSync, readFileSync } from 'fs';
import * as path from 'path';
import { createChild } from '../../src/chain/createChild';
import { cacheStatus, parentCachePath } from '../../src/io/parentCache';
import { ROOT, tempDir } from '../helpers/util';
import { run, sha, startServe } from '../serve/helpers';
import { bootGuest, makeBaseWithKeptData, makePlan, requireVm, verifyDisk } from './vm';

/** The bench's range server in its own process: this one blocks while nbdcopy runs. */
async function slowHttpServer(dir: string, latencyMs: number): Promise<{ url: (name: string) => string; requests: () => Promise<number>; stop: () => void }> {
  const p = spawn(process.execPath, [path.join(ROOT, 'bench', 'remoteServer.mjs'), dir, String(latencyMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    p.stdout.once('data', (d) => resolve(Number(String(d).trim())));
    p.once('exit', (c) => reject(new Error(`range server exited ${c}`)));
  });
  const base = `http://127.0.0.1:${port}`;
  return {
    url: (name) => `${base}/${name}`,
    requests: async () => Number(await (await fetch(`${base}/__count`)).text()),
    stop: () => p.kill(),
  };
}

describe('a real emulator on diskimg serve over a base behind a slow HTTP server', function () {
  this.timeout(1_800_000);
  const DISK = 64 << 20;
  let t: ReturnType<typeof tempDir>;
  before(function () { requireVm(this); t = tempDir('remote-vmboot-'); });
  after(() => t?.cleanup());

  it('boots from a child of an http:// base (20 ms per request); the guest\'s disk is right; time beside the local-base boot', async () => {
    const serverDir = path.join(t.dir, 'server');
    mkdirSync(serverDir);
    const base = path.join(serverDir, 'base.vhd');
    // Base data where the guest writes nothing: it must read through the session, the child and HTTP.
    const kept = await makeBaseWithKeptData(base, DISK);
    const baseSha = sha(base);
    const http = await slowHttpServer(serverDir, 20);
    const seconds: Record<string, number> = {};
    try {
      for (const where of ['local', 'remote'] as const) {
        const dir = path.join(t.dir, where);
        mkdirSync(dir);
        const child = path.join(dir, 'child.vhd');
        await createChild(where === 'local' ? base : http.url('base.vhd'), child);
        const childSha = sha(child);
        const plan = makePlan(5, DISK);
        const before = await http.requests();
        const srv = await startServe([child, '--session', '--on-exit', 'discard', '--socket', path.join(dir, 'nbd.sock')]);
        const guestView = path.join(dir, 'guest-view.raw');
        try {
          const boot = await bootGuest({ nbdUrl: srv.url, plan, workDir: path.join(dir, 'guest'), timeoutMs: 900_000 });
          seconds[where] = boot.seconds;
          const copy = run('nbdcopy', [srv.url, guestView]);
          assert.equal(copy.code, 0, copy.stderr);
        } finally {
          const code = await srv.stop('SIGTERM');
          assert.equal(code, 0, `serve exited ${code}: ${srv.stderr()}`);
        }
        assert.deepEqual(verifyDisk(guestView, plan), [], `the guest's view over NBD (${where} base)`);
        assert.ok(readFileSync(guestView).subarray(kept.offset, kept.offset + kept.data.length).equals(kept.data), `base data did not read through (${where})`);
        assert.equal(sha(child), childSha, 'the session was discarded: the child is as it was');
        const requests = (await http.requests()) - before;
        if (where === 'remote') {
          assert.ok(requests > 0, 'the remote base was read over HTTP');
          // serve keeps what it fetched in the child's cache by default.
          const cache = cacheStatus(parentCachePath(child));
          assert.ok(cache && cache.cachedBytes > 0, 'serve cached the base');
          console.log(`    remote base: ${requests} HTTP requests, cache ${cache.cachedBytes} of ${cache.size} bytes`);
        } else {
          assert.equal(requests, 0, 'the local-base boot made no HTTP request');
        }
      }
    } finally {
      http.stop();
    }
    assert.equal(sha(base), baseSha, 'the base is never written');
    console.log(`    VM boot: local base ${seconds.local.toFixed(1)} s, base over HTTP (20 ms/request) ${seconds.remote.toFixed(1)} s (${(seconds.remote / seconds.local).toFixed(2)}x)`);
  });
});
