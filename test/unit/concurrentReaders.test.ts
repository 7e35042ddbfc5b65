import { strict as assert } from 'assert';
import { spawn } from 'child_process';
import { writeFileSync } from 'fs';
import * as path from 'path';
import { CLI, cliJson, cliOk, ROOT, tempDir } from '../helpers/util';

function run(args: string[], opts: { input?: (stdin: NodeJS.WritableStream) => Promise<void> } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d) => { stdout += d; });
  p.stderr.on('data', (d) => { stderr += d; });
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => p.on('exit', (code) => resolve({ code, stdout, stderr })));
  if (opts.input) opts.input(p.stdin).then(() => p.stdin.end());
  else p.stdin.end();
  return done;
}

describe('readers while another process appends blocks', function () {
  this.timeout(120000);
  let t: ReturnType<typeof tempDir>;
  before(() => { t = tempDir('diskimg-conc-'); });
  after(() => t.cleanup());

  for (const kind of ['dynamic', 'differencing'] as const) {
    it(`${kind}: reader processes never crash and see consistent data; the final image reads back exactly`, async () => {
      const base = path.join(t.dir, `${kind}-base.vhd`);
      cliOk(['create', base, '--size', '16M', '--block-size', '4K']);
      let image = base;
      if (kind === 'differencing') {
        cliOk(['write', base, '--offset', '0'], Buffer.alloc(1 << 20, 0x11));
        image = path.join(t.dir, `${kind}-child.vhd`);
        cliOk(['child', base, image]);
      }
      const stop = path.join(t.dir, `${kind}.stop`);
      const total = 6 << 20;
      const piece = 48 * 1024 + 100; // not block aligned: partial sectors and block boundaries
      const expected = Buffer.alloc(total);
      for (let i = 0; i < total; i++) expected[i] = (i * 7 + (i >> 12)) & 0xff;
      const reader = () => run(['--require', 'tsx/cjs', path.join('test', 'concurrency', 'reader.ts'), image, stop, '100000']);
      const readers = [reader(), reader()];
      // Let the readers start (tsx compile) before the writer begins.
      await new Promise((r) => setTimeout(r, 1500));
      const writer = run([CLI, 'write', image, '--offset', '4096'], {
        input: async (stdin) => {
          for (let off = 0; off < total; off += piece) {
            const ok = stdin.write(expected.subarray(off, Math.min(total, off + piece)));
            if (!ok) await new Promise((r) => stdin.once('drain', r));
            await new Promise((r) => setTimeout(r, 3));
          }
        },
      });
      const w = await writer;
      assert.equal(w.code, 0, w.stderr);
      writeFileSync(stop, '');
      const results = await Promise.all(readers);
      for (const r of results) {
        assert.equal(r.code, 0, `reader crashed: ${r.stderr}`);
        const summary = JSON.parse(r.stdout);
        assert.ok(summary.rounds > 3, `reader made ${summary.rounds} rounds`);
        // Typed errors are allowed to describe a torn view, but none is expected with this write order.
        assert.deepEqual(summary.messages, [], `reader saw: ${summary.messages.join(' | ')}`);
      }
      const back = cliOk(['read', image, '--offset', '4096', '--length', String(total)]);
      assert.ok(back.equals(expected), 'final contents');
      const info = cliJson(['info', image]);
      assert.ok(info.allocatedBlocks >= total / 4096);
    });
  }
});
