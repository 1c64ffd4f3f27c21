// ggml (llama.cpp's tensor library) as a benchmark peer: an MoE layer built the way llama.cpp builds one
// (src/llama-graph.cpp, build_moe_ffn): router logits, softmax, top-k, the chosen probabilities renormalised,
// then ggml_mul_mat_id over the stacked experts for gate, up and down, SwiGLU, and the weighted sum of the k
// slots. Weights are converted once from the float32 files into one ggml type; Q4_0 and Q8_0 go into the CPU
// backend's repack buffer where it has an interleaved layout for this CPU (llama.cpp's default; on x86 in 2026-12:
// Q4_0 only), f32 and bf16 as they are.
//
// Three modes:
//   ggml_moe serve DIR dModel dHidden numExperts topK threads type
//     The harness's peer (benchmarks/peers/ggml.ts), with torch_moe.py's protocol on stdin/stdout, one JSON
//     object per line: {"cmd":"load","x":path,"tokens":T,"inputs":N} -> {"loaded":N};
//     {"cmd":"run","first":i,"reps":R,"out":path|null} -> {"times_ms":[...]}. DIR holds router/w1/w3/w2 .f32.
//   ggml_moe bench shape tokens threads reps type [copies]
//     Beside build/moe_layer_bench's `rotate` mode: random weights, forward r routed to experts r*k .. r*k+k-1
//     (mod E) with weights 1/k (the router skipped), cycling `copies` layers, so every forward's experts come from
//     memory. Prints the median and the GB/s of the experts' bytes as ggml stores them, and the forward against a
//     read of as many bytes alone after it (SameBytes), as moe_layer_bench's `rotate` prints it.
//   ggml_moe duel shape tokens threads reps dtype [copies]
//     Built only beside a moe-kernels build (build/libmoe_core.a): both libraries in one process, alternating (duel()).
//     Good for A/B of our own kernels; ggml measured 2-4x slower there than alone (its OpenMP threads beside our pool),
//     so ratios against ggml come from separate processes (serve, bench).
// type: f32, bf16, q8_0, q4_0, q4_k, q5_k, q6_k (K-quants quantized by ggml's reference quantizer, the library's);
// duel's dtype is the library's name (float32, bfloat16, int8, int4, q4_k, q5_k, q6_k).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"
#ifdef MOE_DUEL
#include <memory>
#include <thread>

#include "moe/moe.h"
#endif

namespace {

struct Shape {
  int64_t d, h, e, k;
};

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

ggml_type parse_type(const std::string& name) {
  if (name == "f32") return GGML_TYPE_F32;
  if (name == "bf16") return GGML_TYPE_BF16;
  if (name == "q8_0") return GGML_TYPE_Q8_0;
  if (name == "q4_0") return GGML_TYPE_Q4_0;
  if (name == "q4_k") return GGML_TYPE_Q4_K;
  if (name == "q5_k") return GGML_TYPE_Q5_K;
  if (name == "q6_k") return GGML_TYPE_Q6_K;
  std::fprintf(stderr, "unknown type '%s' (f32, bf16, q8_0, q4_0, q4_k, q5_k, q6_k)\n", name.c_str());
  std::exit(2);
}

// The CPU backend's repack buffer type (interleaved Q4_0 / Q8_0 blocks), or null where this build has none.
ggml_backend_buffer_type_t repack_buffer_type() {
  ggml_backend_reg_t reg = ggml_backend_cpu_reg();
  auto get = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
      ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts"));
  if (!get) return nullptr;
  for (ggml_backend_buffer_type_t* b = get(ggml_backend_reg_dev_get(reg, 0)); b && *b; ++b)
    if (std::strstr(ggml_backend_buft_name(*b), "REPACK")) return *b;
  return nullptr;
}

// Whether the repack buffer has an interleaved layout of `type` for this CPU and these matrices: it gives a tensor
// its layout's traits when allocated, or none (Q8_0 on x86 in 2026), where llama.cpp keeps the plain blocks and so
// does this.
bool has_repacked_layout(ggml_backend_buffer_type_t repack, ggml_type type, const Shape& s) {
  ggml_init_params params{ggml_tensor_overhead() * 2, nullptr, true};
  ggml_context* ctx = ggml_init(params);
  ggml_tensor* up = ggml_new_tensor_3d(ctx, type, s.d, s.h, 1);
  ggml_tensor* down = ggml_new_tensor_3d(ctx, type, s.h, s.d, 1);
  ggml_backend_buffer_t buffer = ggml_backend_alloc_ctx_tensors_from_buft(ctx, repack);
  const bool ok = buffer && up->extra && down->extra;
  if (buffer) ggml_backend_buffer_free(buffer);
  ggml_free(ctx);
  return ok;
}

// rows x cols float32 into `type`'s bytes.
std::vector<uint8_t> convert(const float* src, int64_t rows, int64_t cols, ggml_type type) {
  std::vector<uint8_t> out(ggml_row_size(type, cols) * rows);
  if (type == GGML_TYPE_F32)
    std::memcpy(out.data(), src, out.size());
  else if (type == GGML_TYPE_BF16)
    ggml_fp32_to_bf16_row(src, reinterpret_cast<ggml_bf16_t*>(out.data()), rows * cols);
  else
    ggml_quantize_chunk(type, src, out.data(), 0, rows, cols, nullptr);
  return out;
}

// One layer's weights in ggml tensors: the experts in `type` (the repack buffer for quantized types), the
// router in float32.
struct Weights {
  ggml_context* ctx = nullptr;
  ggml_backend_buffer_t experts_buffer = nullptr, router_buffer = nullptr;
  ggml_tensor *router = nullptr, *w1 = nullptr, *w3 = nullptr, *w2 = nullptr;
  bool repacked = false;

  Weights(const Shape& s, ggml_type type, const float* router_f32, const float* w1_f32, const float* w3_f32,
          const float* w2_f32) {
    ggml_init_params params{ggml_tensor_overhead() * 8, nullptr, true};
    ctx = ggml_init(params);
    w1 = ggml_new_tensor_3d(ctx, type, s.d, s.h, s.e);  // [E, H, D] row-major, as the library's w1
    w3 = ggml_new_tensor_3d(ctx, type, s.d, s.h, s.e);
    w2 = ggml_new_tensor_3d(ctx, type, s.h, s.d, s.e);
    ggml_backend_buffer_type_t repack =
        type == GGML_TYPE_F32 || type == GGML_TYPE_BF16 ? nullptr : repack_buffer_type();
    repacked = repack && has_repacked_layout(repack, type, s);
    ggml_backend_buffer_type_t cpu = ggml_backend_cpu_buffer_type();
    experts_buffer = ggml_backend_alloc_ctx_tensors_from_buft(ctx, repacked ? repack : cpu);
    ggml_context* router_ctx = ggml_init(params);
    router = ggml_new_tensor_2d(router_ctx, GGML_TYPE_F32, s.d, s.e);
    router_buffer = ggml_backend_alloc_ctx_tensors_from_buft(router_ctx, cpu);
    ggml_backend_tensor_set(router, router_f32, 0, ggml_nbytes(router));
    const auto upload = [&](ggml_tensor* t, const float* src, int64_t rows, int64_t cols) {
      std::vector<uint8_t> bytes = convert(src, rows, cols, type);
      ggml_backend_tensor_set(t, bytes.data(), 0, bytes.size());  // the repack buffer interleaves here
    };
    upload(w1, w1_f32, s.e * s.h, s.d);
    upload(w3, w3_f32, s.e * s.h, s.d);
    upload(w2, w2_f32, s.e * s.d, s.h);
  }
  size_t expert_bytes() const { return ggml_nbytes(w1) / w1->ne[2]; }  // one matrix of one expert
};

// The forward for `tokens` rows: with the router (ids from top-k), or routed by given ids (bench mode).
struct Graph {
  ggml_context* ctx = nullptr;
  ggml_cgraph* graph = nullptr;
  ggml_gallocr_t allocr = nullptr;
  ggml_tensor *x = nullptr, *ids = nullptr, *gate_weights = nullptr, *out = nullptr;

  Graph(const Shape& s, const Weights& w, int64_t tokens, bool given_routing) {
    ggml_init_params params{ggml_tensor_overhead() * 64 + ggml_graph_overhead(), nullptr, true};
    ctx = ggml_init(params);
    x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, s.d, tokens);
    ggml_set_input(x);
    ggml_tensor* weights;
    if (given_routing) {
      ids = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, s.k, tokens);
      ggml_set_input(ids);
      gate_weights = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, 1, s.k, tokens);
      ggml_set_input(gate_weights);
      weights = gate_weights;
    } else {
      ggml_tensor* probs = ggml_soft_max(ctx, ggml_mul_mat(ctx, w.router, x));         // [E, T]
      ids = ggml_argsort_top_k(ctx, probs, static_cast<int>(s.k));                     // [k, T], largest first
      weights = ggml_get_rows(ctx, ggml_reshape_3d(ctx, probs, 1, s.e, tokens), ids);  // [1, k, T]
      weights = ggml_reshape_2d(ctx, weights, s.k, tokens);
      weights = ggml_div(ctx, weights, ggml_sum_rows(ctx, weights));  // renormalised over the k (Mixtral)
      weights = ggml_reshape_3d(ctx, weights, 1, s.k, tokens);
    }
    ggml_tensor* x3 = ggml_reshape_3d(ctx, x, s.d, 1, tokens);
    ggml_tensor* gate = ggml_mul_mat_id(ctx, w.w1, x3, ids);  // [H, k, T]
    ggml_tensor* up = ggml_mul_mat_id(ctx, w.w3, x3, ids);
    ggml_tensor* hidden = ggml_swiglu_split(ctx, gate, up);
    ggml_tensor* slots = ggml_mul(ctx, ggml_mul_mat_id(ctx, w.w2, hidden, ids), weights);  // [D, k, T]
    out = nullptr;
    for (int64_t j = 0; j < s.k; ++j) {  // the k slots summed in order, as llama.cpp does
      ggml_tensor* slot = ggml_view_2d(ctx, slots, s.d, tokens, slots->nb[2], j * slots->nb[1]);
      out = out ? ggml_add(ctx, out, slot) : slot;
    }
    if (s.k == 1) out = ggml_cont(ctx, out);
    ggml_set_output(out);
    graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(graph, out);
    allocr = ggml_gallocr_new(ggml_backend_cpu_buffer_type());
    ggml_gallocr_alloc_graph(allocr, graph);
  }
};

// The drivers' shapes, as build/moe_layer_bench names them.
Shape named_shape(const std::string& name) {
  return name == "small"     ? Shape{1024, 2816, 8, 2}
         : name == "mixtral" ? Shape{4096, 14336, 8, 2}
         : name == "qwen3"   ? Shape{2048, 768, 128, 8}
                             : Shape{2048, 1408, 64, 6};
}

// Seeded normal floats for the drivers' random weights and inputs.
struct Normal {
  std::mt19937 rng{7};
  std::normal_distribution<float> normal{0.0f, 1.0f};
  std::vector<float> operator()(int64_t n, float std) {
    std::vector<float> v(n);
    for (float& f : v) f = normal(rng) * std;
    return v;
  }
};

// Forward r of a driver routed without the router: every token to experts (r / copies) * k .. + k - 1 (mod E), so
// that forward r, on copy r % copies, reads other experts than the forwards before it.
void rotate_ids(std::vector<int32_t>& ids, const Shape& s, int64_t tokens, int64_t r, int copies) {
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < s.k; ++j) ids[t * s.k + j] = static_cast<int32_t>((r / copies * s.k + j) % s.e);
}

// The same bytes as a forward's experts, read alone after it by `threads` OpenMP threads (ggml's CPU backend runs its
// graphs on OpenMP's team, so the same threads), from buffers adding up to 512 MiB read in turn so that each comes
// from memory: moe_layer_bench's `rotate` pairs its forwards with such a read too. On this VM one process can read
// memory at half the speed of the next for its whole life (benchmarks/NOTES.md row 118), so each side's
// forward / read in its own process says how near the memory it ran, whatever state its process drew. Plain vectors:
// with this VM's madvise-only transparent huge pages they lie on 4 KiB pages, as ggml's own buffers do
// (ggml_aligned_malloc asks for none; our weights and ReadProbe do).
class SameBytes {
 public:
  SameBytes(size_t bytes, int threads) : threads_(threads), words_((bytes + 63) / 64 * 8) {
    const size_t count = std::max<size_t>(2, ((size_t{512} << 20) / 8 + words_ - 1) / words_);
    buffers_.resize(count);
    for (size_t i = 0; i < count; ++i) {  // touched, and different, so that nothing is a shared zero page
      buffers_[i].resize(words_);
      for (size_t j = 0; j < words_; ++j) buffers_[i][j] = i * words_ + j;
    }
  }
  // Reads buffer r % count (every word, in four XOR chains that the compiler keeps in vector registers: an array of
  // eight accumulators went through the stack, at half the memory's speed); returns the milliseconds it took.
  double read(int64_t r) {
    const uint64_t* b = buffers_[r % buffers_.size()].data();
    const double t0 = now_ms();
    uint64_t total = 0;
#pragma omp parallel for num_threads(threads_) schedule(static) reduction(^ : total)
    for (int64_t t = 0; t < threads_; ++t) {
      const size_t from = words_ / 8 * t / threads_ * 8, to = words_ / 8 * (t + 1) / threads_ * 8;
      uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (size_t j = from; j < to; j += 8)
        a0 ^= b[j] ^ b[j + 4], a1 ^= b[j + 1] ^ b[j + 5], a2 ^= b[j + 2] ^ b[j + 6], a3 ^= b[j + 3] ^ b[j + 7];
      total ^= a0 ^ a1 ^ a2 ^ a3;
    }
    sink_ = sink_ ^ total;
    return now_ms() - t0;
  }

 private:
  int threads_;
  size_t words_;
  std::vector<std::vector<uint64_t>> buffers_;
  volatile uint64_t sink_ = 0;
};

// One forward of a graph built with given routing.
void run_routed(ggml_backend_t backend, const Graph& g, const std::vector<float>& x, const std::vector<int32_t>& ids,
                const std::vector<float>& gate_weights) {
  ggml_backend_tensor_set(g.x, x.data(), 0, x.size() * sizeof(float));
  ggml_backend_tensor_set(g.ids, ids.data(), 0, ids.size() * sizeof(int32_t));
  ggml_backend_tensor_set(g.gate_weights, gate_weights.data(), 0, gate_weights.size() * sizeof(float));
  ggml_backend_graph_compute(backend, g.graph);
}

std::vector<float> read_floats(const std::string& file, size_t count) {
  std::vector<float> v(count);
  FILE* f = std::fopen(file.c_str(), "rb");
  if (!f || std::fread(v.data(), sizeof(float), count, f) != count) {
    std::fprintf(stderr, "cannot read %zu floats from %s\n", count, file.c_str());
    std::exit(2);
  }
  std::fclose(f);
  return v;
}

// Minimal JSON field readers for the protocol's flat objects.
std::string json_string(const std::string& line, const std::string& key) {
  const size_t at = line.find("\"" + key + "\"");
  if (at == std::string::npos) return "";
  const size_t colon = line.find(':', at), q0 = line.find('"', colon + 1);
  const size_t null_at = line.find("null", colon + 1);
  if (q0 == std::string::npos || (null_at != std::string::npos && null_at < q0)) return "";
  return line.substr(q0 + 1, line.find('"', q0 + 1) - q0 - 1);
}
int64_t json_int(const std::string& line, const std::string& key) {
  const size_t at = line.find("\"" + key + "\"");
  return at == std::string::npos ? 0 : std::atoll(line.c_str() + line.find(':', at) + 1);
}

int serve(int argc, char** argv) {
  if (argc < 9)
    return std::fprintf(stderr, "usage: ggml_moe serve DIR dModel dHidden numExperts topK threads type\n"), 2;
  const std::string dir = argv[2];
  const Shape s{std::atoll(argv[3]), std::atoll(argv[4]), std::atoll(argv[5]), std::atoll(argv[6])};
  const int threads = std::atoi(argv[7]);
  const ggml_type type = parse_type(argv[8]);
  Weights w(s, type, read_floats(dir + "/router.f32", s.e * s.d).data(),
            read_floats(dir + "/w1.f32", s.e * s.h * s.d).data(), read_floats(dir + "/w3.f32", s.e * s.h * s.d).data(),
            read_floats(dir + "/w2.f32", s.e * s.d * s.h).data());
  ggml_backend_t backend = ggml_backend_cpu_init();
  ggml_backend_cpu_set_n_threads(backend, threads);
  std::printf("{\"ready\": true, \"ggml\": \"%s\", \"type\": \"%s\", \"repacked\": %s}\n", GGML_COMMIT, argv[8],
              w.repacked ? "true" : "false");
  std::fflush(stdout);
  std::vector<std::vector<float>> inputs;
  Graph* graph = nullptr;
  int64_t tokens = 0;
  for (std::string line; std::getline(std::cin, line);) {
    if (json_string(line, "cmd") == "load") {
      tokens = json_int(line, "tokens");
      const int64_t n = json_int(line, "inputs");
      const std::vector<float> all = read_floats(json_string(line, "x"), n * tokens * s.d);
      inputs.assign(n, {});
      for (int64_t i = 0; i < n; ++i)
        inputs[i].assign(all.begin() + i * tokens * s.d, all.begin() + (i + 1) * tokens * s.d);
      delete graph;  // (its context and allocator are the process's to reclaim: a few per run)
      graph = new Graph(s, w, tokens, false);
      std::printf("{\"loaded\": %lld}\n", (long long)n);
      std::fflush(stdout);
      continue;
    }
    const int64_t first = json_int(line, "first"), reps = json_int(line, "reps");
    std::string times = "[";
    for (int64_t r = 0; r < reps; ++r) {
      const std::vector<float>& x = inputs[(first + r) % inputs.size()];
      const double t0 = now_ms();
      ggml_backend_tensor_set(graph->x, x.data(), 0, x.size() * sizeof(float));
      ggml_backend_graph_compute(backend, graph->graph);
      char buf[32];
      std::snprintf(buf, sizeof buf, "%s%.6f", r ? ", " : "", now_ms() - t0);
      times += buf;
    }
    const std::string out = json_string(line, "out");
    if (!out.empty()) {
      std::vector<float> y(tokens * s.d);
      ggml_backend_tensor_get(graph->out, y.data(), 0, y.size() * sizeof(float));
      FILE* f = std::fopen(out.c_str(), "wb");
      std::fwrite(y.data(), sizeof(float), y.size(), f);
      std::fclose(f);
    }
    std::printf("{\"times_ms\": %s]}\n", times.c_str());
    std::fflush(stdout);
  }
  ggml_backend_free(backend);
  return 0;
}

int bench(int argc, char** argv) {
  const std::string shape = argc > 2 ? argv[2] : "small";
  const int64_t tokens = argc > 3 ? std::atoll(argv[3]) : 1;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 2;
  const int reps = argc > 5 ? std::atoi(argv[5]) : 41;
  const std::string type_name = argc > 6 ? argv[6] : "f32";
  const int copies = argc > 7 ? std::atoi(argv[7]) : 1;
  const ggml_type type = parse_type(type_name);
  const Shape s = named_shape(shape);
  Normal randn;
  std::vector<Weights*> layers;
  for (int c = 0; c < copies; ++c) {
    const float sd = 1.0f / std::sqrt(float(s.d)), sh = 1.0f / std::sqrt(float(s.h));
    layers.push_back(new Weights(s, type, randn(s.e * s.d, sd).data(), randn(s.e * s.h * s.d, sd).data(),
                                 randn(s.e * s.h * s.d, sd).data(), randn(s.e * s.d * s.h, sh).data()));
  }
  std::vector<Graph*> graphs;
  for (Weights* w : layers) graphs.push_back(new Graph(s, *w, tokens, true));
  ggml_backend_t backend = ggml_backend_cpu_init();
  ggml_backend_cpu_set_n_threads(backend, threads);
  const std::vector<float> x = randn(tokens * s.d, 1.0f);
  std::vector<int32_t> ids(tokens * s.k);
  const std::vector<float> gate_weights(tokens * s.k, 1.0f / s.k);
  const int64_t active = std::min<int64_t>(s.e, tokens * s.k);
  const double bytes = 3.0 * layers[0]->expert_bytes() * active;
  SameBytes same(static_cast<size_t>(bytes), threads);
  std::vector<double> times, reads, ratios;
  for (int r = 0; r < reps + 2; ++r) {
    rotate_ids(ids, s, tokens, r, copies);
    const double t0 = now_ms();
    run_routed(backend, *graphs[r % copies], x, ids, gate_weights);
    const double forward = now_ms() - t0, read = same.read(r);
    if (r >= 2) times.push_back(forward), reads.push_back(read), ratios.push_back(forward / read);
  }
  std::sort(times.begin(), times.end());
  std::sort(reads.begin(), reads.end());
  std::sort(ratios.begin(), ratios.end());
  const double median = times[times.size() / 2];
  std::printf("ggml %s %s%s T=%lld threads=%d copies=%d: median %.3f ms (min %.3f) = %.1f GB/s of %lld experts\n",
              shape.c_str(), type_name.c_str(), layers[0]->repacked ? " (repacked)" : "", (long long)tokens, threads,
              copies, median, times.front(), bytes / median * 1e-6, (long long)active);
  std::printf("  the same bytes read alone after each forward: median %.3f ms; forward / read %.2f (median of pairs)\n",
              reads[reads.size() / 2], ratios[ratios.size() / 2]);
  ggml_backend_free(backend);
  return 0;
}

#ifdef MOE_DUEL
// ggml and moe-kernels in one process on the same weights, alternating in a shuffled order with the read probe
// every repetition, each sample a block of forwards routed as in bench mode: the side-by-side measure of a kernel
// change (the machine's read bandwidth moves 30-70 GB/s between minutes here, and process placement moves it too).
int duel(int argc, char** argv) {
  const std::string shape = argc > 2 ? argv[2] : "small";
  const int64_t tokens = argc > 3 ? std::atoll(argv[3]) : 1;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 2;
  const int reps = argc > 5 ? std::atoi(argv[5]) : 21;
  const std::string dtype = argc > 6 ? argv[6] : "float32";
  const int copies = argc > 7 ? std::atoi(argv[7]) : 1;
  const ggml_type type = dtype == "float32"    ? GGML_TYPE_F32
                         : dtype == "bfloat16" ? GGML_TYPE_BF16
                         : dtype == "int8"     ? GGML_TYPE_Q8_0
                         : dtype == "int4"     ? GGML_TYPE_Q4_0
                                               : parse_type(dtype);
  const Shape s = named_shape(shape);
  moe::set_thread_count(threads);
  Normal randn;
  std::vector<Weights*> ggml_layers;
  std::vector<std::unique_ptr<moe::CpuLayer>> layers;
  moe::LayerConfig config{{s.e, s.d, s.h, moe::Activation::swiglu}, static_cast<int>(s.k), true, 0, {}};
  if (!moe::parse_weight_dtype(dtype, &config.experts.weight_dtype)) return std::fprintf(stderr, "bad dtype\n"), 2;
  for (int c = 0; c < copies; ++c) {
    const float sd = 1.0f / std::sqrt(float(s.d)), sh = 1.0f / std::sqrt(float(s.h));
    const std::vector<float> router = randn(s.e * s.d, sd), w1 = randn(s.e * s.h * s.d, sd),
                             w3 = randn(s.e * s.h * s.d, sd), w2 = randn(s.e * s.d * s.h, sh);
    ggml_layers.push_back(new Weights(s, type, router.data(), w1.data(), w3.data(), w2.data()));
    layers.push_back(
        std::make_unique<moe::CpuLayer>(config, router.data(), moe::ExpertWeights{w1.data(), w3.data(), w2.data()}));
  }
  std::vector<Graph*> graphs;
  for (Weights* w : ggml_layers) graphs.push_back(new Graph(s, *w, tokens, true));
  ggml_backend_t backend = ggml_backend_cpu_init();
  ggml_backend_cpu_set_n_threads(backend, threads);
  const std::vector<float> x = randn(tokens * s.d, 1.0f);
  std::vector<float> out(tokens * s.d);
  std::vector<int32_t> ids(tokens * s.k), counts(s.e);
  const std::vector<float> gate_weights(tokens * s.k, 1.0f / s.k);
  const moe::ReadProbe probe(size_t{256} << 20);
  int64_t counter[2] = {0, 0};
  // One forward of implementation i on the next copy and the next experts.
  const auto forward = [&](int i) {
    const int64_t r = counter[i]++;
    rotate_ids(ids, s, tokens, r, copies);
    if (i == 0) {
      run_routed(backend, *graphs[r % copies], x, ids, gate_weights);
      ggml_backend_tensor_get(graphs[r % copies]->out, out.data(), 0, out.size() * sizeof(float));
    } else {
      layers[r % copies]->forward_routed(x.data(), tokens, static_cast<int>(s.k), ids.data(), gate_weights.data(),
                                         out.data(), counts.data());
    }
  };
  // ggml's OpenMP threads spin for a while after a graph (GOMP's default, which keeps its barriers between a graph's
  // ops fast), on the cores the library's pool needs next; and the pool's workers spin 50 us after a forward. A pause
  // before each block lets the other side's threads fall asleep (both then pay the wake-up, amortised over the block).
  const auto block = [&](int i, int calls) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const double t0 = now_ms();
    for (int c = 0; c < calls; ++c) forward(i);
    return (now_ms() - t0) / calls;
  };
  int calls[2];
  for (int i = 0; i < 2; ++i) calls[i] = std::clamp(static_cast<int>(10.0 / std::max(1e-3, block(i, 4))), 1, 64);
  std::vector<double> times[2], ratios, ceiling;
  std::mt19937 order(11);
  for (int r = 0; r < reps; ++r) {
    int which[3] = {0, 1, 2};
    std::shuffle(which, which + 3, order);
    double t[2] = {0, 0};
    for (int i : which) {
      if (i == 2)
        ceiling.push_back(probe.measure(threads, 2));
      else
        times[i].push_back(t[i] = block(i, calls[i]));
    }
    ratios.push_back(t[0] / t[1]);
  }
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const int64_t active = std::min<int64_t>(s.e, tokens * s.k);
  const double bytes = 3.0 * ggml_layers[0]->expert_bytes() * active;  // Q4_0 / Q8_0: the same bytes as ours
  const double read = median(ceiling), mg = median(times[0]), mm = median(times[1]);
  std::printf(
      "%s %s T=%lld threads=%d copies=%d: moe-kernels %.3f ms (%.0f%% of %.1f GB/s read), ggml %s%s %.3f ms "
      "(%.0f%%); ggml/moe-kernels %.2fx (median of per-repetition ratios)\n",
      shape.c_str(), dtype.c_str(), (long long)tokens, threads, copies, mm, 100 * bytes / mm * 1e-6 / read, read,
      ggml_type_name(type), ggml_layers[0]->repacked ? " repacked" : "", mg, 100 * bytes / mg * 1e-6 / read,
      median(ratios));
  ggml_backend_free(backend);
  return 0;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "serve") return serve(argc, argv);
  if (mode == "bench") return bench(argc, argv);
#ifdef MOE_DUEL
  if (mode == "duel") return duel(argc, argv);
#endif
  std::fprintf(stderr,
               "usage: ggml_moe serve DIR dModel dHidden numExperts topK threads type\n"
               "       ggml_moe bench [small|fine-grained|qwen3|mixtral] tokens threads reps type [copies]\n");
  return 2;
}
