// Argument checks of the binding. The TypeScript layer validates first with friendlier context; these
// checks are the native side's second line, in the same one format (see lib/errors.ts), never a crash.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

#include "moe/moe.h"

namespace moe_binding {

[[noreturn]] void throw_type_error(Napi::Env env, const std::string& what);   // "moe-kernels: " + what
[[noreturn]] void throw_range_error(Napi::Env env, const std::string& what);

// A Float32Array argument of exactly `length` elements; null/undefined allowed when `optional` (returns null).
const float* float32_arg(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t length,
                         bool optional = false);
float* float32_arg_mut(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t length);
const int32_t* int32_arg(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t length);
// The output array of a forward: the caller's optional `out` argument (a Float32Array as long as x, sharing no
// memory with it: the layer reads x while it writes out), or a new result array when it is null or undefined.
Napi::Float32Array output_arg(const Napi::CallbackInfo& info, size_t index, const float* x, int64_t length);
// An integer in [min, max].
int64_t int_arg(const Napi::CallbackInfo& info, size_t index, const char* name, int64_t min, int64_t max);
bool bool_arg(const Napi::CallbackInfo& info, size_t index, const char* name);
std::string string_arg(const Napi::CallbackInfo& info, size_t index, const char* name);

// RangeError naming the first non-finite element of x [rows, cols], as "x[row, col]".
void check_finite(Napi::Env env, const char* name, const float* data, int64_t rows, int64_t cols);

// The six expert weight arguments w1, w3, w2, b1, b3, b2 at info[first .. first + 5], sized for `shape`
// (w3/b3 only when gated, biases optional), each checked to be finite. `prefix` names them ("shared.").
moe::ExpertWeights expert_weights_arg(const Napi::CallbackInfo& info, size_t first, const moe::ExpertShape& shape,
                                      const std::string& prefix = "");

// RangeError unless every experts[i] is in [-1, numExperts) (-1 = a dropped slot).
void check_experts(Napi::Env env, const int32_t* experts, int64_t count, int64_t num_experts);

}  // namespace moe_binding
