// Remote parents behind servers we did not write: busybox httpd (HTTP, no keep-alive), an HTTPS
// server checked with curl, qemu-nbd and nbdkit with TLS (nbds://), nbdkit over a Unix socket; and
// serve's warning for a non-loopback listen without TLS.
import { strict as assert } from 'assert';
import { ChildProcess, execFile, execFileSync, spawn } from 'child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from 'fs';
import * as https from 'https';
import * as net from 'net';
import * as path from 'path';
import { parentCachePath, cacheStatus } from '../../src/io/parentCache';
import { CLI, hasTool, randomBytes, rng, tempDir } from '../helpers/util';
import { makeCerts } from '../helpers/certs';

const MiB = 1024 * 1024;

/** The CLI without blocking this process's event loop (the HTTPS server runs in it). */
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, DISKIMG_HTTP_BACKOFF_MS: '5', ...env }, maxBuffer: 64 * MiB, encoding: 'buffer', timeout: 60000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr: stderr.toString() });
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listens on port ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('remote parents behind real servers (busybox httpd, HTTPS + curl, qemu-nbd and nbdkit over TLS)', function () {
  this.timeout(120000);
  const t = tempDir('remote-real-');
  const procs: ChildProcess[] = [];
  const SIZE = 6 * MiB + 512;
  let bytes: Buffer = Buffer.alloc(0);
  let parent = '';
  let certs = '';
  let n = 0;
  const sub = () => {
    const d = path.join(t.dir, `c${n++}`);
    mkdirSync(d);
    return d;
  };
  const start = (cmd: string, args: string[]): ChildProcess => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    procs.push(p);
    return p;
  };

  before(() => {
    bytes = randomBytes(rng(31), SIZE);
    parent = path.join(t.dir, 'srv', 'disk.img');
    mkdirSync(path.dirname(parent));
    writeFileSync(parent, bytes);
    certs = path.join(t.dir, 'certs');
    mkdirSync(certs);
    if (hasTool('openssl')) makeCerts(certs);
  });
  after(() => {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    t.cleanup();
  });

  /** The child's virtual size is the raw parent's rounded up to a sector: SIZE is a sector multiple. */
  const readsRight = async (child: string, env: Record<string, string> = {}, extra: string[] = []) => {
    const r = await cli(['read', child, ...extra], env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.equals(bytes), 'the child reads the parent\'s bytes');
  };

  /** An HTTPS server of the parent's bytes (ranges, an ETag) with the test CA's certificate. */
  const httpsServer = async (): Promise<https.Server> => {
    const etag = '"v1"';
    const server = https.createServer({ cert: readFileSync(path.join(certs, 'server-cert.pem')), key: readFileSync(path.join(certs, 'server-key.pem')) }, (req, res) => {
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
      if (!m) { res.writeHead(200, { 'Content-Length': SIZE, ETag: etag }).end(bytes); return; }
      const [s, e] = [Number(m[1]), Math.min(Number(m[2]), SIZE - 1)];
      res.writeHead(206, { 'Content-Range': `bytes ${s}-${e}/${SIZE}`, 'Content-Length': e - s + 1, ETag: etag });
      res.end(bytes.subarray(s, e + 1));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    return server;
  };

  it('busybox httpd (Connection: close, ETag): reads and the cache right; a file changed on it since it was cached is an error naming it', async function () {
    if (!hasTool('busybox')) {
      console.log('    (not run: busybox missing)');
      this.skip();
    }
    const port = await freePort();
    const www = path.join(t.dir, 'www');
    mkdirSync(www);
    copyFileSync(parent, path.join(www, 'disk.img'));
    start('busybox', ['httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', www]);
    await waitForPort(port);
    const url = `http://127.0.0.1:${port}/disk.img`;
    // What curl gets is what we read.
    assert.ok(execFileSync('curl', ['-s', '-r', '1000-2999', url]).equals(bytes.subarray(1000, 3000)));
    const child = path.join(sub(), 'child.vhd');
    const made = await cli(['child', url, child]);
    assert.equal(made.code, 0, made.stderr);
    await readsRight(child, {}, ['--cache']);
    assert.equal(cacheStatus(parentCachePath(child))!.cachedBytes, SIZE);
    await readsRight(child);
    // busybox's ETag is mtime and size: a new mtime is a changed parent. A child whose cache holds
    // its first MiB reads that without the server; what it must fetch is refused, naming the URL.
    const partly = path.join(sub(), 'child.vhd');
    assert.equal((await cli(['child', url, partly])).code, 0);
    assert.equal((await cli(['read', partly, '--cache', '--offset', '0', '--length', String(MiB)])).code, 0);
    utimesSync(path.join(www, 'disk.img'), new Date(), new Date(Date.now() + 5000));
    const cachedPart = await cli(['read', partly, '--cache', '--offset', '0', '--length', String(MiB)]);
    assert.equal(cachedPart.code, 0, cachedPart.stderr);
    assert.ok(cachedPart.stdout.equals(bytes.subarray(0, MiB)));
    const r = await cli(['read', partly, '--cache']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /parent changed on the server since it was cached/);
    assert.ok(r.stderr.includes(url), r.stderr);
  });

  it('https://: with the CA (DISKIMG_CA_FILE) reads right through the cache, curl --cacert agrees; without it the certificate is refused', async function () {
    if (!hasTool('openssl') || !hasTool('curl')) {
      console.log('    (not run: openssl or curl missing)');
      this.skip();
    }
    const server = await httpsServer();
    try {
      const url = `https://127.0.0.1:${(server.address() as net.AddressInfo).port}/disk.img`;
      const ca = path.join(certs, 'ca-cert.pem');
      const curl = await new Promise<Buffer>((resolve, reject) => execFile('curl', ['-s', '--cacert', ca, '-r', '5-4100', url], { encoding: 'buffer' }, (e, out) => (e ? reject(e) : resolve(out))));
      assert.ok(curl.equals(bytes.subarray(5, 4101)));
      const child = path.join(sub(), 'child.vhd');
      const refused = await cli(['child', url, child]);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /certificate/i);
      const env = { DISKIMG_CA_FILE: ca };
      const made = await cli(['child', url, child], env);
      assert.equal(made.code, 0, made.stderr);
      await readsRight(child, env, ['--cache']);
      assert.equal(cacheStatus(parentCachePath(child))!.cachedBytes, SIZE);
      // Cached: the server is not needed any more.
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await readsRight(child);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('the diskimg executable, run as a program, trusts the CAs of NODE_EXTRA_CA_CERTS but does not make Node parse them at start', async function () {
    if (!hasTool('openssl')) {
      console.log('    (not run: openssl missing)');
      this.skip();
    }
    /** dist/cli.js started the way a user starts `diskimg` (its sh launcher), not through node. */
    const direct = (args: string[], env: Record<string, string | undefined>) => new Promise<{ code: number; stdout: Buffer; stderr: string }>((resolve) => {
      const e: NodeJS.ProcessEnv = { ...process.env, DISKIMG_HTTP_BACKOFF_MS: '5' };
      delete e.NODE_EXTRA_CA_CERTS;
      delete e.DISKIMG_CA_FILE;
      for (const [k, v] of Object.entries(env)) if (v === undefined) delete e[k]; else e[k] = v;
      execFile(CLI, args, { env: e, maxBuffer: 64 * MiB, encoding: 'buffer', timeout: 60000 }, (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr: stderr.toString() });
      });
    });
    // Node warns while it parses an unreadable NODE_EXTRA_CA_CERTS at start: through node it does,
    // through the launcher it never gets the variable.
    const missing = path.join(t.dir, 'no-such-ca.pem');
    const viaNode = await cli(['--version'], { NODE_EXTRA_CA_CERTS: missing });
    assert.match(viaNode.stderr, /Ignoring extra certs/);
    const viaLauncher = await direct(['--version'], { NODE_EXTRA_CA_CERTS: missing });
    assert.equal(viaLauncher.code, 0, viaLauncher.stderr);
    assert.equal(viaLauncher.stderr, '');
    assert.equal(viaLauncher.stdout.toString().trim(), JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')).version);

    const server = await httpsServer();
    try {
      const url = `https://127.0.0.1:${(server.address() as net.AddressInfo).port}/disk.img`;
      const child = path.join(sub(), 'child.vhd');
      const refused = await direct(['child', url, child], {});
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /certificate/i);
      // An unreadable bundle: the same warning as Node's, when the first TLS connection needs it; Node's roots only.
      const unreadable = await direct(['child', url, child], { NODE_EXTRA_CA_CERTS: missing });
      assert.notEqual(unreadable.code, 0);
      assert.match(unreadable.stderr, /Ignoring extra certs from `[^`]*no-such-ca\.pem`/);
      assert.match(unreadable.stderr, /certificate/i);
      // The test CA in NODE_EXTRA_CA_CERTS (no DISKIMG_CA_FILE): trusted, as Node would trust it.
      const env = { NODE_EXTRA_CA_CERTS: path.join(certs, 'ca-cert.pem') };
      const made = await direct(['child', url, child], env);
      assert.equal(made.code, 0, made.stderr);
      const read = await direct(['read', child], env);
      assert.equal(read.code, 0, read.stderr);
      assert.ok(read.stdout.equals(bytes), 'the child reads the parent\'s bytes through the launcher');
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('qemu-nbd with TLS (tls-creds-x509): nbds:// reads right with the CA, is refused without it; nbd:// is told to use TLS; a client certificate when asked', async function () {
    if (!hasTool('qemu-nbd') || !hasTool('openssl')) {
      console.log('    (not run: qemu-nbd or openssl missing)');
      this.skip();
    }
    const qemuNbdTls = async (verifyPeer: boolean) => {
      const port = await freePort();
      start('qemu-nbd', ['--object', `tls-creds-x509,id=tls0,endpoint=server,dir=${certs},verify-peer=${verifyPeer ? 'on' : 'off'}`, '--tls-creds', 'tls0', '-f', 'raw', '-r', '-t', '-b', '127.0.0.1', '-p', String(port), parent]);
      await waitForPort(port);
      return port;
    };
    const port = await qemuNbdTls(false);
    const url = `nbds://127.0.0.1:${port}/`;
    const child = path.join(sub(), 'child.vhd');
    const refused = await cli(['child', url, child]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /certificate/i);
    const plain = await cli(['child', `nbd://127.0.0.1:${port}/`, child]);
    assert.notEqual(plain.code, 0);
    assert.match(plain.stderr, /requires TLS \(use nbds:\/\/\)/);
    const env = { DISKIMG_CA_FILE: path.join(certs, 'ca-cert.pem') };
    const made = await cli(['child', url, child], env);
    assert.equal(made.code, 0, made.stderr);
    await readsRight(child, env, ['--cache']);

    // verify-peer=on: qemu-nbd wants a client certificate signed by its CA.
    const strict = `nbds://127.0.0.1:${await qemuNbdTls(true)}/`;
    const noCert = path.join(sub(), 'child.vhd');
    assert.notEqual((await cli(['child', strict, noCert], env)).code, 0);
    const withCert = { ...env, DISKIMG_TLS_CERT: path.join(certs, 'client-cert.pem'), DISKIMG_TLS_KEY: path.join(certs, 'client-key.pem') };
    const ok = await cli(['child', strict, noCert], withCert);
    assert.equal(ok.code, 0, ok.stderr);
    await readsRight(noCert, withCert);
  });

  it('nbdkit: the file plugin over a Unix socket (nbd+unix://) and with --tls=require (nbds://)', async function () {
    if (!hasTool('nbdkit')) {
      // scripts/setup.sh installs it: in CI a missing nbdkit is a failure, not a silent skip.
      if (process.env.CI) assert.fail('nbdkit is missing (scripts/setup.sh installs it)');
      console.log('    (not run: nbdkit missing)');
      this.skip();
    }
    const sock = path.join(t.dir, 'nbdkit.sock');
    start('nbdkit', ['-f', '-r', '-U', sock, 'file', parent]);
    const end = Date.now() + 10000;
    while (!existsSync(sock) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    const child = path.join(sub(), 'child.vhd');
    const made = await cli(['child', `nbd+unix:///?socket=${sock}`, child]);
    assert.equal(made.code, 0, made.stderr);
    await readsRight(child);

    if (!hasTool('openssl')) return;
    const port = await freePort();
    start('nbdkit', ['-f', '-r', '-i', '127.0.0.1', '-p', String(port), '--tls=require', `--tls-certificates=${certs}`, 'file', parent]);
    await waitForPort(port);
    const tlsChild = path.join(sub(), 'child.vhd');
    const plain = await cli(['child', `nbd://127.0.0.1:${port}/`, tlsChild]);
    assert.notEqual(plain.code, 0);
    const env = { DISKIMG_CA_FILE: path.join(certs, 'ca-cert.pem') };
    const tls = await cli(['child', `nbds://127.0.0.1:${port}/`, tlsChild], env);
    assert.equal(tls.code, 0, tls.stderr);
    await readsRight(tlsChild, env);
  });

  it('serve --listen on a non-loopback address without TLS warns; with TLS it does not', async function () {
    const image = path.join(sub(), 'base.vhd');
    assert.equal((await cli(['create', image, '--size', '4M'])).code, 0);
    const warned = async (extra: string[]) => {
      const p = spawn(process.execPath, [CLI, 'serve', image, '--read-only', '--listen', '0.0.0.0:0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
      procs.push(p);
      let out = '';
      p.stdout!.on('data', (d) => { out += d; });
      p.stderr!.on('data', (d) => { out += d; });
      // Serving once it prints its URL (10x more than it takes, as a hang guard).
      const end = Date.now() + 20000;
      while (!/nbds?:\/\//.test(out) && p.exitCode === null && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      p.kill('SIGTERM');
      await new Promise((r) => p.once('exit', r));
      assert.match(out, /nbds?:\/\//, out);
      return /warning: listening on 0\.0\.0\.0: NBD has no authentication without TLS/.test(out);
    };
    assert.equal(await warned([]), true);
    if (hasTool('openssl')) assert.equal(await warned(['--tls-cert', path.join(certs, 'server-cert.pem'), '--tls-key', path.join(certs, 'server-key.pem')]), false);
  });
});
