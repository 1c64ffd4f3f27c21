#!/usr/bin/env bash
# The expert-parallel exchange's cost at 2 and 4 ranks on this machine (benchmarks/expert-parallel.ts), with the MPI
# addon of build-mpi/ (built if missing). Not part of CI: timings, not checks.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build-mpi/Release/moe_kernels.node ] || node scripts/build-native.js --mpi --out build-mpi
npm run build:ts --silent
export MOE_KERNELS_BINARY="$PWD/build-mpi/Release/moe_kernels.node"
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpirun -np 2 node dist/benchmarks/expert-parallel.js "$@"
sleep 2
mpirun -np 4 --oversubscribe node dist/benchmarks/expert-parallel.js "$@"
