// Times the CUDA layer without Node: moe_cuda_bench dModel dHidden experts topK reps tokens...
// Prints one JSON line per token count: median device milliseconds (kernels only, between upload and
// download) and median wall milliseconds of the whole call (host float32 in and out).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "moe/cuda.h"

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: %s dModel dHidden experts topK reps tokens...\n", argv[0]);
    return 2;
  }
  const int64_t d = std::atoll(argv[1]), h = std::atoll(argv[2]), e = std::atoll(argv[3]);
  const int k = std::atoi(argv[4]), reps = std::atoi(argv[5]);
  std::mt19937 g(1);
  std::normal_distribution<float> n(0.f, 0.02f);
  auto fill = [&](size_t count) {
    std::vector<float> v(count);
    for (auto& x : v) x = n(g);
    return v;
  };
  const auto router = fill(e * d), w1 = fill(e * h * d), w3 = fill(e * h * d), w2 = fill(e * d * h);
  moe::LayerConfig config{{e, d, h, moe::Activation::swiglu}, k, true, 0, {}};
  moe::cuda::CudaLayer layer(config, {}, router.data(), {w1.data(), w3.data(), w2.data(), nullptr, nullptr, nullptr});
  for (int a = 6; a < argc; ++a) {
    const int64_t tokens = std::atoll(argv[a]);
    const auto x = fill(tokens * d);
    std::vector<float> out(tokens * d), logits(tokens * e), weights(tokens * k);
    std::vector<int32_t> experts(tokens * k), counts(e);
    const moe::LayerOutputs o{out.data(), logits.data(), experts.data(), weights.data(), counts.data()};
    layer.forward(x.data(), tokens, o);  // warm-up
    std::vector<double> device, wall;
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      layer.forward(x.data(), tokens, o);
      wall.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      device.push_back(layer.last_device_ms());
    }
    std::sort(device.begin(), device.end());
    std::sort(wall.begin(), wall.end());
    int active = 0;
    for (int64_t i = 0; i < e; ++i) active += counts[i] > 0;
    std::printf("{\"tokens\": %lld, \"device_ms\": %.4f, \"wall_ms\": %.4f, \"active_experts\": %d}\n",
                (long long)tokens, device[device.size() / 2], wall[wall.size() / 2], active);
    std::fflush(stdout);
  }
  return 0;
}
