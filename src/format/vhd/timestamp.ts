/** VHD timestamps are seconds since 2000-01-01T00:00:00Z. */
export const VHD_EPOCH_UNIX_SECONDS = 946684800;

export function vhdTimestampToDate(seconds: number): Date {
  return new Date((seconds + VHD_EPOCH_UNIX_SECONDS) * 1000);
}

export function dateToVhdTimestamp(date: Date): number {
  const s = Math.floor(date.getTime() / 1000) - VHD_EPOCH_UNIX_SECONDS;
  // The field is unsigned 32-bit: clamp dates before 2000 (or absurdly late) into range.
  return Math.min(Math.max(s, 0), 0xffffffff);
}

export function vhdTimestampToIso(seconds: number): string {
  return vhdTimestampToDate(seconds).toISOString();
}
