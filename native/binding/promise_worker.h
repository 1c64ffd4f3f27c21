// Runs a computation off the event loop (libuv's pool) and settles a Promise with its result. The worker
// keeps references to the JS values whose memory the computation reads or writes, so they outlive it.
#pragma once
#include <napi.h>

#include <exception>
#include <functional>
#include <string>
#include <vector>

namespace moe_binding {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  // Builds the resolved value from the kept values (in the order given to Start): napi_value handles do not
  // outlive the call that made them, so results must come from these references.
  using Result = std::function<Napi::Value(Napi::Env, const std::vector<Napi::Value>& kept)>;

  static Napi::Promise Start(Napi::Env env, std::vector<Napi::Value> keep_alive, Work work, Result result) {
    auto* w = new PromiseWorker(env, std::move(keep_alive), std::move(work), std::move(result));
    auto promise = w->deferred_.Promise();
    w->Queue();
    return promise;
  }

 protected:
  void Execute() override {
    try {
      work_();
    } catch (const std::exception& e) {
      const std::string what = e.what();
      SetError(what.rfind("moe-kernels: ", 0) == 0 ? what : "moe-kernels: " + what);
    }
  }
  void OnOK() override {
    std::vector<Napi::Value> kept;
    for (auto& r : refs_) kept.push_back(r.Value());
    deferred_.Resolve(result_(Env(), kept));
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  PromiseWorker(Napi::Env env, std::vector<Napi::Value> keep_alive, Work work, Result result)
      : Napi::AsyncWorker(env, "moe-kernels"), deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)), result_(std::move(result)) {
    for (auto& v : keep_alive) refs_.push_back(Napi::Persistent(v));
  }
  Napi::Promise::Deferred deferred_;
  Work work_;
  Result result_;
  std::vector<Napi::Reference<Napi::Value>> refs_;
};

}  // namespace moe_binding
