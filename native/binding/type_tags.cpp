#include "type_tags.h"

namespace moe_binding {

// Random 128-bit values, one per class, fixed for the life of the addon.
const napi_type_tag kExpertsTag = {0x5b3f0c2a9d7e4e11ULL, 0x8c1d2e3f4a5b6c7dULL};
const napi_type_tag kLayerTag = {0x2e8a7f1c6b3d4f90ULL, 0x1f2e3d4c5b6a7988ULL};
const napi_type_tag kReadProbeTag = {0x9a4c2b7e1d6f3a58ULL, 0x7d6c5b4a39281706ULL};
const napi_type_tag kExpertCacheTag = {0x4d81f3a2c6b05e97ULL, 0x3a5f7c9e1b2d4068ULL};

void tag_object(Napi::Env env, Napi::Object object, const napi_type_tag& tag) {
  NAPI_THROW_IF_FAILED_VOID(env, napi_type_tag_object(env, object, &tag));
}

bool has_tag(Napi::Env env, Napi::Value value, const napi_type_tag& tag) {
  if (!value.IsObject()) return false;
  bool result = false;
  if (napi_check_object_type_tag(env, value, &tag, &result) != napi_ok) return false;
  return result;
}

}  // namespace moe_binding
