import { strict as assert } from 'assert';
import { spawn } from 'child_process';
import { mkdirSync, readdirSync } from 'fs';
import * as path from 'path';
import { CLI, readChain, rng, tempDir } from '../helpers/util';
import { PYTHON, randomChain, run, startServe } from './helpers';

/**
 * Phase 1 writes patterned pieces into the first half of the disk and makes them durable (FUA writes
 * and a FLUSH), prints "flushed", then phase 2 keeps writing unflushed pieces into the second half
 * until the server dies.
 */
const CLIENT = `
import sys, nbd, random
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = h.get_size()
rnd = random.Random(int(sys.argv[2]))
half = size // 2
for i in range(40):
    n = rnd.choice([512, 4096, 777, 70000])
    off = rnd.randrange(0, half - n)
    h.pwrite(bytes([(i % 200) + 1]) * n, off, nbd.CMD_FLAG_FUA if i % 5 == 0 else 0)
    print('w', off, n, (i % 200) + 1)
h.flush()
print('flushed', flush=True)
try:
    i = 0
    while True:
        n = rnd.choice([512, 4096, 300000, 1000000])
        off = half + rnd.randrange(0, half - n)
        h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray([0xee]) * n), off)
        while h.aio_in_flight() > 16:
            h.poll(-1)
        i += 1
except Exception:
    pass
`;

describe('serve: kill -9 leaves valid images and every flushed write', function () {
  this.timeout(180_000);
  const t = tempDir('diskimg-kill-');
  after(() => t.cleanup());

  for (const [i, mode] of [[0, 'in place'], [1, 'session'], [2, 'session + snapshots'], [3, 'in place'], [4, 'session']] as const) {
    it(`${mode} (run ${i}): killed mid-stream of unflushed writes`, async () => {
      const dir = path.join(t.dir, `k${i}`);
      mkdirSync(dir);
      const r = rng(40 + i);
      const { paths, model } = await randomChain(dir, r, { layers: 1, base: i % 2 ? 'fixed' : 'dynamic', size: 16 * 1024 * 1024 });
      const args = [paths[1], '--socket', path.join(dir, 's.sock')];
      if (mode !== 'in place') args.push('--session');
      if (mode === 'session + snapshots') args.push('--snapshot-every', '200ms');
      const srv = await startServe(args);
      const client = spawn(PYTHON, ['-c', CLIENT, srv.url, String(i)], { stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      await new Promise<void>((resolve, reject) => {
        client.stdout.on('data', (d) => { out += d; if (out.includes('flushed\n')) resolve(); });
        client.on('exit', () => reject(new Error(`client ended early: ${out}`)));
      });
      // Let unflushed writes (block allocations among them) run for a random moment, then kill -9.
      await new Promise((res) => setTimeout(res, 30 + Math.floor(r() * 300)));
      srv.proc.kill('SIGKILL');
      await srv.exited;
      await new Promise<void>((res) => { if (client.exitCode !== null) res(); else client.on('exit', () => res()); });

      for (const line of out.split('\n').filter((l) => l.startsWith('w '))) {
        const [, off, n, b] = line.split(' ').map(Number);
        model.fill(b, off, off + n);
      }
      const images = readdirSync(dir).filter((f) => f.endsWith('.vhd')).map((f) => path.join(dir, f));
      for (const p of images) {
        const c = run(process.execPath, [CLI, 'check', p]);
        assert.equal(c.code, 0, `check ${p}: ${c.stdout}${c.stderr}`);
      }
      // The newest layer is the one the server wrote last; its chain holds every flushed write.
      const top = images.sort((a, b) => newest(a, b))[0];
      const disk = await readChain(top);
      const half = model.length / 2;
      assert.ok(disk.subarray(0, half).equals(model.subarray(0, half)), 'a flushed write is missing after kill -9');
      // Unflushed writes in the second half may or may not be there, but never anything else.
      for (let off = half; off < model.length; off += 512) {
        const got = disk.subarray(off, off + 512);
        const ok = got.equals(model.subarray(off, off + 512)) || got.every((x) => x === 0xee);
        if (!ok) {
          // A sector may be partly old, partly new only inside a single write's range boundary sector.
          assert.ok(got.every((x, k) => x === 0xee || x === model[off + k]), `sector at ${off} holds bytes nobody wrote`);
        }
      }
    });
  }
});

/** Sorts newest chain layer first: the deepest snapshot name, or the session child over its image. */
function newest(a: string, b: string): number {
  const rank = (p: string) => {
    const m = /-(\d+)\.vhd$/.exec(p);
    return (p.includes('.session-') ? 1_000_000 : 0) + (m ? Number(m[1]) : 0) + (/c1\.vhd$/.test(p) ? 1 : 0);
  };
  return rank(b) - rank(a);
}
