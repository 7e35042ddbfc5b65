import { realpathSync } from 'fs';
import { DiskImage } from '../format/diskImage';
import { openImage, OpenOptions } from '../format/registry';

interface Entry {
  image: Promise<DiskImage>;
  refs: number;
}

/**
 * Read-only ancestors shared by every chain the server opens: an image that is the parent of several
 * exports (or of several snapshots of one) is opened once. Each chain gets its own view of the shared
 * image whose close() only drops a reference; the file is closed when the last chain lets go.
 */
export class SharedLayers {
  private readonly entries = new Map<string, Entry>();

  /** For openChain's `openAncestor`. */
  readonly open = async (path: string, options: OpenOptions = {}): Promise<DiskImage> => {
    const key = realKey(path);
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { image: openImage(path, { rawFallback: options.rawFallback }), refs: 0 };
      this.entries.set(key, entry);
      entry.image.catch(() => this.entries.delete(key));
    }
    entry.refs++;
    let image: DiskImage;
    try {
      image = await entry.image;
    } catch (e) {
      entry.refs--;
      throw e;
    }
    // A view that reads through to the shared image (its fields and methods, `this` included) but
    // whose close() is its own: the prototype link costs nothing on the read path.
    const view = Object.create(image) as DiskImage;
    let closed = false;
    Object.defineProperty(view, 'close', {
      value: async () => {
        if (closed) return;
        closed = true;
        await this.release(key);
      },
    });
    return view;
  };

  /** Real paths of the images open now. */
  openPaths(): string[] {
    return [...this.entries.keys()];
  }

  private async release(key: string): Promise<void> {
    const entry = this.entries.get(key);
    if (!entry) return;
    if (--entry.refs > 0) return;
    this.entries.delete(key);
    await (await entry.image).close();
  }
}

export function realKey(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}
