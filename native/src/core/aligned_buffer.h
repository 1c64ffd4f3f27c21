// A grow-only, 64-byte-aligned float/int buffer: the storage of packed weights and of the reusable workspace.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

namespace moe {

template <class T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t count) { reserve(count); }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  // Makes room for `count` elements; keeps nothing (contents are scratch after a growth).
  T* reserve(size_t count) {
    if (count > capacity_) {
      std::free(data_);
      const size_t bytes = ((count * sizeof(T) + 63) / 64) * 64;
      data_ = static_cast<T*>(std::aligned_alloc(64, bytes));
      if (!data_) throw std::bad_alloc();
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
