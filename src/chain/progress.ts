/** Progress and cancellation for long operations, as plain callbacks (the CLI draws a bar, the editor a notification). */
export interface OperationOptions {
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export { throwIfCancelled } from '../format/errors';
