// Type tags of the wrapped native objects (napi_type_tag_object). node-addon-api's Unwrap returns whatever
// native pointer an object wraps, whatever its class: a layer's handle passed where packed experts belong would
// be read as the wrong type. Every constructor tags its object and every unwrap of an argument checks the tag
// first, so such a call is a TypeError instead. (`this` of an instance method needs no tag: V8 checks the
// receiver of a class's methods itself, "Illegal invocation".)
#pragma once
#include <napi.h>

#include <string>

#include "args.h"

namespace moe_binding {

extern const napi_type_tag kExpertsTag;
extern const napi_type_tag kLayerTag;
extern const napi_type_tag kReadProbeTag;
extern const napi_type_tag kExpertCacheTag;

void tag_object(Napi::Env env, Napi::Object object, const napi_type_tag& tag);
bool has_tag(Napi::Env env, Napi::Value value, const napi_type_tag& tag);

// The T wrapped by `value`, after checking its tag; a TypeError "expected <what> but got ..." otherwise.
template <class T>
T* unwrap_tagged(Napi::Env env, Napi::Value value, const napi_type_tag& tag, const char* what) {
  if (!has_tag(env, value, tag)) throw_type_error(env, std::string("expected ") + what + " but got another object");
  T* object = Napi::ObjectWrap<T>::Unwrap(value.As<Napi::Object>());
  if (object == nullptr) throw_type_error(env, std::string("expected ") + what + " but got another object");
  return object;
}

}  // namespace moe_binding
