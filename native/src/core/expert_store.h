// The packed expert store: one file per MoE layer holding each routed expert's packed panels and biases exactly as
// the kernels read them (PackedMatrix's layout for this build's panel geometry), so that a cache miss costs one read
// and no conversion. Written once from a packed layer; read by positional reads only (a truncated or rewritten file
// is a clear error for that read, never a SIGBUS as a mapping would give).
//
// Layout (little-endian, every part 4 KiB-aligned so reads can bypass the page cache with O_DIRECT):
//   header   "MOESTORE", format version, the layout (shape, dtypes, panel geometry, record sizes), the caller's
//            fingerprint of the source (64 characters), per expert an XXH64-style checksum of its record, and a
//            checksum of all that
//   records  expert e at header_bytes + e * stride: up panels, up bias (float32), down panels, down bias
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moe/moe.h"

namespace moe {

class PackedExperts;
class StoreFile;

constexpr size_t kStoreAlign = 4096;

// Where one expert's parts lie in its record, from the layer's shape and this build's panel geometry.
struct StoreLayout {
  int64_t experts = 0;
  size_t up_panels = 0, up_bias = 0, down_panels = 0, down_bias = 0;  // bytes of each part
  size_t record() const { return up_panels + up_bias + down_panels + down_bias; }
  size_t stride() const { return (record() + kStoreAlign - 1) / kStoreAlign * kStoreAlign; }
  size_t up_bias_at() const { return up_panels; }
  size_t down_at() const { return up_panels + up_bias; }
  size_t down_bias_at() const { return down_at() + down_panels; }
};
StoreLayout store_layout(const ExpertShape& shape);

// 64-bit checksum of `bytes` (XXH64's round and avalanche; about 10 GB/s a core, a fraction of a read's time).
uint64_t store_checksum(const void* data, size_t bytes);

// Writes the store of `packed` (every routed expert) to `path` through a temporary file renamed into place, so that
// a reader never sees half a store. `fingerprint`: the caller's identity of the source (checkpoint, options).
void write_expert_store(const std::string& path, const std::string& fingerprint, const PackedExperts& packed);

// Whether `path` holds a complete store of this shape and geometry, written for `fingerprint` (its header and
// size checked; the records are checked as they are read).
bool expert_store_matches(const std::string& path, const std::string& fingerprint, const ExpertShape& shape);

// An open store: the header read and checked once; reads of one record each, from any thread.
class ExpertStore {
 public:
  // Throws std::invalid_argument naming the file when it is not a store of this shape for this fingerprint.
  ExpertStore(const std::string& path, const std::string& fingerprint, const ExpertShape& shape);
  ~ExpertStore();
  ExpertStore(const ExpertStore&) = delete;
  ExpertStore& operator=(const ExpertStore&) = delete;
  const StoreLayout& layout() const { return layout_; }
  const std::string& path() const { return path_; }
  bool has_bias(int part) const { return bias_[part]; }  // 0: w1 (and w3), 1: w2
  // Reads expert e's record into dst (layout().stride() bytes, kStoreAlign-aligned) and checks its checksum; throws
  // std::runtime_error naming the file and expert on a failed or short read or a mismatch.
  void read(int64_t e, unsigned char* dst) const;

 private:
  std::string path_;
  StoreLayout layout_;
  size_t header_bytes_ = 0;
  std::vector<uint64_t> checksums_;
  bool bias_[2] = {false, false};
  std::unique_ptr<StoreFile> file_;  // reads skip the OS's page cache where they can (the expert cache is the cache)
};

}  // namespace moe
