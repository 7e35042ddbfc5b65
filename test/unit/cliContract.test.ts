import { strict as assert } from 'assert';
import { writeFileSync } from 'fs';
import * as path from 'path';
import { cliJson, cliOk, runCli, tempDir } from '../helpers/util';

const INFO_KEYS = ['format', 'path', 'diskType', 'virtualSize', 'originalSize', 'chsSize', 'geometry', 'blockSize', 'uuid',
  'creatorApplication', 'creatorVersion', 'creatorHostOs', 'timestamp', 'footerChecksumValid', 'headerChecksumValid',
  'totalBlocks', 'allocatedBlocks', 'parent', 'chain', 'warnings'];

describe('diskimg CLI contract', function () {
  this.timeout(60000);
  let dir: string;
  let cleanup: () => void;
  before(() => ({ dir, cleanup } = tempDir('diskimg-cli-')));
  after(() => cleanup());

  function expectError(args: string[], pattern: RegExp, input?: Buffer) {
    const r = runCli(args, input);
    assert.equal(r.code, 2, `exit 2 for ${args.join(' ')}`);
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, `one line: ${r.stderr}`);
    assert.match(lines[0], /^diskimg: /);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.match(lines[0], pattern);
  }

  it('info --json has every field of the contract, with the right types', () => {
    const base = path.join(dir, 'base.vhd');
    const child = path.join(dir, 'child.vhd');
    cliOk(['create', base, '--size', '8M', '--block-size', '512K']);
    cliOk(['child', base, child]);
    const b = cliJson(['info', base]);
    const c = cliJson(['info', child]);
    for (const info of [b, c]) for (const k of INFO_KEYS) assert.ok(k in info, `has ${k}`);
    assert.equal(b.diskType, 'dynamic');
    assert.equal(b.blockSize, 512 * 1024);
    assert.equal(b.parent, null);
    assert.match(b.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(b.creatorApplication, 'dimg');
    assert.equal(b.creatorVersion, '1.0');
    assert.equal(c.diskType, 'differencing');
    assert.equal(c.virtualSize, b.virtualSize);
    assert.equal(c.blockSize, b.blockSize);
    assert.equal(c.parent.uuid, b.uuid);
    assert.equal(c.parent.name, 'base.vhd');
    assert.deepEqual(c.parent.locators, [{ platform: 'W2ru', path: '.\\base.vhd' }, { platform: 'W2ku', path: base }]);
    assert.equal(c.parent.resolvedPath, base);
    assert.deepEqual(c.chain, [{ path: child, diskType: 'differencing', uuid: c.uuid }, { path: base, diskType: 'dynamic', uuid: b.uuid }]);
    assert.deepEqual(c.warnings, []);
    assert.equal(c.totalBlocks, Math.ceil(c.virtualSize / (512 * 1024)));
    assert.equal(c.allocatedBlocks, 0);
  });

  it('a fixed image reports blockSize null and headerChecksumValid null', () => {
    const f = path.join(dir, 'fixed.vhd');
    cliOk(['create', f, '--size', '3M', '--type', 'fixed']);
    const i = cliJson(['info', f]);
    assert.equal(i.diskType, 'fixed');
    assert.equal(i.blockSize, null);
    assert.equal(i.headerChecksumValid, null);
  });

  it('errors: one line, file, structure and offset, exit 2', () => {
    expectError(['info', path.join(dir, 'missing.vhd')], /missing\.vhd: cannot open: no such file/);
    const junk = path.join(dir, 'junk.bin');
    writeFileSync(junk, Buffer.alloc(4096, 0x41));
    expectError(['info', junk], /junk\.bin: not a VHD: .*\(footer at offset 3584\)/);
    writeFileSync(path.join(dir, 'tiny.vhd'), Buffer.alloc(100));
    expectError(['info', path.join(dir, 'tiny.vhd')], /too small.*\(footer at offset 0\)/);
    expectError(['create', path.join(dir, 'nosize.vhd')], /size/);
    expectError(['create', path.join(dir, 'bad.vhd'), '--size', '12Q'], /not a size/);
    expectError(['create', path.join(dir, 'bad2.vhd'), '--size', '8M', '--block-size', '3000'], /power of two/);
    expectError(['frobnicate'], /unknown command/);
    const base = path.join(dir, 'e.vhd');
    cliOk(['create', base, '--size', '1M']);
    expectError(['create', base, '--size', '1M'], /already exists/);
    expectError(['read', base, '--offset', '99999999999'], /past the virtual size/);
    expectError(['write', base, '--offset', '1048000'], /past the virtual size/, Buffer.alloc(100000));
  });

  it('write from stdin and read to a file round-trip through the chain', () => {
    const base = path.join(dir, 'rw.vhd');
    const child = path.join(dir, 'rw-child.vhd');
    cliOk(['create', base, '--size', '4M']);
    cliOk(['write', base, '--offset', '0'], Buffer.alloc(3 * 1024 * 1024, 0x11));
    cliOk(['child', base, child]);
    cliOk(['write', child, '--offset', '100'], Buffer.from('hello, world'));
    const out = path.join(dir, 'rw.out');
    cliOk(['read', child, '--offset', '90', '--length', '30', '--output', out]);
    const got = require('fs').readFileSync(out);
    const want = Buffer.alloc(30, 0x11);
    Buffer.from('hello, world').copy(want, 10);
    assert.ok(got.equals(want));
    // The parent is untouched.
    assert.ok(cliOk(['read', base, '--offset', '90', '--length', '30']).equals(Buffer.alloc(30, 0x11)));
    // A dynamic block is all present once allocated: the base supplies both 2 MiB blocks whole.
    const map = cliJson(['map', child]);
    assert.deepEqual(map.slice(0, 2), [
      { start: 0, length: 512, depth: 0, data: true },
      { start: 512, length: 4 * 1024 * 1024 - 512, depth: 1, data: true },
    ]);
  });
});
