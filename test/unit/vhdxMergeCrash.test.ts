// Merging VHDX children survives kill -9 at any point, as for VHD (see mergeCrash.test.ts).
import { strict as assert } from 'assert';
import { spawn, spawnSync } from 'child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { checkImage } from '../../src/chain/check';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/registry';
import { CLI, cliOk, rng, randomBytes, tempDir, readChain } from '../helpers/util';

const isImage = (n: string) => n.endsWith('.vhdx') || n.endsWith('.avhdx');

function copyDir(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  for (const f of readdirSync(from)) if (isImage(f)) copyFileSync(path.join(from, f), path.join(to, f));
}

function mergeKilledAfter(child: string, delayMs: number): Promise<{ killed: boolean; code: number | null; ms: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const p = spawn(process.execPath, [CLI, 'merge', child], { stdio: 'ignore' });
    let killed = false;
    const timer = setTimeout(() => { killed = p.kill('SIGKILL'); }, delayMs);
    p.on('exit', (code) => { clearTimeout(timer); resolve({ killed: killed && code === null, code, ms: Date.now() - t0 }); });
  });
}

/** Every file checks without errors (a log left by the kill is a warning: reads replay it). */
async function assertValid(run: string, what: string): Promise<void> {
  for (const f of readdirSync(run).filter(isImage)) {
    const errors = (await checkImage(path.join(run, f))).problems.filter((p) => p.severity === 'error');
    assert.deepEqual(errors, [], `${what}: ${f}: ${JSON.stringify(errors)}`);
  }
}

describe('VHDX merge survives kill -9 at any point', function () {
  this.timeout(600000);
  let dir: string;
  let cleanup: () => void;
  let template: string;
  let childModel: Buffer;
  let grandModel: Buffer;
  before(async () => {
    ({ dir, cleanup } = tempDir('diskimg-vhdx-crash-'));
    template = path.join(dir, 'template');
    mkdirSync(template);
    const r = rng(4242);
    const base = path.join(template, 'base.vhdx');
    const size = await createImage(base, { size: 40 * 1024 * 1024, blockSize: 1024 * 1024 });
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
    await write(base, 15, 1 << 20);
    await createChild(base, path.join(template, 'child.avhdx'));
    await write(path.join(template, 'child.avhdx'), 50, 1 << 20);
    childModel = Buffer.from(model);
    await createChild(path.join(template, 'child.avhdx'), path.join(template, 'grand.avhdx'));
    await write(path.join(template, 'grand.avhdx'), 10, 200000);
    grandModel = Buffer.from(model);
  });
  after(() => cleanup());

  it('killed at 12 random points mid-way: valid files, the chain reads as the model, a re-run completes', async () => {
    const probe = path.join(dir, 'probe');
    copyDir(template, probe);
    const full = await mergeKilledAfter(path.join(probe, 'child.avhdx'), 60000);
    assert.equal(full.code, 0);
    assert.ok((await readChain(path.join(probe, 'grand.avhdx'))).equals(grandModel));
    const r = rng(7);
    let killedMidway = 0;
    for (let i = 0; i < 40 && killedMidway < 12; i++) {
      const run = path.join(dir, `run${i}`);
      copyDir(template, run);
      const child = path.join(run, 'child.avhdx');
      const delay = Math.floor(r() * full.ms);
      const res = await mergeKilledAfter(child, delay);
      if (res.killed) killedMidway++;
      await assertValid(run, `point ${i} (${delay} ms)`);
      assert.ok((await readChain(path.join(run, 'grand.avhdx'))).equals(grandModel), `point ${i}: the grandchild reads as before`);
      if (existsSync(child)) {
        assert.ok((await readChain(child)).equals(childModel), `point ${i}: the child reads as before`);
        cliOk(['merge', child]);
        assert.ok(!existsSync(child), 'the re-run completed the merge');
      }
      assert.ok((await readChain(path.join(run, 'base.vhdx'))).equals(childModel), `point ${i}: the target holds the merged data`);
      assert.ok((await readChain(path.join(run, 'grand.avhdx'))).equals(grandModel), `point ${i}: the grandchild still reads the same`);
      await assertValid(run, `point ${i} after the re-run`);
    }
    assert.ok(killedMidway >= 12, `12 kills landed while the merge ran (${killedMidway})`);
  });

  for (const point of ['flushed', 'journaled', 'relinked-one', 'deleted-one']) {
    it(`killed at the '${point}' point: still reads, re-run completes`, async () => {
      const run = path.join(dir, `fp-${point}`);
      copyDir(template, run);
      await createChild(path.join(run, 'child.avhdx'), path.join(run, 'grand2.avhdx'));
      const child = path.join(run, 'child.avhdx');
      const r = spawnSync(process.execPath, [CLI, 'merge', child], { env: { ...process.env, DISKIMG_FAILPOINT: point } });
      assert.equal(r.signal, 'SIGKILL', `the merge stopped at '${point}'`);
      await assertValid(run, point);
      assert.ok((await readChain(path.join(run, 'grand.avhdx'))).equals(grandModel));
      assert.ok((await readChain(path.join(run, 'grand2.avhdx'))).equals(childModel));
      if (existsSync(child)) {
        assert.ok((await readChain(child)).equals(childModel));
        cliOk(['merge', child]);
      }
      assert.ok(!existsSync(child));
      assert.ok((await readChain(path.join(run, 'base.vhdx'))).equals(childModel));
      assert.ok((await readChain(path.join(run, 'grand.avhdx'))).equals(grandModel));
      assert.ok((await readChain(path.join(run, 'grand2.avhdx'))).equals(childModel));
    });
  }
});
