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
    moe::free_large(p);
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

// Whether napi_create_external_arraybuffer's failure left the memory with the caller. Node hands it to the
// finalizer whenever it got as far as making a Buffer (past its length limit it calls the finalizer at once, or
// schedules it), so freeing it here as well freed it twice (issue 34: SIGSEGV on any result over 4 GiB). Only a V8
// sandbox build refuses before taking it.
bool still_ours(napi_status status) { return status == napi_no_external_buffers_allowed; }

// Drops the JavaScript exception a failed napi call left pending (Node throws ERR_BUFFER_TOO_LARGE), so that the
// fallback below or the caller's RangeError is what JavaScript sees.
void clear_pending(Napi::Env env) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
    napi_value ignored;
    napi_get_and_clear_last_exception(env, &ignored);
  }
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
    if (still_ours(status)) pool().give(data, bytes);
    clear_pending(env);
    return Napi::ArrayBuffer::New(env, bytes);
  }
  return Napi::ArrayBuffer(env, value);
}

// A result's memory, or a RangeError naming its size: past kMaxResultBytes or past what the machine can allocate.
// Every result is made before its computation starts, so an impossible one costs nothing.
Napi::ArrayBuffer checked_buffer(Napi::Env env, size_t count, size_t element) {
  check_result_size(env, count, element);
  try {
    return new_buffer(env, count * element);
  } catch (const std::bad_alloc&) {
    throw_range_error(env, "expected a result this machine can allocate but got " + std::to_string(count) +
                               " elements (" + std::to_string(count * element) + " bytes)");
  }
}

}  // namespace

void check_result_size(Napi::Env env, size_t count, size_t element) {
  if (count > kMaxResultBytes / element)
    throw_range_error(env, "expected a result of at most " + std::to_string(kMaxResultBytes) +
                               " bytes (4 GiB) but got " + std::to_string(count) + " elements of " +
                               std::to_string(element) + " bytes");
}

Napi::Float32Array new_float32_array(Napi::Env env, size_t count) {
  return Napi::Float32Array::New(env, count, checked_buffer(env, count, sizeof(float)), 0);
}

Napi::Int32Array new_int32_array(Napi::Env env, size_t count) {
  return Napi::Int32Array::New(env, count, checked_buffer(env, count, sizeof(int32_t)), 0);
}

const Signature& kLargeBuffer = declare("largeBuffer", {"bytes"});
Napi::Value LargeBuffer(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  const int64_t bytes = int_arg(Args(info, kLargeBuffer), "bytes", 1, static_cast<int64_t>(kMaxResultBytes));
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
        moe::free_large(p);
      },
      reinterpret_cast<void*>(static_cast<uintptr_t>(bytes)), &value);
  if (status != napi_ok) {  // a V8 sandbox build: V8's own (zeroed, 4 KiB-paged) memory
    if (still_ours(status)) moe::free_large(data);
    clear_pending(env);
    return Napi::ArrayBuffer::New(env, static_cast<size_t>(bytes));
  }
  int64_t ignored;
  napi_adjust_external_memory(env, bytes, &ignored);
  return Napi::ArrayBuffer(env, value);
}

}  // namespace moe_binding
