// A grow-only, 64-byte-aligned float/int buffer: the storage of packed weights and of the reusable workspace.
// Buffers of 2 MiB and more are 2 MiB-aligned and ask Linux for transparent huge pages (MADV_HUGEPAGE, which
// is what THP's default "madvise" mode waits for): the weight stream then needs 512x fewer TLB entries, and
// first touches (and, in VMs that hand memory back to the host, re-touches) fault once per 2 MiB, not per 4 KiB.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>
#if defined(_WIN32)
#include <malloc.h>
#endif
#include <new>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace moe {

constexpr size_t kHugePageBytes = size_t{2} << 20;

// `bytes` aligned to `align` (a power of two, at least sizeof(void*)), or null; freed by aligned_free only. (Windows'
// C runtime has no aligned_alloc / posix_memalign: _aligned_malloc there, whose blocks _aligned_free must free.)
inline void* aligned_malloc(size_t align, size_t bytes) {
#if defined(_WIN32)
  return _aligned_malloc(bytes, align);
#else
  void* p = nullptr;
  return posix_memalign(&p, align, bytes) == 0 ? p : nullptr;
#endif
}
inline void aligned_free(void* p) {
#if defined(_WIN32)
  _aligned_free(p);
#else
  std::free(p);
#endif
}
// A deleter for std::unique_ptr of aligned_malloc's blocks.
struct AlignedFree {
  void operator()(void* p) const { aligned_free(p); }
};

inline void* allocate_aligned(size_t bytes) {
  const bool huge = bytes >= kHugePageBytes;
  const size_t align = huge ? kHugePageBytes : 64;
  bytes = (bytes + align - 1) / align * align;
  void* p = aligned_malloc(align, bytes);
  if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (huge) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure leaves ordinary pages
#endif
  return p;
}

template <class T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t count) { reserve(count); }
  ~AlignedBuffer() { aligned_free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  // Makes room for `count` elements; keeps nothing (contents are scratch after a growth).
  T* reserve(size_t count) {
    if (count > capacity_) {
      aligned_free(data_);
      data_ = nullptr;  // if the allocation throws, the buffer is empty rather than dangling
      capacity_ = 0;
      data_ = static_cast<T*>(allocate_aligned(count * sizeof(T)));
      capacity_ = count;
    }
    return data_;
  }
  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t capacity() const { return capacity_; }

 private:
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace moe
