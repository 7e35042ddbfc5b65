import { Socket } from 'net';
import * as tls from 'tls';
import { isDiskImageError } from '../format/errors';
import { ByteReader, StreamEnded } from './byteReader';
import * as P from './nbdProtocol';
import { MapExtent } from '../chain/chain';
import { ServedExport } from './servedExport';
import { TraceLog } from './trace';
import { readSync } from 'fs';
import { sendFileAvailable, sendReply, setSendBuffer } from '../io/sendFile';

/** What a connection needs from the server. */
export interface ConnectionHost {
  /** The export a client asks for by name; the empty name is the default export. */
  findExport(name: string): ServedExport | undefined;
  exportNames(): string[];
  trace: TraceLog | null;
  /** Called with a line for the server's log (bad clients). */
  log(message: string): void;
  /** With TLS configured, every client must negotiate STARTTLS first; `verifyClient`: client certificates signed by the CA. */
  tls?: { context: tls.SecureContext; verifyClient: boolean };
}

/**
 * Backpressure, as qemu's server does it: a connection's reply bytes not yet handed to the kernel
 * (requests being served plus replies queued in the socket) stay under this budget; past it no
 * further request is read until the socket drains (one request, up to the maximum, is always
 * served). A client that never reads its replies thus holds at most about this much of the
 * server's memory, and no disk read is started for it. 8 MiB keeps nbdcopy's 64 x 256 KiB per
 * connection flowing (32 in flight, as qemu-nbd's 16 do) while the buffers stay warm in the CPU's
 * caches: with 32 MiB a 4-connection copy cycled through 128 MiB of buffers and took 1.5x the CPU
 * (measured with bench/serve.bench.mjs).
 */
const MAX_BUFFERED_REPLY_BYTES = 8 * 1024 * 1024;
const MAX_IN_FLIGHT = 128;
/**
 * Reads long enough to go through the thread pool, at most, per connection: the pool (8 threads,
 * sized in src/cli/entry.ts) is shared by every connection and by fsyncs, so one client's long
 * reads must leave room for the others'. Shorter reads are made synchronously (serve's
 * setSynchronousReadLimit) and never wait for the pool.
 */
const MAX_POOLED_READS = 2;
const POOLED_READ_MIN = 1024 * 1024;
/**
 * Structured reads this long or longer send the ranges no layer holds as hole chunks (no bytes, no
 * zero-filling), as qemu's server does; shorter ones are not worth the lookup. More extents than
 * MAX_READ_CHUNKS (a finely fragmented range) go back as one data chunk.
 */
const SPARSE_READ_MIN = 64 * 1024;
const MAX_READ_CHUNKS = 64;
/** A BLOCK_STATUS reply covers at most this much of the disk (clients ask again for the rest). */
const BLOCK_STATUS_SPAN = 1024 * 1024 * 1024;
const MAX_DESCRIPTORS = 65536;

interface Negotiated {
  exp: ServedExport;
  /** The connection after negotiation (a TLS socket after STARTTLS). */
  socket: Socket;
  reader: ByteReader;
  structured: boolean;
  /** Meta context ids selected for this export. */
  contexts: number[];
  /** The socket's descriptor where replies may be sent from image files directly (sendfile), else -1. */
  fd: number;
  /** Called once the socket's queue has gone to the kernel ('drain') or the socket closed. */
  drained: Array<() => void>;
}

class ProtocolClose extends Error {}

/** Runs one client connection: fixed newstyle negotiation, then transmission until DISC or EOF. */
export async function serveConnection(socket: Socket, host: ConnectionHost): Promise<void> {
  socket.setNoDelay(true);
  const reader = new ByteReader(socket);
  let session: Negotiated | null = null;
  try {
    session = await negotiate(socket, reader, host);
    if (!session) return;
    session.fd = directFd(session.socket);
    const waiting = session.drained;
    const release = () => { for (const f of waiting.splice(0)) f(); };
    session.socket.on('drain', release);
    session.socket.on('close', release);
    session.exp.clients++;
    await transmit(session.socket, session.reader, session, host);
  } catch (e) {
    if (!(e instanceof StreamEnded) && !(e instanceof ProtocolClose)) host.log(`connection closed: ${(e as Error).message}`);
    else if (e instanceof ProtocolClose) host.log(`connection closed: ${e.message}`);
  } finally {
    if (session) session.exp.clients--;
    const s = session?.socket ?? socket;
    if (!s.destroyed) s.end();
    setTimeout(() => { s.destroy(); socket.destroy(); }, 1000).unref();
  }
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function withMessage(text: string): Buffer {
  return Buffer.from(text, 'utf8');
}

async function negotiate(plainSocket: Socket, plainReader: ByteReader, host: ConnectionHost): Promise<Negotiated | null> {
  let socket = plainSocket;
  let reader = plainReader;
  let secured = false;
  const greeting = Buffer.alloc(18);
  P.NBDMAGIC.copy(greeting, 0);
  greeting.writeBigUInt64BE(P.IHAVEOPT, 8);
  greeting.writeUInt16BE(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES, 16);
  socket.write(greeting);
  const clientFlags = (await reader.read(4)).readUInt32BE(0);
  if (!(clientFlags & P.NBD_FLAG_C_FIXED_NEWSTYLE) || (clientFlags & ~(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES))) {
    throw new ProtocolClose(`client flags 0x${clientFlags.toString(16)}: only fixed newstyle negotiation is served`);
  }
  const noZeroes = (clientFlags & P.NBD_FLAG_C_NO_ZEROES) !== 0;
  let structured = false;
  let contexts: number[] = [];
  let contextsFor: string | null = null;
  const reply = (option: number, type: number, data?: Buffer) => socket.write(P.optionReply(option, type, data));

  for (;;) {
    const head = await reader.read(16);
    if (head.readBigUInt64BE(0) !== P.IHAVEOPT) throw new ProtocolClose('option without the IHAVEOPT magic');
    const option = head.readUInt32BE(8);
    const length = head.readUInt32BE(12);
    if (length > P.MAX_OPTION_LENGTH) {
      if (option === P.NBD_OPT_EXPORT_NAME || length > 16 * 1024 * 1024) throw new ProtocolClose(`option ${option} of ${length} bytes is too long`);
      await reader.skip(length);
      reply(option, P.NBD_REP_ERR_TOO_BIG, withMessage('option too long'));
      continue;
    }
    const data = await reader.read(length);
    // With TLS configured, nothing but STARTTLS (or ABORT) is answered in plaintext.
    if (host.tls && !secured && option !== P.NBD_OPT_STARTTLS && option !== P.NBD_OPT_ABORT) {
      if (option === P.NBD_OPT_EXPORT_NAME) throw new ProtocolClose('plaintext client refused: this server requires TLS');
      reply(option, P.NBD_REP_ERR_TLS_REQD, withMessage('this server requires TLS: negotiate STARTTLS first'));
      continue;
    }
    switch (option) {
      case P.NBD_OPT_EXPORT_NAME: {
        const name = data.toString('utf8');
        const exp = host.findExport(name);
        // This option has no error reply: the only way to refuse is to close.
        if (!exp) throw new ProtocolClose(`unknown export '${name}'`);
        const tail = Buffer.alloc(noZeroes ? 10 : 134);
        tail.writeBigUInt64BE(BigInt(exp.virtualSize), 0);
        tail.writeUInt16BE(transmissionFlags(exp), 8);
        socket.write(tail);
        return { exp, socket, reader, structured, contexts: contextsFor === name ? contexts : [], fd: -1, drained: [] };
      }
      case P.NBD_OPT_ABORT:
        reply(option, P.NBD_REP_ACK);
        return null;
      case P.NBD_OPT_LIST: {
        if (length !== 0) { reply(option, P.NBD_REP_ERR_INVALID, withMessage('LIST takes no data')); break; }
        for (const name of host.exportNames()) {
          const n = Buffer.from(name, 'utf8');
          reply(option, P.NBD_REP_SERVER, Buffer.concat([u32(n.length), n]));
        }
        reply(option, P.NBD_REP_ACK);
        break;
      }
      case P.NBD_OPT_INFO:
      case P.NBD_OPT_GO: {
        const parsed = parseInfoRequest(data);
        if (!parsed) { reply(option, P.NBD_REP_ERR_INVALID, withMessage('malformed INFO/GO request')); break; }
        const exp = host.findExport(parsed.name);
        if (!exp) { reply(option, P.NBD_REP_ERR_UNKNOWN, withMessage(`export '${parsed.name}' not found`)); break; }
        const info = Buffer.alloc(12);
        info.writeUInt16BE(P.NBD_INFO_EXPORT, 0);
        info.writeBigUInt64BE(BigInt(exp.virtualSize), 2);
        info.writeUInt16BE(transmissionFlags(exp), 10);
        reply(option, P.NBD_REP_INFO, info);
        if (parsed.requests.includes(P.NBD_INFO_NAME)) {
          reply(option, P.NBD_REP_INFO, Buffer.concat([Buffer.from([0, P.NBD_INFO_NAME]), Buffer.from(exp.name, 'utf8')]));
        }
        const sizes = Buffer.alloc(14);
        sizes.writeUInt16BE(P.NBD_INFO_BLOCK_SIZE, 0);
        sizes.writeUInt32BE(P.MIN_BLOCK, 2);
        sizes.writeUInt32BE(P.PREFERRED_BLOCK, 6);
        sizes.writeUInt32BE(P.MAX_PAYLOAD, 10);
        reply(option, P.NBD_REP_INFO, sizes);
        reply(option, P.NBD_REP_ACK);
        if (option === P.NBD_OPT_GO) return { exp, socket, reader, structured, contexts: contextsFor === parsed.name || (contextsFor !== null && host.findExport(contextsFor) === exp) ? contexts : [], fd: -1, drained: [] };
        break;
      }
      case P.NBD_OPT_STRUCTURED_REPLY:
        if (length !== 0) reply(option, P.NBD_REP_ERR_INVALID, withMessage('STRUCTURED_REPLY takes no data'));
        else if (structured) reply(option, P.NBD_REP_ERR_INVALID, withMessage('structured replies already negotiated'));
        else { structured = true; reply(option, P.NBD_REP_ACK); }
        break;
      case P.NBD_OPT_LIST_META_CONTEXT:
      case P.NBD_OPT_SET_META_CONTEXT: {
        const parsed = parseMetaRequest(data);
        if (!parsed) { reply(option, P.NBD_REP_ERR_INVALID, withMessage('malformed meta context request')); break; }
        if (option === P.NBD_OPT_SET_META_CONTEXT && !structured) {
          reply(option, P.NBD_REP_ERR_INVALID, withMessage('SET_META_CONTEXT needs structured replies first'));
          break;
        }
        if (!host.findExport(parsed.name)) { reply(option, P.NBD_REP_ERR_UNKNOWN, withMessage(`export '${parsed.name}' not found`)); break; }
        const names = matchContexts(parsed.queries, option === P.NBD_OPT_LIST_META_CONTEXT);
        for (const name of names) {
          reply(option, P.NBD_REP_META_CONTEXT, Buffer.concat([u32(P.CONTEXT_ID[name]), Buffer.from(name, 'utf8')]));
        }
        if (option === P.NBD_OPT_SET_META_CONTEXT) {
          contexts = names.map((n) => P.CONTEXT_ID[n]);
          contextsFor = parsed.name;
        }
        reply(option, P.NBD_REP_ACK);
        break;
      }
      case P.NBD_OPT_STARTTLS: {
        if (!host.tls) { reply(option, P.NBD_REP_ERR_UNSUP, withMessage('TLS is not configured on this server')); break; }
        if (secured) { reply(option, P.NBD_REP_ERR_INVALID, withMessage('TLS is already negotiated')); break; }
        if (length !== 0) { reply(option, P.NBD_REP_ERR_INVALID, withMessage('STARTTLS takes no data')); break; }
        reply(option, P.NBD_REP_ACK);
        if (reader.detach() > 0) throw new ProtocolClose('client sent data before the TLS handshake');
        const secure = new tls.TLSSocket(socket, {
          isServer: true,
          secureContext: host.tls.context,
          requestCert: host.tls.verifyClient,
          rejectUnauthorized: host.tls.verifyClient,
        });
        await new Promise<void>((resolve, reject) => {
          secure.once('secure', () => resolve());
          secure.once('error', (e) => reject(new ProtocolClose(`TLS handshake failed: ${e.message}`)));
          secure.once('close', () => reject(new ProtocolClose('TLS handshake failed: connection closed')));
        });
        secure.on('error', () => undefined);
        socket = secure;
        reader = new ByteReader(secure);
        secured = true;
        break;
      }
      default:
        reply(option, P.NBD_REP_ERR_UNSUP, withMessage(`option ${option} is not supported`));
    }
  }
}

function transmissionFlags(exp: ServedExport): number {
  let f = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_SEND_FUA
    | P.NBD_FLAG_SEND_DF | P.NBD_FLAG_SEND_CACHE
    // Every connection to an export goes through the one open chain in this process, and a flush
    // fsyncs the one top file: all connections see one disk.
    | P.NBD_FLAG_CAN_MULTI_CONN;
  // Trim and write-zeroes are offered only where they can succeed (as qemu-nbd does): a read-only
  // export would answer them with EPERM, which a client that trusts the flags never expects.
  if (exp.readOnly) f |= P.NBD_FLAG_READ_ONLY;
  else f |= P.NBD_FLAG_SEND_TRIM | P.NBD_FLAG_SEND_WRITE_ZEROES;
  return f;
}

function parseInfoRequest(data: Buffer): { name: string; requests: number[] } | null {
  if (data.length < 6) return null;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > P.MAX_STRING || 4 + nameLength + 2 > data.length) return null;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 4 + nameLength + 2 + 2 * count) return null;
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(data.readUInt16BE(4 + nameLength + 2 + 2 * i));
  return { name, requests };
}

function parseMetaRequest(data: Buffer): { name: string; queries: string[] } | null {
  if (data.length < 8) return null;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > P.MAX_STRING || 4 + nameLength + 4 > data.length) return null;
  const name = data.toString('utf8', 4, 4 + nameLength);
  const count = data.readUInt32BE(4 + nameLength);
  let pos = 8 + nameLength;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (pos + 4 > data.length) return null;
    const n = data.readUInt32BE(pos);
    if (n > P.MAX_STRING || pos + 4 + n > data.length) return null;
    queries.push(data.toString('utf8', pos + 4, pos + 4 + n));
    pos += 4 + n;
  }
  return pos === data.length ? { name, queries } : null;
}

const ALL_CONTEXTS = [P.META_BASE_ALLOCATION, P.META_ALLOCATION_DEPTH];

/** Contexts named by the queries; LIST also takes a bare namespace (`base:`, `qemu:`) and no query as "all". */
function matchContexts(queries: string[], list: boolean): string[] {
  if (list && queries.length === 0) return ALL_CONTEXTS;
  const out = new Set<string>();
  for (const q of queries) {
    for (const c of ALL_CONTEXTS) {
      if (q === c || (list && c.startsWith(q) && q.endsWith(':'))) out.add(c);
    }
  }
  return ALL_CONTEXTS.filter((c) => out.has(c));
}

interface Request {
  flags: number;
  type: number;
  handle: Buffer;
  /** Past 2^53 it is only known to be out of range. */
  offset: number;
  length: number;
  payload: Buffer | null;
}

class NbdError extends Error {
  constructor(readonly errno: number, message: string) { super(message); }
}

async function transmit(socket: Socket, reader: ByteReader, s: Negotiated, host: ConnectionHost): Promise<void> {
  let inFlight = 0;
  let inFlightBytes = 0;
  let waiter: (() => void) | null = null;
  const pending = new Set<Promise<void>>();
  const wake = () => { const f = waiter; waiter = null; if (f) f(); };
  socket.on('drain', wake);
  socket.on('close', wake);
  const longReads = new Semaphore(MAX_POOLED_READS);
  // Room for a request costing `cost` reply bytes: always when nothing is outstanding (one request
  // up to the maximum is served), else only within the budget.
  // Output under the socket's high-water mark counts as none: no 'drain' would announce its going.
  const unsent = () => (socket.writableLength >= socket.writableHighWaterMark ? socket.writableLength : 0);
  const blocked = (cost: number) => inFlight >= MAX_IN_FLIGHT
    || ((inFlight > 0 || unsent() > 0) && inFlightBytes + unsent() + cost > MAX_BUFFERED_REPLY_BYTES);

  try {
    for (;;) {
      while (socket.writable && blocked(0)) await new Promise<void>((r) => { waiter = r; });
      // Replies have nowhere to go: read no more requests, start no more disk reads.
      if (!socket.writable) break;
      let head: Buffer;
      try {
        head = await reader.read(P.REQUEST_HEADER_SIZE);
      } catch (e) {
        if (e instanceof StreamEnded) break;
        throw e;
      }
      if (head.readUInt32BE(0) !== P.NBD_REQUEST_MAGIC) throw new ProtocolClose('request without the request magic: the stream is out of step');
      const big = head.readBigUInt64BE(16);
      const req: Request = {
        flags: head.readUInt16BE(4),
        type: head.readUInt16BE(6),
        handle: Buffer.from(head.subarray(8, 16)),
        offset: big > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(big),
        length: head.readUInt32BE(24),
        payload: null,
      };
      if (req.type === P.NBD_CMD_WRITE && req.length > P.MAX_PAYLOAD) {
        // Keep the stream in step without holding the payload, then refuse the request.
        await reader.skip(req.length);
        sendError(socket, s, req, P.NBD_EINVAL, `write of ${req.length} bytes is over the maximum ${P.MAX_PAYLOAD}`);
        continue;
      }
      const cost = req.type === P.NBD_CMD_READ && req.length <= P.MAX_PAYLOAD ? req.length
        : req.type === P.NBD_CMD_WRITE ? req.length : 0;
      // Wait for room before taking in a write's payload or starting a read.
      while (socket.writable && blocked(cost)) await new Promise<void>((r) => { waiter = r; });
      if (req.type === P.NBD_CMD_WRITE) req.payload = await reader.read(req.length);
      if (req.type === P.NBD_CMD_DISC) break;
      if (!socket.writable) break;
      inFlight++;
      inFlightBytes += cost;
      const p = handle(socket, s, req, host, longReads).catch((e) => host.log(`request failed: ${(e as Error).message}`)).finally(() => {
        inFlight--;
        inFlightBytes -= cost;
        pending.delete(p);
        wake();
      });
      pending.add(p);
    }
    // DISC or EOF: let the requests already read finish (and reply) before closing.
    await Promise.all([...pending]);
  } finally {
    socket.off('drain', wake);
    socket.off('close', wake);
  }
}

/** Counts permits; waiters are served in order. */
class Semaphore {
  private queue: Array<() => void> = [];
  constructor(private free: number) {}
  async acquire(): Promise<void> {
    if (this.free > 0) { this.free--; return; }
    await new Promise<void>((r) => this.queue.push(r));
  }
  release(): void {
    const next = this.queue.shift();
    if (next) next();
    else this.free++;
  }
}

function errnoOf(e: unknown): number {
  if (e instanceof NbdError) return e.errno;
  if (isDiskImageError(e)) {
    if (e.code === 'EREADONLY') return P.NBD_EPERM;
    if (e.code === 'ERANGE') return P.NBD_EINVAL;
    if (e.code === 'ESHUTDOWN') return P.NBD_ESHUTDOWN;
  }
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') return P.NBD_ENOSPC;
  if (code === 'ENOMEM') return P.NBD_ENOMEM;
  if (code === 'EPERM' || code === 'EACCES' || code === 'EROFS') return P.NBD_EPERM;
  if (/ENOSPC|no space left/i.test((e as Error)?.message ?? '')) return P.NBD_ENOSPC;
  return P.NBD_EIO;
}

function checkRange(exp: ServedExport, req: Request): void {
  if (req.offset + req.length > exp.virtualSize) {
    throw new NbdError(P.NBD_EINVAL, `${P.commandName(req.type)} at ${req.offset}+${req.length} is past the end of the disk (${exp.virtualSize} bytes)`);
  }
}

function checkWritable(exp: ServedExport, req: Request): void {
  if (exp.readOnly) throw new NbdError(P.NBD_EPERM, `${P.commandName(req.type)} on a read-only export`);
}

async function handle(socket: Socket, s: Negotiated, req: Request, host: ConnectionHost, longReads: Semaphore): Promise<void> {
  const exp = s.exp;
  const trace = host.trace;
  try {
    switch (req.type) {
      case P.NBD_CMD_READ: {
        if (req.length > P.MAX_PAYLOAD) throw new NbdError(P.NBD_EINVAL, `read of ${req.length} bytes is over the maximum ${P.MAX_PAYLOAD}`);
        checkRange(exp, req);
        let yielded = false;
        if (s.fd >= 0 && req.length >= SENDFILE_MIN) {
          // Straight from the file needs the socket's queue empty: wait for it to go to the kernel
          // (a large reply queued means 'drain' will come), or let the loop hand it over.
          if (socket.writableLength > 0) {
            if (socket.writableNeedDrain) await new Promise<void>((r) => s.drained.push(r));
            else await new Promise<void>((r) => setImmediate(r));
            yielded = true;
          }
          if (!socket.writable) return;
          if (await sendFromFile(socket, s, req, host)) {
            trace?.record(exp.name, 'read', req.offset, req.length, exp.topName);
            return;
          }
        }
        let extents: MapExtent[] | null = null;
        if (s.structured && req.length >= SPARSE_READ_MIN) {
          const map = await exp.map(req.offset, req.length);
          if (map.some((e) => !e.data) && map.length <= MAX_READ_CHUNKS) extents = map;
        }
        const long = req.length > POOLED_READ_MIN;
        if (long) await longReads.acquire();
        // A long read made synchronously holds the loop while the client empties the socket. If
        // replies are waiting for room in it, let the loop hand them over first: one reply then goes
        // out while the next is read, instead of all reads, then all sends.
        else if (!yielded && req.length >= LARGE_REPLY && socket.writableLength > 0) await new Promise<void>((r) => setImmediate(r));
        let data: Buffer;
        try {
          // The client may have gone while this read waited: then there is nothing to read for.
          if (!socket.writable) return;
          data = takeBuffer(req.length);
          try {
            if (!extents) await exp.read(req.offset, data);
            else {
              for (const e of extents) {
                if (e.data) await exp.read(e.start, data.subarray(e.start - req.offset, e.start - req.offset + e.length));
              }
            }
          } catch (e) {
            giveBack(data);
            throw e;
          }
        } finally {
          if (long) longReads.release();
        }
        trace?.record(exp.name, 'read', req.offset, req.length, exp.topName);
        if (extents) sendSparseRead(socket, req, data, extents);
        else sendRead(socket, s, req, data);
        return;
      }
      case P.NBD_CMD_WRITE: {
        checkWritable(exp, req);
        checkRange(exp, req);
        const layer = await exp.write(req.offset, req.payload!, (req.flags & P.NBD_CMD_FLAG_FUA) !== 0);
        trace?.record(exp.name, 'write', req.offset, req.length, layer);
        sendSimple(socket, req, 0);
        return;
      }
      case P.NBD_CMD_FLUSH:
        await exp.flush();
        trace?.record(exp.name, 'flush', req.offset, req.length, exp.topName);
        sendSimple(socket, req, 0);
        return;
      case P.NBD_CMD_TRIM:
        // After a trim the client may assume nothing about the range's contents; the chain keeps
        // what it holds (a differencing layer cannot give sectors back to its parent's view).
        checkWritable(exp, req);
        checkRange(exp, req);
        trace?.record(exp.name, 'trim', req.offset, req.length, exp.topName);
        if (req.flags & P.NBD_CMD_FLAG_FUA) await exp.flush();
        sendSimple(socket, req, 0);
        return;
      case P.NBD_CMD_WRITE_ZEROES: {
        checkWritable(exp, req);
        checkRange(exp, req);
        if (req.flags & P.NBD_CMD_FLAG_FAST_ZERO) throw new NbdError(P.NBD_ENOTSUP, 'fast zeroing is not supported');
        const layer = await exp.writeZeroes(req.offset, req.length, (req.flags & P.NBD_CMD_FLAG_NO_HOLE) !== 0, (req.flags & P.NBD_CMD_FLAG_FUA) !== 0);
        trace?.record(exp.name, 'zero', req.offset, req.length, layer);
        sendSimple(socket, req, 0);
        return;
      }
      case P.NBD_CMD_CACHE:
        checkRange(exp, req);
        sendSimple(socket, req, 0);
        return;
      case P.NBD_CMD_BLOCK_STATUS: {
        if (!s.structured || s.contexts.length === 0) throw new NbdError(P.NBD_EINVAL, 'BLOCK_STATUS needs structured replies and a meta context');
        if (req.length === 0) throw new NbdError(P.NBD_EINVAL, 'BLOCK_STATUS of length 0');
        checkRange(exp, req);
        await sendBlockStatus(socket, s, req);
        return;
      }
      default:
        throw new NbdError(P.NBD_EINVAL, `unknown command ${req.type}`);
    }
  } catch (e) {
    const errno = errnoOf(e);
    if (!(e instanceof NbdError)) host.log(`${P.commandName(req.type)} ${req.offset}+${req.length} failed: ${(e as Error).message}`);
    sendError(socket, s, req, errno, (e as Error).message);
  }
}

/**
 * Read replies this long or longer go straight from the image file to the socket (sendfile) where
 * one file run holds the range: the kernel passes page-cache pages to the socket instead of copying
 * every byte into a buffer and out of it again. Shorter ones gain nothing over a read and a batched
 * writev (two syscalls instead of one and a quarter).
 */
const SENDFILE_MIN = 64 * 1024;
/**
 * The send buffer asked of the kernel for each connection (it doubles it, up to net.core.wmem_max:
 * 4 MiB here): Linux's default 208 KiB is less than one of nbdcopy's 256 KiB replies, so each took
 * two sends and a wake-up in between, and a sendfile reply stopped half way.
 */
const SEND_BUFFER = 2 * 1024 * 1024;

/** Read replies sent from image files so far, and how many of them stopped part way (the socket full): for tests and profiling. */
export const sentFromFile = { replies: 0, partial: 0 };

/** The descriptor of a plain (not TLS) socket for sendfile replies, its send buffer enlarged; -1 when there is none. */
function directFd(socket: Socket): number {
  if (socket instanceof tls.TLSSocket || !sendFileAvailable()) return -1;
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return -1;
  setSendBuffer(fd, SEND_BUFFER);
  return fd;
}

/**
 * Sends a read reply straight from the image file when one file run holds the whole range and
 * nothing is queued on the socket (the reply would overtake it); false when it sent nothing (reply
 * through a buffer then). Where the socket fills up part way, the rest is read and queued on the
 * stream at once, before any other reply can be.
 */
async function sendFromFile(socket: Socket, s: Negotiated, req: Request, host: ConnectionHost): Promise<boolean> {
  let header: Buffer;
  if (s.structured) {
    header = Buffer.allocUnsafe(28);
    P.structuredReplyHeader(P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_OFFSET_DATA, req.handle, 8 + req.length).copy(header, 0);
    header.writeBigUInt64BE(BigInt(req.offset), 20);
  } else {
    header = P.simpleReplyHeader(0, req.handle);
  }
  let replied = false;
  await s.exp.sendFrom(req.offset, req.length, (fd, position) => {
    if (!socket.writable || socket.writableLength > 0) return 0;
    const sent = sendReply(s.fd, header, fd, position, req.length);
    if (sent <= 0) return 0;
    replied = true;
    sentFromFile.replies++;
    if (sent === header.length + req.length) return req.length;
    sentFromFile.partial++;
    const dataSent = Math.max(0, sent - header.length);
    const rest = Buffer.allocUnsafe(req.length - dataSent);
    try {
      for (let done = 0; done < rest.length;) {
        const n = readSync(fd, rest, done, rest.length - done, position + dataSent + done);
        if (n === 0) throw new Error('the file ended');
        done += n;
      }
    } catch (e) {
      // Part of this reply is out: the stream cannot carry anything else.
      host.log(`read ${req.offset}+${req.length} failed part way through its reply: ${(e as Error).message}; closing the connection`);
      socket.destroy();
      return dataSent;
    }
    write(socket, sent < header.length ? [header.subarray(sent), rest] : [rest]);
    return req.length;
  });
  return replied;
}

/** Replies queued on a corked socket since it was last flushed. */
const corked = new WeakMap<Socket, number>();
/**
 * Replies per writev at most. One turn of the event loop can finish all of a client's queue (32
 * 4 KiB writes); holding every reply to its end left the client idle meanwhile, then the server
 * idle while the client answered the burst. Four per writev keeps both busy (30,000 4 KiB writes at
 * QD32, 6 interleaved runs: median 2.45 s vs 4.2 s) at a quarter of the syscalls of one each.
 */
const REPLIES_PER_WRITEV = 4;
/**
 * A reply carrying this much data leaves at once, not held for three more: it fills most of the
 * socket's buffer (208 KiB on Linux) alone, so batching saves no syscall, only delays the client.
 * Sequential reads, 1 GiB by nbdcopy over one connection, 7 interleaved runs: 1.20x qemu-nbd's time
 * with this and the yield in handle(), 1.65x without (server CPU alike), load 4.7.
 */
const LARGE_REPLY = 64 * 1024;

/**
 * Queues a reply. Replies finished in the same turn of the event loop leave together, up to
 * REPLIES_PER_WRITEV per writev: the socket is corked at the first, flushed every
 * REPLIES_PER_WRITEV replies and uncorked once the turn's other completions have queued theirs.
 */
function write(socket: Socket, parts: Buffer[], done?: () => void): void {
  if (!socket.writable) { done?.(); return; }
  let queued = corked.get(socket);
  if (queued === undefined) {
    queued = 0;
    socket.cork();
    setImmediate(() => {
      corked.delete(socket);
      socket.uncork();
    });
  }
  parts.forEach((p, i) => socket.write(p, i === parts.length - 1 && done ? () => done() : undefined));
  if (++queued >= REPLIES_PER_WRITEV || parts[parts.length - 1].length >= LARGE_REPLY) {
    queued = 0;
    socket.uncork();
    socket.cork();
  }
  corked.set(socket, queued);
}

/**
 * Read buffers of the sizes clients use over and over (nbdcopy's 256 KiB, qemu's 2 MiB) are reused
 * once their reply has left, instead of allocated per request: large allocations and their garbage
 * were a tenth of the time of a sequential read.
 */
const POOLED_MIN = 64 * 1024;
const POOL_PER_SIZE = 64;
const pool = new Map<number, Buffer[]>();
/** All pooled buffers together, at most: a pool is for reuse, not a store of every size ever read. */
const POOL_MAX_BYTES = 48 * 1024 * 1024;
let pooledBytes = 0;

function takeBuffer(length: number): Buffer {
  if (length >= POOLED_MIN) {
    const free = pool.get(length);
    const b = free?.pop();
    if (b) { pooledBytes -= b.length; return b; }
  }
  return Buffer.allocUnsafe(length);
}

function giveBack(b: Buffer): void {
  if (b.length < POOLED_MIN || b.length > P.MAX_PAYLOAD || pooledBytes + b.length > POOL_MAX_BYTES) return;
  let free = pool.get(b.length);
  if (!free) {
    if (pool.size >= 16) return; // a client cycling through odd sizes gets no pool
    free = [];
    pool.set(b.length, free);
  }
  if (free.length < POOL_PER_SIZE) { free.push(b); pooledBytes += b.length; }
}

function sendSimple(socket: Socket, req: Request, error: number): void {
  write(socket, [P.simpleReplyHeader(error, req.handle)]);
}

function sendRead(socket: Socket, s: Negotiated, req: Request, data: Buffer): void {
  const release = () => giveBack(data);
  if (!s.structured) {
    write(socket, [P.simpleReplyHeader(0, req.handle), data], release);
    return;
  }
  if (data.length === 0) {
    write(socket, [P.structuredReplyHeader(P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, req.handle, 0)]);
    return;
  }
  const offset = Buffer.allocUnsafe(8);
  offset.writeBigUInt64BE(BigInt(req.offset));
  write(socket, [P.structuredReplyHeader(P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_OFFSET_DATA, req.handle, 8 + data.length), offset, data], release);
}

/** A structured read reply in chunks: the data of held ranges, a hole chunk for each range none holds. */
function sendSparseRead(socket: Socket, req: Request, data: Buffer, extents: MapExtent[]): void {
  const parts: Buffer[] = [];
  extents.forEach((e, i) => {
    const flags = i === extents.length - 1 ? P.NBD_REPLY_FLAG_DONE : 0;
    const at = Buffer.allocUnsafe(e.data ? 8 : 12);
    at.writeBigUInt64BE(BigInt(e.start));
    if (e.data) {
      const from = e.start - req.offset;
      parts.push(P.structuredReplyHeader(flags, P.NBD_REPLY_TYPE_OFFSET_DATA, req.handle, 8 + e.length), at, data.subarray(from, from + e.length));
    } else {
      at.writeUInt32BE(e.length, 8);
      parts.push(P.structuredReplyHeader(flags, P.NBD_REPLY_TYPE_OFFSET_HOLE, req.handle, 12), at);
    }
  });
  write(socket, parts, () => giveBack(data));
}

function sendError(socket: Socket, s: Negotiated, req: Request, errno: number, message: string): void {
  // Structured replies are required for READ and BLOCK_STATUS once negotiated; a simple reply
  // does for the rest (as qemu's server does).
  if (s.structured && (req.type === P.NBD_CMD_READ || req.type === P.NBD_CMD_BLOCK_STATUS)) {
    const msg = Buffer.from(message.slice(0, 200), 'utf8');
    const body = Buffer.alloc(6 + msg.length);
    body.writeUInt32BE(errno, 0);
    body.writeUInt16BE(msg.length, 4);
    msg.copy(body, 6);
    write(socket, [P.structuredReplyHeader(P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_ERROR, req.handle, body.length), body]);
  } else {
    sendSimple(socket, req, errno);
  }
}

async function sendBlockStatus(socket: Socket, s: Negotiated, req: Request): Promise<void> {
  const exp = s.exp;
  const length = Math.min(req.length, BLOCK_STATUS_SPAN);
  const extents = await exp.map(req.offset, length);
  const one = (req.flags & P.NBD_CMD_FLAG_REQ_ONE) !== 0;
  const chunks: Buffer[] = [];
  s.contexts.forEach((id, i) => {
    const value = id === P.CONTEXT_ID[P.META_BASE_ALLOCATION]
      ? (e: { data: boolean }) => (e.data ? 0 : P.NBD_STATE_HOLE | P.NBD_STATE_ZERO)
      // qemu:allocation-depth: 0 where no layer holds the range, else 1 for the top, 2 for its parent…
      : (e: { data: boolean; depth: number }) => (e.data ? e.depth + 1 : 0);
    const runs: Array<[number, number]> = [];
    for (const e of extents) {
      const v = value(e);
      const last = runs[runs.length - 1];
      if (last && last[1] === v) last[0] += e.length;
      else {
        if (runs.length >= MAX_DESCRIPTORS || (one && runs.length === 1)) break;
        runs.push([e.length, v]);
      }
    }
    const body = Buffer.alloc(4 + 8 * runs.length);
    body.writeUInt32BE(id, 0);
    runs.forEach(([len, v], k) => {
      body.writeUInt32BE(len, 4 + 8 * k);
      body.writeUInt32BE(v, 8 + 8 * k);
    });
    const last = i === s.contexts.length - 1;
    chunks.push(P.structuredReplyHeader(last ? P.NBD_REPLY_FLAG_DONE : 0, P.NBD_REPLY_TYPE_BLOCK_STATUS, req.handle, body.length), body);
  });
  write(socket, chunks);
}
