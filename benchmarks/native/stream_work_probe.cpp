// How much vector work per byte a weight stream carries at the read bandwidth (benchmarks/NOTES.md row 125).
//
//   g++ -O2 -march=native -std=c++17 -pthread benchmarks/native/stream_work_probe.cpp -o build/stream_work_probe
//   build/stream_work_probe [threads=2] [repetitions=25]
//
// Each thread streams its half of a 16 MiB slice of a 1 GiB buffer (huge pages; the slices rotate, so every pass
// comes from memory), in "sub-blocks" of ten 64-byte lines shaped like a K-quant decode step: per line a nibble
// split, E pairs of (16-bit shift, vpternlogd) -- the high-bit lifting of q5_k / q6_k -- and two vpdpbusd into two
// chains, reset per sub-block and folded into a total with vpmulld; every line is prefetched 6 KB ahead (T0), as
// the library's K-quant decode does. Each pass is paired with a plain read of as many bytes (XOR of every word), and
// each work level is also timed on 320 KiB a thread from L2. Two ways to load a line:
//   folded: as written, the compiler reloads the line as a memory operand of each shift / and (one load per use);
//   pinned: the line loaded once into a register (an empty asm makes the value opaque, so nothing is refolded).
// Needs AVX-512 VNNI (x86-64); Linux (huge-page advice, thread affinity).
#include <immintrin.h>
#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

// (a sum of the lanes, so that nothing is optimised away; GCC 12's _mm512_reduce_add_epi32 warns under -Wall)
int64_t lanes(__m512i v) {
  alignas(64) int32_t x[16];
  _mm512_store_si512(x, v);
  int64_t sum = 0;
  for (int32_t i : x) sum += i;
  return sum;
}

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

constexpr int kLines = 10;            // lines a sub-block
constexpr int64_t kAhead = 6144;      // prefetch distance (the library's kKAhead)
constexpr int64_t kSlice = 16 << 20;  // bytes a pass, all threads
constexpr size_t kBuffer = size_t{1} << 30;

template <int E, bool Pinned>
__attribute__((noinline)) int64_t stream(const uint8_t* p, int64_t bytes) {
  const __m512i a = _mm512_set1_epi32(0x01020304), m = _mm512_set1_epi8(15), sc = _mm512_set1_epi32(3);
  __m512i total = _mm512_setzero_si512();
  for (const uint8_t* q = p; q + 64 * kLines <= p + bytes; q += 64 * kLines) {
    for (int l = 0; l < kLines; ++l) _mm_prefetch(reinterpret_cast<const char*>(q) + kAhead + 64 * l, _MM_HINT_T0);
    __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0;
#pragma GCC unroll 16
    for (int l = 0; l < kLines; ++l) {
      __m512i x = _mm512_load_si512(q + 64 * l);
      if constexpr (Pinned) asm("" : "+v"(x));
      __m512i lo = _mm512_and_si512(x, m), hi = _mm512_and_si512(_mm512_srli_epi32(x, 4), m);
#pragma GCC unroll 8
      for (int e = 0; e < E; ++e) {
        lo = _mm512_ternarylogic_epi32(lo, _mm512_slli_epi16(x, e + 1), m, 0xf8);
        hi = _mm512_ternarylogic_epi32(hi, _mm512_srli_epi16(x, e + 1), m, 0xf8);
      }
      acc0 = _mm512_dpbusd_epi32(acc0, lo, a);
      acc1 = _mm512_dpbusd_epi32(acc1, hi, a);
    }
    total = _mm512_add_epi32(total, _mm512_mullo_epi32(_mm512_add_epi32(acc0, acc1), sc));
  }
  return lanes(total);
}

__attribute__((noinline)) int64_t plain_read(const uint8_t* p, int64_t bytes) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (const uint8_t* q = p; q < p + bytes; q += 256) {
    a0 = _mm512_xor_si512(a0, _mm512_load_si512(q)), a1 = _mm512_xor_si512(a1, _mm512_load_si512(q + 64));
    a2 = _mm512_xor_si512(a2, _mm512_load_si512(q + 128)), a3 = _mm512_xor_si512(a3, _mm512_load_si512(q + 192));
  }
  return lanes(_mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3)));
}

using Fn = int64_t (*)(const uint8_t*, int64_t);
struct Variant {
  int e;
  Fn folded, pinned;
};
const Variant kVariants[] = {{0, stream<0, false>, stream<0, true>}, {1, stream<1, false>, stream<1, true>},
                             {2, stream<2, false>, stream<2, true>}, {3, stream<3, false>, stream<3, true>},
                             {4, stream<4, false>, stream<4, true>}, {6, stream<6, false>, stream<6, true>}};

void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// A spinning team: run(fn, offset, bytes, reps) has each of `threads` threads call fn `reps` times on its share.
class Team {
 public:
  Team(int threads, const uint8_t* buffer) : threads_(threads), buffer_(buffer) {
    for (int t = 1; t < threads; ++t) workers_.emplace_back([this, t] { loop(t); });
    pin_to(0);
  }
  ~Team() {
    fn_ = nullptr;
    generation_.fetch_add(1);
    for (auto& w : workers_) w.join();
  }
  void run(Fn fn, int64_t offset, int64_t bytes, int reps) {
    fn_ = fn, offset_ = offset, bytes_ = bytes, reps_ = reps;
    done_.store(0);
    generation_.fetch_add(1);
    share(0);
    while (done_.load() != threads_ - 1) _mm_pause();
  }

 private:
  void share(int t) {
    const int64_t each = bytes_ / threads_;
    for (int r = 0; r < reps_; ++r) sink_ += fn_(buffer_ + offset_ + t * each, each);
  }
  void loop(int t) {
    pin_to(t);
    for (int seen = 0;;) {
      while (generation_.load() == seen) _mm_pause();
      seen = generation_.load();
      if (!fn_) return;
      share(t);
      done_.fetch_add(1);
    }
  }
  int threads_;
  const uint8_t* buffer_;
  std::vector<std::thread> workers_;
  std::atomic<int> generation_{0}, done_{0};
  Fn fn_ = nullptr;
  int64_t offset_ = 0, bytes_ = 0;
  int reps_ = 1;
  std::atomic<int64_t> sink_{0};
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 25;
  auto* buffer = static_cast<uint8_t*>(std::aligned_alloc(size_t{1} << 21, kBuffer));
  madvise(buffer, kBuffer, MADV_HUGEPAGE);
  for (size_t i = 0; i < kBuffer; i += 4096) std::memset(buffer + i, static_cast<int>(i >> 12), 4096);
  Team team(threads, buffer);
  int64_t slice = 0;
  const auto next_slice = [&] { return (slice++ % static_cast<int64_t>(kBuffer / kSlice)) * kSlice; };
  std::printf("%d threads, GB/s (medians of %d); stream / read: the pass against the plain read paired with it\n",
              threads, reps);
  std::printf("%2s %10s %10s %10s %8s %10s %10s %8s\n", "E", "folded L2", "memory", "read", "/ read", "pinned L2",
              "memory", "/ read");
  for (const Variant& v : kVariants) {
    struct Medians {
      double l2, memory, read, ratio;
    } m[2];  // folded, pinned
    for (int pinned = 0; pinned < 2; ++pinned) {
      const Fn fn = pinned ? v.pinned : v.folded;
      std::vector<double> ratio, memory, read, l2;
      for (int r = 0; r < reps; ++r) {
        const double t0 = now_s();
        team.run(fn, next_slice(), kSlice, 1);
        const double t1 = now_s();
        team.run(plain_read, next_slice(), kSlice, 1);
        const double t2 = now_s();
        ratio.push_back((t1 - t0) / (t2 - t1));
        memory.push_back(kSlice / (t1 - t0) / 1e9), read.push_back(kSlice / (t2 - t1) / 1e9);
        const int64_t warm = int64_t{320 << 10} * threads;  // L2-resident: the work's own speed
        const double t3 = now_s();
        team.run(fn, 0, warm, 40);
        l2.push_back(40.0 * warm / (now_s() - t3) / 1e9);
      }
      m[pinned] = {median(l2), median(memory), median(read), median(ratio)};
    }
    std::printf("%2d %10.1f %10.1f %10.1f %8.2f %10.1f %10.1f %8.2f\n", v.e, m[0].l2, m[0].memory, m[0].read,
                m[0].ratio, m[1].l2, m[1].memory, m[1].ratio);
  }
  std::free(buffer);
}
