#include "packing.h"

#include <algorithm>

#include "thread_pool.h"
#include "weight_formats.h"

namespace moe {

PackedMatrix::PackedMatrix(const cpu::PanelGeometry& geometry, int64_t count, int64_t n, int64_t k, const float* w,
                           const float* bias, const float* w_up, const float* bias_up, WeightDtype dtype)
    : count_(count), n_(n), k_(k), nr_(geometry.nr()), gated_(w_up != nullptr), dtype_(dtype) {
  const WeightFormat& format = weight_format(dtype);
  out_cols_ = gated_ ? nr_ / 2 : nr_;
  panels_ = (n + out_cols_ - 1) / out_cols_;
  panel_bytes_ = format.panel_bytes(k_, static_cast<int>(nr_));
  const size_t per_matrix = static_cast<size_t>(panels_) * panel_bytes_;
  unsigned char* dst = data_.reserve(static_cast<size_t>(count_) * per_matrix);
  float* bdst = bias_.reserve(static_cast<size_t>(count_ * panels_ * nr_));
  const int parts = gated_ ? 2 : 1;
  // Panels are independent: pack them on the pool (a Mixtral-sized layer is hundreds of MB).
  ThreadPool::instance().run(count_ * panels_, [&](int64_t item) {
    const int64_t e = item / panels_, p = item % panels_;
    void* panel = dst + e * per_matrix + p * panel_bytes_;
    float* pbias = bdst + (e * panels_ + p) * nr_;
    for (int part = 0; part < parts; ++part) {
      const float* src = (part == 0 ? w : w_up) + e * n_ * k_;
      const float* bsrc = part == 0 ? bias : bias_up;
      for (int64_t c = 0; c < out_cols_; ++c) {
        const int64_t col = p * out_cols_ + c, slot = part * out_cols_ + c;
        const bool valid = col < n_;
        format.pack_column(valid ? src + col * k_ : nullptr, k_, static_cast<int>(nr_), static_cast<int>(slot), panel);
        pbias[slot] = valid && bsrc ? bsrc[e * n_ + col] : 0.0f;
      }
    }
  });
}

cpu::GemmProblem PackedMatrix::problem(int64_t index, Activation activation) const {
  cpu::GemmProblem p;
  p.panels = data_.data() + static_cast<size_t>(index) * panels_ * panel_bytes_;
  p.weight_dtype = dtype_;
  p.bias = bias_.data() + index * panels_ * nr_;
  p.k = k_;
  p.n = n_;
  p.activation = activation;
  p.gated = gated_;
  return p;
}

}  // namespace moe
