import { strict as assert } from 'assert';
import { mkdirSync } from 'fs';
import { connect, Socket } from 'net';
import * as path from 'path';
import * as P from '../../src/serve/nbdProtocol';
import { RunningServer, startServer } from '../../src/serve/server';
import { rng, tempDir } from '../helpers/util';
import { pyAsync, randomChain } from './helpers';

/** A raw socket with exact-length reads, for speaking (and mis-speaking) the protocol by hand. */
class Raw {
  private buf: Buffer = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;
  constructor(readonly s: Socket) {
    s.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.wake(); });
    s.on('close', () => { this.closed = true; this.wake(); });
    s.on('error', () => undefined);
  }
  static open(sock: string): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const s = connect(sock, () => resolve(new Raw(s)));
      s.once('error', reject);
    });
  }
  private wake() { for (const w of this.waiters.splice(0)) w(); }
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`closed after ${this.buf.length} of ${n} bytes`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  /** Resolves true when the server closes the connection (within the guard time). */
  async closedByServer(ms = 5000): Promise<boolean> {
    const end = Date.now() + ms;
    while (!this.closed && Date.now() < end) await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 50); });
    return this.closed;
  }
  write(b: Uint8Array) { this.s.write(b); }
  end() { this.s.destroy(); }
}

function option(opt: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(16 + data.length);
  b.writeBigUInt64BE(P.IHAVEOPT, 0);
  b.writeUInt32BE(opt, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, 16);
  return b;
}

async function optionReply(c: Raw): Promise<{ opt: number; type: number; data: Buffer }> {
  const h = await c.read(20);
  assert.equal(h.readBigUInt64BE(0), P.OPTION_REPLY_MAGIC);
  return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await c.read(h.readUInt32BE(16)) };
}

function goData(name: string): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(4 + n.length + 2);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  return b;
}

/** Handshake up to transmission with simple replies; returns the export size. */
async function handshake(c: Raw): Promise<number> {
  const g = await c.read(18);
  assert.equal(g.toString('latin1', 0, 8), 'NBDMAGIC');
  c.write(Buffer.from([0, 0, 0, 3]));
  c.write(option(P.NBD_OPT_GO, goData('')));
  let size = -1;
  for (;;) {
    const r = await optionReply(c);
    if (r.type === P.NBD_REP_INFO && r.data.readUInt16BE(0) === P.NBD_INFO_EXPORT) size = Number(r.data.readBigUInt64BE(2));
    if (r.type === P.NBD_REP_ACK) return size;
    assert.ok(r.type < 0x80000000, `GO failed: ${r.type}`);
  }
}

function request(type: number, handle: number, offset: number | bigint, length: number, flags = 0): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(P.NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(BigInt(handle), 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}

async function simpleReply(c: Raw): Promise<{ error: number; handle: number }> {
  const h = await c.read(16);
  assert.equal(h.readUInt32BE(0), P.NBD_SIMPLE_REPLY_MAGIC);
  return { error: h.readUInt32BE(4), handle: Number(h.readBigUInt64BE(8)) };
}

describe('serve: bad clients', function () {
  this.timeout(120_000);
  const t = tempDir('diskimg-bad-');
  let server: RunningServer;
  let sock: string;
  let model: Buffer;
  before(async () => {
    const dir = path.join(t.dir, 'd');
    mkdirSync(dir);
    const chain = await randomChain(dir, rng(77), { layers: 1, base: 'dynamic', size: 4 * 1024 * 1024 });
    model = chain.model;
    sock = path.join(dir, 's.sock');
    server = await startServer({ exports: [{ name: 'disk', image: chain.paths[1] }], socket: sock });
  });
  after(async () => {
    await server?.close();
    t.cleanup();
  });

  /** A real client (python3-libnbd) reading the whole disk: the server is alive and correct. */
  async function verify(): Promise<void> {
    // Asynchronous: the server runs in this process, so a blocking child would starve it.
    const out = await pyAsync(`
import sys, nbd, hashlib
h = nbd.NBD(); h.connect_uri(sys.argv[1])
print(hashlib.sha256(h.pread(h.get_size(), 0)).hexdigest())
`, [server.url]);
    assert.equal(out.trim(), require('crypto').createHash('sha256').update(model).digest('hex'));
  }

  it('a client without fixed newstyle, or with unknown flags, is closed', async () => {
    for (const flags of [0, 0x80, 0xffffffff]) {
      const c = await Raw.open(sock);
      await c.read(18);
      const f = Buffer.alloc(4);
      f.writeUInt32BE(flags >>> 0);
      c.write(f);
      assert.ok(await c.closedByServer(), `flags ${flags}`);
    }
    await verify();
  });

  it('garbage instead of an option, and an option too long, end the connection; unknown options get ERR_UNSUP', async () => {
    let c = await Raw.open(sock);
    await c.read(18);
    c.write(Buffer.from([0, 0, 0, 1]));
    c.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    assert.ok(await c.closedByServer());

    c = await Raw.open(sock);
    await c.read(18);
    c.write(Buffer.from([0, 0, 0, 1]));
    const huge = Buffer.alloc(16);
    huge.writeBigUInt64BE(P.IHAVEOPT, 0);
    huge.writeUInt32BE(P.NBD_OPT_EXPORT_NAME, 8);
    huge.writeUInt32BE(0xffffffff, 12);
    c.write(huge);
    assert.ok(await c.closedByServer());

    c = await Raw.open(sock);
    await c.read(18);
    c.write(Buffer.from([0, 0, 0, 1]));
    c.write(option(4242, Buffer.from('whatever')));
    assert.equal((await optionReply(c)).type, P.NBD_REP_ERR_UNSUP);
    c.write(option(P.NBD_OPT_GO, Buffer.from([0, 0, 0, 9, 1]))); // name length past the data
    assert.equal((await optionReply(c)).type, P.NBD_REP_ERR_INVALID);
    c.write(option(P.NBD_OPT_GO, goData('no-such-export')));
    assert.equal((await optionReply(c)).type, P.NBD_REP_ERR_UNKNOWN);
    c.write(option(P.NBD_OPT_LIST));
    const listed = await optionReply(c);
    assert.equal(listed.type, P.NBD_REP_SERVER);
    assert.equal(listed.data.toString('utf8', 4), 'disk');
    assert.equal((await optionReply(c)).type, P.NBD_REP_ACK);
    c.write(option(P.NBD_OPT_ABORT));
    assert.equal((await optionReply(c)).type, P.NBD_REP_ACK);
    assert.ok(await c.closedByServer());
    await verify();
  });

  it('requests past the end, over the maximum, and unknown commands get errors; the connection keeps working', async () => {
    const c = await Raw.open(sock);
    const size = await handshake(c);
    assert.equal(size, model.length);
    c.write(request(P.NBD_CMD_READ, 1, size - 100, 200));
    assert.deepEqual(await simpleReply(c), { error: P.NBD_EINVAL, handle: 1 });
    c.write(request(P.NBD_CMD_READ, 2, 0xffffffffffff0000n, 512));
    assert.deepEqual(await simpleReply(c), { error: P.NBD_EINVAL, handle: 2 });
    c.write(request(P.NBD_CMD_READ, 3, 0, P.MAX_PAYLOAD + 1));
    assert.deepEqual(await simpleReply(c), { error: P.NBD_EINVAL, handle: 3 });
    c.write(request(99, 4, 0, 0));
    assert.deepEqual(await simpleReply(c), { error: P.NBD_EINVAL, handle: 4 });
    c.write(request(P.NBD_CMD_BLOCK_STATUS, 5, 0, 512)); // no structured replies, no context
    assert.deepEqual(await simpleReply(c), { error: P.NBD_EINVAL, handle: 5 });
    c.write(request(P.NBD_CMD_WRITE_ZEROES, 6, size, 1));
    assert.deepEqual(await simpleReply(c), { error: P.NBD_EINVAL, handle: 6 });
    // A write over the maximum: its payload is read and dropped (never held), then refused.
    c.write(request(P.NBD_CMD_WRITE, 7, 0, P.MAX_PAYLOAD + 4096));
    const chunk = Buffer.alloc(1024 * 1024, 0x66);
    for (let sent = 0; sent < P.MAX_PAYLOAD + 4096; sent += chunk.length) c.write(chunk.subarray(0, Math.min(chunk.length, P.MAX_PAYLOAD + 4096 - sent)));
    assert.deepEqual(await simpleReply(c), { error: P.NBD_EINVAL, handle: 7 });
    // Still in step: a good read returns the model's bytes.
    c.write(request(P.NBD_CMD_READ, 8, 1000, 3000));
    assert.deepEqual(await simpleReply(c), { error: 0, handle: 8 });
    assert.ok((await c.read(3000)).equals(model.subarray(1000, 4000)));
    c.write(request(P.NBD_CMD_DISC, 9, 0, 0));
    assert.ok(await c.closedByServer());
    await verify();
  });

  it('a client that vanishes mid-write, or sends a wrong request magic, leaves the disk and other clients intact', async () => {
    for (let i = 0; i < 5; i++) {
      const c = await Raw.open(sock);
      await handshake(c);
      c.write(request(P.NBD_CMD_WRITE, 1, 4096 * i, 65536));
      c.write(Buffer.alloc(1000 + i * 7000, 0x99));
      await new Promise((r) => setTimeout(r, 20));
      c.end();
    }
    const c = await Raw.open(sock);
    await handshake(c);
    const bad = request(P.NBD_CMD_READ, 1, 0, 512);
    bad.writeUInt32BE(0xdeadbeef, 0);
    c.write(bad);
    assert.ok(await c.closedByServer());
    // Random bytes after a good handshake: closed or answered, never a crash.
    const r = rng(5);
    for (let i = 0; i < 20; i++) {
      const d = await Raw.open(sock);
      if (i % 2) await handshake(d); else await d.read(18);
      const junk = Buffer.alloc(1 + Math.floor(r() * 200));
      for (let k = 0; k < junk.length; k++) junk[k] = Math.floor(r() * 256);
      d.write(junk);
      await new Promise((res) => setTimeout(res, 10));
      d.end();
    }
    await verify();
    assert.equal(server.status().exports[0].clients, 0);
  });
  it('a client that pipelines reads and never reads the replies holds about one maximum request; others keep being served', async () => {
    const exp = () => server.status().exports[0];
    const c = await Raw.open(sock);
    const size = await handshake(c);
    c.s.pause(); // from here on it never reads a reply
    const before = exp().bytesRead;
    const reqs: Buffer[] = [];
    for (let i = 0; i < 64; i++) reqs.push(request(P.NBD_CMD_READ, 100 + i, 0, size));
    c.write(Buffer.concat(reqs));
    // Let the server go as far as it will (until its read count stops moving; a hang guard bounds it).
    let last = -1;
    for (let stable = 0, i = 0; stable < 3 && i < 100; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const now = exp().bytesRead;
      stable = now === last ? stable + 1 : 0;
      last = now;
    }
    // Another client is served in full meanwhile.
    await verify();
    const readForFlood = exp().bytesRead - before - size; // minus verify's one pass over the disk
    // 64 replies were asked for; at most the reply budget, one more request and what the kernel's
    // socket buffers took were read for them.
    assert.ok(readForFlood < 64 * size, `the server read all ${readForFlood} bytes for a client that reads nothing`);
    assert.ok(readForFlood <= P.MAX_PAYLOAD + size + 4 * 1024 * 1024, `read ${readForFlood} bytes for a client that reads nothing`);
    c.end();
    for (let i = 0; i < 100 && exp().clients > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(exp().clients, 0);
    await verify();
  });
});
