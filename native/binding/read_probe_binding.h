#pragma once
#include <napi.h>

namespace moe_binding {
void init_read_probe(Napi::Env env, Napi::Object exports);
}
