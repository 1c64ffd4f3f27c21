// The transport of an expert-parallel layer (issue 20): the ranks of one communicator and the all-to-all exchanges
// between them. MPI implements it (native/src/mpi/mpi_exchange.cpp, built with -DMOE_MPI=ON); a build without MPI
// links native/src/mpi/mpi_stub.cpp, whose expert_exchange() throws Unsupported with the reason.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace moe {

class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // A collective's first step: every rank says whether its part is fine; true only when every rank's was. A rank
  // whose input failed its checks still calls this (with false), so that the others fail too instead of waiting.
  virtual bool all_ok(bool ok) = 0;
  // MPI_Alltoallv of int32 / float32: to rank r, send_counts[r] elements from send + send_offsets[r]; from rank r,
  // recv_counts[r] elements into recv + recv_offsets[r] (counts and offsets in elements).
  virtual void all_to_all(const int32_t* send, const int64_t* send_counts, const int64_t* send_offsets, int32_t* recv,
                          const int64_t* recv_counts, const int64_t* recv_offsets) = 0;
  virtual void all_to_all(const float* send, const int64_t* send_counts, const int64_t* send_offsets, float* recv,
                          const int64_t* recv_counts, const int64_t* recv_offsets) = 0;
  // MPI_Allgather of float32: `count` from every rank into recv [ranks, count], in rank order.
  virtual void all_gather(const float* send, int64_t count, float* recv) = 0;
  // Ends every rank of the job with the message on stderr (MPI_Abort): for a failure part-way through an exchange,
  // after which the ranks can no longer agree on anything.
  [[noreturn]] virtual void abort(const std::string& why) = 0;
};

// MPI_COMM_WORLD's exchange, initialising MPI at the first call (MPI_Init_thread, MPI_THREAD_MULTIPLE asked,
// MPI_THREAD_SERIALIZED at least: the forward may run on the caller's thread or on the library's job thread, never
// on two at once). Throws Unsupported when this build has no MPI or MPI cannot start.
std::shared_ptr<ExpertExchange> expert_exchange();

// What backendInfo().mpi reports.
struct MpiStatus {
  bool compiled = false;     // built with -DMOE_MPI=ON
  bool initialized = false;  // MPI_Init has run in this process
  int rank = 0, size = 1;    // in MPI_COMM_WORLD once initialised (else 0 and 1)
  std::string reason;        // why it is not available or not initialised, else empty
};
MpiStatus mpi_status();

}  // namespace moe
