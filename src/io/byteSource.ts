/**
 * Where an image's bytes come from when they are not a local file: a server. A format reads through
 * ImageFile, which reads through a ByteSource for a URL, so no format knows whether its bytes come
 * from a file, a device or a server. Remote sources are read-only, always.
 */
export interface ByteSource {
  /** The URL as given (shown in messages). */
  readonly location: string;
  /** `http`, `https`, `nbd`… */
  readonly kind: string;
  readonly size: number;
  /** What says the bytes are still the same ones (ETag or Last-Modified; empty when the server gives none). */
  readonly validator: string;
  /** Modification time the server reports, or null. */
  readonly mtime: Date | null;
  /** Fills `target` from `offset` (never past `size`); returns the bytes read. */
  read(offset: number, target: Uint8Array): Promise<number>;
  /**
   * Set by a cache over this source: true for a byte offset it already holds, so read-ahead does
   * not fetch it again.
   */
  isHeld?: (offset: number) => boolean;
  /**
   * Set by a cache over this source: called with each answer's bytes (from `offset`, in pieces) as
   * they arrive, read ahead or not, so the cache stores them from the buffer they were received
   * in. The source keeps the pieces unchanged until the promise settles. Sources that do not call
   * it leave storing to the cache's read.
   */
  onReceived?: (offset: number, pieces: Buffer[]) => Promise<void>;
  /**
   * True while the source keeps the bytes at `offset` in memory (read ahead or just received): a
   * cache reads them from the source then, not back from its file (written with O_DIRECT, so not
   * in the page cache: a disk read).
   */
  holds?(offset: number): boolean;
  /** A cache served `length` bytes at `offset` itself: the source may read ahead past them. */
  advise?(offset: number, length: number): void;
  /** Requests made to the server so far (the cache's tests and the bench count them). */
  readonly requests: number;
  close(): Promise<void>;
}

const REMOTE = /^(https?|nbds?|nbds?\+unix):\/\//i;

/** True for a parent given as a URL (`http://`, `https://`, `nbd://`, `nbds://`, `nbd+unix://`, `nbds+unix://`). */
export function isRemoteLocation(path: string): boolean {
  return REMOTE.test(path);
}

/** Per-location options for remote opens, set by the chain layer before it opens a remote parent. */
export interface RemoteOpenOptions {
  /** Sparse cache file next to the child (`.<child>.parent-cache`), or null for none. */
  cachePath: string | null;
}

const remoteOptions = new Map<string, RemoteOpenOptions>();

/**
 * Formats open files by path only; the chain layer says here, before opening a remote parent, which
 * cache file its reads go through.
 */
export function setRemoteOptions(location: string, options: RemoteOpenOptions): void {
  remoteOptions.set(location, options);
}

export function remoteOptionsFor(location: string): RemoteOpenOptions {
  return remoteOptions.get(location) ?? { cachePath: null };
}

/**
 * Remote reads are fetched (and cached) in aligned runs of this size: small reads of a chain become
 * >= 1 MiB requests. Here rather than in httpSource.ts so the cache can use it without loading the
 * HTTP client (and Node's http, https, net and tls) into commands that read no URL.
 */
export const HTTP_CHUNK = 1024 * 1024;
