// `npx vsce package`, the command every extension author types, must work as it is and build the
// same .vsix as `npm run package`; the README it ships links its screenshots by absolute https URLs
// (VS Code's extension page allows only https and data images), each naming a file in docs/.
import { strict as assert } from 'assert';
import { execFileSync } from 'child_process';
import { existsSync, readFileSync } from 'fs';
import * as path from 'path';
import { ROOT, tempDir } from '../helpers/util';

const unzipList = (vsix: string) => execFileSync('zipinfo', ['-1', vsix]).toString().trim().split('\n').sort();
const unzipFile = (vsix: string, name: string) => execFileSync('unzip', ['-p', vsix, name.replace(/[[\]]/g, '\\$&')], { maxBuffer: 1 << 28 });

describe('packaging: npx vsce package and npm run package', function () {
  this.timeout(10 * 60 * 1000);
  const t = tempDir('diskimg-vsix-');
  after(() => t.cleanup());

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
