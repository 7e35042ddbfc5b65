import { CreateChildOptions, FORMATS, formatByExtension, getFormat, openImage } from '../format/registry';

export type { CreateChildOptions } from '../format/registry';

/**
 * Creates a differencing child of `parentPath` in the parent's format: same size and block size,
 * the parent's identity and modification time, and locators that lead back to it. A parent whose
 * format has no children of its own (raw: a plain file or block device) gets a child in the format
 * the child's name suggests, else the default (VHD, with vhd-util's nil parent UUID for raw). A child
 * named for a format that takes parents of any format (qcow2) is made in that format.
 */
export async function createChild(parentPath: string, childPath: string, options: CreateChildOptions = {}): Promise<void> {
  const parent = await openImage(parentPath, { rawFallback: true });
  try {
    const own = getFormat(parent.format);
    const named = formatByExtension(childPath);
    const format = named && named.name !== parent.format && named.foreignParents && named.createChild ? named
      : own.createChild ? own : [named, FORMATS[0]].find((f) => f?.createChild)!;
    await format.createChild!(parent, childPath, options);
  } finally {
    await parent.close();
  }
}
