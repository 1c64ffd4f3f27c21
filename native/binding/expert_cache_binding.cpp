// NativeExpertCache: owns a core moe::ExpertCache (shared with the layers built on it, which keep it alive);
// stats / resetStats / clear / dispose. expertStoreMatches: whether a store file can be reused as it is.
#include "expert_cache_binding.h"

#include <memory>
#include <string>

#include "args.h"
#include "async_job.h"
#include "moe/moe.h"
#include "spec.h"
#include "type_tags.h"

namespace moe_binding {
namespace {

const Signature& kConstruct = declare("new NativeExpertCache", {"bytes", "policy", "ioThreads", "halfLife"});
const Signature& kMatches = declare("expertStoreMatches", {"path", "fingerprint", "experts"});

Napi::Object counts_object(Napi::Env env, const moe::CacheCounts& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("hits", static_cast<double>(c.hits));
  o.Set("misses", static_cast<double>(c.misses));
  o.Set("prefetches", static_cast<double>(c.prefetches));
  o.Set("prefetchHits", static_cast<double>(c.prefetch_hits));
  o.Set("reads", static_cast<double>(c.reads));
  o.Set("readErrors", static_cast<double>(c.read_errors));
  o.Set("bytesRead", c.bytes_read);
  o.Set("readMs", c.read_ms);
  o.Set("waitMs", c.wait_ms);
  o.Set("evictions", static_cast<double>(c.evictions));
  return o;
}

class NativeExpertCache : public Napi::ObjectWrap<NativeExpertCache> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "NativeExpertCache",
        {InstanceMethod("stats", &NativeExpertCache::Stats),
         InstanceMethod("resetStats", &NativeExpertCache::ResetStats),
         InstanceMethod("clear", &NativeExpertCache::Clear), InstanceMethod("dispose", &NativeExpertCache::Dispose)});
  }

  // { bytes, policy: 'lru' | 'lfru', ioThreads, halfLife }
  explicit NativeExpertCache(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeExpertCache>(info) {
    tag_object(info.Env(), info.This().As<Napi::Object>(), kExpertCacheTag);
    const Args a(info, kConstruct);
    moe::ExpertCacheOptions o;
    o.bytes = static_cast<size_t>(int_arg(a, "bytes", 1, int64_t{1} << 50));
    const std::string policy = string_value(info.Env(), a["policy"], "policy");
    if (policy != "lru" && policy != "lfru")
      throw_range_error(info.Env(), "expected policy to be 'lru' or 'lfru' but got '" + policy + "'");
    o.policy = policy == "lru" ? moe::CachePolicy::lru : moe::CachePolicy::lfru;
    o.io_threads = static_cast<int>(int_arg(a, "ioThreads", 1, 64));
    o.half_life = number_value(info.Env(), a["halfLife"], "halfLife");
    if (!(o.half_life > 0))
      throw_range_error(info.Env(), "expected halfLife > 0 but got " + std::to_string(o.half_life));
    cache_ = std::make_shared<moe::ExpertCache>(o);
  }

  std::shared_ptr<moe::ExpertCache> cache(Napi::Env env) const {
    if (!cache_) throw_type_error(env, "expected an expert cache that is not disposed but got a disposed ExpertCache");
    return cache_;
  }

 private:
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    const moe::ExpertCacheStats s = cache(env)->stats();
    Napi::Object o = counts_object(env, s.total);
    o.Set("budgetBytes", static_cast<double>(s.budget));
    o.Set("residentBytes", static_cast<double>(s.resident_bytes));
    o.Set("peakBytes", static_cast<double>(s.peak_bytes));
    o.Set("residentExperts", static_cast<double>(s.resident_experts));
    o.Set("overBudgetBytes", static_cast<double>(s.over_budget_bytes));
    Napi::Array layers = Napi::Array::New(env, s.layers.size());
    for (size_t i = 0; i < s.layers.size(); ++i) {
      Napi::Object l = counts_object(env, s.layers[i].counts);
      l.Set("label", s.layers[i].label);
      l.Set("residentBytes", static_cast<double>(s.layers[i].resident_bytes));
      l.Set("residentExperts", static_cast<double>(s.layers[i].resident_experts));
      layers.Set(static_cast<uint32_t>(i), l);
    }
    o.Set("layers", layers);
    return o;
  }
  Napi::Value ResetStats(const Napi::CallbackInfo& info) {
    cache(info.Env())->reset_stats();
    return info.Env().Undefined();
  }
  Napi::Value Clear(const Napi::CallbackInfo& info) {
    cache(info.Env())->clear();
    return info.Env().Undefined();
  }
  // The cache's memory goes once the layers built on it are gone too (they hold it).
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (cache_) cache_->clear();
    cache_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<moe::ExpertCache> cache_;
};

// { path, fingerprint, experts: NativeExpertSpec (its shape) } -> boolean
Napi::Value ExpertStoreMatches(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  const Args a(info, kMatches);
  const std::string path = string_value(env, a["path"], "path"),
                    fingerprint = string_value(env, a["fingerprint"], "fingerprint");
  const ExpertSpec experts = read_experts(Fields(env, a["experts"], "experts"));
  bool matches = false;
  run_guarded(env, [&] { matches = moe::expert_store_matches(path, fingerprint, experts.shape); });
  return Napi::Boolean::New(env, matches);
}

}  // namespace

std::shared_ptr<moe::ExpertCache> expert_cache_of(Napi::Env env, Napi::Value value) {
  return unwrap_tagged<NativeExpertCache>(env, value, kExpertCacheTag, "an ExpertCache")->cache(env);
}

void init_expert_cache(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeExpertCache", NativeExpertCache::Define(env));
  exports.Set("expertStoreMatches", Napi::Function::New(env, ExpertStoreMatches, "expertStoreMatches"));
}

}  // namespace moe_binding
