import { strict as assert } from 'assert';
import { ChildProcess, spawn, spawnSync } from 'child_process';
import { existsSync, readFileSync, utimesSync, writeFileSync } from 'fs';
import { hostname } from 'os';
import * as path from 'path';
import { acquireWriteLock, lockHolder, lockPathFor } from '../../src/io/lock';
import { ImageFile } from '../../src/io/imageFile';
import { DiskImageError } from '../../src/format/errors';
import { CLI, cliOk, runCli, tempDir } from '../helpers/util';

function startWriter(image: string): ChildProcess {
  // `diskimg write` reading stdin keeps the image open for writing until stdin ends.
  return spawn(process.execPath, [CLI, 'write', image, '--offset', '0'], { stdio: ['pipe', 'pipe', 'pipe'] });
}

function exited(p: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  let stderr = '';
  p.stderr?.on('data', (d) => { stderr += d; });
  return new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal, stderr })));
}

async function waitFor(cond: () => boolean, what: string, ms = 15000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(r.stdout.toString());
}

describe('advisory write lock', function () {
  this.timeout(60000);
  let t: ReturnType<typeof tempDir>;
  let image: string;
  before(() => {
    t = tempDir('diskimg-lock-');
    image = path.join(t.dir, 'disk.vhd');
    cliOk(['create', image, '--size', '8M', '--block-size', '512K']);
  });
  after(() => t.cleanup());

  it('is re-entrant within a process and removed when the last holder releases', () => {
    const lockFile = lockPathFor(image);
    const r1 = acquireWriteLock(image);
    const r2 = acquireWriteLock(path.join(t.dir, '.', 'disk.vhd'));
    const owner = JSON.parse(readFileSync(lockFile, 'utf8'));
    assert.equal(owner.pid, process.pid);
    assert.equal(owner.host, hostname());
    r1();
    r1(); // a second call of the same release does nothing
    assert.ok(existsSync(lockFile), 'still held by the second acquisition');
    r2();
    assert.ok(!existsSync(lockFile));
  });

  it('ImageFile.open(writable) locks, close releases; read-only opens take no lock', async () => {
    const f = await ImageFile.open(image, true);
    assert.equal(lockHolder(image)?.pid, process.pid);
    const ro = await ImageFile.open(image, false);
    await ro.close();
    assert.equal(lockHolder(image)?.pid, process.pid);
    await f.close();
    assert.equal(lockHolder(image), null);
    assert.ok(!existsSync(lockPathFor(image)));
  });

  it('a second writer process gets "in use by pid … (command)"; readers still work; kill -9 leaves a lock the next writer takes over', async () => {
    const holder = startWriter(image);
    const holderExit = exited(holder);
    await waitFor(() => lockHolder(image)?.pid === holder.pid, 'the first writer to take the lock');
    const second = runCli(['write', image, '--offset', '0'], Buffer.from('x'));
    assert.equal(second.code, 2);
    assert.match(second.stderr, new RegExp(`^diskimg: .*disk\\.vhd: in use by pid ${holder.pid} on ${hostname().replace(/\W/g, '\\$&')} \\(diskimg write .*disk\\.vhd --offset 0\\) since \\d{4}-.*; lock file .*\\.disk\\.vhd\\.diskimg-lock\\n$`));
    // create --overwrite style truncation must not get past the lock either.
    const create = runCli(['create', image, '--size', '1M']);
    assert.equal(create.code, 2);
    // Readers take no lock.
    const info = JSON.parse(cliOk(['info', image, '--json']).toString());
    assert.equal(info.diskType, 'dynamic');

    holder.kill('SIGKILL');
    const ended = await holderExit;
    assert.equal(ended.signal, 'SIGKILL');
    const stale = lockHolder(image);
    assert.equal(stale?.pid, holder.pid, 'kill -9 leaves the lock file behind');
    assert.equal(stale?.alive, false);

    const data = Buffer.alloc(3000, 0x5a);
    cliOk(['write', image, '--offset', '1000'], data);
    assert.ok(cliOk(['read', image, '--offset', '1000', '--length', '3000']).equals(data));
    assert.equal(lockHolder(image), null, 'the taking-over writer released the lock');
  });

  it('of several writers racing for a stale lock exactly one gets it', async () => {
    const dead = deadPid();
    writeFileSync(lockPathFor(image), JSON.stringify({ pid: dead, host: hostname(), start: null, command: 'crashed', since: '2020-01-01T00:00:00Z', nonce: 'abc123' }));
    assert.equal(lockHolder(image)?.alive, false);
    const writers = [0, 1, 2, 3].map(() => startWriter(image));
    const exits = writers.map(exited);
    const finished: number[] = [];
    exits.forEach((p, i) => p.then(() => finished.push(i)));
    await waitFor(() => finished.length === 3, 'three writers to give up', 30000);
    const winner = writers.find((_, i) => !finished.includes(i))!;
    assert.equal(lockHolder(image)?.pid, winner.pid);
    for (const i of finished) {
      const r = await exits[i];
      assert.equal(r.code, 2);
      assert.match(r.stderr, new RegExp(`in use by pid ${winner.pid} `));
    }
    winner.stdin!.end();
    assert.equal((await exits[writers.indexOf(winner)]).code, 0);
    assert.equal(lockHolder(image), null);
    assert.deepEqual(
      (await import('fs')).readdirSync(t.dir).filter((n) => n.includes('diskimg-lock')), [],
      'no lock, temporary or break-token files left behind');
  });

  it('a lock whose pid was reused by another process (different start time) is stale', () => {
    const start = Number(readFileSync(`/proc/${process.pid}/stat`, 'latin1').split(') ')[1].split(' ')[19]);
    writeFileSync(lockPathFor(image), JSON.stringify({ pid: process.pid, host: hostname(), start: start + 12345, command: 'old', since: '', nonce: 'n1' }));
    assert.equal(lockHolder(image)?.alive, false);
    const release = acquireWriteLock(image);
    assert.equal(JSON.parse(readFileSync(lockPathFor(image), 'utf8')).start, start);
    release();
  });

  it('honours a lock from another host and a fresh unreadable lock; an old unreadable one is broken', () => {
    const lockFile = lockPathFor(image);
    writeFileSync(lockFile, JSON.stringify({ pid: 1, host: `not-${hostname()}`, start: null, command: 'diskimg merge x', since: 'then', nonce: 'n2' }));
    assert.throws(() => acquireWriteLock(image), (e: unknown) => e instanceof DiskImageError && e.code === 'ELOCKED'
      && e.message.includes(`in use by pid 1 on not-${hostname()} (diskimg merge x)`));
    writeFileSync(lockFile, '{"pid": 12'); // half-written by a foreign tool
    assert.throws(() => acquireWriteLock(image), /in use by another process \(unreadable lock\)/);
    const old = (Date.now() - 60_000) / 1000;
    utimesSync(lockFile, old, old);
    const release = acquireWriteLock(image);
    assert.equal(lockHolder(image)?.pid, process.pid);
    release();
    assert.ok(!existsSync(lockFile));
  });

  it('works on file systems without hard links (exFAT, SMB): O_EXCL create instead', () => {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const fs = require('fs') as typeof import('fs');
    const orig = fs.linkSync;
    let calls = 0;
    fs.linkSync = () => { calls++; throw Object.assign(new Error('EPERM: operation not permitted, link'), { code: 'EPERM' }); };
    try {
      const release = acquireWriteLock(image);
      const owner = JSON.parse(readFileSync(lockPathFor(image), 'utf8'));
      assert.equal(owner.pid, process.pid);
      writeFileSync(lockPathFor(path.join(t.dir, 'x.vhd')), JSON.stringify({ pid: 1, host: `not-${hostname()}`, start: null, command: 'y', since: '', nonce: 'n9' }));
      assert.throws(() => acquireWriteLock(path.join(t.dir, 'x.vhd')), /in use by pid 1/);
      release();
      assert.ok(!existsSync(lockPathFor(image)));
      assert.deepEqual(fs.readdirSync(t.dir).filter((n) => n.endsWith('.tmp')), [], 'no temporary files left');
      assert.ok(calls >= 2, 'link() was tried and refused');
    } finally {
      fs.linkSync = orig;
    }
  });

  it('ImageFile.create takes the lock before it truncates anything', async () => {
    const other = path.join(t.dir, 'other.vhd');
    cliOk(['create', other, '--size', '1M']);
    const before = readFileSync(other);
    writeFileSync(lockPathFor(other), JSON.stringify({ pid: 1, host: `not-${hostname()}`, start: null, command: 'x', since: '', nonce: 'n3' }));
    await assert.rejects(ImageFile.create(other, false), /in use by pid 1/);
    assert.ok(readFileSync(other).equals(before), 'the file was not truncated');
  });
});
