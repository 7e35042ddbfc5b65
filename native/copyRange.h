// copyRanges for JavaScript (see copyRange.c); registered by the addon's Init in seekHole.c.
#ifndef COPY_RANGE_H
#define COPY_RANGE_H
#include <stddef.h>
#include <stdint.h>
#include <node_api.h>
napi_value CopyRanges(napi_env env, napi_callback_info info);
int64_t copy_ranges(int in, int out, const double *ranges, size_t count, uint64_t grain);
#endif
