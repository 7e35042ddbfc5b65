import { strict as assert } from 'assert';
import { execFile } from 'child_process';
import { mkdirSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { buildImageModel } from '../../src/extension/model';
import { parentCachePath } from '../../src/io/parentCache';
import { CLI, randomBytes, rng, tempDir } from '../helpers/util';
import { RangeServer, startRangeServer } from '../helpers/rangeServer';

const MiB = 1024 * 1024;

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: 60000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

describe('info --json, check --json and the chain view show a parent on a server or a raw parent as such', function () {
  this.timeout(120000);
  const t = tempDir('remote-source-');
  const serverDir = path.join(t.dir, 'server');
  const SIZE = 5 * MiB + 512;
  let server: RangeServer;

  before(async () => {
    mkdirSync(serverDir);
    writeFileSync(path.join(serverDir, 'disk.img'), randomBytes(rng(11), SIZE));
    server = await startRangeServer(serverDir);
  });
  after(async () => {
    await server.close();
    t.cleanup();
  });

  it('http: kind, URL, size, reachable, cache fill; then the server gone: not reachable, size unknown', async () => {
    const d = path.join(t.dir, 'a');
    mkdirSync(d);
    const child = path.join(d, 'c.vhd');
    const url = server.url('disk.img');
    await createChild(url, child);
    // Half the parent through the cache.
    assert.equal((await cli(['read', child, '--cache', '--length', String(3 * MiB), '--output', '/dev/null'])).code, 0);
    const info = JSON.parse((await cli(['info', '--json', child])).stdout);
    const s = info.parent.source;
    assert.equal(s.kind, 'http');
    assert.equal(s.scheme, 'http');
    assert.equal(s.location, url);
    assert.equal(s.format, 'raw');
    assert.equal(s.size, SIZE);
    assert.equal(s.reachable, true);
    assert.equal(s.cache.path, parentCachePath(child));
    // The open's probes read the last chunk too: at least 3 chunks from the read (read-ahead may
    // have cached more before the process ended), and the 6th (512 bytes) from the probe.
    assert.ok(s.cache.cachedBytes >= 3 * MiB + 512 && s.cache.cachedBytes <= SIZE, `cached ${s.cache.cachedBytes}`);
    assert.equal(s.cache.cachedBytes % MiB, 512, 'whole chunks plus the probed tail');
    assert.ok(Math.abs(s.cache.fill - s.cache.cachedBytes / SIZE) < 1e-9);
    const check = await cli(['check', '--json', child]);
    assert.deepEqual(JSON.parse(check.stdout).parent, { ...s });
    // The editor's model carries the same for the chain view.
    const chain = await openChain(child, { tolerant: true });
    try {
      const model = await buildImageModel(chain, false);
      assert.deepEqual(model.chain[0].parentSource, s);
      assert.equal(model.chain[1].parentSource ?? null, null, 'the parent itself has no parent');
    } finally {
      await chain.close();
    }
    // Server gone (no cache: a cache holding what the open reads would open the parent without it).
    const gone = await startRangeServer(serverDir);
    const child2 = path.join(d, 'g.vhd');
    await createChild(gone.url('disk.img'), child2);
    await gone.close();
    const env = { DISKIMG_HTTP_BACKOFF_MS: '5', DISKIMG_HTTP_TRIES: '2' };
    const off = JSON.parse((await cli(['info', '--json', child2], env)).stdout).parent.source;
    assert.equal(off.kind, 'http');
    assert.equal(off.reachable, false);
    assert.match(off.problem, /connection refused after 2 tries/);
    assert.equal(off.size, null, 'no server, no cache: size unknown');
    assert.equal(off.format, null);
    assert.equal(off.cache, null);
    const offCheck = await cli(['check', '--json', child2], env);
    assert.equal(JSON.parse(offCheck.stdout).parent.reachable, false);
  });

  it('raw file: kind raw-file, its path and size; an image-file parent has no source', async () => {
    const d = path.join(t.dir, 'b');
    mkdirSync(d);
    const raw = path.join(d, 'disk.img');
    writeFileSync(raw, randomBytes(rng(12), 2 * MiB + 100));
    const child = path.join(d, 'c.vhd');
    await createChild(raw, child);
    const s = JSON.parse((await cli(['info', '--json', child])).stdout).parent.source;
    assert.deepEqual(s, { kind: 'raw-file', scheme: null, location: raw, device: null, format: 'raw', size: 2 * MiB + 100, reachable: true, problem: null, cache: null });
    assert.deepEqual(JSON.parse((await cli(['check', '--json', child])).stdout).parent, s);
    const grand = path.join(d, 'g.vhd');
    await createChild(child, grand);
    assert.equal(JSON.parse((await cli(['info', '--json', grand])).stdout).parent.source, null);
    assert.equal('parent' in JSON.parse((await cli(['check', '--json', grand])).stdout), false, 'check --json of an image-file parent is {ok, problems}');
    const chain = await openChain(grand, { tolerant: true });
    try {
      const model = await buildImageModel(chain, false);
      assert.equal(model.chain[0].parentSource, null);
      assert.deepEqual(model.chain[1].parentSource, s);
    } finally {
      await chain.close();
    }
  });
});
