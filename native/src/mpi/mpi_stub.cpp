// The default build has no MPI: an expert-parallel layer is Unsupported, and backendInfo().mpi says why.
#include "../core/expert_exchange.h"
#include "moe/moe.h"

namespace moe {

namespace {
const char* kReason =
    "this build of moe-kernels has no MPI (npm run build:mpi, or MOE_MPI=1 npm install, with OpenMPI's "
    "libopenmpi-dev installed)";
}

std::shared_ptr<ExpertExchange> expert_exchange() {
  throw Unsupported(std::string("moe-kernels: expected a build with MPI for an expert-parallel layer but got one "
                                "without it: ") +
                    kReason);
}

MpiStatus mpi_status() {
  MpiStatus s;
  s.reason = kReason;
  return s;
}

}  // namespace moe
