import { strict as assert } from 'assert';
import { spawn, spawnSync } from 'child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { checkImage } from '../../src/chain/check';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/vhd/create';
import { CLI, cliOk, rng, randomBytes, tempDir, readChain } from '../helpers/util';

function copyDir(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  for (const f of readdirSync(from)) if (f.endsWith('.vhd')) copyFileSync(path.join(from, f), path.join(to, f));
}

/** Runs `diskimg merge` and SIGKILLs it after `delayMs` (if still running); resolves with how it ended. */
function mergeKilledAfter(child: string, delayMs: number): Promise<{ killed: boolean; code: number | null; ms: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const p = spawn(process.execPath, [CLI, 'merge', child], { stdio: 'ignore' });
    let killed = false;
    const timer = setTimeout(() => { killed = p.kill('SIGKILL'); }, delayMs);
    p.on('exit', (code) => { clearTimeout(timer); resolve({ killed: killed && code === null, code, ms: Date.now() - t0 }); });
  });
}

/**
 * Kills a real merge process (kill -9) at many points. After each kill every image must still be a
 * valid VHD, the chain must read exactly as before the merge (or as the finished merge), and running
 * the same merge again must complete it.
 */
describe('merge survives kill -9 at any point', function () {
  this.timeout(600000);
  let dir: string;
  let cleanup: () => void;
  let template: string;
  let childModel: Buffer;
  let grandModel: Buffer;
  before(async () => {
    ({ dir, cleanup } = tempDir('diskimg-crash-'));
    template = path.join(dir, 'template');
    mkdirSync(template);
    const r = rng(2024);
    const base = path.join(template, 'base.vhd');
    const size = await createImage(base, { size: 48 * 1024 * 1024, blockSize: 64 * 1024 });
    const model = Buffer.alloc(size);
    const write = async (p: string, count: number, maxLen: number) => {
      const c = await openChain(p, { writable: true });
      for (let i = 0; i < count; i++) {
        const len = 1 + Math.floor(r() * maxLen);
        const off = Math.floor(r() * (size - len));
        const data = randomBytes(r, len);
        await c.write(off, data);
        data.copy(model, off);
      }
      await c.close();
    };
    await write(base, 20, 1 << 20);
    await createChild(base, path.join(template, 'child.vhd'));
    await write(path.join(template, 'child.vhd'), 60, 1 << 20);
    childModel = Buffer.from(model);
    await createChild(path.join(template, 'child.vhd'), path.join(template, 'grand.vhd'));
    await write(path.join(template, 'grand.vhd'), 10, 200000);
    grandModel = Buffer.from(model);
  });
  after(() => cleanup());

  it('at 24 random points where it was killed mid-way: valid files, the chain reads as the model, and a re-run completes', async () => {
    // How long an undisturbed merge takes, to spread the kill points over all of it.
    const probe = path.join(dir, 'probe');
    copyDir(template, probe);
    const full = await mergeKilledAfter(path.join(probe, 'child.vhd'), 60000);
    assert.equal(full.code, 0);
    const r = rng(99);
    let killedMidway = 0;
    // Until 24 kills have landed while the merge ran (timing varies with load), at most 60 tries.
    for (let i = 0; i < 60 && killedMidway < 24; i++) {
      const run = path.join(dir, `run${i}`);
      copyDir(template, run);
      const child = path.join(run, 'child.vhd');
      const base = path.join(run, 'base.vhd');
      const grand = path.join(run, 'grand.vhd');
      const delay = Math.floor(r() * full.ms);
      const res = await mergeKilledAfter(child, delay);
      if (res.killed) killedMidway++;
      for (const f of readdirSync(run).filter((n) => n.endsWith('.vhd'))) {
        const c = await checkImage(path.join(run, f));
        const errors = c.problems.filter((p) => p.severity === 'error');
        assert.deepEqual(errors, [], `point ${i} (${delay} ms): ${f} is a valid VHD: ${JSON.stringify(errors)}`);
      }
      assert.ok((await readChain(grand)).equals(grandModel), `point ${i}: the grandchild reads as before`);
      if (existsSync(child)) {
        assert.ok((await readChain(child)).equals(childModel), `point ${i}: the child reads as before`);
        cliOk(['merge', child]);
        assert.ok(!existsSync(child), 'the re-run completed the merge');
      }
      assert.ok((await readChain(base)).equals(childModel), `point ${i}: the target holds the merged data`);
      assert.ok((await readChain(grand)).equals(grandModel), `point ${i}: the grandchild still reads the same`);
    }
    assert.ok(killedMidway >= 24, `24 kills landed while the merge ran (${killedMidway})`);
  });

  for (const point of ['flushed', 'journaled', 'relinked-one', 'deleted-one']) {
    it(`killed at the '${point}' point (between the durable target, the re-links and the deletes): still reads, re-run completes`, async () => {
      const run = path.join(dir, `fp-${point}`);
      copyDir(template, run);
      // A second child of the merged image, so the crash can fall between two re-links.
      await createChild(path.join(run, 'child.vhd'), path.join(run, 'grand2.vhd'));
      const child = path.join(run, 'child.vhd');
      const r = spawnSync(process.execPath, [CLI, 'merge', child], { env: { ...process.env, DISKIMG_FAILPOINT: point } });
      assert.equal(r.signal, 'SIGKILL', `the merge stopped at '${point}'`);
      for (const f of readdirSync(run).filter((n) => n.endsWith('.vhd'))) {
        const errors = (await checkImage(path.join(run, f))).problems.filter((p) => p.severity === 'error');
        assert.deepEqual(errors, [], `${f}: ${JSON.stringify(errors)}`);
      }
      assert.ok((await readChain(path.join(run, 'grand.vhd'))).equals(grandModel));
      assert.ok((await readChain(path.join(run, 'grand2.vhd'))).equals(childModel));
      if (existsSync(child)) {
        assert.ok((await readChain(child)).equals(childModel));
        cliOk(['merge', child]);
      }
      assert.ok(!existsSync(child));
      assert.ok((await readChain(path.join(run, 'base.vhd'))).equals(childModel));
      assert.ok((await readChain(path.join(run, 'grand.vhd'))).equals(grandModel));
      assert.ok((await readChain(path.join(run, 'grand2.vhd'))).equals(childModel));
      // Killed after the child was deleted, the journal may stay behind; it names the child's UUID, so it cannot sway another merge.
      if (point !== 'deleted-one') assert.equal(readdirSync(run).filter((n) => n.includes('diskimg-merge')).length, 0, 'no journal left');
    });
  }
});
