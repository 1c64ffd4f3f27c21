#!/usr/bin/env bash
# Expert parallelism over MPI (issue 20): builds the MPI variant of the addon into build-mpi/ (the default build/
# stays MPI-free) and runs tools/mpi/expert-parallel-check.ts at 2 and 4 ranks (4 oversubscribed on a 2-core machine):
# outputs bitwise equal to one process holding every expert, and a bad input on one rank failing every rank cleanly.
# Installs OpenMPI where it can (root with apt-get); says so and skips where mpirun or mpicc is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq libopenmpi-dev openmpi-bin >/dev/null) || true
  fi
fi
if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null; then
  echo "test-mpi: SKIPPED: no mpirun / mpicc (apt-get install libopenmpi-dev openmpi-bin)"
  exit 0
fi
node scripts/build-native.js --mpi --out build-mpi
[ -f dist/tools/mpi/expert-parallel-check.js ] || npm run build:ts --silent
export MOE_KERNELS_BINARY="$PWD/build-mpi/Release/moe_kernels.node"
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
# A hang fails the run instead of blocking it (timeout), as does any rank's non-zero exit (mpirun's own status).
timeout 300 mpirun -np 2 node dist/tools/mpi/expert-parallel-check.js
timeout 300 mpirun -np 4 --oversubscribe node dist/tools/mpi/expert-parallel-check.js
# A rank that fails part-way through a collective forward (MOE_TEST_FAIL_RANK: as if out of memory there) must end
# the job with a message, not leave the other rank waiting: mpirun exits non-zero, well within the timeout.
set +e
abort_log=$(MOE_TEST_FAIL_RANK=1 timeout 120 mpirun -x MOE_TEST_FAIL_RANK -np 2 node -e "
  const { MoELayer, Tensor } = require('./dist/lib');
  const layer = MoELayer.random({ dModel: 16, dHidden: 8, numExperts: 4, topK: 2, expertParallel: true }, { seed: 1 });
  layer.forwardSync(Tensor.randn([3, 16], { seed: 2 }));
  console.log('test-mpi: a forward returned that should have aborted');
" 2>&1)
status=$?
set -e
if [ "$status" = 0 ] || [ "$status" = 124 ] || ! grep -q "rank 1 of 2 aborts the MPI job" <<<"$abort_log"; then
  echo "$abort_log"
  echo "test-mpi: FAILED: a rank failing inside a collective forward did not end the job cleanly (status $status)"
  exit 1
fi
echo "test-mpi: a rank failing inside a collective ended the job (status $status): $(grep -o 'rank 1 of 2 aborts.*' <<<"$abort_log" | head -1)"
echo "test-mpi: expert parallelism at 2 and 4 ranks: passed"
