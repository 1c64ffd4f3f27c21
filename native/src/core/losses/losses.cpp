// The table of balance losses (one entry each: public name, function) and compute by kind.
#include <cstring>

#include "common.h"
#include "moe/keyed_table.h"

namespace moe::losses {

namespace {

using LossFn = Result (*)(const Spec&, const rules::Gate&, const double*, const double*);

struct LossInfo {
  Kind key;
  const char* name;  // as forward's auxLosses names it (lib/aux-losses.ts AUX_LOSS_KINDS; a test compares them)
  LossFn compute;
};

constexpr std::array<LossInfo, kKinds> kLosses = keyed_table<LossInfo>({
    {Kind::importance, "importance", importance_loss},
    {Kind::load, "load", load_loss},
    {Kind::switch_loss, "switch", switch_loss},
    {Kind::gshard, "gshard", gshard_loss},
    {Kind::mixtral, "mixtral", mixtral_loss},
    {Kind::z_loss, "zLoss", z_loss},
    {Kind::sequence, "sequence", sequence_loss},
});

}  // namespace

bool parse_kind(const char* name, Kind* out) {
  for (const LossInfo& l : kLosses)
    if (std::strcmp(l.name, name) == 0) {
      *out = l.key;
      return true;
    }
  return false;
}

const char* kind_name(Kind kind) { return kLosses[static_cast<int>(kind)].name; }

Result compute(const Spec& spec, const rules::Gate& gate, const double* ranked, const double* probs) {
  return kLosses[static_cast<int>(spec.kind)].compute(spec, gate, ranked, probs);
}

}  // namespace moe::losses
