import type * as CryptoModule from 'crypto';

/**
 * crypto's randomBytes, with crypto required on first use: it is not in Node's start-up snapshot,
 * and loading it compiles ~15 internal modules that reading an image never needs (see README,
 * "Where the time goes"). Only writers call it (new UUIDs, lock files).
 */
export function randomBytes(n: number): Buffer {
  return (require('crypto') as typeof CryptoModule).randomBytes(n);
}
