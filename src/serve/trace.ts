import { createWriteStream, WriteStream } from 'fs';

// 'snapshot' marks the instant a snapshot froze the top (`layer`: the frozen file), on the same
// clock as the requests, so the timeline places it exactly between the writes before and after.
export type TraceOp = 'read' | 'write' | 'trim' | 'zero' | 'flush' | 'snapshot';

/**
 * `--trace FILE`: one JSON object a line, appended as requests complete (the editor's write
 * timeline). Lines go through one buffered append stream, so tracing costs a string per request.
 */
export class TraceLog {
  private readonly out: WriteStream;
  private readonly start = process.hrtime.bigint();

  constructor(readonly path: string) {
    this.out = createWriteStream(path, { flags: 'a' });
    this.out.on('error', () => undefined);
  }

  record(exportName: string, op: TraceOp, offset: number, length: number, layer: string): void {
    const t = Number(process.hrtime.bigint() - this.start) / 1e9;
    this.out.write(`${JSON.stringify({ t: Math.round(t * 1e6) / 1e6, export: exportName, op, offset, length, layer })}\n`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.out.end(() => resolve()));
  }
}
