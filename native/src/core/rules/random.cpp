// The seeded generator of lib/random.ts, bit for bit: a layer's training noise is the same sequence whichever side
// draws it (and the TypeScript rules given the same seed draw the same noise).
#include <cmath>

#include "moe/routing_rules.h"

namespace moe::rules {

namespace {
uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }
}  // namespace

Random::Random(uint32_t seed) {
  uint32_t x = seed;
  for (uint32_t& s : s_) {  // splitmix32
    x += 0x9e3779b9u;
    uint32_t z = x;
    z = (z ^ (z >> 16)) * 0x85ebca6bu;
    z = (z ^ (z >> 13)) * 0xc2b2ae35u;
    s = z ^ (z >> 16);
  }
}

uint32_t Random::next_uint32() {  // xoshiro128**
  const uint32_t result = rotl(s_[1] * 5u, 7) * 9u;
  const uint32_t t = s_[1] << 9;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 11);
  return result;
}

double Random::uniform() {
  const double hi = next_uint32() >> 5, lo = next_uint32() >> 6;
  return (hi * 67108864.0 + lo) / 9007199254740992.0;
}

double Random::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  for (;;) {
    const double u = next_uint32() * 4.656612873077393e-10 - 1;  // [-1, 1)
    const double v = next_uint32() * 4.656612873077393e-10 - 1;
    const double q = u * u + v * v;
    if (q == 0 || q >= 1) continue;
    const double f = std::sqrt((-2 * std::log(q)) / q);
    spare_ = v * f;
    has_spare_ = true;
    return u * f;
  }
}

}  // namespace moe::rules
