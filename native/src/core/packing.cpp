#include "packing.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../cpu/half.h"
#include "isa.h"
#include "thread_pool.h"
#include "weight_formats.h"

namespace moe {

namespace {

// One nr x nr block turned: dst row c = src column c (rows nr floats apart), src rows past `rows` as zeros. The ISA's
// tiles where it has them (AVX-512: 16 x 16), else 4 x 4 SSE tiles (the x86-64 baseline), else element by element.
void transpose_block(const float* src, float* dst, int64_t nr, int64_t rows) {
  if (const auto block = kernels().transpose_block) return block(src, dst, rows);
  int64_t r0 = 0;
#if defined(__SSE2__)
  if (nr % 4 == 0)
    for (; r0 + 4 <= rows; r0 += 4)
      for (int64_t c = 0; c < nr; c += 4) {
        __m128 a = _mm_loadu_ps(src + r0 * nr + c), b = _mm_loadu_ps(src + (r0 + 1) * nr + c);
        __m128 e = _mm_loadu_ps(src + (r0 + 2) * nr + c), f = _mm_loadu_ps(src + (r0 + 3) * nr + c);
        _MM_TRANSPOSE4_PS(a, b, e, f);
        _mm_storeu_ps(dst + c * nr + r0, a);
        _mm_storeu_ps(dst + (c + 1) * nr + r0, b);
        _mm_storeu_ps(dst + (c + 2) * nr + r0, e);
        _mm_storeu_ps(dst + (c + 3) * nr + r0, f);
      }
#endif
  for (int64_t c = 0; c < nr; ++c) {
    float* row = dst + c * nr;
    for (int64_t r = r0; r < rows; ++r) row[r] = src[r * nr + c];
    std::fill(row + rows, row + nr, 0.0f);
  }
}

// Source panel p's blocks into the transposed panels (see PackedMatrix::transposed): block (p, q) of nr x nr moves
// from rows q * nr .. of source panel p to rows p * nr .. of result panel q, turned; both blocks are contiguous.
void transpose_panel(const float* panel, int64_t p, int64_t k, int64_t panel_count, int64_t nr, float* out) {
  for (int64_t q = 0; q * nr < k; ++q)
    transpose_block(panel + q * nr * nr, out + (q * panel_count + p) * nr * nr, nr, std::min(nr, k - q * nr));
}

}  // namespace

PackedMatrix::PackedMatrix(const cpu::PanelGeometry& geometry, int64_t count, int64_t n, int64_t k, WeightDtype dtype,
                           int64_t group_size, const MatrixSource& w, const MatrixSource& up)
    : count_(count),
      n_(n),
      k_(k),
      group_(is_k_quant(dtype)     ? (dtype == WeightDtype::q6_k ? 16 : 32)
             : is_quantized(dtype) ? (group_size > 0 ? group_size : k)
                                   : 0),
      nr_(geometry.nr()),
      gated_(up.values || up.quantized.codes || up.half.bits),
      dtype_(dtype) {
  const WeightFormat& format = weight_format(dtype);
  has_bias_[0] = w.bias != nullptr;
  has_bias_[1] = up.bias != nullptr;
  out_cols_ = gated_ ? nr_ / 2 : nr_;
  panels_ = (n + out_cols_ - 1) / out_cols_;
  panel_bytes_ = format.panel_bytes(k_, group_, static_cast<int>(nr_));
  const size_t per_matrix = static_cast<size_t>(panels_) * panel_bytes_;
  unsigned char* dst = data_.reserve(static_cast<size_t>(count_) * per_matrix);
  float* bdst = bias_.reserve(static_cast<size_t>(count_ * panels_ * nr_));
  const int parts = gated_ ? 2 : 1;
  const int64_t row_bytes = code_bytes(dtype, k_), groups = group_ ? scales_per_row(dtype, k_, group_) : 0;
  // Panels are independent: pack them on the pool (a Mixtral-sized layer is hundreds of MB).
  ThreadPool::instance().run(count_ * panels_, [&](int64_t item) {
    thread_local std::vector<float> widened;  // one row of a HalfSource as float32
    const int64_t e = item / panels_, p = item % panels_;
    void* panel = dst + e * per_matrix + p * panel_bytes_;
    float* pbias = bdst + (e * panels_ + p) * nr_;
    for (int part = 0; part < parts; ++part) {
      const MatrixSource& src = part == 0 ? w : up;
      for (int64_t c = 0; c < out_cols_; ++c) {
        const int64_t col = p * out_cols_ + c, slot = part * out_cols_ + c, row = e * n_ + col;
        ColumnSource column;
        if (col < n_) {
          if (src.quantized.codes) {
            column.codes = src.quantized.codes + row * row_bytes;
            column.scales = src.quantized.scales + row * groups;
          } else if (src.half.bits) {
            widened.resize(static_cast<size_t>(k_));
            const uint16_t* bits = src.half.bits + row * k_;
            for (int64_t i = 0; i < k_; ++i)
              widened[i] = src.half.bfloat16 ? cpu::bfloat16_to_float(bits[i]) : cpu::half_to_float(bits[i]);
            column.values = widened.data();
          } else {
            column.values = src.values + row * k_;
          }
        }
        format.pack_column(column, k_, group_, static_cast<int>(nr_), static_cast<int>(slot), panel);
        pbias[slot] = col < n_ && src.bias ? src.bias[row] : 0.0f;
      }
    }
  });
}

void PackedMatrix::unpack(int64_t index, int part, float* out, float* bias) const {
  unpack_from(matrix_data(index), bias_data(index), part, out, bias);
}

void PackedMatrix::unpack_from(const unsigned char* matrix, const float* panel_bias, int part, float* out,
                               float* bias) const {
  const WeightFormat& format = weight_format(dtype_);
  for (int64_t p = 0; p < panels_; ++p)
    for (int64_t c = 0; c < out_cols_; ++c) {
      const int64_t col = p * out_cols_ + c;
      if (col >= n_) break;
      const int slot = static_cast<int>(part * out_cols_ + c);
      format.unpack_column(matrix + p * panel_bytes_, k_, group_, static_cast<int>(nr_), slot, out + col * k_);
      if (bias) bias[col] = panel_bias[p * nr_ + slot];
    }
}

namespace {

// One parameter's step (OptimizerStep's formulas); s1, s2 its state.
inline void optimizer_update(float& w, float g, float& s1, float& s2, const OptimizerStep& o, float c1, float c2) {
  if (o.kind == OptimizerStep::Kind::sgd) {
    g += o.weight_decay * w;
    s1 = o.momentum * s1 + g;
    w -= o.lr * s1;
    return;
  }
  w *= 1.0f - o.lr * o.weight_decay;
  s1 = o.beta1 * s1 + (1.0f - o.beta1) * g;
  s2 = o.beta2 * s2 + (1.0f - o.beta2) * g * g;
  w -= (o.lr / c1) * s1 / (std::sqrt(s2) / std::sqrt(c2) + o.eps);
}

// optimizer_update over n contiguous parameters, written so that it vectorises (no aliasing, no branch inside).
void update_run(float* __restrict w, const float* __restrict g, float* __restrict s1, float* __restrict s2, int64_t n,
                const OptimizerStep& o, float c1, float c2) {
  if (o.kind == OptimizerStep::Kind::sgd) {
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i] + o.weight_decay * w[i];
      s1[i] = o.momentum * s1[i] + gi;
      w[i] -= o.lr * s1[i];
    }
    return;
  }
  const float decay = 1.0f - o.lr * o.weight_decay, rate = o.lr / c1, root_c2 = std::sqrt(c2);
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float wi = w[i] * decay;
    const float m = o.beta1 * s1[i] + (1.0f - o.beta1) * gi;
    const float v = o.beta2 * s2[i] + (1.0f - o.beta2) * gi * gi;
    s1[i] = m;
    s2[i] = v;
    w[i] = wi - rate * m / (std::sqrt(v) / root_c2 + o.eps);
  }
}

}  // namespace

void PackedMatrix::update(int64_t index, int part, const float* grad, const float* bias_grad,
                          const OptimizerStep& step) {
  if (dtype_ != WeightDtype::float32)
    throw Unsupported(std::string("moe-kernels: expected weightDtype 'float32' for an optimizer step but got '") +
                      weight_dtype_name(dtype_) + "'");
  const size_t floats = data_.capacity() / sizeof(float), bias_floats = static_cast<size_t>(count_ * panels_ * nr_);
  auto ready = [](AlignedBuffer<float>& b, size_t n) {  // zeros at the first step (capacity counts elements)
    if (b.capacity() < n) {
      float* q = b.reserve(n);
      std::fill(q, q + n, 0.0f);
    }
    return b.data();
  };
  float* s1 = ready(state1_, floats);
  float* s2 = step.kind == OptimizerStep::Kind::adamw ? ready(state2_, floats) : nullptr;
  float* bs1 = ready(bias_state1_, bias_floats);
  float* bs2 = step.kind == OptimizerStep::Kind::adamw ? ready(bias_state2_, bias_floats) : nullptr;
  const float c1 = 1.0f - std::pow(step.beta1, static_cast<float>(step.step));
  const float c2 = 1.0f - std::pow(step.beta2, static_cast<float>(step.step));
  float* weights = reinterpret_cast<float*>(data_.data());
  const int64_t panel_floats = static_cast<int64_t>(panel_bytes_ / sizeof(float));
  // The transposed panels, where a backward made them, follow the weights: a gated matrix's are turned once both
  // of its parts are updated (part 0 then part 1, as the layer's step calls it), from the panels still in cache;
  // any other order leaves them stale, rebuilt at the next transposed().
  bool refresh = false;
  if (!transposed_fresh_.empty()) {
    const bool last_part = part == (gated_ ? 1 : 0);
    refresh = last_part && (gated_ ? refresh_due_[index] != 0 : transposed_fresh_[index] != 0);
    refresh_due_[index] = gated_ && part == 0 && transposed_fresh_[index];
    transposed_fresh_[index] = 0;
  }
  float* transposed = refresh ? transposed_.data() + index * transposed_floats() : nullptr;
  ThreadPool::instance().run(panels_, [&](int64_t p) {
    const int64_t at0 = (index * panels_ + p) * panel_floats, slot0 = part * out_cols_;
    const int64_t col0 = p * out_cols_, valid = std::min(out_cols_, n_ - col0);
    if (valid <= 0) return;
    float* panel = weights + at0 + slot0;
    float* p1 = s1 + at0 + slot0;
    float* p2 = s2 ? s2 + at0 + slot0 : nullptr;
    // The gradient is [n, k]; a panel holds k rows of its columns. A tile of kTile inputs is turned to the panel's
    // order first, so the update runs along contiguous columns and vectorises.
    constexpr int64_t kTile = 16;
    alignas(64) float tile[kTile * 256];
    for (int64_t k0 = 0; k0 < k_; k0 += kTile) {
      const int64_t kn = std::min(kTile, k_ - k0);
      for (int64_t c = 0; c < valid; ++c)
        for (int64_t j = 0; j < kn; ++j) tile[j * valid + c] = grad[(col0 + c) * k_ + k0 + j];
      for (int64_t j = 0; j < kn; ++j) {
        const int64_t at = (k0 + j) * nr_;
        update_run(panel + at, tile + j * valid, p1 + at, p2 ? p2 + at : nullptr, valid, step, c1, c2);
      }
    }
    if (bias_grad)
      for (int64_t c = 0; c < valid; ++c) {
        const int64_t at = (index * panels_ + p) * nr_ + slot0 + c;
        float unused = 0.0f;
        optimizer_update(bias_.data()[at], bias_grad[col0 + c], bs1[at], bs2 ? bs2[at] : unused, step, c1, c2);
      }
    if (transposed) transpose_panel(weights + at0, p, k_, panels_, nr_, transposed);
  });
  if (refresh) transposed_fresh_[index] = 1;
}

const float* PackedMatrix::transposed(int64_t index) const {
  if (dtype_ != WeightDtype::float32)
    throw Unsupported("moe-kernels: expected a float32 matrix for its transposed panels");
  const int64_t per_matrix = transposed_floats();
  if (transposed_fresh_.empty()) {
    transposed_.reserve(static_cast<size_t>(count_ * per_matrix));
    transposed_fresh_.assign(static_cast<size_t>(count_), 0);
    refresh_due_.assign(static_cast<size_t>(count_), 0);
  }
  float* t = transposed_.data() + index * per_matrix;
  if (!transposed_fresh_[index]) {
    const float* w = reinterpret_cast<const float*>(data_.data()) + index * panels_ * (panel_bytes_ / sizeof(float));
    const int64_t panel_floats = static_cast<int64_t>(panel_bytes_ / sizeof(float));
    ThreadPool::instance().run(panels_,
                               [&](int64_t p) { transpose_panel(w + p * panel_floats, p, k_, panels_, nr_, t); });
    transposed_fresh_[index] = 1;
  }
  return t;
}

PackedMatrix PackedMatrix::geometry(const cpu::PanelGeometry& geometry, int64_t n, int64_t k, WeightDtype dtype,
                                    int64_t group_size, bool gated) {
  // (no matrix is read: the sources only say which parts exist)
  static const float marker = 0.0f;
  return PackedMatrix(geometry, 0, n, k, dtype, group_size, {&marker}, gated ? MatrixSource{&marker} : MatrixSource{});
}

cpu::GemmProblem PackedMatrix::problem(int64_t index, Activation activation) const {
  cpu::GemmProblem p;
  p.panels = data_.data() + static_cast<size_t>(index) * panels_ * panel_bytes_;
  p.weight_dtype = dtype_;
  p.group = group_;
  p.panel_bytes = static_cast<int64_t>(panel_bytes_);
  p.bias = bias_.data() + index * panels_ * nr_;
  p.k = k_;
  p.n = n_;
  p.activation = activation;
  p.gated = gated_;
  return p;
}

}  // namespace moe
