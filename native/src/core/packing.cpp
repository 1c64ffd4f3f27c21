#include "packing.h"

#include <algorithm>

#include "thread_pool.h"

namespace moe {

PackedMatrix::PackedMatrix(const cpu::PanelGeometry& geometry, int64_t count, int64_t n, int64_t k, const float* w,
                           const float* bias, const float* w_up, const float* bias_up)
    : count_(count), n_(n), k_(k), nr_(geometry.nr()), gated_(w_up != nullptr) {
  out_cols_ = gated_ ? nr_ / 2 : nr_;
  panels_ = (n + out_cols_ - 1) / out_cols_;
  const int64_t per_matrix = panels_ * k_ * nr_;
  float* dst = data_.reserve(static_cast<size_t>(count_ * per_matrix));
  float* bdst = bias_.reserve(static_cast<size_t>(count_ * panels_ * nr_));
  const int parts = gated_ ? 2 : 1;
  // Panels are independent: pack them on the pool (a Mixtral-sized layer is hundreds of MB).
  ThreadPool::instance().run(count_ * panels_, [&](int64_t item) {
    const int64_t e = item / panels_, p = item % panels_;
    float* panel = dst + e * per_matrix + p * k_ * nr_;
    float* pbias = bdst + (e * panels_ + p) * nr_;
    for (int part = 0; part < parts; ++part) {
      const float* src = (part == 0 ? w : w_up) + e * n_ * k_;
      const float* bsrc = part == 0 ? bias : bias_up;
      for (int64_t c = 0; c < out_cols_; ++c) {
        const int64_t col = p * out_cols_ + c, slot = part * out_cols_ + c;
        const bool valid = col < n_;
        for (int64_t kk = 0; kk < k_; ++kk) panel[kk * nr_ + slot] = valid ? src[col * k_ + kk] : 0.0f;
        pbias[slot] = valid && bsrc ? bsrc[e * n_ + col] : 0.0f;
      }
    }
  });
}

cpu::GemmProblem PackedMatrix::problem(int64_t index, Activation activation) const {
  cpu::GemmProblem p;
  p.panels = data_.data() + index * panels_ * k_ * nr_;
  p.bias = bias_.data() + index * panels_ * nr_;
  p.k = k_;
  p.n = n_;
  p.activation = activation;
  p.gated = gated_;
  return p;
}

}  // namespace moe
