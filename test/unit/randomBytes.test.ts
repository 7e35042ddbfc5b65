// Random bytes for UUIDs, GUIDs and lock files come from /dev/urandom without loading crypto
// (17 internal modules, 5-7 ms of every writing command).
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { writeFileSync } from 'fs';
import * as path from 'path';
import { randomBytes } from '../../src/io/randomBytes';
import { CLI, tempDir } from '../helpers/util';

describe('randomBytes', () => {
  const t = tempDir('random-');

  it('gives the bytes asked for, different each call', () => {
    for (const n of [0, 1, 12, 16, 4096]) assert.equal(randomBytes(n).length, n);
    const seen = new Set<string>();
    for (let i = 0; i < 64; i++) seen.add(randomBytes(16).toString('hex'));
    assert.equal(seen.size, 64);
    // Not a constant byte pattern: 4 KiB of random bytes use most byte values.
    assert.ok(new Set(randomBytes(4096)).size > 200);
  });

  it('a writing command (create: a new UUID; child: a lock file) never loads crypto', () => {
    const probe = path.join(t.dir, 'modules.js');
    writeFileSync(probe, `process.on('exit', () => require('fs').writeSync(2, '\\nMODULES ' + process.moduleLoadList.join(',') + '\\n'));\n`);
    const loaded = (args: string[]) => {
      const r = spawnSync(process.execPath, ['-r', probe, CLI, ...args], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return r.stderr.split('\nMODULES ')[1].split(',');
    };
    const base = path.join(t.dir, 'base.vhdx');
    for (const args of [['create', base, '--size', '64M'], ['child', base, path.join(t.dir, 'child.avhdx')]]) {
      const mods = loaded(args);
      assert.ok(mods.includes('NativeModule fs'), 'the probe sees the module list');
      assert.ok(!mods.includes('NativeModule crypto'), `${args[0]} loaded crypto`);
    }
  });
});
