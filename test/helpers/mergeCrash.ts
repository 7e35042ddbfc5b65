// The kill -9 harness for merge, shared by the per-format crash tests (mergeCrash, vhdxMergeCrash,
// qcow2MergeCrash): a base, a child holding random writes, a grandchild; a real `diskimg merge` of
// the child is killed at random points and at each failpoint after the copy.
import { strict as assert } from 'assert';
import { spawn, spawnSync } from 'child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { checkImage } from '../../src/chain/check';
import { createChild } from '../../src/chain/createChild';
import { CLI, cliOk, rng, randomBytes, tempDir, readChain } from './util';

export interface MergeCrashCase {
  /** The describe title. */
  title: string;
  tempPrefix: string;
  /** File names of the layers (the same extension decides each one's format). */
  base: string;
  child: string;
  grand: string;
  grand2: string;
  isImage: (name: string) => boolean;
  /** Creates the base; returns its virtual size. */
  createBase: (file: string) => Promise<number>;
  seed: number;
  /** Random writes into base, child and grandchild: [count, max length] each. */
  writes: [[number, number], [number, number], [number, number]];
  /** Kills that must land while the merge runs, within this many tries, delays from this seed. */
  kills: number;
  tries: number;
  killSeed: number;
  /** Runs on the base once its writes are in, before its child is made (e.g. an internal snapshot). */
  afterBaseWrites?: (file: string) => void;
  /** A check of one file by another tool after each kill (e.g. qemu-img check); throws when it fails. */
  crossCheck?: (file: string, what: string) => void;
}

function copyDir(from: string, to: string, isImage: (n: string) => boolean): void {
  mkdirSync(to, { recursive: true });
  for (const f of readdirSync(from)) if (isImage(f)) copyFileSync(path.join(from, f), path.join(to, f));
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
 * Kills a real merge process (kill -9) at many points. After each kill every image must still be
 * valid (warnings such as a log to replay or a leaked cluster are allowed), the chain must read
 * exactly as before the merge (or as the finished merge), and running the same merge again must
 * complete it.
 */
export function describeMergeCrash(c: MergeCrashCase): void {
  describe(c.title, function () {
    this.timeout(600000);
    let dir: string;
    let cleanup: () => void;
    let template: string;
    let childModel: Buffer;
    let grandModel: Buffer;

    const assertValid = async (run: string, what: string) => {
      for (const f of readdirSync(run).filter(c.isImage)) {
        const errors = (await checkImage(path.join(run, f))).problems.filter((p) => p.severity === 'error');
        assert.deepEqual(errors, [], `${what}: ${f} is valid: ${JSON.stringify(errors)}`);
        c.crossCheck?.(path.join(run, f), what);
      }
    };

    before(async () => {
      ({ dir, cleanup } = tempDir(c.tempPrefix));
      template = path.join(dir, 'template');
      mkdirSync(template);
      const r = rng(c.seed);
      const base = path.join(template, c.base);
      const size = await c.createBase(base);
      const model = Buffer.alloc(size);
      const write = async (p: string, [count, maxLen]: [number, number]) => {
        const chain = await openChain(p, { writable: true });
        for (let i = 0; i < count; i++) {
          const len = 1 + Math.floor(r() * maxLen);
          const off = Math.floor(r() * (size - len));
          const data = randomBytes(r, len);
          await chain.write(off, data);
          data.copy(model, off);
        }
        await chain.close();
      };
      await write(base, c.writes[0]);
      c.afterBaseWrites?.(base);
      await createChild(base, path.join(template, c.child));
      await write(path.join(template, c.child), c.writes[1]);
      childModel = Buffer.from(model);
      await createChild(path.join(template, c.child), path.join(template, c.grand));
      await write(path.join(template, c.grand), c.writes[2]);
      grandModel = Buffer.from(model);
    });
    after(() => cleanup());

    it(`killed at ${c.kills} random points mid-way: valid files, the chain reads as the model, a re-run completes`, async () => {
      // How long an undisturbed merge takes, to spread the kill points over all of it.
      const probe = path.join(dir, 'probe');
      copyDir(template, probe, c.isImage);
      const full = await mergeKilledAfter(path.join(probe, c.child), 60000);
      assert.equal(full.code, 0);
      assert.ok((await readChain(path.join(probe, c.grand))).equals(grandModel));
      const r = rng(c.killSeed);
      let killedMidway = 0;
      // Until enough kills have landed while the merge ran (timing varies with load).
      for (let i = 0; i < c.tries && killedMidway < c.kills; i++) {
        const run = path.join(dir, `run${i}`);
        copyDir(template, run, c.isImage);
        const child = path.join(run, c.child);
        const delay = Math.floor(r() * full.ms);
        const res = await mergeKilledAfter(child, delay);
        if (res.killed) killedMidway++;
        await assertValid(run, `point ${i} (${delay} ms)`);
        assert.ok((await readChain(path.join(run, c.grand))).equals(grandModel), `point ${i}: the grandchild reads as before`);
        if (existsSync(child)) {
          assert.ok((await readChain(child)).equals(childModel), `point ${i}: the child reads as before`);
          cliOk(['merge', child]);
          assert.ok(!existsSync(child), 'the re-run completed the merge');
        }
        assert.ok((await readChain(path.join(run, c.base))).equals(childModel), `point ${i}: the target holds the merged data`);
        assert.ok((await readChain(path.join(run, c.grand))).equals(grandModel), `point ${i}: the grandchild still reads the same`);
        await assertValid(run, `point ${i} after the re-run`);
      }
      assert.ok(killedMidway >= c.kills, `${c.kills} kills landed while the merge ran (${killedMidway})`);
    });

    // staged-one: the first window's data written (direct where aligned), nothing flushed or recorded;
    // committed-one: the first batch recorded (BAT, L2, VHDX log entry) before the target's last flush.
    for (const point of ['staged-one', 'committed-one', 'flushed', 'journaled', 'relinked-one', 'deleted-one']) {
      it(`killed at the '${point}' point (in the copy, or between the durable target, the re-links and the deletes): still reads, re-run completes`, async () => {
        const run = path.join(dir, `fp-${point}`);
        copyDir(template, run, c.isImage);
        // A second child of the merged image, so the crash can fall between two re-links.
        await createChild(path.join(run, c.child), path.join(run, c.grand2));
        const child = path.join(run, c.child);
        const r = spawnSync(process.execPath, [CLI, 'merge', child], { env: { ...process.env, DISKIMG_FAILPOINT: point } });
        assert.equal(r.signal, 'SIGKILL', `the merge stopped at '${point}'`);
        await assertValid(run, point);
        assert.ok((await readChain(path.join(run, c.grand))).equals(grandModel));
        assert.ok((await readChain(path.join(run, c.grand2))).equals(childModel));
        if (existsSync(child)) {
          assert.ok((await readChain(child)).equals(childModel));
          cliOk(['merge', child]);
        }
        assert.ok(!existsSync(child));
        assert.ok((await readChain(path.join(run, c.base))).equals(childModel));
        assert.ok((await readChain(path.join(run, c.grand))).equals(grandModel));
        assert.ok((await readChain(path.join(run, c.grand2))).equals(childModel));
        // Killed after the child was deleted, the journal may stay behind; it names the child's UUID, so it cannot sway another merge.
        if (point !== 'deleted-one') assert.equal(readdirSync(run).filter((n) => n.includes('diskimg-merge')).length, 0, 'no journal left');
      });
    }
  });
}
