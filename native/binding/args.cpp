#include "args.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include "moe/moe.h"
#include "result_arrays.h"

namespace moe_binding {

void throw_type_error(Napi::Env env, const std::string& what) {
  throw Napi::TypeError::New(env, "moe-kernels: " + what);
}
void throw_range_error(Napi::Env env, const std::string& what) {
  throw Napi::RangeError::New(env, "moe-kernels: " + what);
}

namespace {

const char* kind_of(const Napi::Value& v) {
  if (v.IsNull()) return "null";
  if (v.IsUndefined()) return "undefined";
  if (v.IsTypedArray()) return "another typed array";
  if (v.IsNumber()) return "a number";
  if (v.IsString()) return "a string";
  if (v.IsArray()) return "an Array";
  return "an object";
}

template <class T, napi_typedarray_type kType>
T* typed_value(Napi::Env env, const Napi::Value& v, const std::string& name, const char* type_name, int64_t length,
               bool optional) {
  if (optional && (v.IsNull() || v.IsUndefined())) return nullptr;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != kType)
    throw_type_error(env, "expected " + name + " to be a " + type_name + " but got " + kind_of(v));
  auto array = v.As<Napi::TypedArrayOf<T>>();
  if (static_cast<int64_t>(array.ElementLength()) != length)
    throw_range_error(env, "expected " + name + " to have " + std::to_string(length) + " elements but got " +
                               std::to_string(array.ElementLength()));
  return array.Data();
}

template <class T, napi_typedarray_type kType>
T* typed_arg(const Args& args, const char* name, const char* type_name, int64_t length, bool optional) {
  return typed_value<T, kType>(args.Env(), args[name], name, type_name, length, optional);
}

}  // namespace

namespace {
// Every declared call (function-local: declare() runs during static initialisation, in any file's order).
std::vector<const Signature*>& registry() {
  static std::vector<const Signature*> all;
  return all;
}
}  // namespace

const Signature& declare(const char* call, std::initializer_list<const char*> fields) {
  auto* s = new Signature{call, {}};  // (lives as long as the addon: signatures() lists it)
  for (const char* f : fields) s->fields.emplace_back(f);
  registry().push_back(s);
  return *s;
}
const std::vector<const Signature*>& signatures() { return registry(); }

Args::Args(const Napi::CallbackInfo& info, const Signature& signature) : env_(info.Env()), signature_(signature) {
  if (info.Length() < 1 || !info[0].IsObject() || info[0].IsArray() || info[0].IsTypedArray())
    throw_type_error(env_, "expected the options of " + signature.call + " to be an object but got " +
                               (info.Length() < 1 ? std::string("nothing") : std::string(kind_of(info[0]))));
  object_ = info[0].As<Napi::Object>();
}

Napi::Value Args::operator[](const char* name) const {
  for (const auto& [field, value] : read_)
    if (field == name) return value;
  bool declared = false;
  for (const std::string& f : signature_.fields) declared |= f == name;
  if (!declared)  // the binding's own bug, as a JS error rather than a crash
    throw Napi::Error::New(env_, std::string("moe-kernels: ") + signature_.call + " reads an undeclared field " + name);
  const Napi::Value value = object_.Get(name);
  read_.emplace_back(name, value);
  return value;
}

const float* float32_arg(const Args& args, const char* name, int64_t length, bool optional) {
  return typed_arg<float, napi_float32_array>(args, name, "Float32Array", length, optional);
}
const float* float32_value(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t length,
                           bool optional) {
  return typed_value<float, napi_float32_array>(env, value, name, "Float32Array", length, optional);
}
const uint8_t* bytes_value(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t length) {
  // int8 codes come as an Int8Array, int4 ones as a Uint8Array; either is read as bytes.
  if (value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_int8_array)
    return reinterpret_cast<const uint8_t*>(
        typed_value<int8_t, napi_int8_array>(env, value, name, "Int8Array", length, false));
  return typed_value<uint8_t, napi_uint8_array>(env, value, name, "Uint8Array or Int8Array", length, false);
}
const uint16_t* uint16_value(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t length) {
  return typed_value<uint16_t, napi_uint16_array>(env, value, name, "Uint16Array", length, false);
}
const int32_t* int32_arg(const Args& args, const char* name, int64_t length) {
  return typed_arg<int32_t, napi_int32_array>(args, name, "Int32Array", length, false);
}
const double* finite_float64_arg(const Args& args, const char* name, int64_t length) {
  return finite_float64_value(args.Env(), args[name], name, length, false);
}
const double* finite_float64_value(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t length,
                                   bool optional) {
  const double* data = float64_value(env, value, name, length, optional);
  for (int64_t i = 0; data && i < length; ++i)
    if (!std::isfinite(data[i]))
      throw_range_error(env, "expected " + name + " to contain only finite values but got " + std::to_string(data[i]) +
                                 " at " + name + "[" + std::to_string(i) + "]");
  return data;
}
const double* float64_value(Napi::Env env, const Napi::Value& value, const std::string& name, int64_t length,
                            bool optional) {
  return typed_value<double, napi_float64_array>(env, value, name, "Float64Array", length, optional);
}

Napi::Float32Array output_arg(const Args& args, const float* x, int64_t length) {
  const float* out = typed_arg<float, napi_float32_array>(args, "out", "Float32Array", length, true);
  if (!out) return new_float32_array(args.Env(), static_cast<size_t>(length));
  if (out < x + length && x < out + length)
    throw_range_error(args.Env(), "expected out to share no memory with x but got overlapping arrays");
  return args["out"].As<Napi::Float32Array>();
}

int64_t elements(Napi::Env env, const char* what, std::initializer_list<int64_t> dims) {
  int64_t product = 1;
  for (int64_t d : dims)
    if (__builtin_mul_overflow(product, d, &product) || product > kMaxElements)
      throw_range_error(env, std::string("expected ") + what + " to have at most " + std::to_string(kMaxElements) +
                                 " elements but its dimensions multiply past that");
  return product;
}

int64_t slot_count(Napi::Env env, int64_t tokens, int64_t k) {
  const int64_t slots = tokens * k;  // each at most 2^31 (int_arg): no overflow
  if (slots > INT32_MAX)
    throw_range_error(env, "expected tokens * k to be at most " + std::to_string(INT32_MAX) + " (slots) but got " +
                               std::to_string(slots));
  return slots;
}

bool is_shared(Napi::Env env, Napi::Value typed_array) {
  napi_value buffer = nullptr;
  if (napi_get_typedarray_info(env, typed_array, nullptr, nullptr, nullptr, &buffer, nullptr) != napi_ok) return false;
  bool plain = false;  // napi_is_arraybuffer is false for a SharedArrayBuffer
  return napi_is_arraybuffer(env, buffer, &plain) == napi_ok && !plain;
}

template <class T>
std::shared_ptr<T[]> allocate_array(Napi::Env env, int64_t n, const char* what) {
  try {
    return std::shared_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
  } catch (const std::bad_alloc&) {
    throw_range_error(env, std::string("expected ") + what + " of a size this machine can allocate but got " +
                               std::to_string(n) + " elements (" + std::to_string(n * int64_t{sizeof(T)}) + " bytes)");
  }
}
template std::shared_ptr<float[]> allocate_array<float>(Napi::Env, int64_t, const char*);
template std::shared_ptr<int32_t[]> allocate_array<int32_t>(Napi::Env, int64_t, const char*);

namespace {

template <class T>
Held<T> hold(const Args& args, const char* name, int64_t length, bool copy, const T* data) {
  Held<T> held;
  held.data = data;
  if (data == nullptr || !(copy || is_shared(args.Env(), args[name]))) return held;
  held.owned = allocate_array<T>(args.Env(), length, name);
  std::memcpy(held.owned.get(), data, static_cast<size_t>(length) * sizeof(T));
  held.data = held.owned.get();
  return held;
}

}  // namespace

Held<float> held_float32(const Args& args, const char* name, int64_t length, bool copy, bool optional) {
  return hold(args, name, length, copy, float32_arg(args, name, length, optional));
}
Held<int32_t> held_int32(const Args& args, const char* name, int64_t length, bool copy) {
  return hold(args, name, length, copy, int32_arg(args, name, length));
}

int64_t int_value(Napi::Env env, const Napi::Value& v, const std::string& name, int64_t min, int64_t max) {
  if (!v.IsNumber()) throw_type_error(env, "expected " + name + " to be an integer but got " + kind_of(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d == std::floor(d)) || d < static_cast<double>(min) || d > static_cast<double>(max))
    throw_range_error(env, "expected " + name + " to be an integer in [" + std::to_string(min) + ", " +
                               std::to_string(max) + "] but got " + Napi::Number::New(env, d).ToString().Utf8Value());
  return static_cast<int64_t>(d);
}
bool bool_value(Napi::Env env, const Napi::Value& v, const std::string& name) {
  if (!v.IsBoolean()) throw_type_error(env, "expected " + name + " to be a boolean but got " + kind_of(v));
  return v.As<Napi::Boolean>().Value();
}
std::string string_value(Napi::Env env, const Napi::Value& v, const std::string& name) {
  if (!v.IsString()) throw_type_error(env, "expected " + name + " to be a string but got " + kind_of(v));
  return v.As<Napi::String>().Utf8Value();
}
double number_value(Napi::Env env, const Napi::Value& v, const std::string& name) {
  if (!v.IsNumber()) throw_type_error(env, "expected " + name + " to be a number but got " + kind_of(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d))
    throw_range_error(env, "expected " + name + " to be a finite number but got " + std::to_string(d));
  return d;
}

int64_t int_arg(const Args& args, const char* name, int64_t min, int64_t max) {
  return int_value(args.Env(), args[name], name, min, max);
}
bool bool_arg(const Args& args, const char* name) { return bool_value(args.Env(), args[name], name); }

void check_finite(Napi::Env env, const char* name, const float* data, int64_t rows, int64_t cols) {
  const int64_t bad = moe::find_non_finite(data, rows * cols);
  if (bad < 0) return;
  const float value = data[bad];
  const std::string got = std::isnan(value) ? "NaN" : (value > 0 ? "Infinity" : "-Infinity");
  throw_range_error(env, std::string("expected ") + name + " to contain only finite values but got " + got + " at " +
                             name + "[" + std::to_string(bad / cols) + ", " + std::to_string(bad % cols) + "]");
}

void check_experts(Napi::Env env, const int32_t* experts, int64_t count, int64_t num_experts) {
  for (int64_t i = 0; i < count; ++i)
    if (experts[i] < -1 || experts[i] >= num_experts)
      throw_range_error(env, "expected experts[" + std::to_string(i) + "] in [-1, " + std::to_string(num_experts - 1) +
                                 "] (-1 = dropped) but got " + std::to_string(experts[i]));
}

}  // namespace moe_binding
