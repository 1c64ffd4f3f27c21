#include "expert_store.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "aligned_buffer.h"
#include "experts.h"
#include "isa.h"
#include "store_file.h"

namespace moe {

namespace {

constexpr char kMagic[8] = {'M', 'O', 'E', 'S', 'T', 'O', 'R', 'E'};
// Bump when the record layout or a panel format changes: an older store is then rebuilt, never misread.
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kFingerprintBytes = 64;

// The header's fixed part; the per-expert checksums follow it, then the header's own checksum.
struct Header {
  char magic[8];
  uint32_t version, isa;
  int64_t experts, d_model, d_hidden, group_size, nr;
  int32_t up_dtype, down_dtype, activation, gated;
  uint64_t up_panels, up_bias, down_panels, down_bias, stride, header_bytes;
  uint32_t bias[2];
  char fingerprint[kFingerprintBytes];
};

size_t header_bytes_for(int64_t experts) {
  const size_t raw = sizeof(Header) + static_cast<size_t>(experts) * 8 + 8;
  return (raw + kStoreAlign - 1) / kStoreAlign * kStoreAlign;
}

Header header_for(const ExpertShape& s, const StoreLayout& l, const std::string& fingerprint) {
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kFormatVersion;
  h.isa = static_cast<uint32_t>(active_isa());  // (the panels' layout is the active ISA's geometry)
  h.experts = s.num_experts, h.d_model = s.d_model, h.d_hidden = s.d_hidden, h.group_size = s.group_size;
  h.nr = kernels().geometry.nr();
  h.up_dtype = static_cast<int32_t>(s.weight_dtype), h.down_dtype = static_cast<int32_t>(down_dtype(s));
  h.activation = static_cast<int32_t>(s.activation), h.gated = is_gated(s.activation);
  h.up_panels = l.up_panels, h.up_bias = l.up_bias, h.down_panels = l.down_panels, h.down_bias = l.down_bias;
  h.stride = l.stride(), h.header_bytes = header_bytes_for(s.num_experts);
  std::memset(h.fingerprint, ' ', kFingerprintBytes);
  std::memcpy(h.fingerprint, fingerprint.data(), std::min(fingerprint.size(), kFingerprintBytes));
  return h;
}

// Everything of two headers but the bias flags (a property of the weights, not of the layout).
bool same_layout(Header a, const Header& b) {
  std::memcpy(a.bias, b.bias, sizeof a.bias);
  return std::memcmp(&a, &b, sizeof a) == 0;
}

// The header read from a file opened without read_direct and checked whole (its checksum), with the per-expert
// checksums; false when it is not a complete store header.
bool read_header(const StoreFile& f, Header* h, std::vector<uint64_t>* checksums) {
  if (!f.read_at(h, sizeof *h, 0) || std::memcmp(h->magic, kMagic, sizeof kMagic) != 0) return false;
  if (h->experts < 1 || h->experts > (int64_t{1} << 20) || h->header_bytes != header_bytes_for(h->experts))
    return false;
  std::vector<unsigned char> all(sizeof(Header) + static_cast<size_t>(h->experts) * 8 + 8);
  if (!f.read_at(all.data(), all.size(), 0)) return false;
  uint64_t stored;
  std::memcpy(&stored, all.data() + all.size() - 8, 8);
  if (store_checksum(all.data(), all.size() - 8) != stored) return false;
  checksums->resize(static_cast<size_t>(h->experts));
  std::memcpy(checksums->data(), all.data() + sizeof(Header), checksums->size() * 8);
  return true;
}

constexpr uint64_t kP1 = 11400714785074694791ull, kP2 = 14029467366897019727ull, kP3 = 1609587929392839161ull,
                   kP4 = 9650029242287828579ull, kP5 = 2870177450012600261ull;
inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t round64(uint64_t acc, uint64_t in) { return rotl(acc + in * kP2, 31) * kP1; }
inline uint64_t merge64(uint64_t acc, uint64_t v) { return (acc ^ round64(0, v)) * kP1 + kP4; }
inline uint64_t load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

uint64_t store_checksum(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* const end = p + bytes;
  uint64_t h;
  if (bytes >= 32) {
    uint64_t v1 = kP1 + kP2, v2 = kP2, v3 = 0, v4 = 0 - kP1;
    for (; p + 32 <= end; p += 32)
      v1 = round64(v1, load64(p)), v2 = round64(v2, load64(p + 8)), v3 = round64(v3, load64(p + 16)),
      v4 = round64(v4, load64(p + 24));
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge64(merge64(merge64(merge64(h, v1), v2), v3), v4);
  } else {
    h = kP5;
  }
  h += bytes;
  for (; p + 8 <= end; p += 8) h = rotl(h ^ round64(0, load64(p)), 27) * kP1 + kP4;
  for (; p < end; ++p) h = rotl(h ^ (*p * kP5), 11) * kP1;
  h ^= h >> 33, h *= kP2, h ^= h >> 29, h *= kP3, h ^= h >> 32;
  return h;
}

StoreLayout store_layout(const ExpertShape& s) {
  const cpu::PanelGeometry& g = kernels().geometry;
  const PackedMatrix up =
      PackedMatrix::geometry(g, s.d_hidden, s.d_model, s.weight_dtype, s.group_size, is_gated(s.activation));
  const PackedMatrix down = PackedMatrix::geometry(g, s.d_model, s.d_hidden, down_dtype(s), s.group_size, false);
  StoreLayout l;
  l.experts = s.num_experts;
  l.up_panels = (up.matrix_bytes() + 63) / 64 * 64, l.up_bias = (up.bias_bytes() + 63) / 64 * 64;
  l.down_panels = (down.matrix_bytes() + 63) / 64 * 64, l.down_bias = (down.bias_bytes() + 63) / 64 * 64;
  return l;
}

void write_expert_store(const std::string& path, const std::string& fingerprint, const PackedExperts& packed) {
  const ExpertShape& s = packed.shape;
  const StoreLayout l = store_layout(s);
  Header h = header_for(s, l, fingerprint);
  h.bias[0] = packed.up.has_bias(0) || packed.up.has_bias(1), h.bias[1] = packed.down.has_bias(0);
  // (a name of this process and call: two processes packing the same layer at once each write their own, and the
  // last rename wins with a complete store)
  static std::atomic<int> writes{0};
  const std::string tmp = path + ".partial-" + std::to_string(process_id()) + "-" + std::to_string(++writes);
  StoreFile f(tmp, StoreFile::Mode::write);
  if (!f.is_open())
    throw std::invalid_argument("moe-kernels: expected to write the expert store " + tmp + " but got " +
                                last_error_text());
  bool ok = true;
  std::vector<unsigned char> header(h.header_bytes, 0);
  std::vector<uint64_t> sums(static_cast<size_t>(s.num_experts));
  std::unique_ptr<unsigned char, AlignedFree> record(
      static_cast<unsigned char*>(aligned_malloc(kStoreAlign, l.stride())));
  if (!record) throw std::bad_alloc();
  for (int64_t e = 0; ok && e < s.num_experts; ++e) {
    std::memset(record.get(), 0, l.stride());
    unsigned char* r = record.get();
    std::memcpy(r, packed.up.matrix_data(e), packed.up.matrix_bytes());
    std::memcpy(r + l.up_bias_at(), packed.up.bias_data(e), packed.up.bias_bytes());
    std::memcpy(r + l.down_at(), packed.down.matrix_data(e), packed.down.matrix_bytes());
    std::memcpy(r + l.down_bias_at(), packed.down.bias_data(e), packed.down.bias_bytes());
    sums[e] = store_checksum(r, l.stride());
    ok = f.write_at(r, l.stride(), h.header_bytes + static_cast<uint64_t>(e) * l.stride());
  }
  std::memcpy(header.data(), &h, sizeof h);
  std::memcpy(header.data() + sizeof h, sums.data(), sums.size() * 8);
  const uint64_t whole = store_checksum(header.data(), sizeof h + sums.size() * 8);
  std::memcpy(header.data() + sizeof h + sums.size() * 8, &whole, 8);
  if (ok) ok = f.write_at(header.data(), header.size(), 0);  // (last: a store without it is no store)
  if (ok) ok = f.sync();
  std::string why = ok ? "" : last_error_text();
  f.close();
  if (ok && !replace_file(tmp, path)) ok = false, why = last_error_text();
  if (!ok) {
    remove_file(tmp);
    throw std::invalid_argument("moe-kernels: expected to write the expert store " + path + " but got " + why);
  }
}

bool expert_store_matches(const std::string& path, const std::string& fingerprint, const ExpertShape& shape) {
  const StoreFile f(path, StoreFile::Mode::read);
  if (!f.is_open()) return false;
  Header h;
  std::vector<uint64_t> sums;
  uint64_t size = 0;
  return read_header(f, &h, &sums) && same_layout(header_for(shape, store_layout(shape), fingerprint), h) &&
         f.size(&size) && size == h.header_bytes + h.stride * static_cast<uint64_t>(h.experts);
}

ExpertStore::ExpertStore(const std::string& path, const std::string& fingerprint, const ExpertShape& shape)
    : path_(path),
      layout_(store_layout(shape)),
      file_(std::make_unique<StoreFile>(path, StoreFile::Mode::read_direct)) {
  const auto refuse = [&](const std::string& why) {
    throw std::invalid_argument("moe-kernels: expected " + path + " to be the expert store of this layer but got " +
                                why);
  };
  if (!file_->is_open()) refuse(last_error_text());
  // (the header through a file opened without read_direct: its reads need no alignment)
  const StoreFile plain(path, StoreFile::Mode::read);
  Header h;
  if (!plain.is_open() || !read_header(plain, &h, &checksums_)) refuse("no complete store header");
  if (!same_layout(header_for(shape, layout_, fingerprint), h))
    refuse("a store of another source, shape, dtype or build (it is rebuilt by fromPretrained)");
  uint64_t size = 0;
  if (!file_->size(&size) || size != h.header_bytes + h.stride * h.experts)
    refuse("a file of " + std::to_string(size) + " bytes (truncated or grown)");
  header_bytes_ = h.header_bytes;
  bias_[0] = h.bias[0] != 0, bias_[1] = h.bias[1] != 0;
}

ExpertStore::~ExpertStore() = default;

void ExpertStore::read(int64_t e, unsigned char* dst) const {
  const size_t stride = layout_.stride();
  const uint64_t at = header_bytes_ + static_cast<uint64_t>(e) * stride;
  bool at_end = false;
  if (!file_->read_at(dst, stride, at, &at_end))
    throw std::runtime_error("moe-kernels: expected to read expert " + std::to_string(e) + " (" +
                             std::to_string(stride) + " bytes at " + std::to_string(at) + ") from " + path_ +
                             " but got " + (at_end ? std::string("the end of the file") : last_error_text()));
  if (store_checksum(dst, stride) != checksums_[static_cast<size_t>(e)])
    throw std::runtime_error("moe-kernels: expected expert " + std::to_string(e) + " of " + path_ +
                             " to match its checksum but it does not (the file changed or is damaged; delete it "
                             "to have it rebuilt)");
}

}  // namespace moe
