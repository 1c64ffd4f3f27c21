// Typed arrays for results. Large ones are backed by addon memory (huge pages where Linux allows) that is
// recycled when the garbage collector frees the array: a fresh V8 buffer of a few MiB costs a page fault per
// 4 KiB on its first write, which at 512 tokens was 5-10% of a forward (benchmarks/NOTES.md).
#pragma once
#include <napi.h>

#include <cstddef>

namespace moe_binding {

// The largest result (and largeBuffer) in bytes: 4 GiB, the most Node 20 lets external memory back (its
// buffer.constants.MAX_LENGTH), kept on every Node version so that what a call accepts does not depend on it.
constexpr size_t kMaxResultBytes = size_t{1} << 32;

Napi::Float32Array new_float32_array(Napi::Env env, size_t count);
// A RangeError unless a result of `count` elements of `element` bytes is within kMaxResultBytes: for results made
// after their computation (whose size is known before it starts).
void check_result_size(Napi::Env env, size_t count, size_t element);
Napi::Int32Array new_int32_array(Napi::Env env, size_t count);

// largeBuffer(bytes) -> ArrayBuffer of addon memory, huge pages where Linux allows, never pooled and NOT
// initialised: for a caller that writes every byte before reading any (the checkpoint loader's weight arrays, whose
// first touch in 4 KiB pages cost 3.6 s per GiB on this machine kind; 2 MiB pages fault 512x less often).
Napi::Value LargeBuffer(const Napi::CallbackInfo& info);

}  // namespace moe_binding
