// The CPU layer: router -> top-k -> dispatch -> grouped expert FFN -> combine, over a reusable workspace.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "expert_cache_impl.h"
#include "expert_parallel.h"
#include "experts.h"
#include "isa.h"
#include "thread_pool.h"
#include "work_size.h"

namespace moe {

namespace {

// A layer's routed experts read through an expert cache (ExpertStoreSpec): its store, registered with the cache
// for the layer's life, and one forward's scratch.
struct CachedExperts {
  CachedExperts(const ExpertStoreSpec& spec, const ExpertShape& shape)
      : cache(spec.cache),
        store(std::make_shared<const ExpertStore>(spec.path, spec.fingerprint, shape)),
        id(cache->impl().attach(store, spec.label)) {}
  ~CachedExperts() { cache->impl().detach(id); }
  std::shared_ptr<ExpertCache> cache;
  std::shared_ptr<const ExpertStore> store;
  int id;
  std::vector<int64_t> wanted;
  std::vector<std::shared_ptr<CachedExpert>> entries;
  std::vector<const unsigned char*> records;
  std::vector<char> seen, done;
};

// Unpins a forward's experts however it ends.
struct Pinned {
  CachedExperts& c;
  ~Pinned() {
    c.cache->impl().release(c.entries);
    c.entries.clear();
  }
};

}  // namespace

struct CpuLayer::State {
  State(const LayerConfig& c, const float* router_weights, const ExpertWeights& w, const ExpertWeights& sw,
        const BuiltInRouting& r, const float* noise_router_weights, const float* shared_gate_weights,
        const ExpertStoreSpec& store)
      : config(c),
        rule(r.rule),
        exchange(c.expert_parallel ? expert_exchange() : nullptr),
        bounds(exchange ? expert_bounds(c.experts.num_experts, exchange->size(), c.expert_slices)
                        : std::vector<int64_t>{0, c.experts.num_experts}),
        router(kernels().geometry, 1, c.experts.num_experts, c.experts.d_model, WeightDtype::float32, 0,
               {router_weights}),
        packed_experts(routed_experts(store, w)) {
    if (store.cache) cached = std::make_unique<CachedExperts>(store, c.experts);
    if (c.shared.num_experts > 0) shared = std::make_unique<PackedExperts>(c.shared, sw);
    // Packed once, like the router (it was packed again on every forward of a noisy top-k layer).
    if (noise_router_weights)
      noise_router = std::make_unique<PackedMatrix>(kernels().geometry, 1, c.experts.num_experts, c.experts.d_model,
                                                    WeightDtype::float32, 0, MatrixSource{noise_router_weights});
    if (shared_gate_weights && c.shared.num_experts > 0)
      shared_gate = std::make_unique<PackedMatrix>(kernels().geometry, 1, c.shared.num_experts, c.experts.d_model,
                                                   WeightDtype::float32, 0, MatrixSource{shared_gate_weights});
  }
  LayerConfig config;
  BuiltInRouting::Rule rule;
  // Expert parallel: the job's ranks, and the first routed expert of each (bounds[r] .. bounds[r + 1] are rank
  // r's, the ones packed_experts holds here). Otherwise null, and the one slice of all experts.
  std::shared_ptr<ExpertExchange> exchange;
  std::vector<int64_t> bounds;
  ExchangeWorkspace exchange_ws;
  int rank() const { return exchange ? exchange->rank() : 0; }
  ExpertShape local_shape() const {
    ExpertShape s = config.experts;
    s.num_experts = bounds[rank() + 1] - bounds[rank()];
    if (config.sliced_experts >= 0 && config.sliced_experts != s.num_experts)
      throw std::invalid_argument("moe-kernels: expected the weights of rank " + std::to_string(rank()) + "'s " +
                                  std::to_string(s.num_experts) + " experts (" + std::to_string(bounds[rank()]) +
                                  " on) or of all " + std::to_string(config.experts.num_experts) + " but got " +
                                  std::to_string(config.sliced_experts));
    return s;
  }
  // The routed experts packed from their weights, or (read from a store) their geometry only.
  PackedExperts routed_experts(const ExpertStoreSpec& store, const ExpertWeights& w) const {
    if (store.cache) return PackedExperts(local_shape());
    return PackedExperts(local_shape(),
                         slice_weights(config.experts, w, config.sliced_experts >= 0 ? 0 : bounds[rank()]));
  }
  void export_cached(const ExpertWeightsOut& out) const;
  // Calls a layer whose experts are read from a store does not offer: it is for inference.
  void not_cached(const char* what) const {
    if (cached)
      throw Unsupported(std::string("moe-kernels: expected a layer holding its experts for ") + what +
                        " but got one reading them from an expert store (options.cache: for inference)");
  }
  // An expert-parallel call's first step: every rank's checks passed (see Layer::collective_failed).
  void begin_collective(const char* call) {
    if (exchange && !exchange->all_ok(true))
      throw std::invalid_argument(std::string("moe-kernels: expected every rank of the expert-parallel ") + call +
                                  " to pass its checks but another rank's call failed (its own error says why); no "
                                  "rank ran this " +
                                  call);
  }
  // Runs an expert-parallel call's body past its agreement: a failure there (out of memory, say) would leave the
  // other ranks waiting in an exchange forever, so it ends the whole job instead (ExpertExchange::abort, with the
  // reason on stderr). Without expert parallelism the body just runs.
  template <class F>
  void collective(const char* call, F&& body) {
    if (!exchange) return body();
    try {
      fail_for_tests(call);
      body();
    } catch (const std::exception& e) {
      exchange->abort(std::string("its ") + call + " failed part-way, after every rank had agreed to run it (" +
                      e.what() + "); the other ranks would otherwise wait for it forever");
    }
  }
  // A test hook (scripts/test-mpi.sh): MOE_TEST_FAIL_RANK=r makes rank r's expert-parallel calls fail after their
  // agreement, as running out of memory there would.
  void fail_for_tests(const char* call) const {
    const char* r = std::getenv("MOE_TEST_FAIL_RANK");
    if (r && *r && std::atoi(r) == rank())
      throw std::runtime_error(std::string("MOE_TEST_FAIL_RANK=") + r + " failed this " + call);
  }
  // The gradients (or exported weights) of this rank's experts within arrays of all E: pointers moved to its first
  // expert; the other ranks' experts are zeros here (their owners hold them).
  ExpertWeightsOut local_part(const ExpertWeightsOut& all) const {
    const ExpertShape& s = config.experts;
    const int64_t h = s.d_hidden, d = s.d_model, e = s.num_experts, first = bounds[rank()], end = bounds[rank() + 1];
    const std::pair<float*, int64_t> parts[] = {{all.w1, h * d}, {all.w3, h * d}, {all.w2, d * h},
                                                {all.b1, h},     {all.b3, h},     {all.b2, d}};
    if (exchange)  // (this rank's own part is written by the caller)
      for (const auto& [p, per] : parts)
        if (p) std::fill(p, p + first * per, 0.0f), std::fill(p + end * per, p + e * per, 0.0f);
    const auto at = [&](float* p, int64_t per) { return p ? p + first * per : nullptr; };
    return {at(all.w1, h * d), at(all.w3, h * d), at(all.w2, d * h), at(all.b1, h), at(all.b3, h), at(all.b2, d)};
  }
  // Calls an expert-parallel layer does not offer yet.
  void not_expert_parallel(const char* what) const {
    if (exchange)
      throw Unsupported(std::string("moe-kernels: expected a layer that is not expert-parallel for ") + what +
                        " but got an expert-parallel one");
  }
  PackedMatrix router;
  std::unique_ptr<PackedMatrix> noise_router;
  std::unique_ptr<PackedMatrix> shared_gate;  // Qwen2-MoE's shared_expert_gate, or none (weight 1)
  PackedExperts packed_experts;
  std::unique_ptr<CachedExperts> cached;  // the routed experts come from a store through a cache, or not
  std::unique_ptr<PackedExperts> shared;
  std::mutex mutex;  // one forward at a time on this layer's workspace
  FfnWorkspace ffn;
  BackwardWorkspace backward;
  // What the last training forward kept for its backward (LayerOutputs::keep_for_backward): its input and slots'
  // experts, to recognise it, and the routed rows' pre-activations in plan order. Forgotten at an optimizer step.
  AlignedBuffer<float> kept_pre;
  std::vector<float> kept_x;
  std::vector<int32_t> kept_experts;
  int64_t kept_tokens = -1;
  int kept_k = 0;
  // The kept pre-activations if (x, experts) are what the last training forward kept them for, else null.
  const float* kept_for(const float* x, int64_t tokens, int k, const int32_t* experts) const {
    const int64_t d = config.experts.d_model;
    if (kept_tokens != tokens || kept_k != k) return nullptr;
    if (std::memcmp(kept_x.data(), x, sizeof(float) * tokens * d) != 0) return nullptr;
    if (std::memcmp(kept_experts.data(), experts, sizeof(int32_t) * tokens * k) != 0) return nullptr;
    return kept_pre.data();
  }
  AlignedBuffer<float> slot_out, slot_weights, shared_gates;
  AlignedBuffer<int32_t> slot_experts, counts, offsets, order;
  LayerTimings timings;  // of the last forward (guarded by mutex)

  // Shared experts are extra slots of every token (ids E .. E + Ns - 1, weight 1) after its k routed ones, so
  // routed and shared experts go through one dispatch and one combine: y = sum_j w_j E_j(x) + sum_s S_s(x)
  // (DeepSeekMoE eq. for h_t, DeepSeek-V3 eq. 12).
  void run_experts(const float* x, int64_t tokens, int k, const int32_t* experts, const float* weights, float* output,
                   int32_t* tokens_per_expert, bool keep) {
    const ExpertShape& shape = config.experts;
    const int64_t num_shared = config.shared.num_experts, routed = shape.num_experts;
    const int slots_per_token = k + static_cast<int>(num_shared);
    const int64_t slots = tokens * slots_per_token, all = routed + num_shared;
    int32_t* ids = slot_experts.reserve(static_cast<size_t>(slots));
    float* w = slot_weights.reserve(static_cast<size_t>(slots));
    // Gated shared experts (Qwen2-MoE): weight sigmoid(x . g_s) instead of 1.
    float* gate = nullptr;
    if (shared_gate) {
      gate = shared_gates.reserve(static_cast<size_t>(std::max<int64_t>(tokens * num_shared, 1)));
      packed_router_logits(*shared_gate, x, tokens, shape.d_model, gate, ffn);
      for (int64_t i = 0; i < tokens * num_shared; ++i) gate[i] = 1.0f / (1.0f + std::exp(-gate[i]));
    }
    for (int64_t t = 0; t < tokens; ++t)
      for (int j = 0; j < slots_per_token; ++j) {
        const bool is_routed = j < k;
        ids[t * slots_per_token + j] = is_routed ? experts[t * k + j] : static_cast<int32_t>(routed + j - k);
        w[t * slots_per_token + j] = is_routed ? weights[t * k + j] : gate ? gate[t * num_shared + (j - k)] : 1.0f;
      }
    int32_t* count = counts.reserve(static_cast<size_t>(all));
    int32_t* offset = offsets.reserve(static_cast<size_t>(all + 1));
    int32_t* slot_order = order.reserve(static_cast<size_t>(slots));
    dispatch(ids, slots, all, count, offset, slot_order);
    std::copy(count, count + routed, tokens_per_expert);
    timings.dispatch = lap();
    float* out = slot_out.reserve(static_cast<size_t>(slots * shape.d_model));
    float* pre = nullptr;
    keep = keep && !exchange && !cached;  // (an expert-parallel backward recomputes the pre-activations on the owners)
    if (keep) {  // forgotten first: if keeping fails half-way, no later backward takes it for this input's
      kept_tokens = -1;
      pre = kept_pre.reserve(static_cast<size_t>(
          std::max<int64_t>(1, offset[routed] * packed_experts.up.panel_count() * kernels().geometry.nr())));
      kept_x.assign(x, x + tokens * shape.d_model);
      kept_experts.assign(experts, experts + tokens * k);
    }
    if (exchange) {
      ExchangeStats stats;
      exchange_routed(*exchange, bounds, packed_experts, x, shape.d_model, slots_per_token, offset, slot_order, out,
                      exchange_ws, ffn, stats);
      timings.exchange = stats.ms;
      timings.exchange_bytes_sent = stats.bytes_sent, timings.exchange_bytes_received = stats.bytes_received;
    } else if (cached) {
      cached_ffn(x, tokens, slots_per_token, offset, slot_order, out);
    } else {
      expert_ffn(packed_experts, x, tokens, slots_per_token, offset, slot_order, out, ffn, pre);
    }
    if (keep) kept_tokens = tokens, kept_k = k;
    if (shared) expert_ffn(*shared, x, tokens, slots_per_token, offset + routed, slot_order, out, ffn);
    zero_unrouted_slots(slot_order, offset[all], slots, shape.d_model, out, ffn);
    timings.experts = lap();
    combine(out, w, tokens, slots_per_token, shape.d_model, output);
    timings.combine = lap();
    timings.total = std::chrono::duration<double, std::milli>(clock::now() - started).count();
  }

  // The routed experts through the cache: all of this forward's asked for at once (the misses start reading), the
  // resident ones computed first, then each batch of arrivals as it lands. Each expert's slots are computed by the
  // same GEMM items as in a layer holding them, so outputs are bitwise the same whatever was resident.
  void cached_ffn(const float* x, int64_t tokens, int slots_per_token, const int32_t* offset, const int32_t* order,
                  float* out) {
    CachedExperts& c = *cached;
    const int64_t experts = config.experts.num_experts;
    c.wanted.clear();
    for (int64_t e = 0; e < experts; ++e)
      if (offset[e + 1] > offset[e]) c.wanted.push_back(e);
    Pinned pinned{c};
    c.cache->impl().acquire(c.id, c.wanted, c.entries);
    c.records.assign(static_cast<size_t>(experts), nullptr);
    c.seen.assign(c.wanted.size(), 0);
    c.done.assign(c.wanted.size(), 0);
    const ExpertRecords records{c.records.data(), c.store->layout()};
    for (size_t left = c.wanted.size(); left > 0;) {
      c.cache->impl().wait_any(c.id, c.entries, c.seen);
      bool any = false;
      for (size_t i = 0; i < c.wanted.size(); ++i) {
        if (!c.seen[i] || c.done[i]) continue;
        const CachedExpert& e = *c.entries[i];
        if (e.state == CachedExpert::State::failed) throw std::runtime_error(e.error);
        c.records[c.wanted[i]] = e.bytes, c.done[i] = 1, any = true, --left;
      }
      if (any) expert_ffn(packed_experts, x, tokens, slots_per_token, offset, order, out, ffn, nullptr, &records);
      std::fill(c.records.begin(), c.records.end(), nullptr);
    }
  }

  using clock = std::chrono::steady_clock;
  clock::time_point started, last;
  void start_timing() {
    timings = LayerTimings{};
    started = last = clock::now();
  }
  double lap() {  // milliseconds since the previous lap
    const auto now = clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last).count();
    last = now;
    return ms;
  }
};

CpuLayer::CpuLayer(const LayerConfig& config, const float* router, const ExpertWeights& weights,
                   const ExpertWeights& shared, const BuiltInRouting& routing, const float* noise_router,
                   const float* shared_gate, const ExpertStoreSpec& store)
    : state_(std::make_unique<State>(config, router, weights, shared, routing, noise_router, shared_gate, store)) {}
CpuLayer::~CpuLayer() = default;

bool CpuLayer::runs_inline(int64_t slots) const {
  if (state_->cached) return false;  // (a miss waits for the disk: never on the caller's thread, the event loop)
  const ExpertShape& s = state_->config.experts;
  return 2.0 * slots * 3.0 * s.d_model * s.d_hidden < kJobThreadMinFlops;
}

const LayerConfig& CpuLayer::config() const { return state_->config; }
size_t CpuLayer::packed_bytes() const {
  const State& s = *state_;
  return s.router.bytes() + moe::packed_bytes(s.packed_experts) + (s.shared ? moe::packed_bytes(*s.shared) : 0) +
         (s.shared_gate ? s.shared_gate->bytes() : 0);
}

void CpuLayer::forward(const float* x, int64_t tokens, const LayerOutputs& out) {
  State& s = *state_;
  if (s.rule != BuiltInRouting::Rule::softmax_top_k)
    throw Unsupported(
        "moe-kernels: expected a layer whose own routing the CPU runs (softmax top-k) but got one "
        "routed by its caller (forward_routed)");
  std::lock_guard<std::mutex> lock(s.mutex);
  s.begin_collective("forward");
  s.collective("forward", [&] {
    const ThreadLimit limit(s.config.threads);
    const ExpertShape& shape = s.config.experts;
    s.start_timing();
    packed_router_logits(s.router, x, tokens, shape.d_model, out.logits, s.ffn);
    s.timings.router = s.lap();
    top_k_softmax(out.logits, tokens, shape.num_experts, s.config.top_k, s.config.normalize_top_k, out.experts,
                  out.weights);
    s.timings.routing = s.lap();
    s.run_experts(x, tokens, s.config.top_k, out.experts, out.weights, out.output, out.tokens_per_expert,
                  out.keep_for_backward);
  });
}

void CpuLayer::export_weights(const LayerWeightsOut& out) const {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (out.router) s.router.unpack(0, 0, out.router, nullptr);
  if (out.noise_router && s.noise_router) s.noise_router->unpack(0, 0, out.noise_router, nullptr);
  if (out.shared_gate && s.shared_gate) s.shared_gate->unpack(0, 0, out.shared_gate, nullptr);
  if (s.cached)
    s.export_cached(out.experts);
  else
    unpack_experts(s.packed_experts, s.local_part(out.experts));
  if (s.shared) unpack_experts(*s.shared, out.shared);
}

// A cached layer's routed experts read back: each record read from its store (not through the cache: an export
// must not evict what the forwards use) and unpacked as a resident layer's panels would be.
void CpuLayer::State::export_cached(const ExpertWeightsOut& out) const {
  const PackedExperts& p = packed_experts;
  const ExpertShape& sh = p.shape;
  const int64_t h = sh.d_hidden, d = sh.d_model;
  const StoreLayout& l = cached->store->layout();
  std::mutex failed_mutex;
  std::string failed;  // the first read's error (a pool task must not throw)
  ThreadPool::instance().run(sh.num_experts, [&](int64_t e) {
    thread_local std::unique_ptr<unsigned char, AlignedFree> buffer;
    thread_local size_t size = 0;
    if (size < l.stride()) {
      buffer.reset(static_cast<unsigned char*>(aligned_malloc(kStoreAlign, l.stride())));
      if (!buffer) throw std::bad_alloc();
      size = l.stride();
    }
    unsigned char* r = buffer.get();
    try {
      cached->store->read(e, r);
    } catch (const std::exception& x) {
      std::lock_guard<std::mutex> lock(failed_mutex);
      if (failed.empty()) failed = x.what();
      return;
    }
    const auto* up_bias = reinterpret_cast<const float*>(r + l.up_bias_at());
    const auto* down_bias = reinterpret_cast<const float*>(r + l.down_bias_at());
    if (out.w1) p.up.unpack_from(r, up_bias, 0, out.w1 + e * h * d, out.b1 ? out.b1 + e * h : nullptr);
    if (out.w3 && is_gated(sh.activation))
      p.up.unpack_from(r, up_bias, 1, out.w3 + e * h * d, out.b3 ? out.b3 + e * h : nullptr);
    if (out.w2)
      p.down.unpack_from(r + l.down_at(), down_bias, 0, out.w2 + e * d * h, out.b2 ? out.b2 + e * d : nullptr);
  });
  if (!failed.empty()) throw std::runtime_error(failed);
}

void CpuLayer::backward(const float* x, int64_t tokens, int k, const int32_t* experts, const float* weights,
                        const float* d_out, const LayerGradients& g) {
  State& s = *state_;
  s.not_cached("a backward");
  std::lock_guard<std::mutex> lock(s.mutex);
  s.begin_collective("backward");
  s.collective("backward", [&] {
    const ThreadLimit limit(s.config.threads);
    const ExpertShape& shape = s.config.experts;
    const int64_t d = shape.d_model, routed = shape.num_experts, num_shared = s.config.shared.num_experts;
    const int spt = k + static_cast<int>(num_shared);
    const int64_t slots = tokens * spt, all = routed + num_shared;
    // The slots as the forward ran them: routed, then shared ones with weight 1 or their gate's sigmoid.
    std::vector<int32_t> ids(static_cast<size_t>(slots));
    std::vector<float> w(static_cast<size_t>(slots)), gate;
    if (s.shared_gate) {
      gate.resize(static_cast<size_t>(std::max<int64_t>(tokens * num_shared, 1)));
      packed_router_logits(*s.shared_gate, x, tokens, d, gate.data(), s.ffn);
      for (float& v : gate) v = 1.0f / (1.0f + std::exp(-v));
    }
    for (int64_t t = 0; t < tokens; ++t)
      for (int j = 0; j < spt; ++j) {
        const bool is_routed = j < k;
        ids[t * spt + j] = is_routed ? experts[t * k + j] : static_cast<int32_t>(routed + j - k);
        w[t * spt + j] = is_routed ? weights[t * k + j] : s.shared_gate ? gate[t * num_shared + (j - k)] : 1.0f;
      }
    std::vector<int32_t> count(static_cast<size_t>(all)), offset(static_cast<size_t>(all + 1)),
        order(static_cast<size_t>(slots));
    dispatch(ids.data(), slots, all, count.data(), offset.data(), order.data());
    // Reused, not a fresh vector: a fresh block of this size comes from mmap, and its first touch costs more than
    // the sums that fill it.
    float* dx_slots = s.backward.dx_slots.reserve(static_cast<size_t>(slots * d));
    std::fill(dx_slots, dx_slots + slots * d, 0.0f);
    std::vector<float> d_slot(static_cast<size_t>(slots), 0.0f);
    if (s.exchange)
      exchange_backward(*s.exchange, s.bounds, s.packed_experts, x, d_out, d, spt, offset.data(), order.data(),
                        w.data(), d_slot.data(), dx_slots, s.local_part(g.experts), s.backward, s.exchange_ws);
    else
      experts_backward(s.packed_experts, x, spt, offset.data(), order.data(), w.data(), d_out, d_slot.data(), dx_slots,
                       g.experts, s.backward, s.kept_for(x, tokens, k, experts));
    if (s.shared)
      experts_backward(*s.shared, x, spt, offset.data() + routed, order.data(), w.data(), d_out, d_slot.data(),
                       dx_slots, g.shared, s.backward);
    // dx per token, its slots in order; a gated shared expert also passes through its gate: out += sigmoid(z) y,
    // z = x . gate_s, so dL/dz = sigmoid'(z) <dL/dout, y>.
    std::vector<float> gate_w;
    if (s.shared_gate) {
      gate_w.resize(static_cast<size_t>(num_shared * d));
      s.shared_gate->unpack(0, 0, gate_w.data(), nullptr);
      if (g.d_shared_gate) std::fill(g.d_shared_gate, g.d_shared_gate + num_shared * d, 0.0f);
    }
    for (int64_t t = 0; t < tokens; ++t) {
      float* dx = g.dx + t * d;
      std::fill(dx, dx + d, 0.0f);
      for (int j = 0; j < spt; ++j)
        for (int64_t i = 0; i < d; ++i) dx[i] += dx_slots[(t * spt + j) * d + i];
      if (s.shared_gate)
        for (int64_t sh = 0; sh < num_shared; ++sh) {
          const float gv = gate[t * num_shared + sh];
          const float dz = gv * (1.0f - gv) * d_slot[t * spt + k + sh];
          for (int64_t i = 0; i < d; ++i) {
            if (g.d_shared_gate) g.d_shared_gate[sh * d + i] += dz * x[t * d + i];
            dx[i] += dz * gate_w[sh * d + i];
          }
        }
      if (g.d_weights)
        for (int j = 0; j < k; ++j) g.d_weights[t * k + j] = d_slot[t * spt + j];
    }
  });
}

void CpuLayer::apply_gradients(const ParameterGradients& g, const OptimizerStep& step) {
  State& s = *state_;
  s.not_cached("an optimizer step");
  std::lock_guard<std::mutex> lock(s.mutex);
  const ThreadLimit limit(s.config.threads);
  if (!all_float32(s.config.experts))
    throw Unsupported(std::string("moe-kernels: expected weightDtype 'float32' for an optimizer step but got '") +
                      weight_dtype_name(s.config.experts.weight_dtype) + "'");
  s.begin_collective("optimizer step");
  s.collective("optimizer step", [&] {
    s.kept_tokens = -1;  // kept pre-activations are of the old weights
    // Expert parallel: what every rank holds (router, noise router, shared gate, shared experts) steps by the sum of
    // every rank's gradient, added in rank order on each rank (an all-gather, not an all-reduce whose order MPI leaves
    // open), so that the copies stay bitwise the same; each routed expert steps on its owner by its own gradient.
    std::list<std::vector<float>> sums;  // (a list: the sums stay where they are while more are added)
    const auto summed = [&](const float* part, int64_t n) -> const float* {
      if (!s.exchange || !part) return part;
      const int ranks = s.exchange->size();
      std::vector<float> all(static_cast<size_t>(n * ranks));
      s.exchange->all_gather(part, n, all.data());
      std::vector<float>& sum = sums.emplace_back(static_cast<size_t>(n), 0.0f);
      for (int r = 0; r < ranks; ++r)
        for (int64_t i = 0; i < n; ++i) sum[i] += all[r * n + i];
      return sum.data();
    };
    const int64_t d_model = s.config.experts.d_model, routed = s.config.experts.num_experts;
    if (g.router) s.router.update(0, 0, summed(g.router, routed * d_model), nullptr, step);
    if (g.noise_router && s.noise_router)
      s.noise_router->update(0, 0, summed(g.noise_router, routed * d_model), nullptr, step);
    if (g.shared_gate && s.shared_gate)
      s.shared_gate->update(0, 0, summed(g.shared_gate, s.config.shared.num_experts * d_model), nullptr, step);
    auto experts = [&](PackedExperts& p, const ExpertGradientsIn& in) {
      const ExpertShape& sh = p.shape;
      const int64_t h = sh.d_hidden, d = sh.d_model;
      const bool gated = is_gated(sh.activation);
      for (int64_t e = 0; e < sh.num_experts; ++e) {
        if (in.w1) p.up.update(e, 0, in.w1 + e * h * d, p.up.has_bias(0) && in.b1 ? in.b1 + e * h : nullptr, step);
        if (gated && in.w3)
          p.up.update(e, 1, in.w3 + e * h * d, p.up.has_bias(1) && in.b3 ? in.b3 + e * h : nullptr, step);
        if (in.w2) p.down.update(e, 0, in.w2 + e * d * h, p.down.has_bias(0) && in.b2 ? in.b2 + e * d : nullptr, step);
      }
    };
    // This rank's routed experts: the gradients of its slice within those of all E.
    const ExpertShape& r = s.config.experts;
    const int64_t first = s.bounds[s.rank()], rh = r.d_hidden, rd = r.d_model;
    const auto from = [first](const float* p, int64_t per) { return p ? p + first * per : nullptr; };
    const ExpertGradientsIn& a = g.experts;
    experts(s.packed_experts, {from(a.w1, rh * rd), from(a.w3, rh * rd), from(a.w2, rd * rh), from(a.b1, rh),
                               from(a.b3, rh), from(a.b2, rd)});
    if (s.shared) {
      const ExpertShape& sh = s.config.shared;
      const int64_t n = sh.num_experts, h = sh.d_hidden, d = sh.d_model;
      const ExpertGradientsIn& b = g.shared;
      experts(*s.shared, {summed(b.w1, n * h * d), is_gated(sh.activation) ? summed(b.w3, n * h * d) : b.w3,
                          summed(b.w2, n * d * h), summed(b.b1, n * h), summed(b.b3, n * h), summed(b.b2, n * d)});
    }
  });
}

LayerWeightsPresent CpuLayer::weights_present() const {
  const State& s = *state_;
  LayerWeightsPresent p;
  p.noise_router = s.noise_router != nullptr;
  p.shared_gate = s.shared_gate != nullptr;
  packed_biases(s.packed_experts, &p.b1, &p.b3, &p.b2);
  if (s.cached) p.b1 = p.b3 = s.cached->store->has_bias(0), p.b2 = s.cached->store->has_bias(1);
  if (s.shared) packed_biases(*s.shared, &p.shared_b1, &p.shared_b3, &p.shared_b2);
  return p;
}

void CpuLayer::slot_outputs(const float* x, int64_t tokens, int k, const int32_t* experts, float* slot_out) {
  State& s = *state_;
  s.not_expert_parallel("slot outputs");
  std::lock_guard<std::mutex> lock(s.mutex);
  const ThreadLimit limit(s.config.threads);
  const ExpertShape& shape = s.config.experts;
  const int64_t slots = tokens * k;
  int32_t* count = s.counts.reserve(static_cast<size_t>(shape.num_experts));
  int32_t* offset = s.offsets.reserve(static_cast<size_t>(shape.num_experts + 1));
  int32_t* order = s.order.reserve(static_cast<size_t>(slots));
  dispatch(experts, slots, shape.num_experts, count, offset, order);
  if (s.cached)
    s.cached_ffn(x, tokens, k, offset, order, slot_out);
  else
    expert_ffn(s.packed_experts, x, tokens, k, offset, order, slot_out, s.ffn);
  zero_unrouted_slots(order, offset[shape.num_experts], slots, shape.d_model, slot_out, s.ffn);
}

void CpuLayer::router_logits(const float* x, int64_t tokens, float* logits) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  const ThreadLimit limit(s.config.threads);
  packed_router_logits(s.router, x, tokens, s.config.experts.d_model, logits, s.ffn);
}

void CpuLayer::noise_logits(const float* x, int64_t tokens, float* logits) {
  State& s = *state_;
  if (!s.noise_router)
    throw Unsupported("moe-kernels: expected a layer with a noise router (noisy top-k) for noise logits");
  std::lock_guard<std::mutex> lock(s.mutex);
  const ThreadLimit limit(s.config.threads);
  packed_router_logits(*s.noise_router, x, tokens, s.config.experts.d_model, logits, s.ffn);
}

size_t CpuLayer::host_bytes() const {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);  // (a backward or step on the job thread grows these buffers)
  size_t bytes = packed_bytes() + (s.noise_router ? s.noise_router->bytes() : 0);
  // Training's memory too (issue 34: after a backward and an AdamW step an undisposed layer held 3.4x what V8 was
  // told, so the garbage collector saw no reason to collect layers left to it): the optimizer's state and
  // transposed panels of every matrix, the backward's workspace, and what a training forward kept.
  for (const PackedMatrix* m : std::initializer_list<const PackedMatrix*>{
           &s.router, s.noise_router.get(), s.shared_gate.get(), &s.packed_experts.up, &s.packed_experts.down,
           s.shared ? &s.shared->up : nullptr, s.shared ? &s.shared->down : nullptr})
    if (m) bytes += m->training_bytes();
  const BackwardWorkspace& b = s.backward;
  for (const AlignedBuffer<float>* f : std::initializer_list<const AlignedBuffer<float>*>{
           &b.pre, &b.b, &b.q, &b.act, &b.dpre_rows, &b.dy_rows, &b.column_sums, &b.packed_t, &b.packed_t2, &b.packed_a,
           &b.dx_slots, &s.kept_pre})
    bytes += f->capacity() * sizeof(float);
  bytes += b.columns.capacity() * sizeof(int32_t) + s.kept_x.capacity() * sizeof(float) +
           s.kept_experts.capacity() * sizeof(int32_t);
  return bytes;
}

void CpuLayer::forward_routed(const float* x, int64_t tokens, int k, const int32_t* experts, const float* weights,
                              float* output, int32_t* tokens_per_expert, bool keep_for_backward) {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.begin_collective("forward");
  s.collective("forward", [&] {
    const ThreadLimit limit(s.config.threads);
    s.start_timing();
    s.run_experts(x, tokens, k, experts, weights, output, tokens_per_expert, keep_for_backward);
  });
}

bool CpuLayer::collective() const { return state_->exchange != nullptr; }

void CpuLayer::write_expert_store(const std::string& path, const std::string& fingerprint) const {
  State& s = *state_;
  s.not_cached("writing an expert store");
  s.not_expert_parallel("writing an expert store");
  std::lock_guard<std::mutex> lock(s.mutex);
  moe::write_expert_store(path, fingerprint, s.packed_experts);
}

int64_t CpuLayer::prefetch(const float* x, int64_t tokens) {
  State& s = *state_;
  if (!s.cached) return 0;
  std::lock_guard<std::mutex> lock(s.mutex);
  const ThreadLimit limit(s.config.threads);
  const ExpertShape& shape = s.config.experts;
  // The experts of the top-k logits of each token (softmax and sigmoid scores rank alike), without duplicates.
  float* logits = s.slot_out.reserve(static_cast<size_t>(tokens * shape.num_experts));
  packed_router_logits(s.router, x, tokens, shape.d_model, logits, s.ffn);
  std::vector<char> chosen(static_cast<size_t>(shape.num_experts), 0);
  std::vector<int64_t> ids(static_cast<size_t>(shape.num_experts));
  for (int64_t t = 0; t < tokens; ++t) {
    const float* l = logits + t * shape.num_experts;
    for (int64_t e = 0; e < shape.num_experts; ++e) ids[e] = e;
    const int64_t k = std::min<int64_t>(s.config.top_k, shape.num_experts);
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                      [&](int64_t a, int64_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    for (int64_t j = 0; j < k; ++j) chosen[ids[j]] = 1;
  }
  std::vector<int64_t> wanted;
  for (int64_t e = 0; e < shape.num_experts; ++e)
    if (chosen[e]) wanted.push_back(e);
  return s.cached->cache->impl().prefetch(s.cached->id, wanted);
}
void CpuLayer::collective_failed() {
  State& s = *state_;
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.exchange) s.exchange->all_ok(false);
}

LayerTimings CpuLayer::last_timings() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->timings;
}

}  // namespace moe
