import { realpathSync } from 'fs';
import * as nodePath from 'path';
import { CheckResult, ProblemList } from '../format/checkProblems';
import { DiskImage } from '../format/diskImage';
import { ImageFile } from '../io/imageFile';
import { detectFormat, FormatScan, getFormat, openImage, ParentLinkScan } from '../format/registry';
import { MAX_CHAIN_DEPTH } from './chain';
import { OperationOptions } from './progress';
import { resolveCandidates, resolveFrom, resolveParent } from './resolveParent';

export type { CheckProblem, CheckResult, Severity } from '../format/checkProblems';

/** A scan of one file: the format's findings about its structures plus the chain-level link checks. */
export interface ImageScan extends CheckResult {
  path: string;
  /** The format that scanned it (its planRepair takes `detail`). */
  format: string;
  detail: FormatScan;
}

function safeRealpath(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/** Checks one image file: its own structures and its link to its parent. Never throws on content. */
export async function checkImage(path: string, options: OperationOptions = {}): Promise<CheckResult> {
  const scan = await scanImage(path, options);
  return { ok: scan.ok, problems: scan.problems };
}

/**
 * Reads every structure of the file tolerantly (through its format's scan) and lists what is
 * wrong, then the parent link. Throws only when the file cannot be opened or is no image at all.
 */
export async function scanImage(path: string, options: OperationOptions = {}): Promise<ImageScan> {
  const format = await detectFormat(path);
  const file = await ImageFile.open(path);
  try {
    return await scanWith(format.name, path, file, options);
  } finally {
    await file.close();
  }
}

/** scanImage on a file already open, in a known format (repair scans under its write lock). */
export async function scanFile(format: string, path: string, file: ImageFile, options: OperationOptions = {}): Promise<ImageScan> {
  return scanWith(format, path, file, options);
}

async function scanWith(format: string, path: string, file: ImageFile, options: OperationOptions): Promise<ImageScan> {
  const detail = await getFormat(format).scan(path, file, options);
  if (detail.link) await checkParentLink(path, detail.link, detail.problems);
  return { ...detail.problems.result(), path, format, detail };
}

/** Chain-level checks of a differencing file's link: found, no loop, each locator, identity, time, size. */
async function checkParentLink(path: string, link: ParentLinkScan, p: ProblemList): Promise<void> {
  const resolution = resolveFrom(link.candidates);
  const at = link.linkLocation;
  if (!resolution.resolvedPath) {
    p.error(at.structure, at.offset, `parent '${link.name}' not found; tried ${resolution.tried.join('; ')}`);
    return;
  }
  const loop = await findParentLoop(path, resolution.resolvedPath);
  if (loop) p.error(at.structure, at.offset, loop);
  // Each locator on its own: one that leads nowhere, or to another file, is stale (warning: the
  // parent was found through another way).
  const found = safeRealpath(resolution.resolvedPath);
  for (const source of link.candidates.sources) {
    const alone = resolveCandidates(source.candidates);
    if (!alone.resolvedPath) {
      p.warning(source.structure, source.offset, `${source.label} path '${source.raw}' does not lead to the parent (${alone.tried.join('; ')}); it was found via ${resolution.via}`);
    } else if (safeRealpath(alone.resolvedPath) !== found) {
      p.warning(source.structure, source.offset, `${source.label} path '${source.raw}' leads to ${alone.resolvedPath}, not to the parent ${resolution.resolvedPath} found via ${resolution.via}`);
    }
  }
  let parent: DiskImage;
  try {
    // A parent no format recognises is read as raw: the identity check below then says whether the child expects one.
    parent = await openImage(resolution.resolvedPath, { rawFallback: true });
  } catch (e) {
    p.error(at.structure, at.offset, `parent ${resolution.resolvedPath} (found via ${resolution.via}) cannot be opened: ${(e as Error).message}`);
    return;
  }
  try {
    const c = link.checkParent(parent);
    if (!c.idMatches) {
      p.error(c.idLocation.structure, c.idLocation.offset, `parent ${c.idName} ${c.expected} does not match ${resolution.resolvedPath} (${c.found})`);
    }
    if (c.timestampProblem) p.warning(c.timestampLocation.structure, c.timestampLocation.offset, c.timestampProblem);
    if (Math.ceil(parent.virtualSize / 512) * 512 !== link.virtualSize) {
      p.warning(link.sizeLocation.structure, link.sizeLocation.offset, `virtual size ${link.virtualSize} differs from the parent's ${parent.virtualSize}`);
    }
  } finally {
    await parent.close();
  }
}

/**
 * Follows the parents up from `parentPath`: a parent that is the image itself, or a chain that comes
 * back to an image already seen (A -> B -> A), can never be read. Links that break otherwise are left
 * to the check of the image concerned.
 */
async function findParentLoop(path: string, parentPath: string): Promise<string | null> {
  const real = (x: string) => {
    try { return realpathSync(x); } catch { return nodePath.resolve(x); }
  };
  const self = real(path);
  const seen = new Set([self]);
  let current = parentPath;
  for (let depth = 1; depth <= MAX_CHAIN_DEPTH; depth++) {
    const r = real(current);
    if (seen.has(r)) return depth === 1 && r === self ? `the parent ${current} is the image itself` : `parent chain loops back to ${current}`;
    seen.add(r);
    let img: DiskImage;
    try {
      img = await openImage(current, { rawFallback: true });
    } catch {
      return null;
    }
    try {
      if (img.diskType !== 'differencing') return null;
      const next = resolveParent(img).resolvedPath;
      if (!next) return null;
      current = next;
    } finally {
      await img.close();
    }
  }
  return `parent chain is deeper than ${MAX_CHAIN_DEPTH} images`;
}
