// Replies straight from an image file to a socket for the NBD server (src/io/sendFile.ts): the
// kernel hands the page-cache pages to the socket (sendfile), where a read into a buffer and a
// write from it copy every byte twice. Also sets the socket's send buffer, which Node cannot.
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>
#include <node_api.h>

static napi_value Int64(napi_env env, int64_t v) {
  napi_value out;
  napi_create_int64(env, v, &out);
  return out;
}

// sendReply(socketFd, header, fileFd, position, length) -> bytes sent (header first, then file
// bytes), without blocking: it stops where the socket is full (EAGAIN) or failed, and the caller
// sends the rest its own way (which also reports a failure). Never throws for I/O.
static napi_value SendReply(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t sock, fd;
  int64_t position, length;
  void *header = NULL;
  size_t headerLength = 0;
  if (argc < 5 || napi_get_value_int32(env, argv[0], &sock) != napi_ok
      || napi_get_buffer_info(env, argv[1], &header, &headerLength) != napi_ok
      || napi_get_value_int32(env, argv[2], &fd) != napi_ok || napi_get_value_int64(env, argv[3], &position) != napi_ok
      || napi_get_value_int64(env, argv[4], &length) != napi_ok || position < 0 || length < 0) {
    napi_throw_type_error(env, NULL, "sendReply(socketFd, header: Buffer, fileFd, position, length)");
    return NULL;
  }
  int64_t sent = 0;
  while ((size_t)sent < headerLength) {
    ssize_t n = send(sock, (char *)header + sent, headerLength - sent, MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Int64(env, sent);
    sent += n;
  }
  off_t at = (off_t)position;
  int64_t left = length;
  while (left > 0) {
    // The socket is non-blocking (libuv's), so sendfile returns once the socket's buffer is full.
    ssize_t n = sendfile(sock, fd, &at, (size_t)left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    sent += n;
    left -= n;
  }
  return Int64(env, sent);
}

// setSendBuffer(socketFd, bytes) -> the send buffer the kernel granted (it doubles the request and
// caps it at net.core.wmem_max), or -1 when the descriptor takes no such option.
static napi_value SetSendBuffer(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t sock, bytes;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &sock) != napi_ok || napi_get_value_int32(env, argv[1], &bytes) != napi_ok) {
    napi_throw_type_error(env, NULL, "setSendBuffer(socketFd, bytes)");
    return NULL;
  }
  int value = bytes;
  socklen_t len = sizeof value;
  if (setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &value, sizeof value) < 0) return Int64(env, -1);
  if (getsockopt(sock, SOL_SOCKET, SO_SNDBUF, &value, &len) < 0) return Int64(env, -1);
  return Int64(env, value);
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "sendReply", NAPI_AUTO_LENGTH, SendReply, NULL, &fn);
  napi_set_named_property(env, exports, "sendReply", fn);
  napi_create_function(env, "setSendBuffer", NAPI_AUTO_LENGTH, SetSendBuffer, NULL, &fn);
  napi_set_named_property(env, exports, "setSendBuffer", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
