// lseek(SEEK_DATA / SEEK_HOLE) for Node, which has no lseek: where a sparse file's data and holes are.
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <node_api.h>

// seek(fd, offset, wantData) -> the next data (or hole) offset at or after `offset`, or -1 when
// there is none (ENXIO: past the last data). Other failures throw with the errno's name, so the
// caller can fall back to "everything is data" (e.g. EINVAL where the file system lacks it).
static napi_value Seek(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "seek(fd, offset, wantData)");
    return NULL;
  }
  int32_t fd;
  int64_t offset;
  bool wantData;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &offset) != napi_ok
      || napi_get_value_bool(env, argv[2], &wantData) != napi_ok) {
    napi_throw_type_error(env, NULL, "seek(fd: number, offset: number, wantData: boolean)");
    return NULL;
  }
  off_t r = lseek(fd, (off_t)offset, wantData ? SEEK_DATA : SEEK_HOLE);
  if (r < 0 && errno != ENXIO) {
    napi_throw_error(env, strerror(errno), strerror(errno));
    return NULL;
  }
  napi_value out;
  napi_create_int64(env, r < 0 ? -1 : (int64_t)r, &out);
  return out;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "seek", NAPI_AUTO_LENGTH, Seek, NULL, &fn);
  napi_set_named_property(env, exports, "seek", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
