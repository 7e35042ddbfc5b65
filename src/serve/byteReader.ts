import { Socket } from 'net';

/** The peer closed the stream (or it broke) before the bytes asked for arrived. */
export class StreamEnded extends Error {
  constructor() { super('connection closed'); }
}

/**
 * Exact-length reads from a socket. Incoming data is buffered only up to what the current read needs
 * plus a small read-ahead; past that the socket is paused, so a client that sends faster than the
 * server works (or sends garbage) never makes it buffer more than one maximum request.
 */
export class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private want = 0;
  private waiter: (() => void) | null = null;
  private ended = false;
  private static readonly READ_AHEAD = 256 * 1024;

  private readonly onData: (d: Buffer) => void;
  private readonly onEnd: () => void;

  constructor(private readonly socket: Socket) {
    this.onData = (d: Buffer) => {
      this.chunks.push(d);
      this.buffered += d.length;
      if (this.buffered >= Math.max(this.want, ByteReader.READ_AHEAD)) socket.pause();
      this.wake();
    };
    socket.on('data', this.onData);
    const end = () => { this.ended = true; this.wake(); };
    this.onEnd = end;
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  private wake(): void {
    const w = this.waiter;
    if (w && (this.buffered >= this.want || this.ended)) {
      this.waiter = null;
      w();
    }
  }

  /**
   * Stops reading the socket (STARTTLS: the TLS layer takes it over); returns bytes that arrived
   * but were not read (a client that sends before the TLS reply breaks the protocol).
   */
  detach(): number {
    this.socket.removeListener('data', this.onData);
    this.socket.removeListener('end', this.onEnd);
    this.socket.removeListener('close', this.onEnd);
    this.socket.removeListener('error', this.onEnd);
    return this.buffered;
  }

  /** Resolves with exactly n bytes, or rejects with StreamEnded. */
  async read(n: number): Promise<Buffer> {
    while (this.buffered < n) {
      if (this.ended) throw new StreamEnded();
      this.want = n;
      if (this.socket.isPaused()) this.socket.resume();
      await new Promise<void>((resolve) => { this.waiter = resolve; });
    }
    this.want = 0;
    const out = this.take(n);
    if (this.buffered < ByteReader.READ_AHEAD && this.socket.isPaused() && !this.ended) this.socket.resume();
    return out;
  }

  /** Reads and drops n bytes without holding more than a chunk of them. */
  async skip(n: number): Promise<void> {
    while (n > 0) {
      const k = Math.min(n, 1024 * 1024);
      await this.read(k);
      n -= k;
    }
  }

  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (first && first.length === n) {
      this.chunks.shift();
      return first;
    }
    if (first && first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const c = this.chunks[0];
      const k = Math.min(c.length, n - done);
      c.copy(out, done, 0, k);
      done += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }
}
