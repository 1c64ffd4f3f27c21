// The core's routing rules (moe/routing_rules.h), by themselves: the generator against lib/random.ts's numbers, each
// rule's gate well formed on awkward sizes, and each backward against finite differences of the weights (the choices,
// drops and noise held fixed, as the rule defines its backward). test/core-routing.test.ts compares them with the
// TypeScript rules; this runs under the sanitizers and on NEON too.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "moe/routing_rules.h"
#include "test_support.h"

namespace {

using moe::rules::Gate;
using moe::rules::Kind;
using moe::rules::Options;
using moe::rules::RouteInput;

// lib/random.ts's numbers for these seeds (node -e "new (require('./dist/lib/random').Random)(12345).nextUint32()").
void test_random() {
  moe::rules::Random r(12345);
  const uint32_t want[] = {518667457u, 440444462u, 4232892992u, 3757857622u};
  for (uint32_t w : want) CHECK(r.next_uint32() == w, "xoshiro128** differs from lib/random.ts");
  moe::rules::Random u(7);
  CHECK(u.uniform() == 0.23382772141868180, "uniform() differs from lib/random.ts");
  // (normals go through log: within an ulp or two of V8's)
  CHECK(std::abs(u.normal() - -0.19791852691893735) < 1e-15, "normal() differs from lib/random.ts");
  CHECK(std::abs(u.normal() - -1.2679884780087747) < 1e-15, "normal()'s spare differs from lib/random.ts");
}

struct RuleCase {
  const char* what;
  Options options;
  int64_t tokens, experts;
  int k;
  bool training;
};

std::vector<double> random_logits(int64_t n, uint32_t seed, double scale) {
  std::vector<double> v(static_cast<size_t>(n));
  moe::rules::Random r(seed);
  for (double& x : v) x = scale * r.normal();
  return v;
}

// L = sum over slots of g_s w_s: its gradient by the rule's backward and by central differences of each logit.
void check_rule(const RuleCase& c, uint32_t seed) {
  const int64_t n = c.tokens * c.experts;
  std::vector<double> logits = random_logits(n, seed, 1.5), noise = random_logits(n, seed + 1, 0.7);
  std::vector<double> bias = random_logits(c.experts, seed + 2, 0.1);
  RouteInput in;
  in.logits = logits.data();
  in.noise_logits = moe::rules::uses_noise_router(c.options.kind) ? noise.data() : nullptr;
  in.bias = c.options.kind == Kind::sigmoid_bias ? bias.data() : nullptr;
  in.tokens = c.tokens;
  in.num_experts = c.experts;
  in.top_k = c.k;
  in.training = c.training;
  in.seed = seed;
  moe::rules::check_options(c.options, c.experts, c.k);
  const Gate gate = moe::rules::route(c.options, in);
  const int k = gate.top_k;
  // Well formed: experts in range, none twice for a token, the counts as the slots say.
  std::vector<int32_t> counts(static_cast<size_t>(c.experts), 0);
  int64_t used = 0;
  for (int64_t t = 0; t < c.tokens; ++t) {
    std::set<int32_t> seen;
    for (int j = 0; j < k; ++j) {
      const int32_t e = gate.experts[t * k + j];
      CHECK(e >= -1 && e < c.experts, "%s: expert %d out of range", c.what, e);
      if (e < 0) {
        CHECK(gate.weights[t * k + j] == 0, "%s: a dropped slot with a weight", c.what);
        continue;
      }
      CHECK(seen.insert(e).second, "%s: expert %d twice for token %lld", c.what, e, static_cast<long long>(t));
      ++counts[e];
      ++used;
    }
  }
  if (c.options.kind != Kind::expert_choice)
    CHECK(counts == gate.tokens_per_expert, "%s: tokens per expert differ from the slots", c.what);
  CHECK(used + gate.dropped == (c.options.kind == Kind::expert_choice ? used : c.tokens * k), "%s: slots lost", c.what);
  // The backward against central differences, the same draws (seed) each time.
  std::vector<double> g = random_logits(c.tokens * k, seed + 3, 1.0);
  std::vector<double> grad(static_cast<size_t>(n)), grad_noise(static_cast<size_t>(n));
  moe::rules::backward(gate, g.data(), grad.data(), grad_noise.data());
  const auto loss = [&](const Gate& other) {
    double s = 0;
    for (int64_t i = 0; i < c.tokens * k; ++i) s += g[i] * other.weights[i];
    return s;
  };
  const auto differences = [&](std::vector<double>& values, const std::vector<double>& analytic, const char* which) {
    double worst = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double keep = values[i], h = 1e-6;
      values[i] = keep + h;
      const Gate up = moe::rules::route(c.options, in);
      values[i] = keep - h;
      const Gate down = moe::rules::route(c.options, in);
      values[i] = keep;
      if (up.experts != gate.experts || down.experts != gate.experts) continue;  // (a choice flipped: no derivative)
      worst = std::max(worst, std::abs((loss(up) - loss(down)) / (2 * h) - analytic[i]));
    }
    CHECK(worst < 1e-6, "%s: dL/d%s off by %g from finite differences", c.what, which, worst);
  };
  differences(logits, grad, "logits");
  if (in.noise_logits && c.training) differences(noise, grad_noise, "noise logits");
}

Options rule(Kind kind) {
  Options o;
  o.kind = kind;
  return o;
}

}  // namespace

void test_routing_rules() {
  test_random();
  Options capped = rule(Kind::top_k);
  capped.capacity_factor = 0.6;
  Options by_score = capped;
  by_score.drop_by_score = true;
  Options grouped = rule(Kind::top_k);
  grouped.num_groups = 4;
  grouped.top_k_groups = 2;
  grouped.route_scale = 2.5;
  grouped.normalize = false;
  Options higher = rule(Kind::top_k);
  higher.ties_higher = true;
  Options switch_capped = rule(Kind::switch_top1);
  switch_capped.capacity_factor = 1;
  Options noisy = rule(Kind::noisy_top_k);
  noisy.capacity_factor = 0.9;
  Options gshard = rule(Kind::gshard_top2);
  gshard.group_size = 5;
  Options sigmoid = rule(Kind::sigmoid_bias);
  sigmoid.num_groups = 3;
  sigmoid.top_k_groups = 2;
  sigmoid.route_scale = 2;
  Options sigmoid_raw = rule(Kind::sigmoid_bias);
  sigmoid_raw.normalize = false;
  const RuleCase cases[] = {
      {"topK, 1 token", rule(Kind::top_k), 1, 5, 2, false},
      {"topK, k = E", rule(Kind::top_k), 6, 7, 7, false},
      {"topK, capacity by position", capped, 19, 5, 2, false},
      {"topK, capacity by score", by_score, 19, 5, 3, false},
      {"topK, groups and scale, raw", grouped, 7, 12, 3, false},
      {"topK, ties to the higher index, many experts", higher, 3, 70, 10, false},
      {"soft", rule(Kind::soft), 4, 6, 6, false},
      {"switch, capacity", switch_capped, 17, 4, 1, false},
      {"noisyTopK, evaluation", rule(Kind::noisy_top_k), 9, 6, 2, false},
      {"noisyTopK, training with capacity", noisy, 9, 6, 2, true},
      {"noisyTopK, training, k = E", rule(Kind::noisy_top_k), 3, 3, 3, true},
      {"gshardTop2, random routing", gshard, 13, 4, 2, true},
      {"expertChoice", rule(Kind::expert_choice), 11, 4, 1, false},
      {"sigmoidBias, groups", sigmoid, 8, 9, 3, false},
      {"sigmoidBias, raw, k = E", sigmoid_raw, 3, 5, 5, false},
  };
  uint32_t seed = 100;
  for (const RuleCase& c : cases) check_rule(c, seed += 7);
  // Options that do not fit are refused, with the rule's message.
  Options bad = rule(Kind::top_k);
  bad.num_groups = 3;
  bool refused = false;
  try {
    moe::rules::check_options(bad, 8, 2);
  } catch (const std::invalid_argument& e) {
    refused = std::strstr(e.what(), "numGroups to divide numExperts = 8") != nullptr;
  }
  CHECK(refused, "numGroups 3 of 8 experts was not refused");
  std::vector<double> nan_logits = {0.0, NAN};
  RouteInput in;
  in.logits = nan_logits.data();
  in.tokens = 1;
  in.num_experts = 2;
  in.top_k = 1;
  refused = false;
  try {
    moe::rules::route(rule(Kind::top_k), in);
  } catch (const std::invalid_argument& e) {
    refused = std::strstr(e.what(), "logits to contain only finite values but got NaN at logits[0, 1]") != nullptr;
  }
  CHECK(refused, "NaN logits were not refused");
}
