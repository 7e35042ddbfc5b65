import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { existsSync } from 'fs';
import * as path from 'path';
import { codeServerModule } from '../helpers/codeServer';
import { ROOT, tempDir } from '../helpers/util';

describe('npm run demo (the README\'s first quick-start line)', function () {
  this.timeout(10 * 60 * 1000);

  it('generates the demo chain and serves it in code-server with the packaged extension', async () => {
    const t = tempDir('demo-');
    try {
      const port = await (await codeServerModule()).freePort();
      const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'demo.mjs'), '--smoke'], {
        env: { ...process.env, DEMO_DIR: t.dir, DEMO_PORT: String(port) }, encoding: 'utf8', timeout: 9 * 60 * 1000,
      });
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, new RegExp(`demo ok: http://127\\.0\\.0\\.1:${port}/\\?folder=`));
      assert.match(r.stdout, /chain \(3\):/);
      for (const f of ['base.vhd', 'child1.vhd', 'child2.vhd', 'sibling.vhd']) assert.ok(existsSync(path.join(t.dir, 'images', f)), f);
      assert.ok(existsSync(path.join(t.dir, 'code-server', 'extensions')), 'the extension was installed into the demo\'s code-server');
    } finally {
      t.cleanup();
    }
  });
});
