// NativeExpertCache (a core moe::ExpertCache that layers reading their experts from a store share) and
// expertStoreMatches.
#pragma once
#include <napi.h>

#include <memory>

#include "moe/expert_cache.h"

namespace moe_binding {
void init_expert_cache(Napi::Env env, Napi::Object exports);
// The cache a NativeExpertCache holds; a TypeError for anything else or a disposed one.
std::shared_ptr<moe::ExpertCache> expert_cache_of(Napi::Env env, Napi::Value value);
}  // namespace moe_binding
