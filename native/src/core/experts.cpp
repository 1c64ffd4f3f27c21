#include "experts.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "isa.h"
#include "thread_pool.h"
#include "work_size.h"

namespace moe {

namespace {

// Above this many bytes of A, a group's GEMM goes chunk by chunk (see run_groups): a few MiB, well inside the
// last-level cache of one core's share. Thresholds of 1 and 4 MiB measured alike on the small shape at 8192 tokens
// (the experiment is row 54 of benchmarks/NOTES.md).
constexpr int64_t kChunkMajorBytes = int64_t{4} << 20;
// Bytes of B per work item of a GEMM whose B is data (GemmGroup::chunk_major): half of a core's L2.
constexpr int64_t kDataPanelBytes = int64_t{512} << 10;

// Work items are (group, row tile, panel tile). Panel tiles shrink until every thread has a few items, so a
// single token (decode) still spreads the weight stream over all cores. Each item writes its own outputs and
// never splits a reduction, so results are bitwise identical for any thread count.
}  // namespace

void run_gemm_groups(std::vector<GemmGroup>& groups, int64_t out_cols, WeightDtype dtype,
                     AlignedBuffer<float>& packed_a) {
  if (groups.empty()) return;  // no expert received a token
  // A new version of the packed A for this call's items (see GemmProblem::a_version).
  static std::atomic<uint64_t> versions{0};
  const uint64_t version = ++versions;
  for (GemmGroup& g : groups) g.problem.a_version = version;
  const auto& k = kernels();
  const int64_t threads = ThreadPool::instance().size();

  // Row tiles, each with its rows of A gathered and packed once, before the GEMMs, for all its panel tiles
  // (packing per work item repeated it once per panel tile: up to 11x the bytes for a 512-token prefill).
  // Groups whose A comes packed already skip this.
  struct Tile {
    const GemmGroup* group;
    int64_t row0, row1, a_offset;
  };
  thread_local std::vector<Tile> tile_scratch;  // grow-only: no allocation once warm
  std::vector<Tile>& tiles = tile_scratch;      // the caller's list, named so the workers see it
  tiles.clear();
  int64_t floats = 0, panel_count = 1;
  double flops = 0.0;
  for (const auto& g : groups) {
    flops += 2.0 * g.rows * g.panels * k.geometry.nr() * g.problem.k;
    panel_count = std::max(panel_count, g.panels);
    for (int64_t r = 0; r < g.rows; r += cpu::kTileRows) {
      const int64_t r1 = std::min(g.rows, r + cpu::kTileRows);
      tiles.push_back({&g, r, r1, floats});
      if (!g.packed_a) floats += k.geometry.packed_a_floats(r1 - r, g.problem.k);
    }
  }
  float* a = packed_a.reserve(static_cast<size_t>(floats));
  // A tile's packed rows: its micro blocks lie back to back, whole but for the group's last one.
  const auto tile_a = [&](const Tile& t) {
    return t.group->packed_a ? t.group->packed_a + t.row0 * k.geometry.packed_depth(t.group->problem.k)
                             : a + t.a_offset;
  };
  // Below kPoolMinFlops (tens of microseconds) the hand-off to other threads costs more than it saves.
  const bool tiny = flops < kPoolMinFlops;
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
  struct Item {
    int64_t tile0, tile1, panel0, panel1;
  };
  thread_local std::vector<Item> scratch;
  std::vector<Item>& items = scratch;
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
  const auto split =
      row_tiles == static_cast<int64_t>(groups.size()) ? ThreadPool::Split::contiguous : ThreadPool::Split::dynamic;
  const ThreadLimit limit(tiny ? 1 : ThreadLimit::current());
  const cpu::WeightKernels& weights = k.weight_kernels(dtype);
  ThreadPool::instance().run(
      static_cast<int64_t>(items.size()),
      [&](int64_t i) {
        // Consecutive row tiles of a group lie back to back in the packed buffer, in whole micro blocks.
        const Item& it = items[i];
        const Tile& first = tiles[it.tile0];
        const cpu::GemmProblem& p = first.group->problem;
        // A float32 plain product of one k-block (the backward's weight gradients) by the kernel written for it.
        const bool short_product = dtype == WeightDtype::float32 && !p.bias && p.k <= cpu::kBlockDepth;
        (short_product ? k.gemm_short : weights.gemm_tile)(p, tile_a(first), first.row0, tiles[it.tile1 - 1].row1,
                                                           it.panel0, it.panel1);
      },
      split);
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
  thread_local std::vector<GemmGroup> groups;  // grow-only: no allocation once warm
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
    groups.push_back(g);
  }
  run_groups(groups, packed.up, ws.packed_a);

  // Phase 2: slot_out[order[pos]] = hidden[pos] W2_e^T + b2, results scattered to their slots.
  groups.clear();
  for (int64_t e = 0; e < s.num_experts; ++e) {
    const int64_t n = rows(e);
    if (n == 0) continue;
    GemmGroup g{problem(packed.down, e, Activation::identity, false), n, hidden + hidden_at[e]};
    g.problem.c = {slot_out, s.d_model, order + offsets[e], 1};
    groups.push_back(g);
  }
  run_groups(groups, packed.down, ws.packed_a);
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
