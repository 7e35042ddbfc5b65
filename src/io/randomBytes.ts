import { closeSync, openSync, readSync } from 'fs';
import type * as CryptoModule from 'crypto';

/**
 * n bytes from the kernel's random source: /dev/urandom read with fs (already loaded), where it
 * exists, and crypto's randomBytes elsewhere. crypto is not in Node's start-up snapshot; loading it
 * compiles ~17 internal modules, 5-7 ms of every writing command (new UUIDs, lock files, VHDX's
 * DataWriteGuid), for 12-16 bytes that /dev/urandom gives in under 1 ms. Both are the kernel's
 * CSPRNG on Linux.
 */
export function randomBytes(n: number): Buffer {
  const out = Buffer.alloc(n);
  let fd = -1;
  try {
    fd = openSync('/dev/urandom', 'r');
    let got = 0;
    while (got < n) {
      const r = readSync(fd, out, got, n - got, null);
      if (r <= 0) throw new Error('short read');
      got += r;
    }
    return out;
  } catch {
    return (require('crypto') as typeof CryptoModule).randomBytes(n);
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
