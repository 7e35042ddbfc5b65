import { strict as assert } from 'assert';
import { execFile } from 'child_process';
import { mkdirSync, copyFileSync } from 'fs';
import * as path from 'path';
import { createChild } from '../../src/chain/createChild';
import { DiskImageError } from '../../src/format/errors';
import { createImage } from '../../src/format/registry';
import { openChain } from '../../src/chain/chain';
import { hasTool, randomBytes, readChain, rng, tempDir } from '../helpers/util';
import { startServe, ServeProcess } from './helpers';
import { makeCerts } from '../helpers/certs';

const MiB = 1024 * 1024;

function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 60000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

describe('serve over TLS (STARTTLS)', function () {
  this.timeout(120000);
  const t = tempDir('tls-');
  let serve: ServeProcess | null = null;
  let base = '';
  let model = Buffer.alloc(0);
  const c = (name: string) => path.join(t.dir, name);

  before(async function () {
    if (!hasTool('openssl')) {
      console.log('    (TLS tests not run: openssl missing)');
      this.skip();
    }
    makeCerts(t.dir, { otherCa: true });
    // qemu's tls-creds-x509 reads a folder: ca-cert.pem (and client-cert.pem/client-key.pem for a client certificate).
    mkdirSync(c('qemu'));
    copyFileSync(c('ca-cert.pem'), c('qemu/ca-cert.pem'));
    mkdirSync(c('qemu-client'));
    copyFileSync(c('ca-cert.pem'), c('qemu-client/ca-cert.pem'));
    copyFileSync(c('client-cert.pem'), c('qemu-client/client-cert.pem'));
    copyFileSync(c('client-key.pem'), c('qemu-client/client-key.pem'));
    base = c('base.vhd');
    const size = await createImage(base, { size: 4 * MiB });
    model = Buffer.alloc(size);
    const chain = await openChain(base, { writable: true });
    const data = randomBytes(rng(21), 256 * 1024);
    await chain.write(MiB, data);
    data.copy(model, MiB);
    await chain.close();
  });
  afterEach(async () => {
    if (serve) await serve.stop();
    serve = null;
  });
  after(() => t.cleanup());

  it('qemu-img and nbdinfo read over TLS; plaintext and a client without the CA are refused; our client speaks nbds://', async () => {
    serve = await startServe([base, '--read-only', '--listen', '127.0.0.1:0', '--tls-cert', c('server-cert.pem'), '--tls-key', c('server-key.pem')]);
    assert.match(serve.url, /^nbds:\/\/127\.0\.0\.1:\d+\/$/);
    const port = new URL(serve.url).port;
    const q = await run('qemu-img', ['info', '--output=json', '--object', `tls-creds-x509,id=t,endpoint=client,dir=${c('qemu')}`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},tls-creds=t`]);
    assert.equal(q.code, 0, q.stderr);
    assert.equal(JSON.parse(q.stdout)['virtual-size'], model.length);
    const plain = await run('qemu-img', ['info', `nbd://127.0.0.1:${port}`]);
    assert.notEqual(plain.code, 0);
    assert.match(plain.stderr, /TLS/);
    const wrongCa = await run('qemu-img', ['info', '--object', `tls-creds-x509,id=t,endpoint=client,dir=${c('other')}`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},tls-creds=t`]);
    assert.notEqual(wrongCa.code, 0);
    if (hasTool('nbdinfo')) {
      const ni = await run('nbdinfo', ['--size', `nbds://127.0.0.1:${port}?tls-certificates=${c('qemu')}`]);
      assert.equal(ni.code, 0, ni.stderr);
      assert.equal(Number(ni.stdout.trim()), model.length);
      const nbad = await run('nbdinfo', ['--size', `nbds://127.0.0.1:${port}?tls-certificates=${c('other')}`]);
      assert.notEqual(nbad.code, 0);
      const nplain = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}`]);
      assert.notEqual(nplain.code, 0);
    }
    // Our remote-parent client: nbds:// with the CA reads; without it the certificate is refused; nbd:// is told TLS is needed.
    process.env.DISKIMG_CA_FILE = c('ca-cert.pem');
    try {
      const child = c('over-tls.vhd');
      await createChild(serve.url, child);
      assert.ok((await readChain(child)).equals(model));
    } finally {
      delete process.env.DISKIMG_CA_FILE;
    }
    await assert.rejects(createChild(serve.url, c('no-ca.vhd')), (e: unknown) => e instanceof DiskImageError && /TLS: .*certificate/.test(e.message));
    await assert.rejects(createChild(serve.url.replace('nbds:', 'nbd:'), c('plain.vhd')), /requires TLS \(use nbds:\/\/\)/);
  });

  it('with --tls-ca a client certificate signed by that CA is required', async () => {
    serve = await startServe([base, '--read-only', '--listen', '127.0.0.1:0', '--tls-cert', c('server-cert.pem'), '--tls-key', c('server-key.pem'), '--tls-ca', c('ca-cert.pem')]);
    const port = new URL(serve.url).port;
    const without = await run('qemu-img', ['info', '--object', `tls-creds-x509,id=t,endpoint=client,dir=${c('qemu')}`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},tls-creds=t`]);
    assert.notEqual(without.code, 0);
    const withCert = await run('qemu-img', ['info', '--output=json', '--object', `tls-creds-x509,id=t,endpoint=client,dir=${c('qemu-client')}`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},tls-creds=t`]);
    assert.equal(withCert.code, 0, withCert.stderr);
    assert.equal(JSON.parse(withCert.stdout)['virtual-size'], model.length);
  });

  it('--tls-cert without --tls-key is an error', async () => {
    await assert.rejects(startServe([base, '--read-only', '--tls-cert', c('server-cert.pem')], 10000), /--tls-cert and --tls-key go together/);
  });
});
