#include "experts.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "isa.h"
#include "thread_pool.h"
#include "work_size.h"

namespace moe {

namespace {

// Above this many bytes of A, a group's GEMM goes chunk by chunk (see plan): a few MiB, well inside the
// last-level cache of one core's share. Thresholds of 1 and 4 MiB measured alike on the small shape at 8192 tokens
// (the experiment is row 54 of benchmarks/NOTES.md).
constexpr int64_t kChunkMajorBytes = int64_t{4} << 20;
// Bytes of B per work item of a GEMM whose B is data (GemmGroup::chunk_major): half of a core's L2.
constexpr int64_t kDataPanelBytes = int64_t{512} << 10;

// Work items are (group, row tile, panel tile). Panel tiles shrink until every thread has a few items, so a
// single token (decode) still spreads the weight stream over all cores. Each item writes its own outputs and
// never splits a reduction, so results are bitwise identical for any thread count.

struct Tile {
  const GemmGroup* group;
  int64_t row0, row1, a_offset;
};
struct Item {
  int64_t tile0, tile1, panel0, panel1;
};

// One list of groups made ready to run: A packed, the work items listed, the kernel chosen.
struct Stage {
  std::vector<Tile> tiles;  // grow-only, like items: no allocation once warm
  std::vector<Item> items;
  float* a = nullptr;  // the packed rows of the tiles whose group brings none
  cpu::WeightKernels weights{};
  WeightDtype dtype = WeightDtype::float32;
  double flops = 0.0;
  bool contiguous = false;  // every group one row tile: items are runs of one weight stream (see plan)
  // The group an item belongs to, as an index into the list.
  int64_t group_of(const Item& it, const std::vector<GemmGroup>& groups) const {
    return tiles[it.tile0].group - &groups[0];
  }
};

// Lists the items of `groups` in `stage`, after packing A (into packed_a) where a group brings none.
void plan(std::vector<GemmGroup>& groups, int64_t out_cols, WeightDtype dtype, AlignedBuffer<float>& packed_a,
          Stage& stage) {
  // A new version of the packed A for this list's items (see GemmProblem::a_version).
  static std::atomic<uint64_t> versions{0};
  const uint64_t version = ++versions;
  for (GemmGroup& g : groups) g.problem.a_version = version;
  const auto& k = kernels();
  const int64_t threads = ThreadPool::instance().size();

  // Row tiles, each with its rows of A gathered and packed once, before the GEMMs, for all its panel tiles
  // (packing per work item repeated it once per panel tile: up to 11x the bytes for a 512-token prefill).
  // Groups whose A comes packed already skip this.
  std::vector<Tile>& tiles = stage.tiles;
  tiles.clear();
  int64_t floats = 0, panel_count = 1;
  stage.flops = 0.0;
  for (const auto& g : groups) {
    stage.flops += 2.0 * g.rows * g.panels * k.geometry.nr() * g.problem.k;
    panel_count = std::max(panel_count, g.panels);
    for (int64_t r = 0; r < g.rows; r += cpu::kTileRows) {
      const int64_t r1 = std::min(g.rows, r + cpu::kTileRows);
      tiles.push_back({&g, r, r1, floats});
      if (!g.packed_a) floats += k.geometry.packed_a_floats(r1 - r, g.problem.k);
    }
  }
  float* a = stage.a = floats > 0 ? packed_a.reserve(static_cast<size_t>(floats)) : nullptr;
  // Below kPoolMinFlops (tens of microseconds) the hand-off to other threads costs more than it saves.
  const bool tiny = stage.flops < kPoolMinFlops;
  if (floats > 0) {
    const ThreadLimit limit(tiny || floats < (int64_t{1} << 16) ? 1 : ThreadLimit::current());
    ThreadPool::instance().run(static_cast<int64_t>(tiles.size()), [&](int64_t i) {
      const Tile& t = tiles[i];
      if (!t.group->packed_a) k.pack_a(t.group->problem, t.row0, t.row1 - t.row0, a + t.a_offset);
    });
  }

  int64_t tile_panels = std::max<int64_t>(1, 256 / out_cols);
  const int64_t row_tiles = static_cast<int64_t>(tiles.size());
  auto items_for = [&](int64_t tp) { return row_tiles * ((panel_count + tp - 1) / tp); };
  while (tile_panels > 1 && items_for(tile_panels) < 4 * threads) tile_panels /= 2;

  // An item is one panel tile of one group over all the group's row tiles: the thread that streams a panel
  // tile of weights from memory reuses it from its own cache for every row tile (two threads splitting the
  // row tiles would each pull it from memory where their last-level caches are not shared). Only where that
  // leaves too few items (one matrix, few panels: the router) are the row tiles split into chunks.
  // A group whose rows of A outgrow kChunkMajorBytes (thousands of tokens on one expert) goes the other way:
  // chunk by chunk, every panel tile of a chunk before the next chunk. Walked panel tile by panel tile, such an A
  // came from memory again for every panel tile; chunk by chunk, the threads share each chunk through the
  // last-level cache, and the weights they re-read per chunk come from there too (this took the small shape at
  // 8192 tokens from 4-11% below its 512-token throughput to level with it; benchmarks/NOTES.md row 54).
  const int64_t panel_tiles = (panel_count + tile_panels - 1) / tile_panels;  // of the widest group
  const int64_t chunk = static_cast<int64_t>(groups.size()) * panel_tiles >= 4 * threads
                            ? row_tiles
                            : std::max<int64_t>(1, row_tiles * panel_tiles / (4 * threads));
  std::vector<Item>& items = stage.items;
  items.clear();
  for (int64_t first = 0; first < row_tiles;) {
    int64_t last = first;
    while (last < row_tiles && tiles[last].group == tiles[first].group) ++last;
    const int64_t panels = tiles[first].group->panels;
    const int64_t a_bytes =
        (tiles[last - 1].row1 - tiles[first].row0) * tiles[first].group->problem.k * int64_t{sizeof(float)};
    if (a_bytes > kChunkMajorBytes || tiles[first].group->chunk_major) {
      static_assert(cpu::kChunkRows % cpu::kTileRows == 0, "a chunk is whole row tiles");
      constexpr int64_t tiles_per_chunk = cpu::kChunkRows / cpu::kTileRows;
      // The backward's weight gradients (chunk_major: B is a few rows' data) take as many panels per item as half
      // of L2 holds, for them all: each output row is then written whole by one thread, instead of in slices by
      // items far apart (dW1/dW3 43-49 -> 40-44 ms at 512 tokens; benchmarks/NOTES.md row 86).
      const GemmGroup& g = *tiles[first].group;
      const int64_t tp =
          g.chunk_major ? std::clamp<int64_t>(kDataPanelBytes / std::max<int64_t>(1, g.problem.panel_bytes), 1, panels)
                        : tile_panels;
      for (int64_t t = first; t < last; t += tiles_per_chunk)
        for (int64_t p = 0; p < panels; p += tp)
          items.push_back({t, std::min(last, t + tiles_per_chunk), p, std::min(panels, p + tp)});
    } else {
      for (int64_t p = 0; p < panels; p += tile_panels)
        for (int64_t t = first; t < last; t += chunk)
          items.push_back({t, std::min(last, t + chunk), p, std::min(panels, p + tile_panels)});
    }
    first = last;
  }
  // Where every group is one row tile (decode, and prefill over many experts), an item is a range of one weight
  // stream's panels and the next item continues it: each thread takes a contiguous run of items, so that its loads
  // stay one stream across items, which the hardware prefetchers follow. Taken in turn by both threads, every item
  // started cold: at one token (small shape, q4_k) two threads took 1.20-1.56x the time of reading the same bytes
  // alone where one thread took 1.07-1.18x; with runs two take 1.11-1.20x, 10-15% faster (benchmarks/NOTES.md row 117).
  stage.contiguous = row_tiles == static_cast<int64_t>(groups.size());
  stage.dtype = dtype;
  stage.weights = k.weight_kernels(dtype);
}

void run_item(const Stage& stage, const Item& it) {
  // Consecutive row tiles of a group lie back to back in the packed buffer, in whole micro blocks.
  const Tile& first = stage.tiles[it.tile0];
  const cpu::GemmProblem& p = first.group->problem;
  const float* a = first.group->packed_a ? first.group->packed_a + first.row0 * kernels().geometry.packed_depth(p.k)
                                         : stage.a + first.a_offset;
  // The item's biases (a panel's nr floats), asked for as it starts: each panel's epilogue reads them, from memory
  // in a decode (their lines lie in no stream a prefetcher follows), and waited there (benchmarks/NOTES.md row 132).
  if (p.bias) {
    const int64_t nr = kernels().geometry.nr();
    const char* end = reinterpret_cast<const char*>(p.bias + it.panel1 * nr);
    for (const char* at = reinterpret_cast<const char*>(p.bias + it.panel0 * nr); at < end; at += 64)
      __builtin_prefetch(at, 0, 3);
  }
  // A float32 plain product of one k-block (the backward's weight gradients) by the kernel written for it.
  const bool short_product = stage.dtype == WeightDtype::float32 && !p.bias && p.k <= cpu::kBlockDepth;
  (short_product ? kernels().gemm_short : stage.weights.gemm_tile)(p, a, first.row0, stage.tiles[it.tile1 - 1].row1,
                                                                   it.panel0, it.panel1);
}

ThreadPool::Split split_of(bool contiguous) {
  return contiguous ? ThreadPool::Split::contiguous : ThreadPool::Split::dynamic;
}

}  // namespace

void run_gemm_groups(std::vector<GemmGroup>& groups, int64_t out_cols, WeightDtype dtype,
                     AlignedBuffer<float>& packed_a) {
  if (groups.empty()) return;  // no expert received a token
  thread_local Stage scratch;
  Stage& stage = scratch;  // the caller's, named so that the workers see it (a thread_local is theirs)
  plan(groups, out_cols, dtype, packed_a, stage);
  const ThreadLimit limit(stage.flops < kPoolMinFlops ? 1 : ThreadLimit::current());
  ThreadPool::instance().run(
      static_cast<int64_t>(stage.items.size()), [&](int64_t i) { run_item(stage, stage.items[i]); },
      split_of(stage.contiguous));
}

void run_gemm_chain(std::vector<GemmGroup>& first, int64_t first_cols, WeightDtype first_dtype,
                    std::vector<GemmGroup>& second, int64_t second_cols, WeightDtype second_dtype,
                    AlignedBuffer<float>& packed_a) {
  if (first.empty()) return;  // no expert received a token
  thread_local Stage scratch[2];
  Stage &one = scratch[0], &two = scratch[1];  // the caller's, named so that the workers see them
  plan(first, first_cols, first_dtype, packed_a, one);
  for (const GemmGroup& g : second)
    if (!g.packed_a) throw std::logic_error("run_gemm_chain: the second list's A must come packed");
  plan(second, second_cols, second_dtype, packed_a, two);
  // Per group of the first list, its items not yet done. Grow-only.
  thread_local std::unique_ptr<std::atomic<int64_t>[]> counts;
  thread_local size_t counts_size = 0;
  if (counts_size < first.size()) counts.reset(new std::atomic<int64_t>[counts_size = first.size()]);
  std::atomic<int64_t>* left = counts.get();
  for (size_t g = 0; g < first.size(); ++g) left[g].store(0, std::memory_order_relaxed);
  for (const Item& it : one.items) left[one.group_of(it, first)].fetch_add(1, std::memory_order_relaxed);

  const int64_t n1 = static_cast<int64_t>(one.items.size()), n2 = static_cast<int64_t>(two.items.size());
  const ThreadLimit limit(one.flops + two.flops < kPoolMinFlops ? 1 : ThreadLimit::current());
  ThreadPool::instance().run(
      n1 + n2,
      [&](int64_t i) {
        if (i < n1) {
          const Item& it = one.items[i];
          run_item(one, it);
          left[one.group_of(it, first)].fetch_sub(1, std::memory_order_release);
          return;
        }
        // Group j of the second list reads what group j of the first writes: wait for the last of its items,
        // which the pool's order puts ahead of this one in every thread (thread_pool.h), so the wait ends.
        const Item& it = two.items[i - n1];
        const std::atomic<int64_t>& pending = left[two.group_of(it, second)];
        ThreadPool::wait_until([&] { return pending.load(std::memory_order_acquire) == 0; });
        run_item(two, it);
      },
      split_of(one.contiguous && two.contiguous), n1);
}

namespace {

// Groups that all multiply by matrices of one PackedMatrix.
void run_groups(std::vector<GemmGroup>& groups, const PackedMatrix& matrix, AlignedBuffer<float>& packed_a) {
  for (GemmGroup& g : groups) g.panels = matrix.panel_count();
  run_gemm_groups(groups, matrix.out_cols(), matrix.dtype(), packed_a);
}

}  // namespace

PackedExperts::PackedExperts(const ExpertShape& s, const ExpertWeights& w)
    : shape(s),
      up(kernels().geometry, s.num_experts, s.d_hidden, s.d_model, s.weight_dtype, s.group_size,
         {w.w1, w.q1, w.b1, w.h1}, is_gated(s.activation) ? MatrixSource{w.w3, w.q3, w.b3, w.h3} : MatrixSource{}),
      down(kernels().geometry, s.num_experts, s.d_model, s.d_hidden, down_dtype(s), s.group_size,
           {w.w2, w.q2, w.b2, w.h2}) {}

PackedExperts::PackedExperts(const ExpertShape& s)
    : shape(s),
      up(PackedMatrix::geometry(kernels().geometry, s.d_hidden, s.d_model, s.weight_dtype, s.group_size,
                                is_gated(s.activation))),
      down(PackedMatrix::geometry(kernels().geometry, s.d_model, s.d_hidden, down_dtype(s), s.group_size, false)) {}

std::shared_ptr<const PackedExperts> pack_experts(const ExpertShape& shape, const ExpertWeights& weights) {
  return std::make_shared<const PackedExperts>(shape, weights);
}
const ExpertShape& packed_shape(const PackedExperts& packed) { return packed.shape; }
size_t packed_bytes(const PackedExperts& packed) { return packed.up.bytes() + packed.down.bytes(); }

void unpack_experts(const PackedExperts& packed, const ExpertWeightsOut& out) {
  const ExpertShape& s = packed.shape;
  const int64_t h = s.d_hidden, d = s.d_model;
  ThreadPool::instance().run(s.num_experts, [&](int64_t e) {
    if (out.w1) packed.up.unpack(e, 0, out.w1 + e * h * d, out.b1 ? out.b1 + e * h : nullptr);
    if (out.w3 && is_gated(s.activation)) packed.up.unpack(e, 1, out.w3 + e * h * d, out.b3 ? out.b3 + e * h : nullptr);
    if (out.w2) packed.down.unpack(e, 0, out.w2 + e * d * h, out.b2 ? out.b2 + e * d : nullptr);
  });
}

void packed_biases(const PackedExperts& packed, bool* b1, bool* b3, bool* b2) {
  *b1 = packed.up.has_bias(0);
  *b3 = packed.up.has_bias(1);
  *b2 = packed.down.has_bias(0);
}

void expert_ffn(const PackedExperts& packed, const float* x, int64_t tokens, int k, const int32_t* offsets,
                const int32_t* order, float* slot_out, FfnWorkspace& ws, float* pre_out, const ExpertRecords* records) {
  const ExpertShape& s = packed.shape;
  (void)tokens;
  // Expert e's rows in this call (none for one its records leave out), and its problems: from the packed experts,
  // or the same geometry with the panels and biases of its record.
  const auto rows = [&](int64_t e) -> int64_t {
    return records && !records->records[e] ? 0 : offsets[e + 1] - offsets[e];
  };
  const auto problem = [&](const PackedMatrix& m, int64_t e, Activation act, bool up) {
    if (!records) return m.problem(e, act);
    cpu::GemmProblem p = m.problem(0, act);
    const unsigned char* r = records->records[e];
    const StoreLayout& l = records->layout;
    p.panels = r + (up ? 0 : l.down_at());
    p.bias = reinterpret_cast<const float*>(r + (up ? l.up_bias_at() : l.down_bias_at()));
    return p;
  };
  // The hidden activations go straight into the second GEMM's packed layout (its A), one region per expert of
  // packed_a_floats(rows, dHidden) floats: the second GEMM packs nothing.
  const cpu::PanelGeometry& geometry = kernels().geometry;
  thread_local std::vector<int64_t> hidden_at;  // grow-only, like the lists below
  hidden_at.assign(static_cast<size_t>(s.num_experts) + 1, 0);
  for (int64_t e = 0; e < s.num_experts; ++e)
    hidden_at[e + 1] = hidden_at[e] + geometry.packed_a_floats(rows(e), s.d_hidden);
  float* hidden = ws.hidden.reserve(static_cast<size_t>(std::max<int64_t>(hidden_at[s.num_experts], 1)));

  // Phase 1: hidden[pos] = act(x[token(order[pos])] W1_e^T + b1) (* (x W3_e^T + b3)), rows gathered from x.
  thread_local std::vector<GemmGroup> groups, downs;  // grow-only: no allocation once warm
  groups.clear();
  for (int64_t e = 0; e < s.num_experts; ++e) {
    const int64_t n = rows(e);
    if (n == 0) continue;  // an expert without tokens costs nothing
    GemmGroup g{problem(packed.up, e, s.activation, true), n};
    g.problem.alpha = s.alpha;
    g.problem.limit = s.limit;
    g.problem.a = {x, s.d_model, order + offsets[e], k};
    g.problem.c_packed = hidden + hidden_at[e];
    const int64_t width = packed.up.panel_count() * geometry.nr();
    if (pre_out) g.problem.pre = {pre_out + offsets[e] * width, width, nullptr, 1};
    g.problem.c_rows = n;
    g.panels = packed.up.panel_count();
    groups.push_back(g);
  }

  // Phase 2: slot_out[order[pos]] = hidden[pos] W2_e^T + b2, results scattered to their slots.
  downs.clear();
  for (int64_t e = 0; e < s.num_experts; ++e) {
    const int64_t n = rows(e);
    if (n == 0) continue;
    GemmGroup g{problem(packed.down, e, Activation::identity, false), n, hidden + hidden_at[e]};
    g.problem.c = {slot_out, s.d_model, order + offsets[e], 1};
    g.panels = packed.down.panel_count();
    downs.push_back(g);
  }
  // Both phases in one job: an expert's down items start as soon as its own up items are done, so the threads do
  // not wait at a barrier for the slowest of them between the phases (benchmarks/NOTES.md row 129).
  run_gemm_chain(groups, packed.up.out_cols(), packed.up.dtype(), downs, packed.down.out_cols(), packed.down.dtype(),
                 ws.packed_a);
}

// Dropped slots (not in the plan) get zero rows, so combine can sum every slot.
void zero_unrouted_slots(const int32_t* order, int64_t routed, int64_t slots, int64_t d_model, float* slot_out,
                         FfnWorkspace& ws) {
  if (routed == slots) return;
  ws.routed.assign(static_cast<size_t>(slots), 0);
  for (int64_t i = 0; i < routed; ++i) ws.routed[order[i]] = 1;
  for (int64_t s = 0; s < slots; ++s)
    if (!ws.routed[s]) std::memset(slot_out + s * d_model, 0, sizeof(float) * d_model);
}

void expert_ffn(const PackedExperts& packed, const float* x, int64_t tokens, int k, const int32_t* offsets,
                const int32_t* order, float* slot_out) {
  FfnWorkspace ws;
  expert_ffn(packed, x, tokens, k, offsets, order, slot_out, ws);
  zero_unrouted_slots(order, offsets[packed.shape.num_experts], tokens * k, packed.shape.d_model, slot_out, ws);
}

void packed_router_logits(const PackedMatrix& router, const float* x, int64_t tokens, int64_t d_model, float* logits,
                          FfnWorkspace& ws) {
  thread_local std::vector<GemmGroup> groups(1);
  GemmGroup& g = groups[0];
  g = {router.problem(0, Activation::identity), tokens};
  g.problem.a = {x, d_model, nullptr, 1};
  g.problem.c = {logits, router.n(), nullptr, 1};
  run_groups(groups, router, ws.packed_a);
}

void router_logits(const float* x, int64_t tokens, int64_t d_model, const float* router, int64_t num_experts,
                   float* logits) {
  const PackedMatrix packed(kernels().geometry, 1, num_experts, d_model, WeightDtype::float32, 0, {router});
  FfnWorkspace ws;
  packed_router_logits(packed, x, tokens, d_model, logits, ws);
}

void combine(const float* slot_out, const float* weights, int64_t tokens, int k, int64_t d_model, float* out) {
  const auto& kt = kernels();
  constexpr int64_t kTokensPerItem = 16;
  const ThreadLimit limit(tokens * k * d_model < (1 << 16) ? 1 : ThreadLimit::current());
  ThreadPool::instance().run((tokens + kTokensPerItem - 1) / kTokensPerItem, [&](int64_t item) {
    const int64_t t1 = std::min(tokens, (item + 1) * kTokensPerItem);
    for (int64_t t = item * kTokensPerItem; t < t1; ++t)
      kt.weighted_sum(slot_out + t * k * d_model, d_model, weights + t * k, k, d_model, out + t * d_model);
  });
}

int64_t find_non_finite(const float* data, int64_t count) { return kernels().find_non_finite(data, count); }

void* allocate_large(size_t bytes) { return allocate_aligned(bytes); }
void free_large(void* p) { aligned_free(p); }

}  // namespace moe
