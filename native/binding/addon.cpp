// Module registration only: the backend facts, the thread count, the ceilings, then the kernels, the layer and
// the read probe.
#include <napi.h>

#include <algorithm>

#include "../src/core/expert_parallel.h"
#include "../src/core/weight_formats.h"
#include "args.h"
#include "async_job.h"
#include "expert_cache_binding.h"
#include "kernels_binding.h"
#include "layer_binding.h"
#include "moe/capabilities.h"
#include "moe/cuda.h"
#include "moe/moe.h"
#include "read_probe_binding.h"
#include "spec.h"

namespace moe_binding {
namespace {

// out.backends: what each backend offers (moe/capabilities.h) and how it holds the weights; out.features: each
// feature's description. Constant tables: no device is asked anything.
void set_capabilities(Napi::Env env, Napi::Object out) {
  auto backends = Napi::Object::New(env);
  for (moe::Backend backend : {moe::Backend::cpu, moe::Backend::cuda}) {
    const moe::Capabilities& c = moe::capabilities(backend);
    auto offers = Napi::Array::New(env);
    uint32_t n = 0;
    for (int f = 0; f < moe::kFeatureCount; ++f)
      if (c.offers[f]) offers.Set(n++, moe::feature_info(static_cast<moe::Feature>(f)).name);
    auto entry = Napi::Object::New(env);
    entry.Set("offers", offers);
    entry.Set("weights", c.weights);
    backends.Set(c.name, entry);
  }
  out.Set("backends", backends);
  auto features = Napi::Object::New(env);
  for (int f = 0; f < moe::kFeatureCount; ++f) {
    const moe::FeatureInfo& info = moe::feature_info(static_cast<moe::Feature>(f));
    features.Set(info.name, info.description);
  }
  out.Set("features", features);
}

Napi::Value BackendInfo(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  auto out = Napi::Object::New(env);
  out.Set("isa", moe::isa_name(moe::active_isa()));
  out.Set("threads", moe::thread_count());
  auto isas = Napi::Array::New(env);
  uint32_t i = 0;
  for (moe::Isa isa : moe::supported_isas()) isas.Set(i++, moe::isa_name(isa));
  out.Set("supportedIsas", isas);
  const moe::cuda::DeviceInfo device = moe::cuda::device_info();
  auto cuda = Napi::Object::New(env);
  cuda.Set("compiled", device.compiled);
  cuda.Set("devices", device.devices);
  cuda.Set("reason", device.reason);
  out.Set("cuda", cuda);
  const moe::MpiStatus mpi = moe::mpi_status();
  auto m = Napi::Object::New(env);
  m.Set("compiled", mpi.compiled);
  m.Set("initialized", mpi.initialized);
  m.Set("rank", mpi.rank);
  m.Set("size", mpi.size);
  m.Set("reason", mpi.reason);
  out.Set("mpi", m);
  set_capabilities(env, out);
  return out;
}

// () -> { activations: { name: { gated } }, weightDtypes: { name: { bits, quantized } }, backends, features }: the
// core's tables, which lib/activation.ts and lib/weight-dtypes.ts mirror (test/core-tables.test.ts compares them) and
// lib/capabilities.ts reads. Unlike backendInfo(), it asks no device anything (which starts the CUDA runtime).
Napi::Value CoreTables(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  auto activations = Napi::Object::New(env);
  for (const moe::ActivationInfo& a : moe::kActivationTable) {
    auto entry = Napi::Object::New(env);
    entry.Set("gated", a.gated);
    activations.Set(a.name, entry);
  }
  auto dtypes = Napi::Object::New(env);
  for (int d = 0; d < moe::kWeightDtypes; ++d) {
    const moe::WeightFormat& f = moe::weight_format(static_cast<moe::WeightDtype>(d));
    auto entry = Napi::Object::New(env);
    entry.Set("bits", f.bits);
    entry.Set("quantized", moe::is_quantized(f.key));
    dtypes.Set(f.name, entry);
  }
  auto out = Napi::Object::New(env);
  out.Set("activations", activations);
  out.Set("weightDtypes", dtypes);
  set_capabilities(env, out);
  return out;
}

// () -> { call: [field, ...] }: every per-call options object the binding reads, by call (args.h's declare()), for
// test/native-seam.test.ts to compare with lib/native.ts.
Napi::Value Signatures(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  auto out = Napi::Object::New(env);
  for (const Signature* s : signatures()) {
    auto fields = Napi::Array::New(env);
    uint32_t i = 0;
    for (const std::string& f : s->fields) fields.Set(i++, f);
    out.Set(s->call, fields);
  }
  return out;
}

// { numExperts, slices?: number[] } -> { rank, size, first, count }: starts MPI (RangeError where this build has
// none) and says which routed experts this rank owns in an expert-parallel layer of numExperts (MoELayer and
// fromPretrained read only that slice's weights).
const Signature& kStartMpi = declare("startMpi", {"numExperts", "slices"});
Napi::Value StartMpi(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  const Args a(info, kStartMpi);
  const int64_t experts = int_arg(a, "numExperts", 1, int64_t{1} << 31);
  const std::vector<int32_t> slices =
      a["slices"].IsUndefined() ? std::vector<int32_t>{} : expert_slices(env, a["slices"], experts, "slices");
  auto out = Napi::Object::New(env);
  run_guarded(env, [&] {
    const std::shared_ptr<moe::ExpertExchange> exchange = moe::expert_exchange();
    const std::vector<int64_t> bounds = moe::expert_bounds(experts, exchange->size(), slices);
    const int rank = exchange->rank();
    out.Set("rank", rank);
    out.Set("size", exchange->size());
    out.Set("first", static_cast<double>(bounds[rank]));
    out.Set("count", static_cast<double>(bounds[rank + 1] - bounds[rank]));
  });
  return out;
}

const Signature& kSetThreads = declare("setThreads", {"threads"});
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  moe::set_thread_count(static_cast<int>(int_arg(Args(info, kSetThreads), "threads", 1, 256)));
  return info.Env().Undefined();
}

// { threads, seconds } -> GFLOP/s of fp32 FMA with the active ISA
const Signature& kMeasureFmaPeak = declare("measureFmaPeak", {"threads", "seconds"});
Napi::Value MeasureFmaPeak(const Napi::CallbackInfo& info) {
  const Args a(info, kMeasureFmaPeak);
  const int threads = static_cast<int>(int_arg(a, "threads", 1, 256));
  if (!a["seconds"].IsNumber()) throw_type_error(info.Env(), "expected seconds to be a number");
  const double seconds = a["seconds"].As<Napi::Number>().DoubleValue();
  if (!(seconds >= 0.01 && seconds <= 10))
    throw_range_error(info.Env(), "expected seconds to be in [0.01, 10] but got " + std::to_string(seconds));
  return Napi::Number::New(info.Env(), moe::measure_fma_peak(threads, seconds));
}

}  // namespace
}  // namespace moe_binding

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("backendInfo", Napi::Function::New(env, moe_binding::BackendInfo));
  exports.Set("coreTables", Napi::Function::New(env, moe_binding::CoreTables));
  exports.Set("signatures", Napi::Function::New(env, moe_binding::Signatures));
  exports.Set("setThreads", Napi::Function::New(env, moe_binding::SetThreads));
  exports.Set("startMpi", Napi::Function::New(env, moe_binding::StartMpi));
  exports.Set("measureFmaPeak", Napi::Function::New(env, moe_binding::MeasureFmaPeak));
  moe_binding::init_kernels(env, exports);
  moe_binding::init_layer(env, exports);
  moe_binding::init_read_probe(env, exports);
  moe_binding::init_expert_cache(env, exports);
  return exports;
}

NODE_API_MODULE(moe_kernels, Init)
