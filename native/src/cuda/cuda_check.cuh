// CUDA error checks and a grow-only device buffer, shared by the CUDA translation units.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace moe::cuda {

[[noreturn]] inline void fail(cudaError_t e, const char* what, const char* file, int line) {
  throw std::runtime_error(std::string("moe-kernels: CUDA error ") + cudaGetErrorName(e) + " (" +
                           cudaGetErrorString(e) + ") in " + what + " at " + file + ":" + std::to_string(line));
}

#define MOE_CUDA_CHECK(call)                                                             \
  do {                                                                                   \
    const cudaError_t moe_err_ = (call);                                                 \
    if (moe_err_ != cudaSuccess) ::moe::cuda::fail(moe_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: the launch error now (bad configuration), execution errors at the next sync.
#define MOE_CUDA_LAUNCHED(name) MOE_CUDA_CHECK(cudaGetLastError())

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* reserve(size_t count) {
    if (count > capacity_) {
      // The old block goes first and the capacity with it: a failed cudaMalloc leaves an empty buffer (null,
      // capacity 0), never a null pointer with the old capacity that a smaller retry would write through.
      T* old = ptr_;
      ptr_ = nullptr;
      capacity_ = 0;
      if (old) MOE_CUDA_CHECK(cudaFree(old));
      MOE_CUDA_CHECK(cudaMalloc(&ptr_, sizeof(T) * (count ? count : 1)));
      capacity_ = count;
    }
    return ptr_;
  }
  T* get() const { return ptr_; }
  size_t bytes() const { return capacity_ * sizeof(T); }

 private:
  T* ptr_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace moe::cuda
