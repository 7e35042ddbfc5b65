/** CHS geometry as the VHD spec's appendix computes it from a size. */
export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

export const SECTOR_SIZE = 512;
const MAX_CHS_SECTORS = 65535 * 16 * 255;

export function geometryForSize(sizeBytes: number): Geometry {
  let totalSectors = Math.floor(sizeBytes / SECTOR_SIZE);
  if (totalSectors > MAX_CHS_SECTORS) totalSectors = MAX_CHS_SECTORS;
  let spt: number;
  let heads: number;
  let cth: number;
  if (totalSectors >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cth = Math.floor(totalSectors / spt);
  } else {
    spt = 17;
    cth = Math.floor(totalSectors / spt);
    heads = Math.max(Math.ceil(cth / 1024), 4);
    if (cth >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cth = Math.floor(totalSectors / spt);
    }
    if (cth >= heads * 1024) {
      spt = 63;
      heads = 16;
      cth = Math.floor(totalSectors / spt);
    }
  }
  return { cylinders: Math.floor(cth / heads), heads, sectorsPerTrack: spt };
}

export function chsSizeBytes(g: Geometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack * SECTOR_SIZE;
}

/**
 * The smallest size >= the request that CHS geometry represents exactly, so that tools which take
 * the size from CHS (qemu for most creators) and tools which take the footer's current size
 * (Hyper-V, VirtualBox) agree. Past the CHS limit (~127 GiB) no geometry can represent it and the
 * sector-rounded size is kept (qemu then uses the current size too, geometry being 65535/16/255).
 */
export function roundUpToChsSize(requestBytes: number): number {
  let candidate = Math.ceil(requestBytes / SECTOR_SIZE) * SECTOR_SIZE;
  if (candidate / SECTOR_SIZE >= MAX_CHS_SECTORS) return candidate;
  for (let i = 0; i < 16; i++) {
    const g = geometryForSize(candidate);
    if (chsSizeBytes(g) === candidate) return candidate;
    const next = (g.cylinders + 1) * g.heads * g.sectorsPerTrack * SECTOR_SIZE;
    if (next / SECTOR_SIZE >= MAX_CHS_SECTORS) return candidate;
    candidate = next;
  }
  return candidate;
}
