// Test certificates for the TLS tests (serve over TLS, remote parents behind TLS servers).
import { spawnSync } from 'child_process';
import { mkdirSync, writeFileSync } from 'fs';
import * as path from 'path';

function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/**
 * In `dir`: ca-cert.pem, server-cert.pem/server-key.pem for 127.0.0.1 and client-cert.pem/client-key.pem,
 * both signed by that CA (the names qemu and nbdkit expect); with `otherCa`, also an unrelated CA in
 * `dir/other/` for the refusal cases.
 */
export function makeCerts(dir: string, options: { otherCa?: boolean } = {}): void {
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', '/CN=diskimg test CA'], dir);
  writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server-key.pem', '-out', 'server.csr', '-subj', '/CN=127.0.0.1'], dir);
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', 'server-cert.pem', '-days', '2', '-extfile', 'server.ext'], dir);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client-key.pem', '-out', 'client.csr', '-subj', '/CN=client'], dir);
  openssl(['x509', '-req', '-in', 'client.csr', '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', 'client-cert.pem', '-days', '2'], dir);
  if (!options.otherCa) return;
  mkdirSync(path.join(dir, 'other'));
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other/ca-key.pem', '-out', 'other/ca-cert.pem', '-days', '2', '-subj', '/CN=another CA'], dir);
}
