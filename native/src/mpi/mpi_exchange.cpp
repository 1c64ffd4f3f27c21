// ExpertExchange over MPI_COMM_WORLD (built with -DMOE_MPI=ON; the system's MPI, OpenMPI on Debian).
//
// OpenMPI opens its components (transports, the launcher's client) as plugins with dlopen, and they resolve libmpi's
// symbols through the global namespace. Node opens an addon with RTLD_LOCAL, so libmpi, loaded as the addon's
// dependency, is not in that namespace and the plugins fail to load ("undefined symbol: ompi_..."); mpi4py meets the
// same problem in Python and opens libmpi again with RTLD_GLOBAL before MPI_Init, which is what promote_libmpi() does.
// Debian's OpenMPI 4.1 links its components to libmpi themselves and runs either way (tools/mpi's check passes with
// the promotion taken out); builds whose components rely on the global namespace need it.
#include <dlfcn.h>
// The C API only: mpi.h would otherwise pull in the removed C++ bindings, which need a library the addon does not link.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "../core/expert_exchange.h"
#include "moe/moe.h"

namespace moe {

namespace {

// Re-opens the already loaded libmpi with RTLD_GLOBAL (RTLD_NOLOAD: the same copy, found by an address inside it).
void promote_libmpi() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&MPI_Init_thread), &info) && info.dli_fname)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
}

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

std::vector<int> as_ints(const int64_t* values, int n, const char* what) {
  std::vector<int> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    if (values[i] < 0 || values[i] > INT_MAX) {
      std::fprintf(stderr, "moe-kernels: an all-to-all %s of %lld elements is more than MPI's int counts hold\n", what,
                   static_cast<long long>(values[i]));
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    out[static_cast<size_t>(i)] = static_cast<int>(values[i]);
  }
  return out;
}

class MpiExchange final : public ExpertExchange {
 public:
  MpiExchange() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool all_ok(bool ok) override {
    int mine = ok ? 1 : 0, all = 0;
    MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all == 1;
  }
  void all_to_all(const int32_t* send, const int64_t* sc, const int64_t* so, int32_t* recv, const int64_t* rc,
                  const int64_t* ro) override {
    exchange(send, sc, so, recv, rc, ro, MPI_INT32_T);
  }
  void all_to_all(const float* send, const int64_t* sc, const int64_t* so, float* recv, const int64_t* rc,
                  const int64_t* ro) override {
    exchange(send, sc, so, recv, rc, ro, MPI_FLOAT);
  }
  void all_gather(const float* send, int64_t count, float* recv) override {
    const int n = as_ints(&count, 1, "count")[0];
    if (MPI_Allgather(send, n, MPI_FLOAT, recv, n, MPI_FLOAT, MPI_COMM_WORLD) != MPI_SUCCESS)
      abort("MPI_Allgather failed");
  }
  [[noreturn]] void abort(const std::string& why) override {
    std::fprintf(stderr, "moe-kernels: rank %d of %d aborts the MPI job: %s\n", rank_, size_, why.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::abort();  // (MPI_Abort does not return)
  }

 private:
  void exchange(const void* send, const int64_t* sc, const int64_t* so, void* recv, const int64_t* rc,
                const int64_t* ro, MPI_Datatype type) {
    const std::vector<int> scounts = as_ints(sc, size_, "count"), soffsets = as_ints(so, size_, "offset"),
                           rcounts = as_ints(rc, size_, "count"), roffsets = as_ints(ro, size_, "offset");
    const int status = MPI_Alltoallv(send, scounts.data(), soffsets.data(), type, recv, rcounts.data(), roffsets.data(),
                                     type, MPI_COMM_WORLD);
    if (status != MPI_SUCCESS) abort("MPI_Alltoallv failed");
  }
  int rank_ = 0, size_ = 1;
};

std::mutex start_mutex;
std::shared_ptr<ExpertExchange> world;
std::string start_failure;

}  // namespace

std::shared_ptr<ExpertExchange> expert_exchange() {
  std::lock_guard<std::mutex> lock(start_mutex);
  if (world) return world;
  if (!start_failure.empty()) throw Unsupported(start_failure);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) throw Unsupported(start_failure = "moe-kernels: expected MPI to be usable but it was finalized");
  if (!initialized) {
    promote_libmpi();
    int provided = MPI_THREAD_SINGLE;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
      throw Unsupported(start_failure = "moe-kernels: MPI_Init_thread failed");
    std::atexit(finalize_at_exit);
    if (provided < MPI_THREAD_SERIALIZED)
      throw Unsupported(start_failure =
                            "moe-kernels: expected MPI to allow calls from more than one thread (at least "
                            "MPI_THREAD_SERIALIZED) but this MPI library provides only " +
                            std::string(provided == MPI_THREAD_FUNNELED ? "MPI_THREAD_FUNNELED" : "MPI_THREAD_SINGLE"));
  }
  world = std::make_shared<MpiExchange>();
  return world;
}

MpiStatus mpi_status() {
  std::lock_guard<std::mutex> lock(start_mutex);  // (start_failure is written by expert_exchange)
  MpiStatus s;
  s.compiled = true;
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  s.initialized = initialized && !finalized;
  if (s.initialized) {
    MPI_Comm_rank(MPI_COMM_WORLD, &s.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &s.size);
  } else {
    s.reason = finalized ? "MPI was finalized" : "MPI starts with the first expert-parallel layer";
  }
  if (!start_failure.empty()) s.reason = start_failure;
  return s;
}

}  // namespace moe
