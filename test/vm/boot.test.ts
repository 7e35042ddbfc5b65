// A real emulator on `diskimg serve`: qemu-system-x86_64 boots Debian's kernel with an initramfs
// whose /init makes an ext2 file system on /dev/vda (an undo session over a dynamic VHD, reached
// by its NBD URL), copies files into it, writes raw patterns past it, syncs and powers off. Then
// the server is stopped with SIGTERM: --on-exit discard must leave the base byte-identical;
// --on-exit merge must leave the base holding exactly what the guest wrote (the disk as the
// guest saw it just before the stop), with the patterns at their offsets and e2fsprogs' debugfs
// reading the files from an export of the base.
import { strict as assert } from 'assert';
import { mkdirSync, readdirSync, readFileSync } from 'fs';
import * as path from 'path';
import { cliOk, runCli, tempDir } from '../helpers/util';
import { run, sha, startServe } from '../serve/helpers';
import { bootGuest, makeBaseWithKeptData, makePlan, requireVm, verifyDisk } from './vm';

describe('a real emulator on diskimg serve (undo session over a dynamic VHD)', function () {
  this.timeout(900_000);
  const DISK = 64 << 20;
  let t: ReturnType<typeof tempDir>;
  before(function () { requireVm(this); t = tempDir('diskimg-vmboot-'); });
  after(() => t?.cleanup());

  for (const onExit of ['discard', 'merge'] as const) {
    it(`--session --on-exit ${onExit}`, async () => {
      const dir = path.join(t.dir, onExit);
      mkdirSync(dir);
      const base = path.join(dir, 'base.vhd');
      // Data already in the base where the guest writes nothing: it must read through the session
      // and survive the merge.
      const kept = await makeBaseWithKeptData(base, DISK);
      const before = sha(base);
      const plan = makePlan(onExit === 'merge' ? 2 : 3, DISK);

      const srv = await startServe([base, '--session', '--on-exit', onExit, '--socket', path.join(dir, 'nbd.sock')]);
      const guestView = path.join(dir, 'guest-view.raw');
      try {
        const boot = await bootGuest({ nbdUrl: srv.url, plan, workDir: path.join(dir, 'guest'), timeoutMs: 600_000 });
        console.log(`    guest booted, wrote and powered off in ${boot.seconds.toFixed(1)} s`);
        assert.equal(sha(base), before, 'the base was written during the session');
        // The disk as the guest left it, read over NBD from the still-running server.
        const copy = run('nbdcopy', [srv.url, guestView]);
        assert.equal(copy.code, 0, copy.stderr);
      } finally {
        const code = await srv.stop('SIGTERM');
        assert.equal(code, 0, `serve exited ${code}: ${srv.stderr()}`);
      }
      assert.deepEqual(verifyDisk(guestView, plan), [], 'the guest\'s view over NBD');
      assert.ok(readFileSync(guestView).subarray(kept.offset, kept.offset + kept.data.length).equals(kept.data), 'base data did not read through the session');
      const left = readdirSync(dir).filter((f) => f !== 'guest' && f !== 'nbd.sock');
      assert.deepEqual(left.sort(), ['base.vhd', 'guest-view.raw'], `files left next to the base: ${left.join(', ')}`);

      if (onExit === 'discard') {
        assert.equal(sha(base), before, 'discard changed the base');
      } else {
        assert.equal(runCli(['check', base]).code, 0, 'the merged base does not check clean');
        const exported = path.join(dir, 'base-export.raw');
        cliOk(['export', base, exported]);
        assert.equal(sha(exported), sha(guestView), 'the merged base differs from what the guest wrote');
        assert.deepEqual(verifyDisk(exported, plan), []);
      }
    });
  }
});
