// Copies ranges of one file into another without passing the bytes through JavaScript: one copy
// per byte (page cache to page cache) where a read into a buffer and a write of it make two.
//
// copyRanges(inFd, outFd, ranges, grain, callback)
//   ranges: Float64Array of [inOffset, outOffset, length] triples.
//   grain > 0 (export): the source is mapped (mmap), scanned `grain` bytes at a time (boundaries at
//     multiples of `grain` in the output) and only runs of grains holding a non-zero byte are
//     copied (copy_file_range), so zero runs stay holes.
//   grain == 0 (merge): copy_file_range(2) in a loop (short copies continue where they stopped).
//   callback(null, n): n >= 0 bytes written; n == -1: unsupported here (a file system or file kind
//     that refuses copy_file_range or mmap, or a range past the source's end), possibly after part
//     was copied: the caller redoes the whole request its ordinary way (the same bytes again).
//   callback(err): a real failure (EIO, ENOSPC…), err.code the errno's name.
// Runs as a napi async work item (libuv pool): the main thread keeps reading other requests.
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <node_api.h>
#include "copyRange.h"

// Mapped at most this much at a time: the mapping's pages count in the process's RSS until unmapped.
#define MAP_CHUNK (8u << 20)

typedef struct {
  int inFd, outFd;
  size_t count;
  double *ranges;
  uint64_t grain;
  int64_t result;
  int err;
  napi_async_work work;
  napi_ref callback;
} CopyJob;

static const unsigned char zeros[64 * 1024];

static int isZero(const unsigned char *p, size_t n) {
  // Data that is not zero almost always says so in its first bytes.
  if (p[0] || p[n - 1]) return 0;
  while (n > 0) {
    size_t k = n < sizeof zeros ? n : sizeof zeros;
    if (memcmp(p, zeros, k) != 0) return 0;
    p += k;
    n -= k;
  }
  return 1;
}

static int unsupported(int e) {
  return e == EXDEV || e == EINVAL || e == ENOSYS || e == EOPNOTSUPP || e == ENODEV || e == EBADF || e == EACCES || e == ESPIPE;
}

// copy_file_range(2) of [src, src+len) to dst, short copies continued. Returns bytes copied, -1
// (unsupported) or -errno - 2 (failure).
static int64_t copyPlain(int in, int out, uint64_t src, uint64_t dst, uint64_t len) {
  int64_t written = 0;
  while (len > 0) {
    loff_t a = (loff_t)src, b = (loff_t)dst;
    size_t want = len > (1u << 30) ? (1u << 30) : (size_t)len;
    ssize_t n = copy_file_range(in, &a, out, &b, want, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return unsupported(errno) ? -1 : -(int64_t)errno - 2;
    }
    // 0 before the end: the source is shorter than the range (the caller's ordinary read reports it).
    if (n == 0) return -1;
    src += (uint64_t)n;
    dst += (uint64_t)n;
    len -= (uint64_t)n;
    written += n;
  }
  return written;
}

// Sparse copy: the source is mapped only to find zero grains (a read of the first byte of each
// grain, a compare only when it is zero; pages are mapped as touched, so data grains cost one fault
// per 64 KiB of fault-around); the non-zero runs go by copy_file_range. Writing from the mapping
// instead (pwrite) was slower: a VHD block's data starts 512 bytes into a page, and a copy from a
// source that is not page aligned into the page cache took 2-4x the system time (proto runs, 1 GiB).
static int64_t copySparse(int in, int out, uint64_t src, uint64_t dst, uint64_t len, uint64_t grain, long page) {
  int64_t written = 0;
  while (len > 0) {
    uint64_t n = len < MAP_CHUNK ? len : MAP_CHUNK;
    uint64_t lead = src % (uint64_t)page;
    void *m = mmap(NULL, n + lead, PROT_READ, MAP_SHARED, in, (off_t)(src - lead));
    if (m == MAP_FAILED) return unsupported(errno) ? -1 : -(int64_t)errno - 2;
    const unsigned char *base = (const unsigned char *)m + lead;
    uint64_t i = 0;
    int64_t rc = 0;
    while (i < n && rc >= 0) {
      // Grains are cut at multiples of `grain` in the output, as the buffered path cuts them.
      uint64_t end = ((dst + i) / grain + 1) * grain - dst;
      if (end > n) end = n;
      if (isZero(base + i, end - i)) { i = end; continue; }
      uint64_t start = i;
      i = end;
      while (i < n) {
        uint64_t e2 = ((dst + i) / grain + 1) * grain - dst;
        if (e2 > n) e2 = n;
        if (isZero(base + i, e2 - i)) break;
        i = e2;
      }
      rc = copyPlain(in, out, src + start, dst + start, i - start);
      if (rc >= 0) written += rc;
    }
    munmap(m, n + lead);
    if (rc < 0) return rc;
    src += n;
    dst += n;
    len -= n;
  }
  return written;
}

int64_t copy_ranges(int in, int out, const double *ranges, size_t count, uint64_t grain) {
  struct stat si, so;
  if (fstat(in, &si) != 0 || fstat(out, &so) != 0) return unsupported(errno) ? -1 : -(int64_t)errno - 2;
  // Regular files only (a pipe, a device or /dev/null takes the ordinary path).
  if (!S_ISREG(si.st_mode) || !S_ISREG(so.st_mode)) return -1;
  long page = sysconf(_SC_PAGESIZE);
  int64_t total = 0;
  for (size_t k = 0; k < count; k++) {
    uint64_t src = (uint64_t)ranges[3 * k], dst = (uint64_t)ranges[3 * k + 1], len = (uint64_t)ranges[3 * k + 2];
    if (len == 0) continue;
    // A mapping past the end of the file faults (SIGBUS): such a range takes the ordinary path, which reports it.
    if (src + len > (uint64_t)si.st_size) return -1;
    int64_t r = grain > 0 ? copySparse(in, out, src, dst, len, grain, page) : copyPlain(in, out, src, dst, len);
    if (r < 0) return r;
    total += r;
  }
  return total;
}

static void Execute(napi_env env, void *data) {
  (void)env;
  CopyJob *job = (CopyJob *)data;
  int64_t r = copy_ranges(job->inFd, job->outFd, job->ranges, job->count, job->grain);
  if (r < -1) { job->err = (int)(-(r + 2)); job->result = 0; }
  else job->result = r;
}

static void Complete(napi_env env, napi_status status, void *data) {
  CopyJob *job = (CopyJob *)data;
  napi_value cb, global, argv[2];
  napi_get_reference_value(env, job->callback, &cb);
  napi_get_global(env, &global);
  if (status != napi_ok || job->err) {
    int e = job->err ? job->err : EIO;
    napi_value msg, code;
    napi_create_string_utf8(env, strerror(e), NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &argv[0]);
    napi_create_int32(env, e, &code);
    napi_set_named_property(env, argv[0], "errno", code);
    napi_get_undefined(env, &argv[1]);
  } else {
    napi_get_null(env, &argv[0]);
    napi_create_int64(env, job->result, &argv[1]);
  }
  napi_call_function(env, global, cb, 2, argv, NULL);
  napi_delete_reference(env, job->callback);
  napi_delete_async_work(env, job->work);
  free(job->ranges);
  free(job);
}

napi_value CopyRanges(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t in, out;
  int64_t grain;
  bool isTyped = false;
  napi_valuetype cbType = napi_undefined;
  if (argc >= 5) {
    napi_is_typedarray(env, argv[2], &isTyped);
    napi_typeof(env, argv[4], &cbType);
  }
  if (argc < 5 || !isTyped || cbType != napi_function || napi_get_value_int32(env, argv[0], &in) != napi_ok
      || napi_get_value_int32(env, argv[1], &out) != napi_ok || napi_get_value_int64(env, argv[3], &grain) != napi_ok || grain < 0) {
    napi_throw_type_error(env, NULL, "copyRanges(inFd, outFd, ranges: Float64Array, grain, callback)");
    return NULL;
  }
  napi_typedarray_type type;
  size_t length;
  void *values;
  napi_get_typedarray_info(env, argv[2], &type, &length, &values, NULL, NULL);
  if (type != napi_float64_array || length % 3 != 0) {
    napi_throw_type_error(env, NULL, "copyRanges: ranges must be a Float64Array of [in, out, length] triples");
    return NULL;
  }
  CopyJob *job = calloc(1, sizeof *job);
  // The ranges are copied: the work runs on another thread while JavaScript may reuse the array.
  double *copy = malloc((length ? length : 1) * sizeof(double));
  if (!job || !copy) {
    free(job);
    free(copy);
    napi_throw_error(env, NULL, "copyRanges: out of memory");
    return NULL;
  }
  job->ranges = copy;
  memcpy(job->ranges, values, length * sizeof(double));
  job->count = length / 3;
  job->inFd = in;
  job->outFd = out;
  job->grain = (uint64_t)grain;
  napi_value name;
  napi_create_string_utf8(env, "copyRanges", NAPI_AUTO_LENGTH, &name);
  napi_create_reference(env, argv[4], 1, &job->callback);
  napi_create_async_work(env, NULL, name, Execute, Complete, job, &job->work);
  napi_queue_async_work(env, job->work);
  return NULL;
}
