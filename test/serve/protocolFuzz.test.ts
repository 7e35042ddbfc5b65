// The protocol fuzzer (protocolFuzz.ts) against live servers: first qemu-nbd, to show it flags
// nothing the protocol allows, then `diskimg serve` over a dynamic base and a differencing child.
// Seeded and bounded; DISKIMG_FUZZ_SEED / DISKIMG_FUZZ_CASES re-run or widen a campaign.
import { strict as assert } from 'assert';
import { createHash } from 'crypto';
import { readFileSync, writeFileSync } from 'fs';
import * as path from 'path';
import { openChain } from '../../src/chain/chain';
import { createChild } from '../../src/chain/createChild';
import { createImage } from '../../src/format/vhd/create';
import { rng, randomBytes, runCli, tempDir } from '../helpers/util';
import { startQemuNbd } from '../vm/nbdServers';
import { startServe } from './helpers';
import { FuzzResult, runProtocolFuzz } from './protocolFuzz';

const SEED = Number(process.env.DISKIMG_FUZZ_SEED ?? 20261202);
const CASES = Number(process.env.DISKIMG_FUZZ_CASES ?? 2500);
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

function summary(r: FuzzResult): string {
  return `${r.cases} cases, good client ${r.goodReads} reads / ${r.goodWrites} writes verified, server RSS ${r.rssStartMb.toFixed(0)} -> ${r.rssMaxMb.toFixed(0)} MB`;
}

describe('NBD protocol fuzzer against live servers', function () {
  this.timeout(300_000);
  const t = tempDir('diskimg-protofuzz-');
  after(() => t.cleanup());

  it('qemu-nbd (the reference): nothing flagged', async () => {
    const raw = path.join(t.dir, 'ref.raw');
    writeFileSync(raw, randomBytes(rng(SEED), 16 << 20));
    const srv = await startQemuNbd(raw, 'raw', path.join(t.dir, 'ref.sock'));
    try {
      // qemu-nbd keeps up to 16 requests of up to 32 MiB in flight per connection: allow for it.
      const r = await runProtocolFuzz({ socket: srv.socket, serverPid: srv.proc.pid!, seed: SEED, cases: Math.ceil(CASES / 4), rssLimitMb: 768 });
      console.log(`      ${summary(r)}`);
      assert.deepEqual(r.problems, []);
    } finally {
      await srv.stop();
    }
  });

  it('diskimg serve over a chain: bad connections get errors or are closed, the rest keep working, memory stays bounded', async () => {
    const r0 = rng(SEED + 1);
    const base = path.join(t.dir, 'base.vhd');
    const child = path.join(t.dir, 'child.vhd');
    await createImage(base, { size: 16 << 20, type: 'dynamic', blockSize: 512 * 1024, exactSize: true });
    let c = await openChain(base, { writable: true });
    await c.write(3_000_000, randomBytes(r0, 5_000_000));
    await c.close();
    await createChild(base, child);
    c = await openChain(child, { writable: true });
    await c.write(9_000_001, randomBytes(r0, 3_000_000));
    await c.close();
    const baseBefore = sha(base);
    const srv = await startServe([child, '--socket', path.join(t.dir, 's.sock')]);
    let r: FuzzResult | undefined;
    try {
      r = await runProtocolFuzz({ socket: path.join(t.dir, 's.sock'), serverPid: srv.proc.pid!, seed: SEED, cases: CASES, rssLimitMb: 256 });
      console.log(`      ${summary(r)}`);
    } finally {
      assert.equal(await srv.stop('SIGTERM'), 0, srv.stderr());
    }
    assert.deepEqual(r.problems, []);
    assert.equal(sha(base), baseBefore, 'the parent changed');
    assert.equal(runCli(['check', child]).code, 0, 'the child does not check clean after the campaign');
  });
});
