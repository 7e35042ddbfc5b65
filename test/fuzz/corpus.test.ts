// Every image of the malformed corpus, with its expected outcome in info, map/read, check and the CLI.
import { strict as assert } from 'assert';
import * as path from 'path';
import { checkImage } from '../../src/chain/check';
import { describeImage } from '../../src/chain/info';
import { buildCorpus, CheckExpectation, Corpus } from './corpus';
import { runCli, tempDir } from '../helpers/util';
import { matchError, outcome, readAll } from './corpusChecks';

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
        const info = await outcome(() => describeImage(c.image));
        if (c.info === 'ok') {
          if (!info.ok) throw new Error(`info: expected success, got ${(info.error as Error)?.message}`);
          const warnings = (info.value as { warnings: string[] }).warnings;
          for (const w of c.warnings ?? []) assert.ok(warnings.some((x) => w.test(x)), `info warnings lack ${w}: ${JSON.stringify(warnings)}`);
        } else {
          if (info.ok) throw new Error('info: expected an error, it succeeded');
          matchError(info.error, c.info, c.image, 'info');
        }

        const read = await outcome(() => readAll(c.image));
        if (c.read === 'ok') {
          if (!read.ok) throw new Error(`map/read: expected success, got ${(read.error as Error)?.message}`);
        } else {
          if (read.ok) throw new Error('map/read: expected an error, it succeeded');
          matchError(read.error, c.read, c.image, 'map/read');
        }

        const check = await outcome(() => checkImage(c.image));
        if ('code' in c.check) {
          if (check.ok) throw new Error(`check: expected an error, it reported ${JSON.stringify(check.value)}`);
          matchError(check.error, c.check, c.image, 'check');
        } else {
          const x = c.check as CheckExpectation;
          if (!check.ok) throw new Error(`check: expected a report, it threw ${(check.error as Error)?.message}`);
          const r = check.value as { ok: boolean; problems: Array<{ severity: string; structure: string; offset: number; message: string }> };
          assert.equal(r.ok, x.ok, `check ok: ${JSON.stringify(r.problems)}`);
          for (const h of x.has) {
            assert.ok(r.problems.some((p) => p.severity === h.severity && p.structure === h.structure && (h.offset === undefined || p.offset === h.offset) && h.message.test(p.message)),
              `check lacks ${h.severity} ${h.structure}@${h.offset} ${h.message}: ${JSON.stringify(r.problems)}`);
          }
        }
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
