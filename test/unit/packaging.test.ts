// `npx vsce package`, the command every extension author types, must work as it is and build the
// same .vsix as `npm run package`; the README it ships links its screenshots by absolute https URLs
// (VS Code's extension page allows only https and data images), each naming a file in docs/.
import { strict as assert } from 'assert';
import { execFileSync, spawnSync } from 'child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'fs';
import * as path from 'path';
import { ROOT, tempDir } from '../helpers/util';

const unzipList = (vsix: string) => execFileSync('zipinfo', ['-1', vsix]).toString().trim().split('\n').sort();
const unzipFile = (vsix: string, name: string) => execFileSync('unzip', ['-p', vsix, name.replace(/[[\]]/g, '\\$&')], { maxBuffer: 1 << 28 });

const ADDON = 'extension/native/build/Release/seek_hole.node';
const MiB = 1024 * 1024;

describe('packaging: npx vsce package and npm run package', function () {
  this.timeout(10 * 60 * 1000);
  const t = tempDir('diskimg-vsix-');
  after(() => t.cleanup());

  /**
   * The unpacked .vsix, as VS Code installs it: its bundles find the addon next to them (the CLI
   * bundle and the extension's share one loader, src/io/seekHole.ts, resolved from dist/) and tell a
   * raw parent's holes from its data; with the addon removed they fall back to "all data", cleanly.
   */
  function addonCheck(vsix: string): void {
    const unpacked = path.join(t.dir, 'unpacked');
    rmSync(unpacked, { recursive: true, force: true });
    mkdirSync(unpacked);
    execFileSync('unzip', ['-q', vsix, '-d', unpacked]);
    const ext = path.join(unpacked, 'extension');
    // The addon's name (src/io/seekHole.ts, through src/io/nativeAddon.ts adding `.node`); the map below proves it loads.
    assert.match(readFileSync(path.join(ext, 'dist', 'extension.js'), 'utf8'), /["']seek_hole["']/, 'the extension bundle loads the addon');
    // A 16 MiB sparse raw base with 3 MiB of data (1 MiB at 2 MiB, 2 MiB at 10 MiB) under a child.
    const base = path.join(t.dir, 'base.img');
    execFileSync('truncate', ['-s', String(16 * MiB), base]);
    const fd = openSync(base, 'r+');
    try {
      writeSync(fd, Buffer.alloc(MiB, 1), 0, MiB, 2 * MiB);
      writeSync(fd, Buffer.alloc(2 * MiB, 2), 0, 2 * MiB, 10 * MiB);
    } finally {
      closeSync(fd);
    }
    const child = path.join(t.dir, 'child.vhd');
    rmSync(child, { force: true });
    const cli = path.join(ext, 'dist', 'cli.js');
    execFileSync(process.execPath, [cli, 'child', base, child]);
    const dataBytes = () => {
      const r = spawnSync(process.execPath, [cli, 'map', '--json', child], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      const map = JSON.parse(r.stdout);
      return (Array.isArray(map) ? map : map.extents).filter((e: { data: boolean }) => e.data).reduce((s: number, e: { length: number }) => s + e.length, 0);
    };
    const holes = () => String(JSON.parse(execFileSync(process.execPath, [cli, 'info', '--json', child]).toString()).chain[1].holes);
    assert.match(holes(), /SEEK_DATA/, 'the shipped CLI loaded the shipped addon');
    assert.equal(dataBytes(), 3 * MiB);
    rmSync(path.join(unpacked, ADDON));
    assert.match(holes(), /not detected/);
    assert.equal(dataBytes(), 16 * MiB, 'without the addon every byte is data');
  }

  it('both build the same .vsix, whose README shows its screenshots by https URLs of files in the repository', () => {
    const plain = path.join(t.dir, 'plain.vsix');
    const script = path.join(t.dir, 'script.vsix');
    execFileSync('npx', ['vsce', 'package', '--out', plain], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    execFileSync('npm', ['run', 'package', '--', '--out', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    const names = unzipList(plain);
    assert.deepEqual(unzipList(script), names);
    for (const n of names) assert.ok(unzipFile(plain, n).equals(unzipFile(script, n)), `${n} is the same in both`);
    assert.ok(names.includes('extension/dist/extension.js') && names.includes('extension/readme.md'));
    assert.ok(!names.some((n) => n.includes('node_modules') || n.startsWith('extension/src/')), names.join(', '));

    // The addons built at install ship (vscode:prepublish builds them when missing): SEEK_HOLE, and
    // sendfile for the sessions the extension serves.
    assert.ok(names.includes(ADDON), `${ADDON} in the .vsix`);
    assert.ok(names.includes('extension/native/build/Release/send_file.node'), 'send_file.node in the .vsix');
    assert.ok(names.includes('extension/native/build/Release/fast_exit.node'), 'fast_exit.node in the .vsix');
    addonCheck(plain);

    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    const readme = unzipFile(plain, 'extension/readme.md').toString();
    const images = [...readme.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)].map((m) => m[1]);
    const source = [...readFileSync(path.join(ROOT, 'README.md'), 'utf8').matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)].map((m) => m[1]);
    assert.equal(images.length, source.length);
    assert.ok(images.length >= 8, `${images.length} screenshots`);
    for (const [i, url] of images.entries()) {
      assert.equal(url, `${pkg.vsce.baseImagesUrl}/${source[i]}`);
      assert.ok(existsSync(path.join(ROOT, source[i])), `${source[i]} exists`);
    }
  });
});
