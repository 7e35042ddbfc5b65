/**
 * Numbers and wire layouts of the NBD protocol (the NBD project's doc/proto.md), fixed newstyle
 * negotiation and the transmission phase with simple and structured replies. Everything on the
 * wire is big-endian.
 */

export const NBDMAGIC = Buffer.from('NBDMAGIC', 'latin1');
/** "IHAVEOPT": the option magic, sent by the server after NBDMAGIC and by the client before each option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** Magic that starts each option reply. */
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;

// Handshake flags (server) and client flags.
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// Options.
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;

// Option reply types.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const REP_ERR = 0x80000000;
export const NBD_REP_ERR_UNSUP = REP_ERR + 1;
export const NBD_REP_ERR_POLICY = REP_ERR + 2;
export const NBD_REP_ERR_INVALID = REP_ERR + 3;
export const NBD_REP_ERR_PLATFORM = REP_ERR + 4;
export const NBD_REP_ERR_TLS_REQD = REP_ERR + 5;
export const NBD_REP_ERR_UNKNOWN = REP_ERR + 6;
export const NBD_REP_ERR_SHUTDOWN = REP_ERR + 7;
export const NBD_REP_ERR_TOO_BIG = REP_ERR + 9;

// NBD_REP_INFO types.
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// Transmission flags.
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_CACHE = 1 << 10;

// Requests.
export const NBD_REQUEST_MAGIC = 0x25609513;
export const REQUEST_HEADER_SIZE = 28;
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// Replies.
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;

// Error values (fixed by the protocol, not the host's errno).
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// base:allocation flags.
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

export const META_BASE_ALLOCATION = 'base:allocation';
export const META_ALLOCATION_DEPTH = 'qemu:allocation-depth';
/** Context ids this server hands out (any non-zero 32-bit values would do). */
export const CONTEXT_ID: Record<string, number> = { [META_BASE_ALLOCATION]: 1, [META_ALLOCATION_DEPTH]: 2 };

/** Block size constraints advertised with NBD_INFO_BLOCK_SIZE. */
export const MIN_BLOCK = 1;
export const PREFERRED_BLOCK = 4096;
export const MAX_PAYLOAD = 32 * 1024 * 1024;
/** Longest option a client may send (names and queries are at most 4096 bytes each). */
export const MAX_OPTION_LENGTH = 64 * 1024;
/** Longest export or meta context name. */
export const MAX_STRING = 4096;

export function optionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(20 + data.length);
  b.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, 20);
  return b;
}

export function simpleReplyHeader(error: number, handle: Buffer): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  handle.copy(b, 8);
  return b;
}

/** Header of one structured reply chunk; `length` is the payload that follows. */
export function structuredReplyHeader(flags: number, type: number, handle: Buffer, length: number): Buffer {
  const b = Buffer.allocUnsafe(20);
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  handle.copy(b, 8);
  b.writeUInt32BE(length, 16);
  return b;
}

export function commandName(type: number): string {
  return ['READ', 'WRITE', 'DISC', 'FLUSH', 'TRIM', 'CACHE', 'WRITE_ZEROES', 'BLOCK_STATUS'][type] ?? `command ${type}`;
}
