// Every image of the malformed corpus, with its expected outcome in info, map/read, check and the CLI.
import { strict as assert } from 'assert';
import * as path from 'path';
import { buildCorpus, Corpus } from './corpus';
import { runCli, tempDir } from '../helpers/util';
import { expectCaseOutcome } from './corpusChecks';

describe('malformed corpus', function () {
  this.timeout(120000);
  let t: ReturnType<typeof tempDir>;
  let corpus: Corpus;
  before(async () => {
    t = tempDir('diskimg-corpus-');
    corpus = await buildCorpus(path.join(t.dir, 'corpus'));
  });
  after(() => t.cleanup());

  it('has at least 40 distinct broken images', () => {
    assert.ok(corpus.cases.length >= 40, `${corpus.cases.length} cases`);
    assert.equal(new Set(corpus.cases.map((c) => c.name)).size, corpus.cases.length);
  });

  it('each image: info, map/read and check give exactly the expected outcome', async () => {
    const failures: string[] = [];
    for (const c of corpus.cases) {
      try {
        await expectCaseOutcome(c, false);
      } catch (e) {
        failures.push(`${c.name} (${c.what}): ${(e as Error).message.split('\n').slice(0, 6).join(' | ')}`);
      }
    }
    assert.deepEqual(failures, []);
  });

  it('the CLI prints the same error as one line and exits 2 (check: 1 for problems, 0 clean)', () => {
    const failures: string[] = [];
    for (const c of corpus.cases) {
      const failing = c.read !== 'ok' ? { cmd: 'read', x: c.read } : null;
      try {
        if (failing) {
          const r = runCli([failing.cmd, c.image]);
          assert.equal(r.code, 2, r.stderr);
          assert.match(r.stderr, /^diskimg: [^\n]+\n$/);
          assert.match(r.stderr, failing.x.message);
          if (failing.x.structure !== undefined) assert.ok(r.stderr.trimEnd().endsWith(`(${failing.x.structure} at offset ${failing.x.offset})`), r.stderr);
        }
        const chk = runCli(['check', c.image, '--json']);
        if ('code' in c.check) assert.equal(chk.code, 2, chk.stderr);
        else assert.equal(chk.code, c.check.ok ? 0 : 1, chk.stderr + chk.stdout.toString());
      } catch (e) {
        failures.push(`${c.name}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    assert.deepEqual(failures, []);
  });
});
