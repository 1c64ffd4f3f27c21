// How big work must be before handing it to other threads pays. A hand-off costs a thread wake-up round trip
// (about 25-40 us in the VMs measured here, benchmarks/NOTES.md), so work much smaller than that stays put.
// The two decisions sit side by side so that they are tuned together.
#pragma once

namespace moe {

// A list of GEMM groups below this many FLOP runs on one thread instead of the pool (experts.cpp).
constexpr double kPoolMinFlops = 1e6;
// A layer call below this many FLOP runs on the caller's thread instead of a job thread (Layer::runs_inline).
// Twice the pool's: the hop to a job thread and back to the event loop costs a Promise settle on top of a wake-up.
constexpr double kJobThreadMinFlops = 2e6;

}  // namespace moe
