#pragma once
#include <napi.h>

namespace moe_binding {
void init_layer(Napi::Env env, Napi::Object exports);
}
