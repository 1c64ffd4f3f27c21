// Machine ceilings measured with the same ISA and thread pool as the kernels: the roofline the benchmarks
// report every result against.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <vector>

#include "aligned_buffer.h"
#include "isa.h"
#include "moe/moe.h"
#include "thread_pool.h"

namespace moe {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
std::atomic<float> sink{0};
}  // namespace

double measure_fma_peak(int threads, double seconds) {
  const auto& k = kernels();
  const ThreadLimit limit(threads);
  const double flops_per_iteration = 2.0 * cpu::kFmaChains * k.geometry.lanes;
  // Calibrate on one thread to about seconds / 3 per run, then run `threads` copies at once, best of 3.
  int64_t iterations = 1 << 14;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    sink = sink + k.fma_loop(iterations);
    if (seconds_since(t0) > seconds / 12 || iterations > (int64_t{1} << 40)) break;
    iterations *= 2;
  }
  iterations *= 4;
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    ThreadPool::instance().run(threads, [&](int64_t) { sink = sink + k.fma_loop(iterations); });
    best = std::max(best, double(iterations) * flops_per_iteration * threads / seconds_since(t0) / 1e9);
  }
  return best;
}

struct ReadProbe::Buffer {
  AlignedBuffer<float> floats;  // its capacity is the probe's size in floats
};

ReadProbe::ReadProbe(size_t bytes) : buffer_(new Buffer{AlignedBuffer<float>(bytes / sizeof(float))}) {
  const int64_t count = static_cast<int64_t>(buffer_->floats.capacity());
  float* data = buffer_->floats.data();
  const int threads = thread_count();
  ThreadPool::instance().run(threads, [&](int64_t t) {  // first touch by the pool's threads
    const int64_t b = count * t / threads, e = count * (t + 1) / threads;
    std::fill(data + b, data + e, 1.0f);
  });
}

ReadProbe::~ReadProbe() = default;

double ReadProbe::measure(int threads, int passes) const {
  const auto& k = kernels();
  const ThreadLimit limit(threads);
  const float* data = buffer_->floats.data();
  const int64_t count = static_cast<int64_t>(buffer_->floats.capacity());
  double best = 0;
  for (int p = 0; p < passes; ++p) {
    const auto t0 = std::chrono::steady_clock::now();
    ThreadPool::instance().run(threads, [&](int64_t t) {
      const int64_t b = count * t / threads, e = count * (t + 1) / threads;
      sink = sink + k.read_sum(data + b, e - b);
    });
    best = std::max(best, double(count) * sizeof(float) / seconds_since(t0) / 1e9);
  }
  return best;
}

}  // namespace moe
