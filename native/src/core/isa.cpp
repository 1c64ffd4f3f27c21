#include "isa.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "job_thread.h"
#include "thread_pool.h"

namespace moe {

// Tables of ISAs this build does not compile (see CMakeLists.txt) are null.
namespace cpu {
#ifndef MOE_HAVE_AVX2
const KernelTable* kernels_avx2() { return nullptr; }
#endif
#ifndef MOE_HAVE_AVX512
const KernelTable* kernels_avx512() { return nullptr; }
#endif
#ifndef MOE_HAVE_AVX512_BF16
const KernelTable* kernels_avx512_bf16() { return nullptr; }
#endif
#ifndef MOE_HAVE_NEON
const KernelTable* kernels_neon() { return nullptr; }
const KernelTable* kernels_neon_dotprod() { return nullptr; }
#endif
}  // namespace cpu

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx512_bf16: return "avx512_bf16";
    case Isa::avx2: return "avx2";
    case Isa::neon: return "neon";
    case Isa::neon_dotprod: return "neon_dotprod";
    case Isa::scalar: break;
  }
  return "scalar";
}

namespace {

const cpu::KernelTable* table_for(Isa isa) {
  switch (isa) {
    case Isa::avx512: return cpu::kernels_avx512();
    case Isa::avx512_bf16: return cpu::kernels_avx512_bf16();
    case Isa::avx2: return cpu::kernels_avx2();
    case Isa::neon: return cpu::kernels_neon();
    case Isa::neon_dotprod: return cpu::kernels_neon_dotprod();
    case Isa::scalar: break;
  }
  return cpu::kernels_scalar();
}

#if defined(__x86_64__) || defined(_M_X64)
// F16C (float16 <-> float32 conversions; the AVX2 table widens float16 weights with it): CPUID leaf 1, ECX bit 29.
// Every AVX2 CPU has it; asked anyway, since the AVX2 table may not run where it is missing.
bool has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}
#endif

#if defined(__aarch64__)
// ARMv8.2's dot product (sdot), asked of the OS: Linux's hwcaps (HWCAP_ASIMDDP), macOS's sysctl. Every Apple M chip
// has it; elsewhere, without a way to ask, the plain NEON table is the safe one.
bool has_dotprod() {
#if defined(__linux__)
  return (getauxval(AT_HWCAP) & (1ul << 20)) != 0;  // HWCAP_ASIMDDP
#elif defined(__APPLE__)
  int value = 0;
  size_t size = sizeof value;
  return sysctlbyname("hw.optional.arm.FEAT_DotProd", &value, &size, nullptr, 0) == 0 && value != 0;
#else
  return false;
#endif
}
#endif

bool cpu_supports(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  switch (isa) {
    // (AVX512BW: the K-quants' byte dot products. Every AVX-512 CPU but Xeon Phi has it; Xeon Phi takes avx2.)
    case Isa::avx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    case Isa::avx512_bf16:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16");
    case Isa::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    default: break;
  }
#elif defined(__aarch64__)
  if (isa == Isa::neon) return true;
  if (isa == Isa::neon_dotprod) return has_dotprod();
#endif
  return isa == Isa::scalar;
}

const cpu::KernelTable* choose() {
  const char* forced = std::getenv("MOE_FORCE_ISA");
  if (forced && *forced) {
    for (Isa isa : supported_isas())
      if (std::strcmp(forced, isa_name(isa)) == 0) return table_for(isa);
    // Unknown or unsupported: say so once and fall back to the best one rather than fail to load.
    std::fprintf(stderr, "moe-kernels: MOE_FORCE_ISA=%s is not supported on this CPU/build; using %s\n", forced,
                 isa_name(supported_isas().front()));
  }
  return table_for(supported_isas().front());
}

}  // namespace

std::vector<Isa> supported_isas() {  // best first
  std::vector<Isa> out;
  for (Isa isa : {Isa::avx512_bf16, Isa::avx512, Isa::avx2, Isa::neon_dotprod, Isa::neon, Isa::scalar})
    if (table_for(isa) && cpu_supports(isa)) out.push_back(isa);
  return out;
}

const cpu::KernelTable& kernels() {
  static const cpu::KernelTable* table = choose();
  return *table;
}

Isa active_isa() { return kernels().isa; }

int thread_count() { return ThreadPool::instance().size(); }
void set_thread_count(int threads) { ThreadPool::instance().resize(threads); }
void prewake_threads() { ThreadPool::instance().prewake(); }
void post_job(JobQueue queue, std::function<void()> job) {
  // Never destroyed: idle threads sleep, and the binding waits for an env's jobs before the env goes away.
  if (queue == JobQueue::gpu) {
    static JobThread* const gpu = new JobThread;
    return gpu->post(std::move(job));
  }
  static JobThread* const cpu = new JobThread;
  ThreadPool::instance().prewake();  // the job will be the pool's caller: its wake-up and the workers' overlap
  cpu->post(std::move(job));
}

}  // namespace moe
