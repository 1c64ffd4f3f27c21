// Grouped GEMM over expert segments on tensor cores (WMMA bf16 16x16x16, fp32 accumulation), rows gathered
// by token while loading A, the activation (and SwiGLU/GeGLU gating) fused into the first GEMM's epilogue,
// results scattered to their slots by the second. 64 x 64 output tiles, 4 warps of 32 x 32.
#include <mma.h>

#include "cuda_check.cuh"
#include "kernels.cuh"

namespace moe::cuda {

namespace {

using namespace nvcuda;

constexpr int BM = 64, BN = 64, BK = 32, LDS = BK + 8, LDC = BN + 4, kThreads = 128;

__device__ float activate(Activation a, float x) {
  switch (a) {
    case Activation::swiglu:
    case Activation::swiglu_clamped:  // (its clamps and alpha: the epilogue)
    case Activation::silu: return x / (1.f + __expf(-x));
    case Activation::geglu:
    case Activation::gelu: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case Activation::gelu_tanh: return 0.5f * x * (1.f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case Activation::relu: return fmaxf(x, 0.f);
    case Activation::identity: break;
  }
  return x;
}

template <bool kUp, bool kGated>
__global__ void __launch_bounds__(kThreads) grouped_gemm_kernel(GemmArgs a) {
  // A and B tiles during the main loop; the fp32 output tiles after it (the same bytes, reused).
  constexpr int kTileBytes = (BM + BN * (kGated ? 2 : 1)) * LDS * 2;
  constexpr int kOutBytes = BM * LDC * 4 * (kGated ? 2 : 1);
  __shared__ __align__(128) unsigned char smem[kTileBytes > kOutBytes ? kTileBytes : kOutBytes];
  __nv_bfloat16* As = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* Bs = As + BM * LDS;
  __nv_bfloat16* Bu = Bs + BN * LDS;

  const RowTile tile = a.tiles[blockIdx.x];
  const int64_t n0 = int64_t(blockIdx.y) * BN;
  const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;
  const __nv_bfloat16* w = a.w + int64_t(tile.expert) * a.n * a.k_dim;
  const __nv_bfloat16* wu = kGated ? a.w_up + int64_t(tile.expert) * a.n * a.k_dim : nullptr;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2], accu[2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      wmma::fill_fragment(acc[i][j], 0.f);
      if (kGated) wmma::fill_fragment(accu[i][j], 0.f);
    }

  for (int64_t k0 = 0; k0 < a.k_dim; k0 += BK) {
    for (int idx = threadIdx.x; idx < BM * BK; idx += kThreads) {
      const int r = idx / BK, c = idx % BK;
      const int64_t kk = k0 + c;
      float v = 0.f;
      if (r < tile.rows && kk < a.k_dim) {
        const int64_t pos = int64_t(tile.offset) + tile.row0 + r;
        if (kUp)
          v = a.x[int64_t(a.order[pos] / a.slots_per_token) * a.k_dim + kk];  // gathered by token
        else
          v = __bfloat162float(a.hidden_in[pos * a.k_dim + kk]);
      }
      As[r * LDS + c] = __float2bfloat16(v);
    }
    for (int idx = threadIdx.x; idx < BN * BK; idx += kThreads) {
      const int r = idx / BK, c = idx % BK;
      const int64_t col = n0 + r, kk = k0 + c;
      const bool in = col < a.n && kk < a.k_dim;
      Bs[r * LDS + c] = in ? w[col * a.k_dim + kk] : __float2bfloat16(0.f);
      if (kGated) Bu[r * LDS + c] = in ? wu[col * a.k_dim + kk] : __float2bfloat16(0.f);
    }
    __syncthreads();
    for (int ks = 0; ks < BK; ks += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], As + (wm * 32 + i * 16) * LDS + ks, LDS);
      for (int j = 0; j < 2; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
        wmma::load_matrix_sync(fb, Bs + (wn * 32 + j * 16) * LDS + ks, LDS);
        for (int i = 0; i < 2; ++i) wmma::mma_sync(acc[i][j], fa[i], fb, acc[i][j]);
        if (kGated) {
          wmma::load_matrix_sync(fb, Bu + (wn * 32 + j * 16) * LDS + ks, LDS);
          for (int i = 0; i < 2; ++i) wmma::mma_sync(accu[i][j], fa[i], fb, accu[i][j]);
        }
      }
    }
    __syncthreads();
  }

  float* Cs = reinterpret_cast<float*>(smem);
  float* Cu = Cs + BM * LDC;
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(Cs + (wm * 32 + i * 16) * LDC + wn * 32 + j * 16, acc[i][j], LDC, wmma::mem_row_major);
      if (kGated)
        wmma::store_matrix_sync(Cu + (wm * 32 + i * 16) * LDC + wn * 32 + j * 16, accu[i][j], LDC, wmma::mem_row_major);
    }
  __syncthreads();
  const float* bias = a.bias ? a.bias + int64_t(tile.expert) * a.n : nullptr;
  const float* bias_up = kGated && a.bias_up ? a.bias_up + int64_t(tile.expert) * a.n : nullptr;
  for (int idx = threadIdx.x; idx < BM * BN; idx += kThreads) {
    const int r = idx / BN, c = idx % BN;
    const int64_t col = n0 + c;
    if (r >= tile.rows || col >= a.n) continue;
    const int64_t pos = int64_t(tile.offset) + tile.row0 + r;
    float v = Cs[r * LDC + c] + (bias ? bias[col] : 0.f);
    if (kUp) {
      const float u = kGated ? Cu[r * LDC + c] + (bias_up ? bias_up[col] : 0.f) : 0.f;
      if (kGated && a.activation == Activation::swiglu_clamped) {
        // gpt-oss: g = min(g, limit); u = clamp(u, -limit, limit); g sigmoid(alpha g) (u + 1)
        const float g = fminf(v, a.limit);
        v = g / (1.f + __expf(-a.alpha * g)) * (fmaxf(fminf(u, a.limit), -a.limit) + 1.f);
      } else {
        v = activate(a.activation, v);
        if (kGated) v *= u;
      }
      a.hidden_out[pos * a.n + col] = __float2bfloat16(v);
    } else {
      a.slot_out[int64_t(a.order[pos]) * a.n + col] = v;  // scattered to its slot
    }
  }
}

}  // namespace

void launch_grouped_gemm_up(const GemmArgs& args, int tiles, cudaStream_t stream) {
  if (tiles == 0) return;
  const dim3 grid(tiles, unsigned((args.n + BN - 1) / BN));
  if (args.w_up)
    grouped_gemm_kernel<true, true><<<grid, kThreads, 0, stream>>>(args);
  else
    grouped_gemm_kernel<true, false><<<grid, kThreads, 0, stream>>>(args);
  MOE_CUDA_LAUNCHED("grouped_gemm_up");
}

void launch_grouped_gemm_down(const GemmArgs& args, int tiles, cudaStream_t stream) {
  if (tiles == 0) return;
  const dim3 grid(tiles, unsigned((args.n + BN - 1) / BN));
  grouped_gemm_kernel<false, false><<<grid, kThreads, 0, stream>>>(args);
  MOE_CUDA_LAUNCHED("grouped_gemm_down");
}

}  // namespace moe::cuda
