import { CreateChildOptions, formatByExtension, getFormat, openImage } from '../format/registry';

export type { CreateChildOptions } from '../format/registry';

/**
 * Creates a differencing child of `parentPath` in the parent's format (or in the format the child's
 * name asks for when that format takes parents of any format, as qcow2 does): same size and block size,
 * the parent's identity and modification time, and locators that lead back to it.
 */
export async function createChild(parentPath: string, childPath: string, options: CreateChildOptions = {}): Promise<void> {
  const parent = await openImage(parentPath);
  try {
    const named = formatByExtension(childPath);
    const format = named && named.name !== parent.format && named.foreignParents ? named : getFormat(parent.format);
    await format.createChild(parent, childPath, options);
  } finally {
    await parent.close();
  }
}
