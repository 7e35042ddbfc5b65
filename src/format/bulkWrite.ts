import { ImageFile } from '../io/imageFile';

/** Bytes per write call on the bulk paths (see writeInChunks). */
const WRITE_CHUNK = 128 * 1024;

/**
 * Writes `parts` back to back from `at`, no buffered call longer than 128 KiB. The kernel sizes
 * page-cache folios by the write call, and large ones cost this VM several times the system time:
 * a 2 MiB write at a 2 MiB aligned offset 4-5x that of calls of 1 MiB or less (512 MiB: 1.2-1.7 s
 * against 0.3 s); later (2026-12-03, load 2.4-3.0, 512 MiB into a new file, page aligned) 1 MiB
 * calls took 1.97-2.10 s, 512 KiB 1.14-2.11 s, 256 KiB 0.18-0.39 s, 128 KiB 0.20-0.21 s, 64 KiB
 * 0.22-0.60 s, and VHD's unaligned 2 MiB calls 0.92-1.83 s.
 */
export async function writeInChunks(file: ImageFile, parts: Buffer[], at: number): Promise<void> {
  // A direct write (see setDirectWrites) builds no page-cache folios: the larger the call, the better.
  if (parts.length <= 1024 && file.takesDirect(parts, at)) {
    await file.writevAt(parts, at);
    return;
  }
  let batch: Buffer[] = [];
  let batchAt = at;
  let batchLen = 0;
  const flush = async () => {
    if (batch.length === 1) await file.writeAt(batch[0], batchAt);
    else if (batch.length > 1) await file.writevAt(batch, batchAt);
    batchAt += batchLen;
    batch = [];
    batchLen = 0;
  };
  for (const part of parts) {
    for (let done = 0; done < part.length;) {
      const n = Math.min(part.length - done, WRITE_CHUNK - batchLen);
      batch.push(part.subarray(done, done + n));
      batchLen += n;
      done += n;
      if (batchLen === WRITE_CHUNK) await flush();
    }
  }
  await flush();
}

/**
 * Writes `parts` back to back from `at`, each run of parts that can go direct (see
 * ImageFile.setDirectWrites) in one call and each run of the others in one buffered call.
 */
export async function writeParts(file: ImageFile, parts: Buffer[], at: number): Promise<void> {
  let run: Buffer[] = [];
  let runAt = at;
  let runDirect = false;
  let pos = at;
  const flush = async () => {
    if (run.length === 0) return;
    if (runDirect) await file.writevAt(run, runAt);
    else await writeInChunks(file, run, runAt);
    run = [];
  };
  for (const part of parts) {
    if (part.length === 0) continue;
    const direct = file.takesDirect([part], pos);
    if (run.length > 0 && (direct !== runDirect || run.length >= 1024)) await flush();
    if (run.length === 0) {
      runAt = pos;
      runDirect = direct;
    }
    run.push(part);
    pos += part.length;
  }
  await flush();
}
