// Typed arrays for results. Large ones are backed by addon memory (huge pages where Linux allows) that is
// recycled when the garbage collector frees the array: a fresh V8 buffer of a few MiB costs a page fault per
// 4 KiB on its first write, which at 512 tokens was 5-10% of a forward (benchmarks/NOTES.md).
#pragma once
#include <napi.h>

#include <cstddef>

namespace moe_binding {

Napi::Float32Array new_float32_array(Napi::Env env, size_t count);
Napi::Int32Array new_int32_array(Napi::Env env, size_t count);

}  // namespace moe_binding
