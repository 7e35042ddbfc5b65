// A seeded protocol fuzzer for NBD servers (diskimg serve, and qemu-nbd as the reference it must
// not flag). Bad clients, a few at a time, open connections and send malformed handshakes and
// requests: bad magic, unknown options and commands, option haggling out of order, oversized
// option lengths, lengths over the maximum and past the end, truncated packets and disconnects
// mid-write. Each case knows which answers the protocol allows (an error reply, or closing only
// that connection) and flags anything else. All along, a well-behaved client writes and reads the
// lower half of the disk and verifies every read against a flat model; the upper half is only
// ever the target of requests that must not be applied, and is read back against the model too.
// The server must stay up and its RSS (from /proc) bounded.
import * as net from 'net';
import { readFileSync } from 'fs';
import { rng } from '../helpers/util';

const NBDMAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const OPT_REPLY_MAGIC = 0x3e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;

const OPT = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META_CONTEXT: 9, SET_META_CONTEXT: 10 };
const REP_ACK = 1;
const REP_SERVER = 2;
const REP_INFO = 3;
const REP_META_CONTEXT = 4;
const REP_ERR_BIT = 0x80000000;

const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 };
const EINVAL = 22;
const ENOSPC = 28;

/** The spec's recommended maximum payload; both servers under test advertise it. */
const MAX_PAYLOAD = 32 * 1024 * 1024;

class Closed extends Error {
  constructor() { super('connection closed by the server'); }
}
class Timeout extends Error {
  constructor(what: string) { super(`timed out waiting for ${what}`); }
}

/** A socket with an incoming byte queue: read(n) resolves with exactly n bytes or rejects. */
class Wire {
  private chunks: Buffer[] = [];
  private queued = 0;
  closed = false;
  private wake: (() => void) | null = null;

  private constructor(private sock: net.Socket) {
    sock.on('data', (d) => { this.chunks.push(d); this.queued += d.length; this.notify(); });
    sock.on('close', () => { this.closed = true; this.notify(); });
    sock.on('error', () => { this.closed = true; this.notify(); });
  }

  static connect(socketPath: string): Promise<Wire> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(socketPath);
      s.once('connect', () => resolve(new Wire(s)));
      s.once('error', reject);
    });
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  write(b: Buffer): void {
    if (!this.closed && !this.sock.destroyed) this.sock.write(b, () => undefined);
  }

  /** Waits until the kernel took what we wrote (so a following destroy() cuts after it). */
  drain(): Promise<void> {
    return new Promise((resolve) => {
      if (this.closed || this.sock.destroyed) return resolve();
      this.sock.write(Buffer.alloc(0), () => resolve());
    });
  }

  async read(n: number, timeoutMs: number, what = `${n} bytes`): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.queued < n) {
      if (this.closed) throw new Closed();
      const left = deadline - Date.now();
      if (left <= 0) throw new Timeout(what);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => { clearTimeout(t); resolve(); };
      });
    }
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.queued = rest.length;
    return out;
  }

  /** True when the server closes within timeoutMs (discarding anything it sends first). */
  async closesWithin(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      this.chunks = [];
      this.queued = 0;
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => { clearTimeout(t); resolve(); };
      });
    }
    return true;
  }

  destroy(): void {
    this.sock.destroy();
    this.closed = true;
  }
}

function u16(n: number): Buffer { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; }
function u32(n: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; }
function u64(n: bigint | number): Buffer { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt.asUintN(64, BigInt(n))); return b; }

function option(opt: number, data: Buffer = Buffer.alloc(0), length = data.length, magic = IHAVEOPT): Buffer {
  return Buffer.concat([u64(magic), u32(opt), u32(length), data]);
}

function exportRequest(name: string, infos: number[] = []): Buffer {
  const n = Buffer.from(name);
  return Buffer.concat([u32(n.length), n, u16(infos.length), ...infos.map(u16)]);
}

function metaContextRequest(name: string, queries: string[]): Buffer {
  const n = Buffer.from(name);
  return Buffer.concat([u32(n.length), n, u32(queries.length), ...queries.map((q) => Buffer.concat([u32(Buffer.byteLength(q)), Buffer.from(q)]))]);
}

function request(type: number, cookie: bigint, offset: bigint | number, length: number, flags = 0, magic = REQUEST_MAGIC): Buffer {
  return Buffer.concat([u32(magic), u16(flags), u16(type), u64(cookie), u64(offset), u32(length)]);
}

interface OptReply { opt: number; type: number; data: Buffer }

const T = 5000; // a reply the protocol requires must come within this (a hang guard, not a timing test)

async function readOptReply(w: Wire): Promise<OptReply> {
  const h = await w.read(20, T, 'an option reply');
  const magic = h.readBigUInt64BE(0);
  if (magic !== OPT_REPLY_MAGIC) throw new Error(`option reply with bad magic 0x${magic.toString(16)}`);
  const len = h.readUInt32BE(16);
  if (len > 1 << 20) throw new Error(`option reply claims ${len} bytes`);
  return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await w.read(len, T, 'option reply data') };
}

/** Reads the greeting and sends client flags; returns the handshake flags. */
async function greet(w: Wire, clientFlags?: number): Promise<number> {
  const g = await w.read(18, T, 'the greeting');
  if (g.readBigUInt64BE(0) !== NBDMAGIC || g.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('bad greeting');
  const flags = g.readUInt16BE(16);
  if (!(flags & FLAG_FIXED_NEWSTYLE)) throw new Error('server is not fixed newstyle');
  // By default the flags the server offers (NO_ZEROES only when advertised).
  w.write(u32(clientFlags ?? (FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES))));
  return flags;
}

/** Replies to one option until its ACK or error; returns all of them (error last if any). */
async function optionReplies(w: Wire, opt: number): Promise<OptReply[]> {
  const out: OptReply[] = [];
  for (let i = 0; i < 10000; i++) {
    const r = await readOptReply(w);
    if (r.opt !== opt) throw new Error(`reply for option ${r.opt} to option ${opt}`);
    out.push(r);
    if (r.type === REP_ACK || r.type & REP_ERR_BIT) return out;
    if (![REP_SERVER, REP_INFO, REP_META_CONTEXT].includes(r.type)) throw new Error(`unknown reply type ${r.type} to option ${opt}`);
  }
  throw new Error(`endless replies to option ${opt}`);
}

interface Session { w: Wire; size: number; flags: number; structured: boolean; cookie: bigint }

/** NBD_OPT_GO on the default export; returns the export's size and transmission flags. */
async function go(w: Wire, structured: boolean, alreadyNegotiated = false): Promise<Session> {
  if (structured && !alreadyNegotiated) {
    w.write(option(OPT.STRUCTURED_REPLY));
    const r = await optionReplies(w, OPT.STRUCTURED_REPLY);
    if (r[r.length - 1].type !== REP_ACK) throw new Error('structured replies refused');
  }
  w.write(option(OPT.GO, exportRequest('')));
  const rs = await optionReplies(w, OPT.GO);
  const last = rs[rs.length - 1];
  if (last.type !== REP_ACK) throw new Error(`GO failed with reply type 0x${last.type.toString(16)}: ${last.data.subarray(0).toString()}`);
  const info = rs.find((r) => r.type === REP_INFO && r.data.readUInt16BE(0) === 0);
  if (!info) throw new Error('GO without NBD_INFO_EXPORT');
  return { w, size: Number(info.data.readBigUInt64BE(2)), flags: info.data.readUInt16BE(10), structured, cookie: 1n };
}

interface Reply { error: number; data?: Buffer }

/**
 * The reply to one request: a simple reply (with `length` bytes of data for a successful READ),
 * or under structured replies the chunks up to DONE, data placed by their absolute offsets
 * relative to the request's `offset`. A simple error reply is allowed in both modes.
 */
async function readReplyAt(s: Session, cookie: bigint, offset: number, length: number): Promise<Reply> {
  const { w } = s;
  const data = Buffer.alloc(length);
  let error = 0;
  for (let chunk = 0; ; chunk++) {
    const magic = (await w.read(4, T, 'a reply')).readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC && chunk === 0) {
      const h = await w.read(12, T, 'a simple reply');
      if (h.readBigUInt64BE(4) !== cookie) throw new Error(`reply for cookie ${h.readBigUInt64BE(4)}, expected ${cookie}`);
      const err = h.readUInt32BE(0);
      if (err !== 0) return { error: err };
      if (s.structured && length > 0) throw new Error('a successful READ answered with a simple reply under structured replies');
      return { error: 0, data: length ? await w.read(length, T, 'read data') : data };
    }
    if (magic !== STRUCTURED_REPLY_MAGIC || !s.structured) throw new Error(`reply with magic 0x${magic.toString(16)}`);
    const h = await w.read(16, T, 'a structured reply');
    const flags = h.readUInt16BE(0);
    const type = h.readUInt16BE(2);
    if (h.readBigUInt64BE(4) !== cookie) throw new Error(`chunk for cookie ${h.readBigUInt64BE(4)}, expected ${cookie}`);
    const len = h.readUInt32BE(12);
    if (len > MAX_PAYLOAD + 64) throw new Error(`chunk of ${len} bytes`);
    const p = await w.read(len, T, 'chunk payload');
    if (type === 1) { // NBD_REPLY_TYPE_OFFSET_DATA
      const off = Number(p.readBigUInt64BE(0)) - offset;
      if (off < 0 || off + p.length - 8 > length) throw new Error('data chunk outside the request');
      p.subarray(8).copy(data, off);
    } else if (type === 2) { // NBD_REPLY_TYPE_OFFSET_HOLE: zeros, already
      const off = Number(p.readBigUInt64BE(0)) - offset;
      if (off < 0 || off + p.readUInt32BE(8) > length) throw new Error('hole chunk outside the request');
    } else if (type & 0x8000) {
      error = p.readUInt32BE(0) || EINVAL;
    } else if (type !== 0) {
      throw new Error(`unexpected chunk type ${type}`);
    }
    if (flags & 1) break;
  }
  return error ? { error } : { error, data };
}

export interface FuzzOptions {
  socket: string; // Unix socket of the server
  serverPid: number; // for its RSS and for "still running"
  seed: number;
  cases: number;
  concurrency?: number; // bad clients at a time
  rssLimitMb?: number; // allowed growth of the server's RSS over its start
  only?: string[]; // scenario names to draw from (all by default), to re-run or isolate cases
}

export interface FuzzResult {
  problems: string[];
  cases: number;
  byScenario: Record<string, number>;
  outcomes: Record<string, number>; // "closed", "error reply", ... per scenario, for the record
  goodReads: number;
  goodWrites: number;
  rssStartMb: number;
  rssMaxMb: number;
}


function bytes(r: () => number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let i = 0;
  for (; i + 4 <= n; i += 4) b.writeUInt32LE((r() * 4294967296) >>> 0, i);
  for (; i < n; i++) b[i] = (r() * 256) | 0;
  return b;
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const state = /State:\s+(\S)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return state !== 'Z';
  } catch {
    return false;
  }
}

interface Ctx {
  socket: string;
  size: number;
  model: Buffer;
  r: () => number;
  outcome: (what: string) => void;
  /** A random range in the upper half (never written by anyone), for requests that must not apply. */
  upper: (maxLen: number) => { offset: number; length: number };
}

/** A verified read of an upper-half range on `s`: the connection must still work after the case. */
async function checkUsable(ctx: Ctx, s: Session): Promise<void> {
  const { offset, length } = ctx.upper(65536);
  const cookie = s.cookie++;
  s.w.write(request(CMD.READ, cookie, offset, length));
  const r = await readReplyAt(s, cookie, offset, length);
  if (r.error) throw new Error(`a valid READ after the case failed with error ${r.error}`);
  if (!r.data!.equals(ctx.model.subarray(offset, offset + length))) throw new Error(`READ ${offset}+${length} after the case differs from the model`);
}

async function handshakeOk(ctx: Ctx, structured?: boolean): Promise<Session> {
  const w = await Wire.connect(ctx.socket);
  await greet(w);
  return go(w, structured ?? ctx.r() < 0.5);
}

/** After an error reply to an option, the haggling must go on: GO and a verified read. */
async function continueAfterOption(ctx: Ctx, w: Wire, structuredOn = false): Promise<void> {
  const s = structuredOn ? await go(w, true, true) : await go(w, ctx.r() < 0.5);
  await checkUsable(ctx, s);
}

async function expectErrorOrClose(ctx: Ctx, w: Wire, opt: number, what: string): Promise<'error' | 'closed'> {
  try {
    const rs = await optionReplies(w, opt);
    const last = rs[rs.length - 1];
    if (!(last.type & REP_ERR_BIT)) throw new Error(`${what}: the server accepted it (reply type ${last.type})`);
    ctx.outcome('error reply');
    return 'error';
  } catch (e) {
    if (e instanceof Closed) { ctx.outcome('closed'); return 'closed'; }
    throw e;
  }
}

type Scenario = (ctx: Ctx) => Promise<void>;

const KNOWN_OPTS = new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);

const scenarios: Record<string, Scenario> = {
  // --- handshake phase ---
  async 'truncated handshake'(ctx) {
    const w = await Wire.connect(ctx.socket);
    const stream = Buffer.concat([u32(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES), option(OPT.STRUCTURED_REPLY), option(OPT.GO, exportRequest('', [0, 3]))]);
    const cut = Math.floor(ctx.r() * stream.length);
    await w.read(18, T, 'the greeting');
    w.write(stream.subarray(0, cut));
    await w.drain();
    w.destroy();
    ctx.outcome('client left');
  },
  async 'no client flags, disconnect'(ctx) {
    const w = await Wire.connect(ctx.socket);
    if (ctx.r() < 0.5) await w.read(18, T, 'the greeting');
    w.destroy();
    ctx.outcome('client left');
  },
  async 'unknown client flags'(ctx) {
    const w = await Wire.connect(ctx.socket);
    await greet(w, FLAG_FIXED_NEWSTYLE | (1 << (2 + Math.floor(ctx.r() * 30))));
    // The spec: a server that does not recognise a client flag should close. Sending an option
    // must then not get a successful answer.
    w.write(option(OPT.GO, exportRequest('')));
    try {
      const rs = await optionReplies(w, OPT.GO);
      if (!(rs[rs.length - 1].type & REP_ERR_BIT)) throw new Error('GO succeeded after unknown client flags');
      ctx.outcome('error reply');
    } catch (e) {
      if (!(e instanceof Closed)) throw e;
      ctx.outcome('closed');
    }
    w.destroy();
  },
  async 'bad option magic'(ctx) {
    const w = await Wire.connect(ctx.socket);
    await greet(w);
    const magic = ctx.r() < 0.5 ? BigInt(Math.floor(ctx.r() * 2 ** 52)) : IHAVEOPT ^ 1n;
    w.write(option(OPT.GO, exportRequest(''), undefined, magic));
    if (!(await w.closesWithin(T))) throw new Error('the server kept a connection whose option magic was wrong');
    ctx.outcome('closed');
  },
  async 'unknown option'(ctx) {
    const w = await Wire.connect(ctx.socket);
    await greet(w);
    let opt = 0;
    while (KNOWN_OPTS.has(opt)) opt = ctx.r() < 0.3 ? 12 + Math.floor(ctx.r() * 20) : Math.floor(ctx.r() * 0x7fffffff);
    const len = Math.floor(ctx.r() * 200);
    w.write(option(opt, bytes(ctx.r, len)));
    const rs = await optionReplies(w, opt);
    if (rs.length !== 1 || !(rs[0].type & REP_ERR_BIT)) throw new Error(`unknown option ${opt} did not get one error reply`);
    ctx.outcome('error reply');
    await continueAfterOption(ctx, w);
    w.destroy();
  },
  async 'oversized option length'(ctx) {
    const w = await Wire.connect(ctx.socket);
    await greet(w);
    const opts = [OPT.GO, OPT.INFO, OPT.LIST_META_CONTEXT, OPT.SET_META_CONTEXT, OPT.EXPORT_NAME, 0x1234];
    const opt = opts[Math.floor(ctx.r() * opts.length)];
    const len = ctx.r() < 0.5 ? 0xffffffff : (1 << 20) + Math.floor(ctx.r() * (1 << 30));
    const sent = Math.floor(ctx.r() * 256 * 1024);
    w.write(Buffer.concat([option(opt, Buffer.alloc(0), len), bytes(ctx.r, sent)]));
    if (ctx.r() < 0.5) {
      await w.drain();
      w.destroy();
      ctx.outcome('client left');
      return;
    }
    // Either an error reply (then the server reads and drops the rest, or closes) or a close;
    // a server that waits for the announced bytes is also within the protocol: we give up.
    try {
      const r = await Promise.race([readOptReply(w), new Promise<null>((res) => setTimeout(() => res(null), 300))]);
      if (r === null) ctx.outcome('waits for the data');
      else if (!(r.type & REP_ERR_BIT)) throw new Error(`option ${opt} with length ${len} was accepted`);
      else ctx.outcome('error reply');
    } catch (e) {
      if (!(e instanceof Closed)) throw e;
      ctx.outcome('closed');
    }
    w.destroy();
  },
  async 'options out of order'(ctx) {
    const w = await Wire.connect(ctx.socket);
    await greet(w);
    const pick = Math.floor(ctx.r() * 6);
    let structuredOn = false;
    if (pick === 0) {
      // SET_META_CONTEXT before STRUCTURED_REPLY: meta contexts need structured replies.
      w.write(option(OPT.SET_META_CONTEXT, metaContextRequest('', ['base:allocation'])));
      const rs = await optionReplies(w, OPT.SET_META_CONTEXT);
      if (!(rs[rs.length - 1].type & REP_ERR_BIT)) throw new Error('SET_META_CONTEXT without structured replies succeeded');
      ctx.outcome('error reply');
    } else if (pick === 1) {
      // STRUCTURED_REPLY with a payload (its length must be 0).
      w.write(option(OPT.STRUCTURED_REPLY, bytes(ctx.r, 1 + Math.floor(ctx.r() * 64))));
      const rs = await optionReplies(w, OPT.STRUCTURED_REPLY);
      if (!(rs[rs.length - 1].type & REP_ERR_BIT)) throw new Error('STRUCTURED_REPLY with a payload was accepted');
      ctx.outcome('error reply');
    } else if (pick === 2) {
      // STRUCTURED_REPLY twice: an ACK or an error, and haggling goes on.
      w.write(option(OPT.STRUCTURED_REPLY));
      await optionReplies(w, OPT.STRUCTURED_REPLY);
      w.write(option(OPT.STRUCTURED_REPLY));
      const rs = await optionReplies(w, OPT.STRUCTURED_REPLY);
      ctx.outcome(rs[rs.length - 1].type & REP_ERR_BIT ? 'error reply' : 'ack');
      structuredOn = true;
    } else if (pick === 3) {
      // GO/INFO whose name length runs past the option's data.
      const opt = ctx.r() < 0.5 ? OPT.GO : OPT.INFO;
      const data = Buffer.concat([u32(1000 + Math.floor(ctx.r() * 1e6)), Buffer.from('x')]);
      w.write(option(opt, data));
      const rs = await optionReplies(w, opt);
      if (!(rs[rs.length - 1].type & REP_ERR_BIT)) throw new Error('a GO/INFO with a name past its end succeeded');
      ctx.outcome('error reply');
    } else if (pick === 4) {
      // INFO then GO for an export that does not exist.
      const opt = ctx.r() < 0.5 ? OPT.GO : OPT.INFO;
      w.write(option(opt, exportRequest(`no-such-export-${Math.floor(ctx.r() * 1e9)}`)));
      const rs = await optionReplies(w, opt);
      if (!(rs[rs.length - 1].type & REP_ERR_BIT)) throw new Error('GO/INFO for an unknown export succeeded');
      ctx.outcome('error reply');
    } else {
      // LIST and LIST_META_CONTEXT with junk after them.
      const opt = ctx.r() < 0.5 ? OPT.LIST : OPT.LIST_META_CONTEXT;
      w.write(option(opt, bytes(ctx.r, 1 + Math.floor(ctx.r() * 40))));
      const rs = await optionReplies(w, opt);
      if (!(rs[rs.length - 1].type & REP_ERR_BIT)) throw new Error(`option ${opt} with a malformed payload succeeded`);
      ctx.outcome('error reply');
    }
    await continueAfterOption(ctx, w, structuredOn);
    w.destroy();
  },
  async 'abort'(ctx) {
    const w = await Wire.connect(ctx.socket);
    await greet(w);
    w.write(option(OPT.ABORT));
    try {
      const r = await readOptReply(w);
      if (r.type !== REP_ACK) throw new Error(`ABORT answered with type ${r.type}`);
    } catch (e) {
      if (!(e instanceof Closed)) throw e;
    }
    if (!(await w.closesWithin(T))) throw new Error('the server did not close after ABORT');
    ctx.outcome('closed');
  },
  async 'export name unknown'(ctx) {
    const w = await Wire.connect(ctx.socket);
    await greet(w);
    w.write(option(OPT.EXPORT_NAME, Buffer.from(`nope-${Math.floor(ctx.r() * 1e9)}`)));
    if (!(await w.closesWithin(T))) throw new Error('the server kept a connection after EXPORT_NAME for an unknown export');
    ctx.outcome('closed');
  },

  // --- transmission phase ---
  async 'bad request magic'(ctx) {
    const s = await handshakeOk(ctx);
    const magic = (REQUEST_MAGIC ^ (1 << Math.floor(ctx.r() * 32))) >>> 0;
    s.w.write(request(CMD.READ, s.cookie++, 0, 512, 0, magic));
    if (!(await s.w.closesWithin(T))) throw new Error('the server kept a connection whose request magic was wrong');
    ctx.outcome('closed');
  },
  async 'unknown command'(ctx) {
    const s = await handshakeOk(ctx);
    const type = 8 + Math.floor(ctx.r() * 65528);
    const cookie = s.cookie++;
    s.w.write(request(type, cookie, 0, 0));
    const r = await readReplyAt(s, cookie, 0, 0);
    if (!r.error) throw new Error(`unknown command ${type} succeeded`);
    ctx.outcome(`error ${r.error}`);
    await checkUsable(ctx, s);
    s.w.destroy();
  },
  async 'read past the end'(ctx) {
    const s = await handshakeOk(ctx);
    const cookie = s.cookie++;
    const k = Math.floor(ctx.r() * 3);
    const length = 1 + Math.floor(ctx.r() * 65536);
    // Straddling the end, wholly past it, or wrapping past 2^64.
    const offset = k === 0 ? BigInt(s.size - Math.floor(ctx.r() * Math.min(length - 1, 4096)) - (length > 1 ? 1 : 0) + 1)
      : k === 1 ? BigInt(s.size + Math.floor(ctx.r() * 1e9)) : (1n << 64n) - BigInt(Math.floor(1 + ctx.r() * 4096));
    s.w.write(request(CMD.READ, cookie, offset, length));
    const r = await readReplyAt(s, cookie, 0, 0).catch((e) => { throw new Error(`READ past the end (${offset}+${length}): ${e.message}`); });
    if (r.error !== EINVAL) throw new Error(`READ past the end (${offset}+${length}) got error ${r.error}, not EINVAL`);
    ctx.outcome('EINVAL');
    await checkUsable(ctx, s);
    s.w.destroy();
  },
  async 'write past the end'(ctx) {
    const s = await handshakeOk(ctx);
    const cookie = s.cookie++;
    const length = 1024 + Math.floor(ctx.r() * 65536);
    // Starts inside the disk (in the upper half) and runs past its end: nothing may be applied.
    const offset = s.size - Math.floor(1 + ctx.r() * (length - 1));
    s.w.write(Buffer.concat([request(CMD.WRITE, cookie, offset, length), bytes(ctx.r, length)]));
    const r = await readReplyAt(s, cookie, 0, 0);
    if (r.error !== EINVAL && r.error !== ENOSPC) throw new Error(`WRITE past the end got error ${r.error}`);
    ctx.outcome(`error ${r.error}`);
    const tail = s.size - offset;
    const c2 = s.cookie++;
    s.w.write(request(CMD.READ, c2, offset, tail));
    const back = await readReplyAt(s, c2, offset, tail);
    if (back.error || !back.data!.equals(ctx.model.subarray(offset, s.size))) throw new Error('a rejected WRITE past the end changed the disk');
    s.w.destroy();
  },
  async 'other commands out of range'(ctx) {
    const s = await handshakeOk(ctx);
    const types = [CMD.TRIM, CMD.WRITE_ZEROES, CMD.CACHE];
    const type = types[Math.floor(ctx.r() * types.length)];
    const cookie = s.cookie++;
    const offset = s.size - Math.floor(ctx.r() * 4096);
    s.w.write(request(type, cookie, offset, 8192 + Math.floor(ctx.r() * 1e6)));
    const r = await readReplyAt(s, cookie, 0, 0);
    if (r.error !== EINVAL && r.error !== ENOSPC) throw new Error(`command ${type} past the end got error ${r.error}`);
    ctx.outcome(`error ${r.error}`);
    await checkUsable(ctx, s);
    s.w.destroy();
  },
  async 'length over the maximum'(ctx) {
    const s = await handshakeOk(ctx);
    const cookie = s.cookie++;
    const length = ctx.r() < 0.5 ? 0xffffffff : MAX_PAYLOAD + 1 + Math.floor(ctx.r() * MAX_PAYLOAD);
    const isWrite = ctx.r() < 0.5;
    s.w.write(request(isWrite ? CMD.WRITE : CMD.READ, cookie, 0, length));
    if (isWrite) s.w.write(bytes(ctx.r, Math.floor(ctx.r() * 100000)));
    // An error reply (the stream may then be closed, since a write's payload cannot be skipped),
    // or a close. A server may also read on for a write's announced payload: we give up then.
    try {
      const r = await Promise.race([readReplyAt(s, cookie, 0, 0), new Promise<null>((res) => setTimeout(() => res(null), isWrite ? 300 : T))]);
      if (r === null) {
        if (!isWrite) throw new Error(`no answer to a READ of ${length} bytes`);
        ctx.outcome('waits for the data');
      } else if (!r.error) {
        throw new Error(`${isWrite ? 'WRITE' : 'READ'} of ${length} bytes succeeded`);
      } else ctx.outcome(`error ${r.error}`);
    } catch (e) {
      if (!(e instanceof Closed)) throw e;
      ctx.outcome('closed');
    }
    s.w.destroy();
  },
  async 'disconnect mid-write'(ctx) {
    const s = await handshakeOk(ctx, false);
    const { offset, length } = ctx.upper(1 << 20);
    const data = bytes(ctx.r, length);
    const msg = Buffer.concat([request(CMD.WRITE, s.cookie++, offset, length, ctx.r() < 0.3 ? 1 : 0), data]);
    s.w.write(msg.subarray(0, Math.floor(ctx.r() * (msg.length - 1))));
    await s.w.drain();
    s.w.destroy();
    ctx.outcome('client left');
  },
  async 'zero-length and flagged requests'(ctx) {
    const s = await handshakeOk(ctx);
    const cookie = s.cookie++;
    const pick = Math.floor(ctx.r() * 3);
    const { offset } = ctx.upper(1);
    if (pick === 0) s.w.write(request(CMD.READ, cookie, offset, 0));
    else if (pick === 1) s.w.write(request(CMD.FLUSH, cookie, offset, 4096)); // FLUSH with offset/length set
    else s.w.write(request(CMD.READ, cookie, offset, 512, 1 << (5 + Math.floor(ctx.r() * 10)))); // unknown flag
    try {
      const r = await readReplyAt(s, cookie, offset, pick === 2 ? 512 : 0);
      ctx.outcome(r.error ? `error ${r.error}` : 'ok');
      if (pick === 2 && !r.error && !r.data!.equals(ctx.model.subarray(offset, offset + 512))) throw new Error('READ with an unknown flag returned wrong data');
      await checkUsable(ctx, s);
    } catch (e) {
      if (!(e instanceof Closed)) throw e;
      ctx.outcome('closed');
    }
    s.w.destroy();
  },
  async 'block status without a meta context'(ctx) {
    const s = await handshakeOk(ctx);
    const cookie = s.cookie++;
    s.w.write(request(CMD.BLOCK_STATUS, cookie, 0, 65536));
    const r = await readReplyAt(s, cookie, 0, 0);
    if (!r.error) throw new Error('BLOCK_STATUS without a negotiated meta context succeeded');
    ctx.outcome(`error ${r.error}`);
    await checkUsable(ctx, s);
    s.w.destroy();
  },
  async 'disc then more'(ctx) {
    const s = await handshakeOk(ctx);
    s.w.write(request(CMD.DISC, s.cookie++, 0, 0));
    s.w.write(request(CMD.READ, s.cookie++, 0, 512));
    if (!(await s.w.closesWithin(T))) throw new Error('the server did not close after DISC');
    ctx.outcome('closed');
  },
  async 'garbage after the handshake'(ctx) {
    const s = await handshakeOk(ctx);
    s.w.write(bytes(ctx.r, 1 + Math.floor(ctx.r() * 100)));
    await new Promise((res) => setTimeout(res, 5));
    s.w.destroy();
    ctx.outcome('client left');
  },
  async 'pipelined reads, never read back'(ctx) {
    // Replies the client never reads: the server must stop reading requests when its output
    // backs up instead of buffering every reply (memory stays bounded; the RSS check sees it).
    const s = await handshakeOk(ctx, ctx.r() < 0.5);
    const len = Math.min(MAX_PAYLOAD, s.size);
    const reqs: Buffer[] = [];
    for (let i = 0; i < 64; i++) reqs.push(request(CMD.READ, s.cookie++, 0, len));
    s.w.write(Buffer.concat(reqs));
    await new Promise((res) => setTimeout(res, 400));
    s.w.destroy();
    ctx.outcome('client left');
  },
  async 'valid reads of the upper half'(ctx) {
    const s = await handshakeOk(ctx);
    for (let i = 0; i < 3; i++) await checkUsable(ctx, s);
    ctx.outcome('ok');
    s.w.destroy();
  },
};

export const scenarioNames = Object.keys(scenarios);

// Heavier cases are drawn less often so a few thousand fit in the time budget.
const WEIGHTS: Record<string, number> = { 'pipelined reads, never read back': 0.05, 'oversized option length': 0.5, 'disconnect mid-write': 1.5 };

/** The well-behaved client: writes and reads the lower half, verifying every read. */
async function goodClient(socket: string, model: Buffer, r: () => number, stop: () => boolean, problems: string[], counts: { reads: number; writes: number }): Promise<void> {
  const w = await Wire.connect(socket);
  await greet(w);
  const s = await go(w, false);
  const half = Math.floor(s.size / 2);
  while (!stop()) {
    const length = 1 + Math.floor(r() * 131072);
    const offset = Math.floor(r() * (half - length));
    const cookie = s.cookie++;
    if (r() < 0.4) {
      const data = bytes(r, length);
      w.write(Buffer.concat([request(CMD.WRITE, cookie, offset, length, r() < 0.2 ? 1 : 0), data]));
      const rep = await readReplyAt(s, cookie, offset, 0);
      if (rep.error) { problems.push(`good client: WRITE ${offset}+${length} failed with ${rep.error}`); return; }
      data.copy(model, offset);
      counts.writes++;
    } else {
      // Reads span the whole disk, upper half included (where rejected writes must not show).
      const off = Math.floor(r() * (s.size - length));
      w.write(request(CMD.READ, cookie, off, length));
      const rep = await readReplyAt(s, cookie, off, length);
      if (rep.error) { problems.push(`good client: READ ${off}+${length} failed with ${rep.error}`); return; }
      if (!rep.data!.equals(model.subarray(off, off + length))) { problems.push(`good client: READ ${off}+${length} differs from the model`); return; }
      counts.reads++;
    }
  }
  // A final full comparison.
  for (let off = 0; off < s.size; off += 4 << 20) {
    const n = Math.min(4 << 20, s.size - off);
    const cookie = s.cookie++;
    w.write(request(CMD.READ, cookie, off, n));
    const rep = await readReplyAt(s, cookie, off, n);
    if (rep.error || !rep.data!.equals(model.subarray(off, off + n))) { problems.push(`good client: final read at ${off} differs from the model`); break; }
  }
  w.write(request(CMD.DISC, s.cookie++, 0, 0));
  w.destroy();
}

export async function runProtocolFuzz(o: FuzzOptions): Promise<FuzzResult> {
  const problems: string[] = [];
  const byScenario: Record<string, number> = {};
  const outcomes: Record<string, number> = {};
  // The model: the disk as the server has it at the start, read by a well-behaved connection.
  const first = await Wire.connect(o.socket);
  await greet(first);
  const s0 = await go(first, false);
  const model = Buffer.alloc(s0.size);
  for (let off = 0; off < s0.size; off += 4 << 20) {
    const n = Math.min(4 << 20, s0.size - off);
    const cookie = s0.cookie++;
    first.write(request(CMD.READ, cookie, off, n));
    const rep = await readReplyAt(s0, cookie, off, n);
    if (rep.error) throw new Error(`initial read at ${off} failed: ${rep.error}`);
    rep.data!.copy(model, off);
  }
  first.destroy();
  const size = s0.size;
  if (size < 1 << 20) throw new Error('the fuzzer needs a disk of at least 1 MiB');

  const rssStartMb = rssMb(o.serverPid);
  let rssMaxMb = rssStartMb;
  const sampler = setInterval(() => { if (alive(o.serverPid)) rssMaxMb = Math.max(rssMaxMb, rssMb(o.serverPid)); }, 20);

  let done = false;
  const counts = { reads: 0, writes: 0 };
  const good = goodClient(o.socket, model, rng(o.seed ^ 0x5eed), () => done, problems, counts)
    .catch((e) => { problems.push(`good client: ${e.message}`); });

  const names = Object.keys(scenarios).filter((n) => !o.only || o.only.includes(n));
  const weights = names.map((n) => WEIGHTS[n] ?? 1);
  const total = weights.reduce((a, b) => a + b, 0);
  let next = 0;
  const worker = async () => {
    while (next < o.cases && problems.length < 20) {
      const i = next++;
      const r = rng(o.seed * 1000003 + i);
      let x = r() * total;
      let k = 0;
      while (x >= weights[k]) { x -= weights[k]; k++; }
      const name = names[Math.min(k, names.length - 1)];
      byScenario[name] = (byScenario[name] ?? 0) + 1;
      const ctx: Ctx = {
        socket: o.socket, size, model, r,
        outcome: (what) => { const key = `${name}: ${what}`; outcomes[key] = (outcomes[key] ?? 0) + 1; },
        upper: (maxLen) => {
          const half = Math.ceil(size / 2);
          const length = 1 + Math.floor(r() * Math.min(maxLen, size - half - 1));
          return { offset: half + Math.floor(r() * (size - half - length)), length };
        },
      };
      try {
        await scenarios[name](ctx);
      } catch (e) {
        problems.push(`case ${i} (${name}, seed ${o.seed}): ${(e as Error).message}`);
      }
      if (!alive(o.serverPid)) { problems.push(`the server died during case ${i} (${name})`); next = o.cases; }
    }
  };
  await Promise.all(Array.from({ length: o.concurrency ?? 4 }, worker));
  done = true;
  await good;
  clearInterval(sampler);
  if (alive(o.serverPid)) rssMaxMb = Math.max(rssMaxMb, rssMb(o.serverPid));
  else problems.push('the server is not running after the cases');
  const limit = o.rssLimitMb ?? 256;
  if (rssMaxMb - rssStartMb > limit) problems.push(`server RSS grew from ${rssStartMb.toFixed(0)} MB to ${rssMaxMb.toFixed(0)} MB (limit +${limit} MB)`);
  return { problems, cases: Math.min(next, o.cases), byScenario, outcomes, goodReads: counts.reads, goodWrites: counts.writes, rssStartMb, rssMaxMb };
}
