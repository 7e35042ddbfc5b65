import { CreateChildOptions, getFormat, openImage } from '../format/registry';

export type { CreateChildOptions } from '../format/registry';

/**
 * Creates a differencing child of `parentPath` in the parent's format: same size and block size,
 * the parent's identity and modification time, and locators that lead back to it.
 */
export async function createChild(parentPath: string, childPath: string, options: CreateChildOptions = {}): Promise<void> {
  const parent = await openImage(parentPath);
  try {
    await getFormat(parent.format).createChild(parent, childPath, options);
  } finally {
    await parent.close();
  }
}
