// _exit() for Node: ends the process at once, without the V8 platform's shutdown. Node's own exit
// first waits for every background task (DrainTasks, then the platform's join): on a short command
// that is an optimizing compile of code that will never run again, 30-40 ms of waiting. The CLI
// calls it only when nothing but standard output and error is left in the event loop, and those
// are synchronous on Linux (files, pipes and terminals), so nothing written is lost.
#include <unistd.h>
#include <node_api.h>

static napi_value ExitNow(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t code = 0;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &code) != napi_ok) {
    napi_throw_type_error(env, NULL, "exitNow(code: number)");
    return NULL;
  }
  _exit(code & 0xff);
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "exitNow", NAPI_AUTO_LENGTH, ExitNow, NULL, &fn);
  napi_set_named_property(env, exports, "exitNow", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
