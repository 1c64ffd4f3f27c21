// Weight packing: a stack of [out, in] matrices (one per expert) rearranged once into the active ISA's panel
// layout, so the microkernel streams B contiguously, each weight stored in the matrix's dtype (weight_formats.h). A
// gated pair (W1, W3) shares panels: per k, nr/2 gate columns then nr/2 up columns, so one microkernel call yields both
// halves of act(gate) * up.
#pragma once
#include <cstdint>
#include <vector>

#include "../cpu/kernel_table.h"
#include "aligned_buffer.h"

namespace moe {

// One stack of [count, n, k] weights: float32 values or quantized codes and scales (QuantizedSource), and a
// [count, n] bias or null. Biases stay float32.
struct MatrixSource {
  const float* values = nullptr;
  QuantizedSource quantized{};
  const float* bias = nullptr;
  HalfSource half{};  // instead of values: 16-bit floats, widened row by row while packing
};

class PackedMatrix {
 public:
  // up: the gated pair's up-projection (W3), or none (no values or codes). group_size: see ExpertShape (0: one
  // group per row).
  PackedMatrix(const cpu::PanelGeometry& geometry, int64_t count, int64_t n, int64_t k, WeightDtype dtype,
               int64_t group_size, const MatrixSource& w, const MatrixSource& up = {});
  // A matrix of no weights with the geometry of `count` 0 such ones (panels, bytes, gated or not): the template of
  // problems whose panels lie elsewhere (an expert read from its store, core/expert_store.h).
  static PackedMatrix geometry(const cpu::PanelGeometry& geometry, int64_t n, int64_t k, WeightDtype dtype,
                               int64_t group_size, bool gated);
  // The GEMM problem for matrix `index` with the given epilogue; rows still to be set by the caller.
  cpu::GemmProblem problem(int64_t index, Activation activation) const;
  // Bytes of one matrix's panels and of its bias (float32, panel_count() * nr), and where matrix `index`'s lie.
  size_t matrix_bytes() const { return static_cast<size_t>(panels_) * panel_bytes_; }
  size_t bias_bytes() const { return static_cast<size_t>(panels_ * nr_) * sizeof(float); }
  const unsigned char* matrix_data(int64_t index) const { return data_.data() + index * matrix_bytes(); }
  const float* bias_data(int64_t index) const { return bias_.data() + index * panels_ * nr_; }
  int64_t panel_count() const { return panels_; }
  int64_t n() const { return n_; }
  int64_t out_cols() const { return out_cols_; }  // output columns per panel
  WeightDtype dtype() const { return dtype_; }
  size_t bytes() const { return data_.capacity() + bias_.capacity() * sizeof(float); }
  // What training added beside the weights: the optimizer's state and the transposed panels of the backward.
  size_t training_bytes() const {
    return (state1_.capacity() + state2_.capacity() + bias_state1_.capacity() + bias_state2_.capacity() +
            transposed_.capacity()) *
           sizeof(float);
  }
  // Matrix `index` of part 0 (W, or a gated pair's W1) or 1 (W3) read back: out [n, k] as the kernels compute with
  // it (panel layout undone, 16-bit widened, codes times scales); bias [n] (zeros where none was given), or null.
  void unpack(int64_t index, int part, float* out, float* bias) const;
  // The same for a matrix of this geometry whose panels and bias lie elsewhere (an expert's store record).
  void unpack_from(const unsigned char* panels, const float* panel_bias, int part, float* out, float* bias) const;
  // Whether a bias was given for part 0 / 1.
  bool has_bias(int part) const { return has_bias_[part]; }
  // Matrix `index` transposed, in float32 panels (float32 matrices only; Unsupported otherwise): ceil(k / nr) panels
  // of panel_count() * nr rows (this matrix's columns, padding included) by nr columns (its inputs, zeros past k), the
  // B of a GEMM by W^T (core/backward.cpp). Built at the first call, then refreshed by update() from the panels it
  // has just written (a training loop's backward does not turn the weights again); 1x the weights in memory. The
  // caller serialises this against update() (the layer's lock).
  const float* transposed(int64_t index) const;
  // One optimizer step on matrix `index`, part 0 / 1, in place (float32 only): grad [n, k] and bias_grad [n] (or
  // null: the bias stays) in the [out, in] layout. The optimizer's state lives here, laid out like the weights. The
  // caller serialises this against forwards (the layer's lock).
  void update(int64_t index, int part, const float* grad, const float* bias_grad, const OptimizerStep& step);

 private:
  int64_t count_, n_, k_, group_, nr_, out_cols_, panels_;
  size_t panel_bytes_ = 0;
  bool gated_;
  bool has_bias_[2] = {false, false};
  WeightDtype dtype_;
  AlignedBuffer<unsigned char> data_;
  AlignedBuffer<float> bias_;
  // Optimizer state, laid out like data_ (as floats) and bias_: momentum or first moment, second moment; empty
  // until a first step.
  AlignedBuffer<float> state1_, state2_, bias_state1_, bias_state2_;
  // transposed(): one matrix's floats; the buffer; per matrix, whether it matches the weights, and (gated) whether
  // part 0 was updated on fresh ones, so that part 1's update may refresh them.
  int64_t transposed_floats() const { return (k_ + nr_ - 1) / nr_ * panels_ * nr_ * nr_; }
  mutable AlignedBuffer<float> transposed_;
  mutable std::vector<char> transposed_fresh_, refresh_due_;
};

}  // namespace moe
