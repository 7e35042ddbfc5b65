import { strict as assert } from 'assert';
import { execFileSync, spawn } from 'child_process';
import { createHash } from 'crypto';
import { existsSync, readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import { controlRequest } from '../../src/serve/control';
import { TraceIndex } from '../../src/serve/traceIndex';
import {
  applyUndoChoice, ExportStatusView, parseDurationSetting, qemuArgv, RateMeter, readSessionRecords, removeSessionRecord, revertDiscards, serveArgs,
  servingUrl, SessionRecord, sessionLayers, shellLine, spawnServe, splitArgs, undoConsequences, writeSessionRecord,
} from '../../src/extension/sessionModel';
import { CLI, runCli, tempDir } from '../helpers/util';

const MiB = 1024 * 1024;
const sha = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

function qemuIo(url: string, ...cmds: string[]): string {
  return execFileSync('qemu-io', ['-f', 'raw', url, ...cmds.flatMap((c) => ['-c', c])], { encoding: 'utf8', timeout: 60_000 });
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

describe('emulator sessions: settings, command lines, the undo question', () => {
  it('parses durations for reconcileEvery and the snapshot interval', () => {
    assert.equal(parseDurationSetting('60m', 'x'), 3_600_000);
    assert.equal(parseDurationSetting(' 1.5h ', 'x'), 5_400_000);
    assert.equal(parseDurationSetting('500ms', 'x'), 500);
    assert.equal(parseDurationSetting('', 'x'), null);
    assert.throws(() => parseDurationSetting('often', 'reconcileEvery'), /reconcileEvery: 'often' is not a duration/);
    assert.throws(() => parseDurationSetting('100000h', 'x'), /out of range/);
  });

  it('builds the QEMU command line from the settings and the NBD URL', () => {
    assert.deepEqual(splitArgs('-m 2048 -display "gtk,zoom-to-fit=on"'), ['-m', '2048', '-display', 'gtk,zoom-to-fit=on']);
    assert.deepEqual(splitArgs(['-m', '1024', 3]), ['-m', '1024']);
    const argv = qemuArgv('qemu-system-x86_64', ['-m', '1024'], 'nbd+unix:///?socket=/tmp/a b.nbd');
    assert.deepEqual(argv, ['qemu-system-x86_64', '-m', '1024', '-drive', 'file=nbd+unix:///?socket=/tmp/a b.nbd,format=raw,if=virtio']);
    assert.equal(shellLine(argv), "qemu-system-x86_64 -m 1024 -drive 'file=nbd+unix:///?socket=/tmp/a b.nbd,format=raw,if=virtio'");
    assert.equal(qemuArgv('q', [], 'nbd://h:1/a,b')[2], 'file=nbd://h:1/a,,b,format=raw,if=virtio');
  });

  it('names the files each answer changes or deletes, and the layers a revert deletes', () => {
    const st = { chain: ['/d/base.session-1.2.vhd', '/d/base.session-1.1.vhd', '/d/base.session-1.vhd', '/d/base.vhd'], session: '/d/base.session-1.vhd', image: '/d/base.vhd' };
    assert.deepEqual(sessionLayers(st), st.chain.slice(0, 3));
    const c = undoConsequences(st);
    assert.match(c.keep, /base\.session-1\.2\.vhd, base\.session-1\.1\.vhd, base\.session-1\.vhd stay next to base\.vhd; base\.vhd is not changed/);
    assert.match(c.discard, /deletes base\.session-1\.2\.vhd, base\.session-1\.1\.vhd, base\.session-1\.vhd; base\.vhd is as before/);
    assert.match(c.merge, /into base\.vhd, then deletes base\.session-1\.2\.vhd/);
    assert.deepEqual(revertDiscards(st, '/d/base.session-1.vhd'), st.chain.slice(0, 2));
    assert.deepEqual(revertDiscards(st, '/d/base.session-1.2.vhd'), []);
    assert.deepEqual(serveArgs({ image: '/d/base.vhd', mode: 'undo', control: '/t/c', trace: '/t/t', snapshotEvery: '10m' }, '/t/s'),
      ['serve', '/d/base.vhd', '--socket', '/t/s', '--control', '/t/c', '--trace', '/t/t', '--session', '--on-exit', 'keep', '--snapshot-every', '10m']);
    assert.ok(!serveArgs({ image: '/d/base.vhd', mode: 'persistent', control: '/t/c', trace: '/t/t', snapshotEvery: null }, '/t/s').includes('--session'));
    assert.equal(servingUrl('base: undo session\nserving base on nbd+unix:///?socket=/t/s\n'), 'nbd+unix:///?socket=/t/s');
    assert.equal(servingUrl('diskimg: base.vhd: in use\n'), null);
  });

  it('measures the write rate over a sliding window', () => {
    const m = new RateMeter(5);
    m.push(0, 0);
    m.push(1, 100);
    assert.equal(m.rate, 100);
    for (let t = 2; t <= 20; t++) m.push(t, 100 + (t - 1) * 10);
    assert.equal(m.rate, 10);
  });

  it('announces sessions as record files: read back whole, malformed or misnamed files ignored, removed on end', () => {
    const t = tempDir('session-records-');
    try {
      const dir = path.join(t.dir, 'records');
      assert.deepEqual(readSessionRecords(dir), [], 'no folder: no sessions');
      const rec: SessionRecord = {
        id: 'demo-1', image: '/d/child2.vhd', mode: 'undo', control: '/t/demo-1.ctl', trace: '/t/demo-1.trace.jsonl', log: '/t/demo-1.log',
        url: 'nbd+unix:///?socket=/t/demo-1.nbd', pid: 4242, started: '2026-12-02T14:00:00.000Z', snapshotEvery: '30s',
      };
      const file = writeSessionRecord(dir, rec);
      assert.equal(path.basename(file), 'demo-1.json');
      writeFileSync(path.join(dir, 'torn.json'), '{"id":"torn","ima');
      writeFileSync(path.join(dir, 'other.json'), JSON.stringify({ ...rec, id: 'not-other' }));
      writeFileSync(path.join(dir, 'bad.json'), JSON.stringify({ ...rec, id: 'bad', pid: 0 }));
      writeFileSync(path.join(dir, 'notes.txt'), 'x');
      assert.deepEqual(readSessionRecords(dir), [rec]);
      removeSessionRecord(dir, 'demo-1');
      removeSessionRecord(dir, 'demo-1');
      assert.deepEqual(readSessionRecords(dir), []);
    } finally {
      t.cleanup();
    }
  });
});

describe('emulator sessions: a real diskimg serve driven as the extension drives it (qemu-io writes)', function () {
  this.timeout(120_000);
  let t: ReturnType<typeof tempDir>;
  before(function () {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
    t = tempDir('sessions-');
  });
  after(() => t.cleanup());

  async function session(name: string, mode: 'undo' | 'persistent'): Promise<{ rec: SessionRecord; url: string; base: string; baseSha: string }> {
    const base = path.join(t.dir, `${name}.vhd`);
    assert.equal(runCli(['create', base, '--size', '16M', '--block-size', '2M']).code, 0);
    const baseSha = sha(base);
    const rec: SessionRecord = {
      id: name, image: base, mode, control: path.join(t.dir, `${name}.ctl`), trace: path.join(t.dir, `${name}.trace`),
      log: path.join(t.dir, `${name}.log`), url: '', pid: 0, started: new Date().toISOString(), snapshotEvery: null,
    };
    const { pid, url } = await spawnServe(rec, CLI, path.join(t.dir, `${name}.nbd`));
    rec.pid = pid;
    rec.url = url;
    return { rec, url, base, baseSha };
  }

  const status = async (rec: SessionRecord) => ((await controlRequest(rec.control, { command: 'status' })).exports as ExportStatusView[])[0];

  it('undo session: writes, snapshot, revert, the trace names exactly the written blocks, Discard leaves the base byte-identical', async () => {
    const { rec, url, base, baseSha } = await session('discard', 'undo');
    qemuIo(url, 'write -P 0xab 0 64k', 'write -P 0xcd 3M 4k');
    const snap = await controlRequest(rec.control, { command: 'snapshot' });
    assert.equal(typeof snap.top, 'string');
    let st = await status(rec);
    assert.equal(st.snapshots.length, 1);
    assert.equal(st.snapshots[0].path, st.session);
    qemuIo(url, 'write -P 0xef 5M 8k');
    assert.match(qemuIo(url, 'read -P 0xef 5M 8k'), /read 8192\/8192/);
    // Back to the snapshot: the write at 5M is gone, those before it stay.
    st = await status(rec);
    const doomed = revertDiscards(st, st.snapshots[0].path);
    assert.equal(doomed.length, 1);
    const rev = await controlRequest(rec.control, { command: 'revert', snapshot: st.snapshots[0].path });
    assert.equal(rev.error, undefined, String(rev.error));
    assert.deepEqual(rev.discarded, doomed);
    // The new top is a fresh child of the snapshot (it may reuse the deleted layer's name).
    const after = await status(rec);
    assert.equal(after.top, rev.top);
    assert.deepEqual(after.chain.slice(1), [st.snapshots[0].path, base]);
    assert.match(qemuIo(url, 'read -P 0 5M 8k', 'read -P 0xab 0 64k', 'read -P 0xcd 3M 4k'), /read 8192\/8192[\s\S]*read 65536\/65536[\s\S]*read 4096\/4096/);

    // The trace, indexed on the 2 MiB grid: blocks 0, 1 (3M) and 2 (5M) were written, nothing else.
    const idx = new TraceIndex({ blockSize: 2 * MiB, blockCount: 8, exportName: 'discard' });
    idx.addLines(readFileSync(rec.trace, 'utf8').split('\n'));
    const span = idx.timeRange!;
    assert.deepEqual([...idx.blocksWritten(span.from, span.to).blocks], [0, 1, 2]);
    assert.deepEqual(idx.writesOfBlock(1).map((w) => [w.offset, w.length]), [[3 * MiB, 4096]]);

    st = await status(rec);
    const stop = await controlRequest(rec.control, { command: 'stop', onExit: 'keep' });
    const outcome = (stop.exports as Array<{ chain: string[] }>)[0];
    const layers = sessionLayers({ chain: outcome.chain, session: st.session });
    assert.equal(layers.length, 2);
    for (let i = 0; i < 100 && alive(rec.pid); i++) await new Promise((r) => setTimeout(r, 50));
    const r = await applyUndoChoice('discard', layers, base);
    assert.deepEqual(r.deleted, layers);
    for (const l of layers) assert.ok(!existsSync(l), `${l} deleted`);
    assert.equal(sha(base), baseSha, 'the base is byte-identical after Discard');
  });

  it('undo session ended with Merge: the base holds the writes', async () => {
    const { rec, url, base, baseSha } = await session('merge', 'undo');
    qemuIo(url, 'write -P 0x5a 1M 128k');
    await controlRequest(rec.control, { command: 'snapshot' });
    qemuIo(url, 'write -P 0x6b 9M 4k');
    const st = await status(rec);
    const stop = await controlRequest(rec.control, { command: 'stop', onExit: 'keep' });
    const layers = sessionLayers({ chain: (stop.exports as Array<{ chain: string[] }>)[0].chain, session: st.session });
    const progress: number[] = [];
    const r = await applyUndoChoice('merge', layers, base, { onProgress: (d) => progress.push(d) });
    assert.equal(r.mergedInto, base);
    for (const l of layers) assert.ok(!existsSync(l));
    assert.notEqual(sha(base), baseSha);
    const read = (offset: number, length: number) => runCli(['read', base, '--offset', String(offset), '--length', String(length)]).stdout;
    assert.ok(read(1 * MiB, 128 * 1024).equals(Buffer.alloc(128 * 1024, 0x5a)));
    assert.ok(read(9 * MiB, 4096).equals(Buffer.alloc(4096, 0x6b)));
    assert.ok(read(0, 4096).equals(Buffer.alloc(4096)));
    assert.equal(runCli(['check', base]).code, 0);
    // qemu reads the merged base the same way.
    assert.match(execFileSync('qemu-io', ['-r', '-f', 'vpc', base, '-c', 'read -P 0x5a 1M 128k', '-c', 'read -P 0x6b 9M 4k'], { encoding: 'utf8', timeout: 60_000 }),
      /read 131072\/131072[\s\S]*read 4096\/4096/);
  });

  it('refuses to revert while a client is connected, and names why', async () => {
    const { rec, url } = await session('busy', 'undo');
    qemuIo(url, 'write -P 2 0 4k');
    await controlRequest(rec.control, { command: 'snapshot' });
    const st = await status(rec);
    // A client that stays connected for a few seconds.
    const holder = spawn('/usr/bin/python3', ['-c', 'import nbd, sys, time\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\ntime.sleep(60)', url], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 300 && (await status(rec)).clients === 0; i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal((await status(rec)).clients, 1);
      const rev = await controlRequest(rec.control, { command: 'revert', snapshot: st.snapshots[0].path });
      assert.match(String(rev.error), /1 client\(s\) connected/);
      assert.deepEqual((await status(rec)).chain, st.chain, 'nothing changed');
    } finally {
      holder.kill();
      await controlRequest(rec.control, { command: 'stop', onExit: 'discard' });
    }
  });

  it('an interrupted Discard (cancelled) deletes nothing it was not asked to and says so', async () => {
    const { rec, url, base, baseSha } = await session('cancel', 'undo');
    qemuIo(url, 'write -P 1 0 4k');
    const st = await status(rec);
    await controlRequest(rec.control, { command: 'stop', onExit: 'keep' });
    const abort = new AbortController();
    abort.abort();
    await assert.rejects(applyUndoChoice('discard', sessionLayers(st), base, { signal: abort.signal }), /cancel/i);
    assert.ok(existsSync(st.session!), 'the session child is still there');
    assert.equal(sha(base), baseSha);
  });
});
