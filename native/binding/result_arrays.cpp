#include "result_arrays.h"

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>

#include "args.h"
#include "moe/moe.h"

namespace moe_binding {

namespace {

constexpr size_t kPooledFrom = size_t{64} << 10;  // smaller arrays come from V8's own heap
constexpr size_t kMaxCachedBytes = size_t{256} << 20;

// Freed blocks by size, for the next result of the same size (a forward in a loop returns same-sized arrays).
class BlockPool {
 public:
  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end()) {
        void* p = it->second;
        free_.erase(it);
        cached_ -= bytes;
        return p;
      }
    }
    return moe::allocate_large(bytes);
  }
  void give(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + bytes <= kMaxCachedBytes) {
        free_.emplace(bytes, p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }

 private:
  std::mutex mutex_;
  std::unordered_multimap<size_t, void*> free_;
  size_t cached_ = 0;
};

BlockPool& pool() {
  static BlockPool* p = new BlockPool();  // never destroyed: finalizers may run during shutdown
  return *p;
}

// An ArrayBuffer of `bytes` bytes. Every byte is written by the kernels before JS sees it, so a recycled block
// needs no clearing. Falls back to V8's memory where external buffers are not allowed (V8 sandbox builds).
Napi::ArrayBuffer new_buffer(Napi::Env env, size_t bytes) {
  if (bytes < kPooledFrom) return Napi::ArrayBuffer::New(env, bytes);
  void* data = pool().take(bytes);
  napi_value value;
  const napi_status status = napi_create_external_arraybuffer(
      env, data, bytes, [](napi_env, void* p, void* hint) { pool().give(p, reinterpret_cast<uintptr_t>(hint)); },
      reinterpret_cast<void*>(static_cast<uintptr_t>(bytes)), &value);
  if (status != napi_ok) {
    pool().give(data, bytes);
    return Napi::ArrayBuffer::New(env, bytes);
  }
  return Napi::ArrayBuffer(env, value);
}

// A result's memory, or a RangeError naming its size: past V8's limit or past what the machine can allocate.
Napi::ArrayBuffer checked_buffer(Napi::Env env, size_t count, size_t element) {
  if (count > static_cast<size_t>(kMaxElements))
    throw_range_error(env, "expected a result of at most " + std::to_string(kMaxElements) + " elements but got " +
                               std::to_string(count));
  try {
    return new_buffer(env, count * element);
  } catch (const std::bad_alloc&) {
    throw_range_error(env, "expected a result this machine can allocate but got " + std::to_string(count) +
                               " elements (" + std::to_string(count * element) + " bytes)");
  }
}

}  // namespace

Napi::Float32Array new_float32_array(Napi::Env env, size_t count) {
  return Napi::Float32Array::New(env, count, checked_buffer(env, count, sizeof(float)), 0);
}

Napi::Int32Array new_int32_array(Napi::Env env, size_t count) {
  return Napi::Int32Array::New(env, count, checked_buffer(env, count, sizeof(int32_t)), 0);
}

Napi::Value LargeBuffer(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  const int64_t bytes = int_arg(info, 0, "bytes", 1, int64_t{1} << 40);
  void* data = nullptr;
  try {
    data = moe::allocate_large(static_cast<size_t>(bytes));
  } catch (const std::bad_alloc&) {
    throw_range_error(env, "expected a buffer this machine can allocate but got " + std::to_string(bytes) + " bytes");
  }
  napi_value value;
  const napi_status status = napi_create_external_arraybuffer(
      env, data, static_cast<size_t>(bytes),
      [](napi_env e, void* p, void* hint) {
        int64_t ignored;
        napi_adjust_external_memory(e, -static_cast<int64_t>(reinterpret_cast<uintptr_t>(hint)), &ignored);
        std::free(p);
      },
      reinterpret_cast<void*>(static_cast<uintptr_t>(bytes)), &value);
  if (status != napi_ok) {  // a V8 sandbox build: V8's own (zeroed, 4 KiB-paged) memory
    std::free(data);
    return Napi::ArrayBuffer::New(env, static_cast<size_t>(bytes));
  }
  int64_t ignored;
  napi_adjust_external_memory(env, bytes, &ignored);
  return Napi::ArrayBuffer(env, value);
}

}  // namespace moe_binding
