// The VM harness itself, against qemu-nbd: the guest boots, writes its file system and patterns
// over NBD into a qcow2 overlay, and the host reads back exactly what the plan says, while the
// overlay's backing file stays untouched. What boot.test.ts relies on, proved with the reference.
import { strict as assert } from 'assert';
import { createHash } from 'crypto';
import { readFileSync } from 'fs';
import * as path from 'path';
import { sh, tempDir } from '../helpers/util';
import { startQemuNbd } from './nbdServers';
import { bootGuest, makePlan, requireVm, verifyDisk } from './vm';

const sha256 = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

describe('VM harness (qemu-system-x86_64 over qemu-nbd)', function () {
  this.timeout(900_000);
  const DISK = 64 << 20;
  let t: ReturnType<typeof tempDir>;
  before(function () { requireVm(this); t = tempDir('diskimg-vm-'); });
  after(() => t?.cleanup());

  it('the guest writes its file system and patterns into a qcow2 overlay; the backing file is unchanged', async () => {
    const base = path.join(t.dir, 'base.qcow2');
    const overlay = path.join(t.dir, 'overlay.qcow2');
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(DISK)]);
    // Data the guest does not overwrite (between its file system and its first pattern... and
    // inside the range its file system will cover), so the overlay must read through to it.
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -P 0xab ${DISK / 2 + (5 << 20)} 65536`, '-c', 'write -P 0xcd 0 1024', base]);
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, overlay]);
    const before = sha256(base);
    const plan = makePlan(1, DISK);
    const server = await startQemuNbd(overlay, 'qcow2', path.join(t.dir, 'nbd.sock'));
    let boot;
    try {
      boot = await bootGuest({ nbdUrl: server.url, plan, workDir: path.join(t.dir, 'guest'), timeoutMs: 600_000 });
    } finally {
      await server.stop();
    }
    console.log(`    guest booted, wrote and powered off in ${boot.seconds.toFixed(1)} s`);
    assert.equal(sha256(base), before, 'the backing file changed');
    const flat = path.join(t.dir, 'flat.raw');
    sh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', overlay, flat]);
    assert.deepEqual(verifyDisk(flat, plan), []);
    const untouched = readFileSync(flat).subarray(DISK / 2 + (5 << 20), DISK / 2 + (5 << 20) + 65536);
    assert.ok(untouched.equals(Buffer.alloc(65536, 0xab)), 'a range the guest did not write lost the base data');
    // The checker can fail: the base (without the guest's writes) matches none of the plan.
    const baseFlat = path.join(t.dir, 'base.raw');
    sh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', base, baseFlat]);
    const problems = verifyDisk(baseFlat, plan);
    assert.equal(problems.filter((p) => p.startsWith('pattern')).length, plan.writes.length);
    for (const f of plan.files) assert.ok(problems.some((p) => p.includes(`/${f.name}`)), `no problem reported for /${f.name}`);
  });
});
