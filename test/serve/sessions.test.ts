import { strict as assert } from 'assert';
import { createHash } from 'crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/vhd/create';
import { startServer } from '../../src/serve/server';
import { CLI, readChain, rng, randomBytes, tempDir } from '../helpers/util';
import { py, PY_APPLY, pyAsync, randomChain, run, runOk, sha, startServe } from './helpers';

const hash = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Writes `count` random pieces with python3-libnbd; returns the model after them. */
function randomOps(r: () => number, model: Buffer, count: number): Array<Record<string, unknown>> {
  const ops: Array<Record<string, unknown>> = [];
  for (let i = 0; i < count; i++) {
    const len = 1 + Math.floor(r() * 100000);
    const off = Math.floor(r() * (model.length - len));
    const data = randomBytes(r, len);
    ops.push({ op: 'write', offset: off, hex: data.toString('hex') });
    data.copy(model, off);
  }
  return ops;
}

describe('serve: undo sessions', function () {
  this.timeout(120_000);
  const t = tempDir('diskimg-session-');
  after(() => t.cleanup());

  for (const onExit of ['discard', 'merge', 'keep'] as const) {
    it(`--session --on-exit ${onExit}: the image is untouched while serving; then ${onExit}`, async () => {
      const dir = path.join(t.dir, onExit);
      mkdirSync(dir);
      const r = rng(onExit.length);
      const { paths, model } = await randomChain(dir, r, { layers: 0, base: 'dynamic' });
      const base = paths[0];
      const before = sha(base);
      const args = [base, '--session', '--socket', path.join(dir, 's.sock'), '--control', path.join(dir, 'ctl.sock')];
      if (onExit !== 'keep') args.push('--on-exit', onExit);
      const srv = await startServe(args);
      const ops = randomOps(r, model, 12);
      writeFileSync(path.join(dir, 'ops.json'), JSON.stringify(ops));
      assert.equal(py(PY_APPLY, [srv.url, path.join(dir, 'ops.json')]).trim(), hash(model));
      const status = JSON.parse(runOk(process.execPath, [CLI, 'ctl', path.join(dir, 'ctl.sock'), 'status', '--json']));
      const child = status.exports[0].top as string;
      assert.match(path.basename(child), /^base\.session-\d{8}T\d{6}Z\.vhd$/);
      assert.deepEqual(status.exports[0].chain, [child, base]);
      assert.equal(sha(base), before, 'the image was written during the session');
      // The image is in use: a second server and a merge are refused with the lock holder named.
      const second = run(process.execPath, [CLI, 'serve', base, '--socket', path.join(dir, 'other.sock')]);
      assert.equal(second.code, 2);
      assert.match(second.stderr, /in use by pid \d+ .*\(diskimg serve/);
      const merge = run(process.execPath, [CLI, 'merge', child]);
      assert.equal(merge.code, 2);
      assert.match(merge.stderr, /in use by pid/);

      assert.equal(await srv.stop('SIGINT'), 0);
      if (onExit === 'discard') {
        assert.equal(sha(base), before, 'discard changed the image');
        assert.ok(!existsSync(child));
      } else if (onExit === 'merge') {
        assert.ok(!existsSync(child));
        assert.ok((await readChain(base)).equals(model), 'the merged image differs from what the client wrote');
        assert.equal(run(process.execPath, [CLI, 'check', base]).code, 0);
      } else {
        assert.equal(sha(base), before);
        assert.ok(srv.stdout().split('\n').includes(child), 'keep prints the child path');
        assert.ok((await readChain(child)).equals(model));
      }
      assert.deepEqual(readdirSync(dir).filter((f) => f.includes('diskimg-lock')), [], 'locks are released');
    });
  }

  it('ctl stop --on-exit overrides the start option and replies when done', async () => {
    const dir = path.join(t.dir, 'ctlstop');
    mkdirSync(dir);
    const { paths, model } = await randomChain(dir, rng(5), { layers: 1, base: 'fixed' });
    const top = paths[1];
    const before = paths.map(sha);
    const ctl = path.join(dir, 'ctl.sock');
    const srv = await startServe([top, '--session', '--on-exit', 'keep', '--socket', path.join(dir, 's.sock'), '--control', ctl]);
    const ops = randomOps(rng(6), model, 5);
    writeFileSync(path.join(dir, 'ops.json'), JSON.stringify(ops));
    py(PY_APPLY, [srv.url, path.join(dir, 'ops.json')]);
    const reply = JSON.parse(runOk(process.execPath, [CLI, 'ctl', ctl, 'stop', '--on-exit', 'discard', '--json']));
    assert.equal(reply.stopped, true);
    assert.equal(reply.exports[0].onExit, 'discard');
    assert.equal(reply.exports[0].discarded.length, 1);
    assert.equal(await srv.exited, 0);
    assert.deepEqual(paths.map(sha), before);
    assert.ok(!existsSync(reply.exports[0].discarded[0]));
  });
});

describe('serve: automatic snapshots', function () {
  this.timeout(120_000);
  const t = tempDir('diskimg-snap-');
  after(() => t.cleanup());

  /** A python3-libnbd client that writes one 4 KiB pattern after another and logs each as it completes. */
  const WRITER = `
import sys, nbd, json, time, random
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size = h.get_size()
rnd = random.Random(int(sys.argv[3]))
log = open(sys.argv[2], 'w')
for i in range(int(sys.argv[4])):
    off = rnd.randrange(0, size - 70000)
    n = rnd.choice([512, 4096, 1000, 65536, 3])
    b = (i % 250) + 1
    h.pwrite(bytes([b]) * n, off)
    log.write(json.dumps([off, n, b]) + '\\n'); log.flush()
    time.sleep(0.005)
h.flush()
h.shutdown()
`;

  for (const keep of [undefined, 2]) {
    it(`--snapshot-every during a stream of writes${keep ? ` --keep ${keep}` : ''}: each frozen layer reads as a prefix of the writes`, async () => {
      const dir = path.join(t.dir, `k${keep ?? 0}`);
      mkdirSync(dir);
      const { paths, model: start } = await randomChain(dir, rng(7), { layers: 1, base: 'dynamic', size: 4 * 1024 * 1024 });
      const parentSums = paths.map(sha);
      const args = [paths[1], '--session', '--snapshot-every', '250ms', '--socket', path.join(dir, 's.sock'), '--control', path.join(dir, 'ctl.sock')];
      if (keep) args.push('--keep', String(keep));
      const srv = await startServe(args);
      const logFile = path.join(dir, 'writes.log');
      await pyAsync(WRITER, [srv.url, logFile, '11', '150']);
      // The stop reply carries the final chain (snapshots may be taken up to the moment it stops).
      const status = JSON.parse(runOk(process.execPath, [CLI, 'ctl', path.join(dir, 'ctl.sock'), 'stop', '--json']));
      assert.equal(await srv.exited, 0);
      const snaps = status.exports[0].snapshots as Array<{ path: string; created: string }>;
      const top = status.exports[0].top as string;
      assert.ok(snaps.length >= 2, `expected several snapshots, got ${snaps.length}`);
      if (keep) assert.ok(snaps.length <= keep, `--keep ${keep} left ${snaps.length}`);
      assert.deepEqual(status.exports[0].chain.slice(-2), [paths[1], paths[0]].map((p) => path.resolve(p)));
      assert.deepEqual(status.exports[0].chain.length, snaps.length + 3);
      // Replay the write log: every frozen layer must equal the disk after some prefix of it, in order.
      const writes = readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as [number, number, number]);
      const model = Buffer.from(start);
      const targets = [...snaps.map((s) => s.path), top];
      const images = await Promise.all(targets.map((p) => readChain(p)));
      let k = 0;
      const found: number[] = [];
      for (let step = 0; step <= writes.length && k < images.length; step++) {
        while (k < images.length && images[k].equals(model)) { found.push(step); k++; }
        if (step < writes.length) model.fill(writes[step][2], writes[step][0], writes[step][0] + writes[step][1]);
      }
      assert.equal(k, images.length, `layers matched prefixes ${found.join(',')} then layer ${k} matched none`);
      assert.equal(found[found.length - 1], writes.length, 'the last top holds every write');
      assert.deepEqual(paths.map(sha), parentSums, 'the session image changed');
      for (const p of targets) assert.equal(run(process.execPath, [CLI, 'check', p]).code, 0, `check ${p}`);
    });
  }

  it('ctl snapshot prints the new top and the chain continues in it', async () => {
    const dir = path.join(t.dir, 'ctl');
    mkdirSync(dir);
    const { paths } = await randomChain(dir, rng(8), { layers: 0, base: 'dynamic', size: 4 * 1024 * 1024 });
    const ctl = path.join(dir, 'ctl.sock');
    const srv = await startServe([paths[0], '--socket', path.join(dir, 's.sock'), '--control', ctl]);
    try {
      const top = runOk(process.execPath, [CLI, 'ctl', ctl, 'snapshot']).trim();
      assert.equal(top, path.join(dir, 'base-1.vhd'));
      runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 1000 5000', srv.url]);
      const status = JSON.parse(runOk(process.execPath, [CLI, 'ctl', ctl, 'status', '--json']));
      assert.equal(status.exports[0].top, top);
      assert.equal(status.exports[0].snapshots[0].path, path.join(dir, 'base.vhd'));
      assert.ok(!Number.isNaN(Date.parse(status.exports[0].snapshots[0].created)));
    } finally {
      await srv.stop();
    }
    const c = await openChain(path.join(dir, 'base-1.vhd'));
    try {
      const ext = await c.map(1000, 5000);
      assert.ok(ext.every((e) => e.depth === 0 && e.data), 'the write went into the new top');
    } finally {
      await c.close();
    }
  });
});

describe('serve: shared parent', function () {
  this.timeout(120_000);
  const t = tempDir('diskimg-shared-');
  after(() => t.cleanup());

  it('two exports over two children of one parent, two clients writing concurrently; the parent is opened once', async () => {
    const dir = t.dir;
    const parent = path.join(dir, 'parent.vhd');
    await createImage(parent, { size: 8 * 1024 * 1024, type: 'dynamic', blockSize: 512 * 1024, exactSize: true });
    const r = rng(21);
    const base = Buffer.alloc(8 * 1024 * 1024);
    {
      const c = await openChain(parent, { writable: true });
      const d = randomBytes(r, 3 * 1024 * 1024);
      await c.write(1024 * 1024, d);
      d.copy(base, 1024 * 1024);
      await c.close();
    }
    const a = path.join(dir, 'a.vhd');
    const b = path.join(dir, 'b.vhd');
    await createChild(parent, a);
    await createChild(parent, b);
    const parentSum = sha(parent);
    const ctl = path.join(dir, 'ctl.sock');
    const srv = await startServe(['--export', `vm1=${a}`, '--export', `vm2=${b}`, '--socket', path.join(dir, 's.sock'), '--control', ctl]);
    const models = { vm1: Buffer.from(base), vm2: Buffer.from(base) };
    try {
      assert.match(srv.readyLine, /^serving vm1, vm2 on nbd\+unix:\/\/\/\?socket=/);
      // The parent is open once in the server, read-only; each child once, for writing.
      const fds = readdirSync(`/proc/${srv.proc.pid}/fd`).map((f) => { try { return readlinkSync(`/proc/${srv.proc.pid}/fd/${f}`); } catch { return ''; } });
      assert.equal(fds.filter((f) => f === parent).length, 1);
      const jobs = (['vm1', 'vm2'] as const).map((name, i) => {
        const ops = randomOps(rng(100 + i), models[name], 40);
        ops.push({ op: 'zero', offset: 1024 * 1024 + 4096 * (i + 1), length: 8192 });
        models[name].fill(0, 1024 * 1024 + 4096 * (i + 1), 1024 * 1024 + 4096 * (i + 1) + 8192);
        writeFileSync(path.join(dir, `${name}.json`), JSON.stringify(ops));
        return pyAsync(PY_APPLY, [`nbd+unix:///${name}?socket=${path.join(dir, 's.sock')}`, path.join(dir, `${name}.json`)]);
      });
      const sums = await Promise.all(jobs);
      assert.equal(sums[0].trim(), hash(models.vm1));
      assert.equal(sums[1].trim(), hash(models.vm2));
      // Each export still reads only its own writes; the default export (empty name) is the first.
      assert.equal(py(PY_APPLY, [`nbd+unix:///vm2?socket=${path.join(dir, 's.sock')}`, writeFileSync(path.join(dir, 'none.json'), '[]') ?? path.join(dir, 'none.json')]).trim(), hash(models.vm2));
      assert.equal(py(PY_APPLY, [srv.url, path.join(dir, 'none.json')]).trim(), hash(models.vm1));
      const list = runOk('nbdinfo', ['--list', '--json', srv.url]);
      assert.deepEqual(JSON.parse(list).exports.map((e: { 'export-name': string }) => e['export-name']).sort(), ['vm1', 'vm2']);
      const status = JSON.parse(runOk(process.execPath, [CLI, 'ctl', ctl, 'status', '--json']));
      assert.deepEqual(status.exports.map((e: { name: string }) => e.name), ['vm1', 'vm2']);
      assert.ok(status.exports[0].bytesWritten > 0 && status.exports[1].bytesWritten > 0);
    } finally {
      await srv.stop();
    }
    assert.equal(sha(parent), parentSum, 'the shared parent changed');
    assert.ok((await readChain(a)).equals(models.vm1));
    assert.ok((await readChain(b)).equals(models.vm2));
  });

  it('refuses an export whose image another export reads as an ancestor', async () => {
    const dir = path.join(t.dir, 'overlap');
    mkdirSync(dir);
    const p = path.join(dir, 'p.vhd');
    await createImage(p, { size: 1024 * 1024, type: 'dynamic' });
    await createChild(p, path.join(dir, 'c.vhd'));
    const r = run(process.execPath, [CLI, 'serve', '--export', `a=${p}`, '--export', `b=${path.join(dir, 'c.vhd')}`, '--socket', path.join(dir, 's.sock')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /is written by export 'a' and is an ancestor of export 'b'/);
    // In-process too: startServer rejects and leaves no lock behind.
    await assert.rejects(startServer({ exports: [{ name: 'a', image: p }, { name: 'b', image: path.join(dir, 'c.vhd') }], socket: path.join(dir, 's2.sock') }), /ancestor/);
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('diskimg-lock')), []);
  });
});
