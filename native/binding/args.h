// Argument checks of the binding. The TypeScript layer validates first with friendlier context; these
// checks are the native side's second line, in the same one format (see lib/errors.ts), never a crash.
#pragma once
#include <napi.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "moe/moe.h"

namespace moe_binding {

[[noreturn]] void throw_type_error(Napi::Env env, const std::string& what);  // "moe-kernels: " + what
[[noreturn]] void throw_range_error(Napi::Env env, const std::string& what);

// A call's declared fields: its name as JavaScript calls it ("NativeLayer.forward") and the fields of its one
// options object. Declared once per call (declare()); binding.signatures() lists them all, and
// test/native-seam.test.ts compares them with lib/native.ts's declarations.
struct Signature {
  std::string call;
  std::vector<std::string> fields;
};
const Signature& declare(const char* call, std::initializer_list<const char*> fields);
const std::vector<const Signature*>& signatures();

// A call's arguments: its options object (the first argument), read by name, each field at most once (a getter runs
// once, so what is checked is what is used). A TypeError unless an object; reading a field the signature does not
// declare is the binding's own bug (a plain JS Error naming the call and the field).
class Args {
 public:
  Args(const Napi::CallbackInfo& info, const Signature& signature);
  Napi::Env Env() const { return env_; }
  Napi::Value operator[](const char* name) const;
  bool absent(const char* name) const { return (*this)[name].IsNull() || (*this)[name].IsUndefined(); }

 private:
  Napi::Env env_;
  Napi::Object object_;
  const Signature& signature_;
  mutable std::vector<std::pair<std::string, Napi::Value>> read_;
};

// A Float32Array field of exactly `length` elements; null/undefined allowed when `optional` (returns null).
const float* float32_arg(const Args& args, const char* name, int64_t length, bool optional = false);
const int32_t* int32_arg(const Args& args, const char* name, int64_t length);
// A Float64Array field of exactly `length` elements, each finite (router training's float64 inputs).
const double* finite_float64_arg(const Args& args, const char* name, int64_t length);
// The same checks on any value (null/undefined allowed when `optional`: nullptr), finite or not.
const double* finite_float64_value(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t length,
                                   bool optional = false);
const double* float64_value(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t length,
                            bool optional = false);
// The output array of a forward: the caller's optional `out` field (a Float32Array as long as x, sharing no
// memory with it: the layer reads x while it writes out), or a new result array when it is null or undefined.
Napi::Float32Array output_arg(const Args& args, const float* x, int64_t length);
// True when a typed array's memory is a SharedArrayBuffer's, which another thread can write at any time.
bool is_shared(Napi::Env env, Napi::Value typed_array);

// An input the kernels read: the caller's memory, or a private copy of it when `copy` is true (an async call:
// the job reads it later, after the caller may have changed, detached or shrunk its buffer) or when it lives in
// a SharedArrayBuffer. Checks that follow (finiteness, ranges) run on what the kernels will read, so a value
// changed after the check never reaches them. A copy that cannot be allocated is a RangeError naming its size.
template <class T>
struct Held {
  std::shared_ptr<T[]> owned;  // the copy, when there is one
  const T* data = nullptr;
};
Held<float> held_float32(const Args& args, const char* name, int64_t length, bool copy, bool optional = false);
Held<int32_t> held_int32(const Args& args, const char* name, int64_t length, bool copy);
// n uninitialised elements, or a RangeError naming `what` and its size when the allocation fails.
template <class T>
std::shared_ptr<T[]> allocate_array(Napi::Env env, int64_t n, const char* what);

// The most elements one array can have (V8's typed arrays end at 2^32), and so the most a size may multiply to.
constexpr int64_t kMaxElements = int64_t{1} << 32;
// The product of `dims`, checked: a RangeError naming `what` when it would pass kMaxElements (no array that
// long can exist, and a wrapped product could match a short array's length).
int64_t elements(Napi::Env env, const char* what, std::initializer_list<int64_t> dims);

// tokens * k, checked: the dispatch plan addresses slots with int32 indices, so at most 2^31 - 1 of them.
int64_t slot_count(Napi::Env env, int64_t tokens, int64_t k);

// The most experts a layer or a kernel call takes: 2^24, past the million of the largest published MoE (PEER),
// so that a per-expert array stays small (a count of 2^31 once allocated 16 GB in dispatch).
constexpr int64_t kMaxExperts = int64_t{1} << 24;

// The largest dimension (dModel, dHidden, tokens) a call takes.
constexpr int64_t kMaxDim = int64_t{1} << 31;

// An integer field in [min, max]; a boolean field.
int64_t int_arg(const Args& args, const char* name, int64_t min, int64_t max);
bool bool_arg(const Args& args, const char* name);

// The same checks on any value (a field of a spec object, see spec.h); `name` is its path in messages.
int64_t int_value(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t min, int64_t max);
bool bool_value(Napi::Env env, const Napi::Value& value, const std::string& name);
std::string string_value(Napi::Env env, const Napi::Value& value, const std::string& name);
double number_value(Napi::Env env, const Napi::Value& value, const std::string& name);  // finite
const float* float32_value(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t length,
                           bool optional = false);

// RangeError naming the first non-finite element of x [rows, cols], as "x[row, col]".
// The bytes of an Int8Array or Uint8Array, and a Uint16Array (float16 bits), of exactly `length` elements.
const uint8_t* bytes_value(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t length);
const uint16_t* uint16_value(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t length);
void check_finite(Napi::Env env, const char* name, const float* data, int64_t rows, int64_t cols);

// RangeError unless every experts[i] is in [-1, numExperts) (-1 = a dropped slot).
void check_experts(Napi::Env env, const int32_t* experts, int64_t count, int64_t num_experts);

}  // namespace moe_binding
