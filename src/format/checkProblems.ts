/**
 * Findings of `check`, format-neutral: each format's scan adds what is wrong with its structures,
 * the chain layer adds what is wrong with the parent link, and the list is finished once.
 */
export type Severity = 'error' | 'warning';

/** One finding: the on-disk structure, the absolute byte offset of the field concerned, and what is wrong. */
export interface CheckProblem {
  severity: Severity;
  structure: string;
  offset: number;
  message: string;
}

/** `diskimg check --json` prints `{ok, problems}`; `ok` is false when any problem is an error. */
export interface CheckResult {
  ok: boolean;
  problems: CheckProblem[];
}

/** At most this many problems of one kind are listed; the rest are summed up in one more line. */
const MAX_PER_KIND = 100;

/** Collects problems, at most MAX_PER_KIND of a kind (a hostile table must not make a million lines). */
export class ProblemList {
  readonly list: CheckProblem[] = [];
  private readonly counts = new Map<string, number>();

  add(severity: Severity, structure: string, offset: number, message: string, kind = `${severity}:${structure}:${message.replace(/\d+/g, '#')}`): void {
    const n = (this.counts.get(kind) ?? 0) + 1;
    this.counts.set(kind, n);
    if (n <= MAX_PER_KIND) this.list.push({ severity, structure, offset, message });
  }
  error(structure: string, offset: number, message: string, kind?: string): void { this.add('error', structure, offset, message, kind); }
  /** True once `kind` has as many problems as are listed: callers may skip building detailed text. */
  full(kind: string): boolean { return (this.counts.get(kind) ?? 0) >= MAX_PER_KIND; }
  warning(structure: string, offset: number, message: string, kind?: string): void { this.add('warning', structure, offset, message, kind); }

  /** The list sorted by offset, with one summary line per kind that overflowed. */
  finish(): CheckProblem[] {
    const out = [...this.list];
    for (const [kind, n] of this.counts) {
      if (n <= MAX_PER_KIND) continue;
      const first = out.find((p) => `${p.severity}:${p.structure}:${p.message.replace(/\d+/g, '#')}` === kind) ?? out[out.length - 1];
      out.push({ severity: first.severity, structure: first.structure, offset: first.offset, message: `${n - MAX_PER_KIND} more problems like the ones above are not listed` });
    }
    return out.sort((x, y) => x.offset - y.offset);
  }

  result(): CheckResult {
    const problems = this.finish();
    return { ok: !problems.some((x) => x.severity === 'error'), problems };
  }
}
