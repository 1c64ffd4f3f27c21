#include <string>

#include "moe/moe.h"

namespace moe {

bool parse_activation(const std::string& name, Activation* out) {
  static const struct {
    const char* name;
    Activation act;
  } table[] = {
      {"swiglu", Activation::swiglu},     {"geglu", Activation::geglu},
      {"gelu", Activation::gelu},         {"gelu-tanh", Activation::gelu_tanh},
      {"relu", Activation::relu},         {"silu", Activation::silu},
      {"identity", Activation::identity}, {"swiglu-clamped", Activation::swiglu_clamped},
  };
  for (const auto& entry : table)
    if (name == entry.name) {
      *out = entry.act;
      return true;
    }
  return false;
}

}  // namespace moe
