// Every image of the qcow2 malformed corpus, with its expected outcome in info, map/read, check and
// the CLI, and the CLI's peak memory on each (no allocation sized by a hostile header).
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as path from 'path';
import { CorpusCase } from './corpus';
import { buildQcow2Corpus } from './qcow2Corpus';
import { CLI, runCli, tempDir } from '../helpers/util';
import { expectCaseOutcome } from './corpusChecks';

describe('qcow2 malformed corpus', function () {
  this.timeout(300000);
  let t: ReturnType<typeof tempDir>;
  let cases: CorpusCase[];
  before(async () => {
    t = tempDir('diskimg-qcow2-corpus-');
    cases = (await buildQcow2Corpus(path.join(t.dir, 'corpus'))).cases;
  });
  after(() => t.cleanup());

  it('has the cases the issue lists', () => {
    const names = cases.map((c) => c.name);
    for (const n of ['l1-size-past-file', 'l2-entry-into-header', 'compressed-into-header', 'refcount-order-7', 'cluster-bits-8', 'cluster-bits-22', 'backing-dotdot',
      'backing-json', 'backing-nbd', 'backing-http', 'backing-loop-self', 'backing-loop-pair', 'compressed-past-file']) assert.ok(names.includes(n), n);
    assert.equal(new Set(names).size, names.length);
  });

  it('each image: info, map/read and check give exactly the expected outcome', async () => {
    const failures: string[] = [];
    for (const c of cases) {
      try {
        await expectCaseOutcome(c, true);
      } catch (e) {
        failures.push(`${c.name} (${c.what}): ${(e as Error).message.split('\n').slice(0, 6).join(' | ')}`);
      }
    }
    assert.deepEqual(failures, []);
  });

  it('the CLI prints one line and exits 2 on a failing read, check exits 1, and no run peaks above 150 MB', () => {
    const failures: string[] = [];
    for (const c of cases) {
      try {
        // GNU time's %M: the peak resident set in KiB, of node running the whole command.
        const r = spawnSync('/usr/bin/time', ['-f', 'peak %M', process.execPath, CLI, 'read', c.image], { maxBuffer: 1 << 26 });
        const stderr = r.stderr.toString();
        const peak = Number(/peak (\d+)\s*$/.exec(stderr)?.[1]);
        assert.ok(peak > 0 && peak < 150 * 1024, `peak ${peak} KiB`);
        const message = stderr.replace(/(Command exited with non-zero status \d+\n)?peak \d+\s*$/, '');
        if (c.read === 'ok') assert.equal(r.status, 0, message);
        else {
          assert.equal(r.status, 2, message);
          assert.match(message, /^diskimg: [^\n]+\n$/);
          assert.match(message, c.read.message);
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
