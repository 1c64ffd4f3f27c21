// NativeReadProbe: owns a core moe::ReadProbe (a buffer in memory to read for the bandwidth ceiling); measure /
// dispose.
#include "read_probe_binding.h"

#include <memory>
#include <new>
#include <string>

#include "args.h"
#include "moe/moe.h"
#include "reported_memory.h"
#include "type_tags.h"

namespace moe_binding {
namespace {

const Signature& kConstruct = declare("new NativeReadProbe", {"bytes"});
const Signature& kMeasure = declare("NativeReadProbe.measure", {"threads", "passes"});

class NativeReadProbe : public Napi::ObjectWrap<NativeReadProbe> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "NativeReadProbe",
        {InstanceMethod("measure", &NativeReadProbe::Measure), InstanceMethod("dispose", &NativeReadProbe::Dispose)});
  }

  // { bytes }
  explicit NativeReadProbe(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeReadProbe>(info) {
    tag_object(info.Env(), info.This().As<Napi::Object>(), kReadProbeTag);
    const int64_t bytes = int_arg(Args(info, kConstruct), "bytes", 1 << 20, int64_t{1} << 34);
    try {
      probe_ = std::make_unique<moe::ReadProbe>(static_cast<size_t>(bytes));
      memory_.report(info.Env(), bytes);
    } catch (const std::bad_alloc&) {
      throw_range_error(info.Env(), "expected bytes the machine can allocate but got " + std::to_string(bytes));
    }
  }

 private:
  // { threads, passes } -> GB/s
  Napi::Value Measure(const Napi::CallbackInfo& info) {
    if (!probe_)
      throw_type_error(info.Env(), "expected a read probe that is not disposed but got a disposed ReadProbe");
    const Args a(info, kMeasure);
    const int threads = static_cast<int>(int_arg(a, "threads", 1, 256));
    const int passes = static_cast<int>(int_arg(a, "passes", 1, 100));
    return Napi::Number::New(info.Env(), probe_->measure(threads, passes));
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    probe_.reset();
    memory_.release();
    return info.Env().Undefined();
  }

  std::unique_ptr<moe::ReadProbe> probe_;
  ReportedMemory memory_;
};

}  // namespace

void init_read_probe(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeReadProbe", NativeReadProbe::Define(env));
}

}  // namespace moe_binding
