import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { existsSync, readdirSync } from 'fs';
import * as path from 'path';
import { codeServerModule } from '../helpers/codeServer';
import { ROOT, tempDir } from '../helpers/util';

describe('npm run demo (the README\'s first quick-start line)', function () {
  this.timeout(10 * 60 * 1000);

  it('generates the demo chain, runs a demo session with a scripted guest (no QEMU), and serves it in code-server with the packaged extension', async () => {
    const t = tempDir('demo-');
    try {
      const port = await (await codeServerModule()).freePort();
      const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'demo.mjs'), '--smoke'], {
        env: { ...process.env, DEMO_DIR: t.dir, DEMO_PORT: String(port) }, encoding: 'utf8', timeout: 9 * 60 * 1000,
      });
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, new RegExp(`demo ok: http://127\\.0\\.0\\.1:${port}/\\?folder=`));
      assert.match(r.stdout, /chain \(3\):/);
      // The demo session took the scripted guest's writes and automatic snapshots (in its trace),
      // and stopping it left child2.vhd byte-identical (demo.mjs checks, and fails otherwise).
      const m = /demo session: (\d+) writes and (\d+) snapshot marks in the trace/.exec(r.stdout);
      assert.ok(m && Number(m[1]) >= 20 && Number(m[2]) >= 1, r.stdout);
      assert.match(r.stdout, /Demo session: nbd\+unix:\/\/\/\?socket=\S+ serves .*child2\.vhd as an undo session/);
      assert.deepEqual(readdirSync(path.join(t.dir, 'images')).filter((n) => n.includes('.session-')), [], 'no session layer is left');
      for (const f of ['base.vhd', 'child1.vhd', 'child2.vhd', 'sibling.vhd']) assert.ok(existsSync(path.join(t.dir, 'images', f)), f);
      assert.ok(existsSync(path.join(t.dir, 'code-server', 'extensions')), 'the extension was installed into the demo\'s code-server');
    } finally {
      t.cleanup();
    }
  });
});
