// A parent image behind an NBD server (qemu-nbd, nbdkit, `diskimg serve`): a small read-only client.
import { readFileSync } from 'fs';
import * as net from 'net';
import * as tls from 'tls';
import { DiskImageError } from '../format/errors';
import {
  IHAVEOPT, NBDMAGIC, NBD_CMD_DISC, NBD_CMD_READ, NBD_FLAG_C_FIXED_NEWSTYLE, NBD_FLAG_C_NO_ZEROES, NBD_FLAG_NO_ZEROES,
  NBD_INFO_EXPORT, NBD_OPT_GO, NBD_OPT_STARTTLS, NBD_REP_ACK, NBD_REP_INFO, NBD_REQUEST_MAGIC, NBD_SIMPLE_REPLY_MAGIC, OPTION_REPLY_MAGIC,
} from '../serve/nbdProtocol';
import { ByteSource } from './byteSource';
import { trustedCa } from './trustedCa';

/** Largest read sent in one request (servers must accept 32 MiB; qemu-nbd and ours do). */
const MAX_READ = 4 * 1024 * 1024;
/** Requests in flight at once. */
const IN_FLIGHT = 8;
const TRIES = 5;

function envNumber(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : fallback;
}

/** `nbd://host[:port]/export` or `nbd+unix:///export?socket=PATH`. */
export function parseNbdUrl(location: string): { connect: net.NetConnectOpts; exportName: string; tls: boolean; host: string } {
  const url = new URL(location);
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  const secure = url.protocol.startsWith('nbds');
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (url.protocol === 'nbd+unix:' || url.protocol === 'nbds+unix:') {
    const socket = url.searchParams.get('socket');
    if (!socket) throw new DiskImageError(location, 'nbd+unix:// needs ?socket=PATH', undefined, undefined, 'EARG');
    return { connect: { path: socket }, exportName, tls: secure, host: 'localhost' };
  }
  if (url.protocol === 'nbd:' || url.protocol === 'nbds:') return { connect: { host, port: Number(url.port || 10809) }, exportName, tls: secure, host };
  throw new DiskImageError(location, `${url.protocol}// is not supported by this client (nbd://, nbd+unix://)`, undefined, undefined, 'EREMOTE');
}

/** Buffered reads of exact lengths from a socket. */
class Wire {
  private parts: Buffer[] = [];
  private have = 0;
  private waiting: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  private readonly onData = (b: Buffer) => { this.parts.push(b); this.have += b.length; this.pump(); };
  private readonly onEnd = (e?: Error) => {
    this.failure ??= e ?? new Error('connection closed');
    if (this.waiting) { const w = this.waiting; this.waiting = null; w.reject(this.failure); }
  };
  private readonly onClose = () => this.onEnd();

  constructor(readonly socket: net.Socket) {
    socket.on('data', this.onData);
    socket.on('error', this.onEnd);
    socket.on('close', this.onClose);
  }

  /** Hands the socket over (to TLS); true when nothing unread was left behind. */
  detach(): boolean {
    this.socket.removeListener('data', this.onData);
    this.socket.removeListener('error', this.onEnd);
    this.socket.removeListener('close', this.onClose);
    return this.have === 0;
  }

  read(n: number): Promise<Buffer> {
    if (this.waiting) throw new Error('one reader at a time');
    return new Promise((resolve, reject) => {
      this.waiting = { n, resolve, reject };
      this.pump();
    });
  }

  private pump(): void {
    const w = this.waiting;
    if (!w) return;
    if (this.have >= w.n) {
      const all = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.have);
      this.parts = all.length > w.n ? [all.subarray(w.n)] : [];
      this.have -= w.n;
      this.waiting = null;
      w.resolve(all.subarray(0, w.n));
    } else if (this.failure) {
      this.waiting = null;
      w.reject(this.failure);
    }
  }
}

class Transient extends Error {}

function describeNetError(e: Error): string {
  switch ((e as NodeJS.ErrnoException).code) {
    case 'ECONNREFUSED': return 'connection refused';
    case 'ENOENT': return 'no such socket';
    case 'ECONNRESET': return 'connection reset';
    default: return e.message;
  }
}

export class NbdSource implements ByteSource {
  readonly kind: string;
  readonly validator: string;
  readonly mtime = null;
  requests = 0;
  private nextHandle = 1n;
  private readonly pending = new Map<bigint, { target: Uint8Array; resolve: () => void; reject: (e: Error) => void }>();
  private slots = IN_FLIGHT;
  private readonly queue: Array<() => void> = [];
  private failure: Error | null = null;

  private constructor(readonly location: string, private readonly wire: Wire, readonly size: number) {
    this.kind = new URL(location).protocol.replace(':', '');
    // NBD has no validator: the size, and the chain's own identity check (VHD UUID) above it.
    this.validator = `size:${size}`;
    void this.receive();
  }

  static async open(location: string): Promise<NbdSource> {
    const { connect, exportName, tls: secure, host } = parseNbdUrl(location);
    const tries = envNumber('DISKIMG_HTTP_TRIES', TRIES);
    const backoff = envNumber('DISKIMG_HTTP_BACKOFF_MS', 100);
    let last = '';
    for (let i = 0; i < tries; i++) {
      try {
        return await NbdSource.handshake(location, connect, exportName, secure, host);
      } catch (e) {
        if (!(e instanceof Transient)) throw e;
        last = e.message;
        if (i + 1 < tries) await new Promise((r) => setTimeout(r, backoff * 2 ** i));
      }
    }
    throw new DiskImageError(location, `${last} after ${tries} tries`, undefined, undefined, 'EREMOTE');
  }

  /** Fixed newstyle negotiation with NBD_OPT_GO; the export's size comes with NBD_INFO_EXPORT. */
  private static async handshake(location: string, connect: net.NetConnectOpts, exportName: string, secure: boolean, host: string): Promise<NbdSource> {
    let socket: net.Socket = net.connect(connect);
    socket.setNoDelay(true);
    const timeout = envNumber('DISKIMG_HTTP_TIMEOUT_MS', 15000);
    socket.setTimeout(timeout, () => socket.destroy(Object.assign(new Error(`no answer within ${timeout} ms`), { code: 'ETIMEDOUT' })));
    let wire = new Wire(socket);
    const fail = (what: string) => { socket.destroy(); return new DiskImageError(location, what, undefined, undefined, 'EREMOTE'); };
    try {
      await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
    } catch (e) {
      throw new Transient(describeNetError(e as Error));
    }
    try {
      const hello = await wire.read(18);
      if (!hello.subarray(0, 8).equals(NBDMAGIC) || hello.readBigUInt64BE(8) !== IHAVEOPT) throw fail('not an NBD server (no fixed newstyle greeting)');
      const serverFlags = hello.readUInt16BE(16);
      socket.write(Buffer.from([0, 0, 0, NBD_FLAG_C_FIXED_NEWSTYLE | (serverFlags & NBD_FLAG_NO_ZEROES ? NBD_FLAG_C_NO_ZEROES : 0)]));
      if (secure) {
        // nbds://: STARTTLS, then the rest of the negotiation and all data inside TLS.
        const start = Buffer.alloc(16);
        start.writeBigUInt64BE(IHAVEOPT, 0);
        start.writeUInt32BE(NBD_OPT_STARTTLS, 8);
        socket.write(start);
        const head = await wire.read(20);
        const data = await wire.read(Math.min(head.readUInt32BE(16), 65536));
        if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC || head.readUInt32BE(12) !== NBD_REP_ACK) {
          throw fail(`the server does not offer TLS${data.length ? `: ${data.toString('utf8')}` : ''}`);
        }
        if (!wire.detach()) throw fail('server sent data before the TLS handshake');
        const env = process.env;
        const secured = tls.connect({
          socket,
          servername: net.isIP(host) ? undefined : host,
          host,
          ca: trustedCa(env),
          cert: env.DISKIMG_TLS_CERT ? readFileSync(env.DISKIMG_TLS_CERT) : undefined,
          key: env.DISKIMG_TLS_KEY ? readFileSync(env.DISKIMG_TLS_KEY) : undefined,
          rejectUnauthorized: true,
        });
        try {
          await new Promise<void>((resolve, reject) => { secured.once('secureConnect', resolve); secured.once('error', reject); });
        } catch (e) {
          throw fail(`TLS: ${(e as Error).message}`);
        }
        socket = secured;
        wire = new Wire(secured);
      }
      const name = Buffer.from(exportName, 'utf8');
      const opt = Buffer.alloc(16 + 4 + name.length + 2);
      opt.writeBigUInt64BE(IHAVEOPT, 0);
      opt.writeUInt32BE(NBD_OPT_GO, 8);
      opt.writeUInt32BE(4 + name.length + 2, 12);
      opt.writeUInt32BE(name.length, 16);
      name.copy(opt, 20);
      opt.writeUInt16BE(0, 20 + name.length);
      socket.write(opt);
      let size = -1;
      for (;;) {
        const head = await wire.read(20);
        if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw fail('bad option reply magic');
        const type = head.readUInt32BE(12);
        const len = head.readUInt32BE(16);
        if (len > 65536) throw fail(`option reply of ${len} bytes`);
        const data = await wire.read(len);
        if (type === NBD_REP_ACK) break;
        if (type === NBD_REP_INFO) {
          if (len >= 12 && data.readUInt16BE(0) === NBD_INFO_EXPORT) size = Number(data.readBigUInt64BE(2));
          continue;
        }
        if (type & 0x80000000) {
          const text = data.toString('utf8');
          if ((type & 0x7fffffff) === 5) throw fail(`the server requires TLS (use nbds://)${text ? `: ${text}` : ''}`);
          throw fail(`export '${exportName}' refused (error ${type & 0x7fffffff})${text ? `: ${text}` : ''}`);
        }
      }
      if (size < 0 || !Number.isSafeInteger(size)) throw fail('the server gave no export size');
      socket.setTimeout(0);
      return new NbdSource(location, wire, size);
    } catch (e) {
      socket.destroy();
      if (e instanceof DiskImageError) throw e;
      throw new Transient(describeNetError(e as Error));
    }
  }

  /** Replies arrive in any order; each is matched to its request by handle. */
  private async receive(): Promise<void> {
    try {
      for (;;) {
        const head = await this.wire.read(16);
        if (head.readUInt32BE(0) !== NBD_SIMPLE_REPLY_MAGIC) throw new Error('bad reply magic');
        const error = head.readUInt32BE(4);
        const handle = head.readBigUInt64BE(8);
        const p = this.pending.get(handle);
        if (!p) throw new Error(`reply for unknown handle ${handle}`);
        this.pending.delete(handle);
        if (error) { p.reject(new DiskImageError(this.location, `read failed on the server (error ${error})`, undefined, undefined, 'EREMOTE')); continue; }
        const data = await this.wire.read(p.target.length);
        p.target.set(data);
        p.resolve();
      }
    } catch (e) {
      this.failure = new DiskImageError(this.location, `connection lost: ${describeNetError(e as Error)}`, undefined, undefined, 'EREMOTE');
      for (const p of this.pending.values()) p.reject(this.failure);
      this.pending.clear();
    }
  }

  private async readOne(offset: number, target: Uint8Array): Promise<void> {
    if (this.slots === 0) await new Promise<void>((r) => this.queue.push(r));
    this.slots--;
    try {
      if (this.failure) throw this.failure;
      const handle = this.nextHandle++;
      const req = Buffer.alloc(28);
      req.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
      req.writeUInt16BE(0, 4);
      req.writeUInt16BE(NBD_CMD_READ, 6);
      req.writeBigUInt64BE(handle, 8);
      req.writeBigUInt64BE(BigInt(offset), 16);
      req.writeUInt32BE(target.length, 24);
      this.requests++;
      await new Promise<void>((resolve, reject) => {
        this.pending.set(handle, { target, resolve, reject });
        this.wire.socket.write(req);
      });
    } finally {
      this.slots++;
      this.queue.shift()?.();
    }
  }

  async read(offset: number, target: Uint8Array): Promise<number> {
    const end = Math.min(offset + target.length, this.size);
    if (end <= offset) return 0;
    const parts: Promise<void>[] = [];
    for (let pos = offset; pos < end; pos += MAX_READ) {
      parts.push(this.readOne(pos, target.subarray(pos - offset, Math.min(end, pos + MAX_READ) - offset)));
    }
    await Promise.all(parts);
    return end - offset;
  }

  async close(): Promise<void> {
    if (!this.failure && this.wire.socket.writable) {
      const req = Buffer.alloc(28);
      req.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
      req.writeUInt16BE(NBD_CMD_DISC, 6);
      this.wire.socket.end(req);
    }
    this.wire.socket.destroy();
  }
}
