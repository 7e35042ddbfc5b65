import { constants as fsc, promises as fsp } from 'fs';
import { alignedMemory, PAGE } from './alignedBuffer';

/**
 * Writes of an export's output that bypass the page cache (O_DIRECT) where they can.
 *
 * Why: a buffered write copies every byte into the page cache (copy_folio_from_iter_atomic was
 * 55-70 % of all samples of a 1 GiB export, for qemu-img too) and allocates those pages; a direct
 * write hands our buffer to the disk. On this machine's ext4/virtio disk a 1 GiB copy took 0.3-0.4 s
 * of system time direct against 1.4-3.6 s buffered (dd bs=4M), in the same or less wall time.
 *
 * O_DIRECT needs the file offset, the length and the buffer's address aligned (to the device's
 * logical block; ALIGN is the page, which covers every device). Only the aligned middle of a write
 * from the aligned pool (`AlignedPool`) goes direct; heads and tails that are not whole pages, and
 * buffers from elsewhere, go through the ordinary (buffered) descriptor. The two never share a page,
 * and the kernel keeps both views of the file coherent anyway. A file system that refuses O_DIRECT
 * (tmpfs: EINVAL at open, or at the first write) turns it off: everything is buffered then.
 */
export const ALIGN = PAGE;

/**
 * `count` buffers of `size` bytes (a multiple of ALIGN) whose addresses are page aligned: slices of
 * one alignedMemory (a Buffer from the ordinary allocator sits 16 bytes into its mapping). Handed
 * out in turn by `take`; memory is count x size, allocated once.
 */
export class AlignedPool {
  readonly arrayBuffer: ArrayBuffer;
  private next = 0;

  constructor(private readonly count: number, private readonly size: number) {
    if (size % ALIGN !== 0) throw new RangeError(`aligned buffers must be a multiple of ${ALIGN} bytes (got ${size})`);
    this.arrayBuffer = alignedMemory(count * size);
  }

  take(): Buffer {
    if (this.next >= this.count) throw new RangeError(`aligned pool of ${this.count} buffers exhausted`);
    return Buffer.from(this.arrayBuffer, this.size * this.next++, this.size);
  }
}

export type BufferedWrite = (data: Buffer, pos: number) => Promise<void>;

const MiB = 1024 * 1024;

/**
 * Which way an export's writes go, chosen by what they cost: buffered while the page cache takes
 * the bytes faster than the disk takes them direct, direct when it does not.
 *
 * Why: on this kind of virtual machine (free page reporting: the guest hands free memory back to
 * the host 2 s after it is freed, and the host takes it away) a buffered write into page-cache
 * pages the host has taken back faults every 4 KiB page in again: 1 GiB cost 3.7-4.2 s of system
 * time against 0.37 s into pages freed just before (dd bs=4M, the same machine a minute apart),
 * while a direct write costs 0.2-0.4 s of CPU and ~0.8-1.6 s of the disk's time per GiB. Which
 * case a run meets depends on what the machine freed in the last 2 s, so it is measured, not
 * guessed: every write of at least 1 MiB is timed (ms per MiB: a direct write's wall time, a
 * buffered write's CPU time, which a preemption does not inflate; the first version timed buffered
 * writes by wall time and went direct on busy machines when the page cache was cheap, two
 * preempted writes in a row being enough). Buffered first (as qemu-img and
 * cp do: on a quiet page cache it is the fastest); after two buffered writes in a row slower than
 * the direct cost (a guess of 1.5 ms per MiB until a direct write was timed), direct; while direct,
 * one buffered write after 64, then 128, 256... direct ones tells whether the page cache got cheap
 * again (a probe into reclaimed pages costs ~12 ms per 4 MiB: rare probes keep that small).
 */
export class WriteRoute {
  /** ms per MiB of the last buffered writes (newest last), of the last direct ones. */
  private buffered: number[] = [];
  private direct: number[] = [];
  private isDirect = false;
  private sinceSwitch = 0;
  private probeAfter: number;
  /** Direct writes are assumed to cost this until one was timed (ms per MiB; ~1 GB/s). */
  static readonly DIRECT_GUESS = 1.5;
  /** Smaller writes follow the current route and are not timed (fixed costs would dominate). */
  static readonly MIN_TIMED = MiB;

  constructor(private readonly firstProbe = 64) {
    this.probeAfter = firstProbe;
  }

  /** True when the next write of `bytes` should go direct. */
  goDirect(bytes: number): boolean {
    // A probe: one buffered write among the direct ones.
    if (this.isDirect && bytes >= WriteRoute.MIN_TIMED && this.sinceSwitch >= this.probeAfter) return false;
    return this.isDirect;
  }

  /** Bytes written each way and the switches between them (DISKIMG_EXPORT_ROUTES=1 prints them). */
  readonly stats = { directBytes: 0, bufferedBytes: 0, switches: 0 };

  /** What a write of `bytes` cost by the route it went: ms of wall time direct, of CPU time buffered. */
  record(direct: boolean, bytes: number, ms: number): void {
    if (direct) this.stats.directBytes += bytes;
    else this.stats.bufferedBytes += bytes;
    if (bytes < WriteRoute.MIN_TIMED) return;
    const cost = ms / (bytes / MiB);
    const directCost = this.direct.length ? Math.min(...this.direct) : WriteRoute.DIRECT_GUESS;
    if (direct) {
      this.direct = [...this.direct.slice(-1), cost];
      this.sinceSwitch++;
      return;
    }
    if (this.isDirect) {
      // A probe: one sample decides (a preempted probe only keeps the route direct a while longer).
      if (cost < directCost) this.switchTo(false, [cost]);
      else { this.sinceSwitch = 0; this.probeAfter *= 2; }
      return;
    }
    this.buffered = [...this.buffered.slice(-1), cost];
    // Two slow ones in a row: one could be a preemption on a busy machine.
    if (this.buffered.length === 2 && Math.min(...this.buffered) > directCost) this.switchTo(true, []);
  }

  /** The route the writes take now (for tests and traces). */
  get route(): 'direct' | 'buffered' {
    return this.isDirect ? 'direct' : 'buffered';
  }

  private switchTo(direct: boolean, buffered: number[]): void {
    this.stats.switches++;
    this.isDirect = direct;
    this.buffered = buffered;
    this.sinceSwitch = 0;
    if (!direct) this.probeAfter = this.firstProbe;
  }
}

const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

export class DirectOutput {
  private constructor(private handle: fsp.FileHandle | null, private readonly pool: AlignedPool, private readonly route: WriteRoute | null) {}

  /**
   * Opens `path` (already created) a second time with O_DIRECT; null descriptor where it is refused.
   * With `route`, each write goes the way it says (and is timed for it); without, always direct.
   */
  static async open(path: string, pool: AlignedPool, route: WriteRoute | null = null): Promise<DirectOutput> {
    const flag = fsc.O_DIRECT;
    if (flag === undefined) return new DirectOutput(null, pool, route);
    const handle = await fsp.open(path, fsc.O_WRONLY | flag).catch(() => null);
    return new DirectOutput(handle, pool, route);
  }

  /** Whether writes still go direct (false after the file system refused). */
  get active(): boolean {
    return this.handle !== null;
  }

  /** Writes `data` at `pos`: the page-aligned middle direct, the rest through `buffered`. */
  async write(data: Buffer, pos: number, buffered: BufferedWrite): Promise<void> {
    const route = this.route;
    if (!route || !this.handle) return this.place(data, pos, buffered);
    const direct = route.goDirect(data.length);
    // A direct write costs the disk's time (wall); a buffered one the CPU of its copy, counted as
    // the process's CPU time so that a preemption on a busy machine does not count against it.
    const t0 = performance.now();
    const c0 = direct ? null : process.cpuUsage();
    await (direct ? this.place(data, pos, buffered) : buffered(data, pos));
    const ms = c0 ? cpuMs(process.cpuUsage(c0)) : performance.now() - t0;
    route.record(direct, data.length, ms);
  }

  private async place(data: Buffer, pos: number, buffered: BufferedWrite): Promise<void> {
    const head = (ALIGN - (pos % ALIGN)) % ALIGN;
    // The address moves with the offset: both must be aligned at the same point.
    if (!this.handle || data.buffer !== this.pool.arrayBuffer || (data.byteOffset + head) % ALIGN !== 0 || data.length < head + ALIGN) {
      return buffered(data, pos);
    }
    const middle = Math.floor((data.length - head) / ALIGN) * ALIGN;
    if (head > 0) await buffered(data.subarray(0, head), pos);
    await this.writeDirect(data.subarray(head, head + middle), pos + head, buffered);
    if (head + middle < data.length) await buffered(data.subarray(head + middle), pos + head + middle);
  }

  private async writeDirect(data: Buffer, pos: number, buffered: BufferedWrite): Promise<void> {
    let done = 0;
    while (done < data.length && this.handle) {
      try {
        const { bytesWritten } = await this.handle.write(data, done, data.length - done, pos + done);
        if (bytesWritten === 0) break;
        done += bytesWritten;
        // A short direct write leaves an unaligned rest: finished buffered below.
        if (done % ALIGN !== 0) break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw e;
        // The file system takes no direct writes after all: buffered from now on.
        await this.close();
      }
    }
    if (done < data.length) await buffered(data.subarray(done), pos + done);
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = null;
    await h?.close();
  }
}
