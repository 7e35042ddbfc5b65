// A minimal HTTP/1.1 range client over plain TCP whose response bodies land straight in one buffer.
import * as net from 'net';

/**
 * Why not Node's `http`: it hands a body over in 64 KiB pieces, each a wake-up, a parser call and
 * a stream event; a 256 MiB parent is four thousand of them, and on a busy machine each wake-up
 * costs a scheduling delay. Here the socket reads (`onread`) go directly into the body's buffer, as
 * much per read as the kernel holds, and only the head is parsed. Only what a range read needs is
 * spoken: GET with a Range, a `Content-Length` body, keep-alive. Anything else (chunked bodies,
 * 1xx answers) is reported as `unsupported` and the caller uses Node's client instead.
 */

export interface WireAnswer {
  status: number;
  statusMessage: string;
  /** Header names in lower case. */
  headers: Record<string, string>;
  /** The body (Content-Length bytes), or null for answers the caller only needs the head of. */
  body: Buffer | null;
}

/** The answer cannot be read by this client (not a network failure): use another client. */
export class WireUnsupported extends Error {}

/** The connection failed or ended before the answer was whole (worth another try). */
export class WireBroken extends Error {
  constructor(message: string, readonly code?: string) { super(message); }
}

const HEAD_MAX = 64 * 1024;

/** What to do with an answer's head: return a buffer for a body of `length` bytes, or null to stop at the head. */
export type BodyFor = (head: Omit<WireAnswer, 'body'>, length: number) => Buffer | null;

class Connection {
  readonly socket: net.Socket;
  private scratch = Buffer.allocUnsafe(HEAD_MAX);
  private headLength = 0;
  private body: Buffer | null = null;
  private got = 0;
  private head: Omit<WireAnswer, 'body'> | null = null;
  private settle: ((e: Error | null, a?: WireAnswer) => void) | null = null;
  private bodyFor: BodyFor = () => null;
  reusable = true;

  constructor(host: string, port: number, private readonly release: (c: Connection) => void) {
    this.socket = net.connect({
      host,
      port,
      noDelay: true,
      onread: {
        // In the body, reads go to where the bytes belong; otherwise to the scratch for the head.
        buffer: () => (this.body ? this.body.subarray(this.got) : this.scratch.subarray(this.headLength)),
        callback: (n: number, buf: Uint8Array) => { this.onRead(n, buf); return true; },
      },
    });
    this.socket.on('error', (e: NodeJS.ErrnoException) => this.fail(new WireBroken(e.message, e.code)));
    this.socket.on('end', () => this.fail(new WireBroken(this.body ? `connection dropped after ${this.got} of ${this.body.length} bytes` : 'connection closed', 'EPIPE')));
    this.socket.on('close', () => this.fail(new WireBroken('connection closed', 'EPIPE')));
    this.socket.on('timeout', () => this.fail(new WireBroken('timeout', 'ETIMEDOUT')));
  }

  get busy(): boolean {
    return this.settle !== null;
  }

  send(request: string, timeoutMs: number, bodyFor: BodyFor): Promise<WireAnswer> {
    return new Promise((resolve, reject) => {
      this.headLength = 0;
      this.body = null;
      this.got = 0;
      this.head = null;
      this.bodyFor = bodyFor;
      this.settle = (e, a) => (e ? reject(e) : resolve(a!));
      this.socket.setTimeout(timeoutMs);
      this.socket.write(request);
    });
  }

  private onRead(n: number, buf: Uint8Array): void {
    if (!this.settle) {
      // Bytes nobody asked for (a server talking out of turn): this connection is not reused.
      this.reusable = false;
      this.socket.destroy();
      return;
    }
    if (this.body) {
      this.got += n;
      if (this.got === this.body.length) this.finish();
      return;
    }
    void buf;
    this.headLength += n;
    const end = this.scratch.subarray(0, this.headLength).indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.headLength >= HEAD_MAX) this.fail(new WireUnsupported('answer head longer than 64 KiB'));
      return;
    }
    let head: Omit<WireAnswer, 'body'>;
    try {
      head = parseHead(this.scratch.toString('latin1', 0, end));
    } catch (e) {
      this.fail(e as Error);
      return;
    }
    this.head = head;
    if (head.headers['connection']?.toLowerCase() === 'close') this.reusable = false;
    const te = head.headers['transfer-encoding'];
    const cl = head.headers['content-length'];
    if (head.status < 200 || (te !== undefined && te.toLowerCase() !== 'identity') || cl === undefined || !/^\d+$/.test(cl)) {
      this.fail(new WireUnsupported(`answer ${head.status} without a plain Content-Length body`));
      return;
    }
    const length = Number(cl);
    const extra = this.headLength - (end + 4);
    const body = this.bodyFor(head, length);
    if (!body) {
      // Only the head matters (an error answer): the rest is not read, the connection not reused.
      this.reusable = false;
      this.done(null, { ...head, body: null });
      this.socket.destroy();
      return;
    }
    if (extra > length) {
      this.reusable = false;
      this.fail(new WireBroken(`server sent more than the ${length} bytes asked for`));
      return;
    }
    this.scratch.copy(body, 0, end + 4, end + 4 + extra);
    this.body = body;
    this.got = extra;
    if (this.got === length) this.finish();
  }

  private finish(): void {
    const a: WireAnswer = { ...this.head!, body: this.body };
    this.body = null;
    this.headLength = 0; // the scratch is free for the next answer (a full one would be a 0-byte read: ENOBUFS)
    this.done(null, a);
    if (this.reusable) this.release(this);
    else this.socket.destroy();
  }

  private done(e: Error | null, a?: WireAnswer): void {
    const s = this.settle;
    this.settle = null;
    this.socket.setTimeout(0);
    s?.(e, a);
  }

  private fail(e: Error): void {
    this.reusable = false;
    if (this.settle) this.done(e);
    this.socket.destroy();
  }
}

function parseHead(text: string): Omit<WireAnswer, 'body'> {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0]);
  if (!m) throw new WireUnsupported(`not an HTTP/1.x answer: '${lines[0].slice(0, 60)}'`);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    // Repeated Content-Length or Content-Range that disagree: not something to guess about.
    if (headers[name] !== undefined && headers[name] !== value && (name === 'content-length' || name === 'content-range')) {
      throw new WireUnsupported(`two different ${name} headers`);
    }
    headers[name] = value;
  }
  return { status: Number(m[1]), statusMessage: m[2] ?? '', headers };
}

/** Keep-alive connections to one server. */
export class WirePool {
  private readonly idle: Connection[] = [];
  private readonly all = new Set<Connection>();

  constructor(private readonly url: URL) {}

  /** One GET with a Range header; the body goes into the buffer `bodyFor` gives. */
  get(offset: number, length: number, timeoutMs: number, bodyFor: BodyFor): Promise<WireAnswer> {
    const host = this.url.hostname.replace(/^\[|\]$/g, '');
    const port = Number(this.url.port || 80);
    let c = this.idle.pop();
    while (c && (c.socket.destroyed || !c.reusable)) c = this.idle.pop();
    if (!c) {
      c = new Connection(host, port, (done) => { if (this.all.has(done)) this.idle.push(done); });
      const made = c;
      made.socket.on('close', () => {
        this.all.delete(made);
        const i = this.idle.indexOf(made);
        if (i >= 0) this.idle.splice(i, 1);
      });
      this.all.add(c);
    }
    const request = `GET ${this.url.pathname}${this.url.search} HTTP/1.1\r\nHost: ${this.url.host}\r\nRange: bytes=${offset}-${offset + length - 1}\r\nAccept-Encoding: identity\r\nConnection: keep-alive\r\n\r\n`;
    return c.send(request, timeoutMs, bodyFor);
  }

  close(): void {
    for (const c of this.all) c.socket.destroy();
    this.all.clear();
    this.idle.length = 0;
  }
}
