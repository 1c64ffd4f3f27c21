// What the CUDA backend (cuda::CudaLayer) offers: inference with its own softmax top-k and sigmoid + bias routing
// (other rules route on the host and hand their choices to the GPU). Compiled in every build, CUDA or not, so that
// backendInfo() and the checks know it either way.
#include "moe/capabilities.h"

namespace moe {

extern const Capabilities kCudaCapabilities;
const Capabilities kCudaCapabilities{
    Backend::cuda,
    "cuda",
    offering({Feature::route_softmax_top_k, Feature::route_sigmoid_bias}),
    "every weight dtype uploaded as bfloat16 (int8 and int4 dequantized on the host first), fp32 accumulation",
};

}  // namespace moe
