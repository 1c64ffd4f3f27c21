#include <string>

#include "moe/moe.h"

namespace moe {

bool parse_activation(const std::string& name, Activation* out) {
  for (const ActivationInfo& entry : kActivationTable)
    if (name == entry.name) {
      *out = entry.key;
      return true;
    }
  return false;
}

}  // namespace moe
