/**
 * The one error type the core throws for anything wrong with an image or a request. The message
 * names the file, what is wrong and, where it applies, the on-disk structure and its byte offset,
 * so the CLI can print it as one line and the editor as one sentence.
 */
export class DiskImageError extends Error {
  constructor(
    readonly file: string,
    readonly what: string,
    readonly structure?: string,
    readonly offset?: number,
    readonly code: string = 'EIMAGE',
  ) {
    super(DiskImageError.format(file, what, structure, offset));
    this.name = 'DiskImageError';
  }

  static format(file: string, what: string, structure?: string, offset?: number): string {
    const where = structure !== undefined
      ? offset !== undefined ? ` (${structure} at offset ${offset})` : ` (${structure})`
      : '';
    return `${file}: ${what}${where}`;
  }
}

/** Raised when an operation is cancelled through its AbortSignal; nothing is left half-done. */
export class CancelledError extends DiskImageError {
  constructor(file: string) {
    super(file, 'operation cancelled', undefined, undefined, 'ECANCELLED');
    this.name = 'CancelledError';
  }
}

export function isDiskImageError(e: unknown): e is DiskImageError {
  return e instanceof DiskImageError;
}

/** Throws CancelledError once `signal` is aborted (long operations call it between steps). */
export function throwIfCancelled(signal: AbortSignal | undefined, file: string): void {
  if (signal?.aborted) throw new CancelledError(file);
}
