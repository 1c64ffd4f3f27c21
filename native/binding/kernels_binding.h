#pragma once
#include <napi.h>

namespace moe_binding {
void init_kernels(Napi::Env env, Napi::Object exports);
}
