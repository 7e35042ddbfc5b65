// The certificate authorities a TLS client of ours (https:// and nbds:// parents) trusts.
//
// Node parses the bundle NODE_EXTRA_CA_CERTS names when every process starts, before any of our
// code runs: ~70 ms of CPU for Debian's 220 KB bundle, on every command. The `diskimg` executable
// (dist/cli.js, a sh/JS polyglot) therefore starts Node without that variable and passes the name
// on as DISKIMG_EXTRA_CA_CERTS; the bundle is read here, on the first TLS connection only.
import { readFileSync } from 'fs';
import type * as TlsModule from 'tls';

let memo: { file: string; ca: Array<string | Buffer> | undefined } | null = null;

/**
 * The `ca` option for a TLS client: DISKIMG_CA_FILE alone when it is set (the user chose the
 * authority), else Node's own roots plus the launcher's extra bundle, else undefined (Node's
 * defaults, which already hold NODE_EXTRA_CA_CERTS when Node was started with it).
 */
export function trustedCa(env: NodeJS.ProcessEnv = process.env): Array<string | Buffer> | undefined {
  if (env.DISKIMG_CA_FILE) return [readFileSync(env.DISKIMG_CA_FILE)];
  const file = env.DISKIMG_EXTRA_CA_CERTS;
  if (!file) return undefined;
  if (memo?.file === file) return memo.ca;
  const tls = require('tls') as typeof TlsModule;
  let ca: Array<string | Buffer> | undefined;
  try {
    ca = [...tls.rootCertificates, readFileSync(file)];
  } catch (e) {
    // What Node itself does with an unreadable NODE_EXTRA_CA_CERTS: warn, keep its own roots.
    process.emitWarning(`Ignoring extra certs from \`${file}\`, load failed: ${(e as Error).message}`);
    ca = undefined;
  }
  memo = { file, ca };
  return ca;
}
