// C++ timing driver over moe::Layer, no Node: for kernel work between full `npm run bench` runs.
//   build/moe_layer_bench [small|fine-grained|mixtral] [tokens] [threads] [repetitions] [warm|cold|idle|spin|rotate]
//   [dtype] [copies]
// dtype: float32 (default), bfloat16, float16, int8, int4 (groups of 32), q4_k, q5_k, q6_k; GB/s counts the bytes
// stored (the K-quants: their GGUF bytes).
// Before each forward, "cold" reads a 256 MB buffer (as the other implementations of the harness do between ours),
// "idle" sleeps 10 ms (the pool's workers fall asleep, the caches keep the weights), "spin" busy-waits 10 ms on
// the calling thread (the workers fall asleep, the calling thread's core stays busy); "warm" does nothing;
// "rotate" routes every token of forward r to experts r*k .. r*k + k-1 (mod E), skipping the router, so back-to-back
// forwards read other experts' weights, from memory (the harness's decode inputs do the same). With copies > 1,
// forward r runs copy r % copies on experts (r / copies) * k .. (as benchmarks/peers/ggml/ggml_moe.cpp's bench mode
// does): a layer smaller than the last-level cache (int4 on the small shape) still streams from memory.
// Shapes: small (1024/2816, 8 experts, top-2), fine-grained (2048/1408, 64, top-6), qwen3 (Qwen3-30B-A3B: 2048/768,
// 128, top-8), mixtral (4096/14336, 8, top-2).
// Prints the median and min of the forwards, as GFLOP/s and as GB/s of the active expert weights, and the phases.
// MOE_BENCH_FIRST=1 also prints the two untimed first forwards with their phases (what a freshly built layer's first
// calls add: benchmarks/NOTES.md row 105).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../../native/tests/test_support.h"

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

float thrash(std::vector<float>& buffer) {  // touches every cache line so the caches hold none of the layer
  float sum = 0;
  for (size_t i = 0; i < buffer.size(); i += 16) sum += buffer[i];
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string shape = argc > 1 ? argv[1] : "small";
  const int64_t tokens = argc > 2 ? std::atoll(argv[2]) : 512;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 2;
  const int reps = argc > 4 ? std::atoi(argv[4]) : 21;
  const std::string mode = argc > 5 ? argv[5] : "warm";
  const bool cold = mode == "cold", idle = mode == "idle";
  // MOE_BENCH_SHAPE="dModel,dHidden,experts,topK" replaces the named shape (a layer that fits L2 measures the kernels'
  // own speed, without the memory).
  long sd = 0, sh = 0, se = 0, sk = 0;
  const char* custom = std::getenv("MOE_BENCH_SHAPE");
  if (custom && std::sscanf(custom, "%ld,%ld,%ld,%ld", &sd, &sh, &se, &sk) != 4)
    return std::fprintf(stderr, "bad MOE_BENCH_SHAPE\n"), 2;
  const moe_test::Case c =
      custom               ? moe_test::Case{tokens, sd, sh, se, static_cast<int>(sk), moe::Activation::swiglu, false}
      : shape == "small"   ? moe_test::Case{tokens, 1024, 2816, 8, 2, moe::Activation::swiglu, false}
      : shape == "mixtral" ? moe_test::Case{tokens, 4096, 14336, 8, 2, moe::Activation::swiglu, false}
      : shape == "qwen3"   ? moe_test::Case{tokens, 2048, 768, 128, 8, moe::Activation::swiglu, false}
                           : moe_test::Case{tokens, 2048, 1408, 64, 6, moe::Activation::swiglu, false};
  moe::set_thread_count(threads);
  moe_test::CaseData data = moe_test::make_case(c, 7);
  const std::string dtype = argc > 6 ? argv[6] : "float32";
  if (!moe::parse_weight_dtype(dtype, &data.config.experts.weight_dtype)) return std::fprintf(stderr, "bad dtype\n"), 2;
  // MOE_BENCH_GROUP: inputs per scale for int8 / int4 (default 32; 0: one per row).
  if (const char* g = std::getenv("MOE_BENCH_GROUP")) data.config.experts.group_size = std::atoll(g);
  const int copies = argc > 7 ? std::max(1, std::atoi(argv[7])) : 1;
  std::vector<std::unique_ptr<moe::CpuLayer>> layers;
  for (int i = 0; i < copies; ++i)
    layers.push_back(std::make_unique<moe::CpuLayer>(data.config, data.router.data(), data.weights));
  std::vector<float> output(tokens * c.d), logits(tokens * c.e), weights(tokens * c.k);
  std::vector<int32_t> experts(tokens * c.k), counts(c.e);
  const moe::LayerOutputs out{output.data(), logits.data(), experts.data(), weights.data(), counts.data()};
  std::vector<float> other(cold ? (256u << 20) / sizeof(float) : 0, 1.0f);
  volatile float sink = 0;  // keeps the reads of "cold"
  std::vector<double> times, reads;
  std::vector<moe::LayerTimings> phases;
  // Bytes per weight as stored: codes plus a float16 scale per group for int8 / int4.
  const moe::WeightDtype wd = data.config.experts.weight_dtype;
  const double g = data.config.experts.group_size > 0 ? data.config.experts.group_size : c.d;
  // (the K-quants: their GGUF bytes, 4.5 / 5.5 / 6.56 bits a weight; the panels keep each column's float16 d and
  // dmin as well, 0.578 / 0.703 / 0.820 bytes a weight: the forward reads up to 2.7% more than this counts)
  const double per_weight = wd == moe::WeightDtype::float32 ? 4.0
                            : wd == moe::WeightDtype::int8  ? 1.0 + 2.0 / g
                            : wd == moe::WeightDtype::int4  ? 0.5 + 2.0 / g
                            : moe::is_k_quant(wd)           ? moe::code_bytes(wd, 256) / 256.0
                                                            : 2.0;
  // "rotate": after each forward, as many bytes as its experts' weights (as stored) read alone by the same pool: the
  // time those bytes take at the read bandwidth of that moment, paired with the forward (on this VM one process's
  // memory can be slower than the next one's, and a probe of other minutes can be off by 2x). The buffers, read in
  // turn, add up to 512 MiB, so that each comes from memory: with 8 of 10 MB (80 MB) the last-level cache still held
  // part of them (the read ran at 80 GB/s, 130 with 2).
  const double expert_bytes = 3.0 * c.d * c.h * per_weight;                    // one expert's three matrices, as stored
  const size_t active_weight_bytes = static_cast<size_t>(c.k * expert_bytes);  // (rotate: the same k for every token)
  std::vector<std::unique_ptr<moe::ReadProbe>> same_bytes;
  if (mode == "rotate")
    while (same_bytes.size() * active_weight_bytes < (size_t{512} << 20))
      same_bytes.push_back(std::make_unique<moe::ReadProbe>(active_weight_bytes));
  for (int r = 0; r < reps + 2; ++r) {
    if (cold) sink = sink + thrash(other);
    if (idle) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (mode == "spin")
      for (const double t = now_ms(); now_ms() < t + 10;) {
      }
    moe::CpuLayer& layer = *layers[r % copies];
    const double t0 = now_ms();
    if (mode == "rotate") {
      for (int64_t t = 0; t < tokens; ++t)
        for (int j = 0; j < c.k; ++j)
          experts[t * c.k + j] = static_cast<int32_t>((r / copies * c.k + j) % c.e), weights[t * c.k + j] = 1.0f / c.k;
      layer.forward_routed(data.x.data(), tokens, c.k, experts.data(), weights.data(), output.data(), counts.data());
    } else {
      layer.forward(data.x.data(), tokens, out);
    }
    const double t1 = now_ms();
    if (!same_bytes.empty()) {
      const double r0 = now_ms();
      same_bytes[r % same_bytes.size()]->measure(threads, 1);
      if (r >= 2) reads.push_back(now_ms() - r0);
    }
    if (r >= 2)
      times.push_back(t1 - t0), phases.push_back(layer.last_timings());
    else if (std::getenv("MOE_BENCH_FIRST")) {
      const moe::LayerTimings p = layer.last_timings();
      std::printf("forward %d: %.3f ms (router %.3f routing %.3f dispatch %.3f experts %.3f combine %.3f)\n", r,
                  t1 - t0, p.router, p.routing, p.dispatch, p.experts, p.combine);
    }
  }
  // The read ceiling in the same minutes (this VM's moves 26-72 GB/s from one run to the next): taken after the
  // forwards, so that the probe's pages do not change what the forwards found.
  const double read_gbps = moe::ReadProbe(size_t{256} << 20).measure(threads, 3);
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  int active = 0;
  for (int32_t n : counts) active += n > 0;
  const double flops = 2.0 * tokens * c.k * 3.0 * c.d * c.h;
  const double active_bytes = active * expert_bytes;
  moe::LayerTimings mean{};
  for (const auto& p : phases) {
    mean.router += p.router / phases.size(), mean.routing += p.routing / phases.size();
    mean.dispatch += p.dispatch / phases.size(), mean.experts += p.experts / phases.size();
    mean.combine += p.combine / phases.size();
  }
  std::printf("%s %s T=%lld threads=%d %s isa=%s: median %.3f ms (min %.3f) = %.1f GFLOP/s, %.1f GB/s of %d experts\n",
              shape.c_str(), dtype.c_str(), (long long)tokens, threads, mode.c_str(), moe::isa_name(moe::active_isa()),
              median, sorted.front(), flops / median * 1e-6, active_bytes / median * 1e-6, active);
  std::printf("  read ceiling %.1f GB/s with %d threads: the experts' bytes at %.0f%% of it\n", read_gbps, threads,
              100.0 * active_bytes / median * 1e-6 / read_gbps);
  if (!reads.empty()) {
    std::vector<double> ratio(times.size());
    for (size_t i = 0; i < times.size(); ++i) ratio[i] = times[i] / reads[i];
    std::sort(ratio.begin(), ratio.end());
    std::sort(reads.begin(), reads.end());
    std::printf(
        "  the same bytes read alone after each forward: median %.3f ms; forward / read %.2f (median of pairs)\n",
        reads[reads.size() / 2], ratio[ratio.size() / 2]);
  }
  if (FILE* f = std::fopen("/proc/self/smaps_rollup", "r")) {  // how much of the process got huge pages (Linux)
    char line[256];
    long rss = 0, huge = 0;
    while (std::fgets(line, sizeof line, f))
      std::sscanf(line, "Rss: %ld", &rss), std::sscanf(line, "AnonHugePages: %ld", &huge);
    std::fclose(f);
    std::printf("  resident %.0f MiB, of it in transparent huge pages %.0f MiB\n", rss / 1024.0, huge / 1024.0);
  }
  std::printf("  phases (mean ms): router %.3f routing %.3f dispatch %.3f experts %.3f combine %.3f\n", mean.router,
              mean.routing, mean.dispatch, mean.experts, mean.combine);
  if (std::getenv("MOE_BENCH_ALL")) {  // every forward's time, in order
    for (double t : times) std::printf(" %.2f", t);
    std::printf("\n");
  }
  return 0;
}
