import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { existsSync, mkdirSync, readFileSync } from 'fs';
import * as path from 'path';
import { parseDuration, parseListen } from '../../src/cli/commands/serve';
import { nbdUrl } from '../../src/serve/server';
import { CLI, rng, tempDir } from '../helpers/util';
import { randomChain, run, runOk, startServe } from './helpers';

describe('serve: command line, trace and control contract', function () {
  this.timeout(120_000);
  const t = tempDir('diskimg-servecli-');
  after(() => t.cleanup());

  it('parses durations (ms, s, m, h) and listen addresses', () => {
    assert.equal(parseDuration('30m', 'x'), 30 * 60_000);
    assert.equal(parseDuration('500ms', 'x'), 500);
    assert.equal(parseDuration('2s', 'x'), 2000);
    assert.equal(parseDuration('1.5h', 'x'), 5_400_000);
    assert.throws(() => parseDuration('30', 'x'), /not a duration/);
    assert.throws(() => parseDuration('5d', 'x'), /not a duration/);
    assert.deepEqual(parseListen('127.0.0.1:10809'), { host: '127.0.0.1', port: 10809 });
    assert.deepEqual(parseListen(':0'), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(parseListen('[::1]:99'), { host: '::1', port: 99 });
    assert.equal(nbdUrl({ socket: '/x/y.sock' }), 'nbd+unix:///?socket=/x/y.sock');
    assert.equal(nbdUrl({ host: '127.0.0.1', port: 10809 }, 'vm 1'), 'nbd://127.0.0.1:10809/vm%201');
  });

  it('default socket next to the image; the ready line; the trace has one JSON line per request', async () => {
    const dir = path.join(t.dir, 'trace');
    mkdirSync(dir);
    const { paths } = await randomChain(dir, rng(3), { layers: 1, base: 'dynamic', size: 2 * 1024 * 1024 });
    const trace = path.join(dir, 'trace.jsonl');
    const srv = await startServe([paths[1], '--trace', trace]);
    const sock = `${paths[1]}.nbd.sock`;
    assert.equal(srv.readyLine, `serving c1 on nbd+unix:///?socket=${sock}`);
    assert.match(srv.stderr(), /writing in place into .*c1\.vhd/);
    runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 4096 8192', '-c', 'read 0 512', '-c', 'write -z 65536 4096', '-c', 'discard 131072 4096', '-c', 'flush', srv.url]);
    assert.equal(await srv.stop(), 0);
    assert.ok(!existsSync(sock), 'the socket is removed on exit');
    const lines = readFileSync(trace, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    for (const l of lines) {
      assert.deepEqual(Object.keys(l).sort(), ['export', 'layer', 'length', 'offset', 'op', 't']);
      assert.equal(typeof l.t, 'number');
      assert.equal(l.export, 'c1');
    }
    const find = (op: string, offset: number) => lines.find((l) => l.op === op && l.offset === offset);
    assert.deepEqual({ ...find('write', 4096), t: 0 }, { t: 0, export: 'c1', op: 'write', offset: 4096, length: 8192, layer: 'c1.vhd' });
    assert.equal(find('read', 0)?.length, 512);
    assert.equal(find('zero', 65536)?.length, 4096);
    assert.equal(find('trim', 131072)?.length, 4096);
    assert.ok(lines.some((l) => l.op === 'flush'));
    const ts = lines.map((l) => l.t);
    assert.deepEqual(ts, [...ts].sort((a, b) => a - b), 'appended in completion order');
  });

  it('--listen on loopback TCP with a free port', async () => {
    const dir = path.join(t.dir, 'tcp');
    mkdirSync(dir);
    const { paths, model } = await randomChain(dir, rng(4), { layers: 0, base: 'dynamic', size: 1024 * 1024 });
    const srv = await startServe([paths[0], '--listen', '127.0.0.1:0', '--read-only']);
    try {
      assert.match(srv.url, /^nbd:\/\/127\.0\.0\.1:\d+\/$/);
      assert.doesNotMatch(srv.stderr(), /no authentication/);
      const out = spawnSync('nbdcopy', [srv.url, '-'], { maxBuffer: 1 << 26 }).stdout;
      assert.ok(out.equals(model));
    } finally {
      await srv.stop();
    }
  });

  it('errors: bad options, a missing image, ctl without a server; exit 2 with one line', async () => {
    const dir = path.join(t.dir, 'errors');
    mkdirSync(dir);
    const { paths } = await randomChain(dir, rng(5), { layers: 0, base: 'dynamic', size: 1024 * 1024 });
    const cases: Array<[string[], RegExp]> = [
      [['serve', paths[0], '--on-exit', 'discard'], /--on-exit applies to an undo session/],
      [['serve', paths[0], '--snapshot-every', '5x'], /not a duration/],
      [['serve', paths[0], '--session', '--read-only'], /do not go together/],
      [['serve', path.join(dir, 'missing.vhd')], /missing\.vhd: cannot open: no such file/],
      [['serve', '--export', 'novalue'], /is not NAME=IMAGE/],
      [['ctl', path.join(dir, 'none.sock'), 'status'], /no server is listening there/],
      [['ctl', path.join(dir, 'none.sock'), 'dance'], /unknown ctl command/],
    ];
    for (const [args, re] of cases) {
      const r = run(process.execPath, [CLI, ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });

  it('ctl status (text and JSON), clients counted while connected', async () => {
    const dir = path.join(t.dir, 'ctl');
    mkdirSync(dir);
    const { paths } = await randomChain(dir, rng(6), { layers: 1, base: 'dynamic', size: 1024 * 1024 });
    const ctl = path.join(dir, 'ctl.sock');
    const srv = await startServe([paths[1], '--control', ctl]);
    try {
      runOk('qemu-io', ['-f', 'raw', '-c', 'read 0 65536', srv.url]);
      const s = JSON.parse(runOk(process.execPath, [CLI, 'ctl', ctl, 'status', '--json']));
      assert.deepEqual(Object.keys(s), ['exports']);
      const e = s.exports[0];
      for (const k of ['name', 'top', 'chain', 'clients', 'bytesRead', 'bytesWritten', 'snapshots']) assert.ok(k in e, k);
      assert.equal(e.top, paths[1]);
      assert.deepEqual(e.chain, [paths[1], paths[0]]);
      assert.ok(e.bytesRead >= 65536);
      assert.equal(e.bytesWritten, 0);
      assert.equal(e.clients, 0);
      const text = runOk(process.execPath, [CLI, 'ctl', ctl, 'status']);
      assert.match(text, /top .*c1\.vhd/);
      // The control socket speaks plain JSON lines too.
      const raw = runOk('/usr/bin/python3', ['-c', `
import socket, sys, json
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'{"command":"status"}\\n{"command":"nope"}\\n')
f = s.makefile()
print(json.dumps([json.loads(f.readline()), json.loads(f.readline())]))
`, ctl]);
      const [a, b] = JSON.parse(raw);
      assert.equal(a.exports[0].name, 'c1');
      assert.match(b.error, /unknown command/);
    } finally {
      await srv.stop();
    }
  });
});
