// Runs a computation off the event loop, on the library's job thread (moe::post_job), and settles a Promise
// with its result back on the JS thread, through one thread-safe function per env. The job keeps references
// to the JS values whose memory the computation reads or writes, so they outlive it.
#pragma once
#include <napi.h>

#include <exception>
#include <functional>
#include <string>
#include <vector>

#include "moe/moe.h"

namespace moe_binding {

using AsyncWork = std::function<void()>;
// Builds the resolved value from the kept values (in the order given to run_async): napi_value handles do not
// outlive the call that made them, so results must come from these references.
using AsyncResult = std::function<Napi::Value(Napi::Env, const std::vector<Napi::Value>& kept)>;

// What a computation that threw becomes in JS, one mapping for sync calls and async jobs: a failed allocation
// a result outside float32 (std::overflow_error, layer_binding.cpp) or a call the backend does not offer
// (moe::Unsupported) is a RangeError, anything else an Error,
// each with a message in the one format.
struct Failure {
  std::string message;
  bool range_error = false;
};
Failure failure_of(std::exception_ptr error);
// The JS error for a failure (its value a RangeError or an Error), to throw or to reject with.
Napi::Error js_error(Napi::Env env, const Failure& failure);

// Runs `work` on the JS thread; a C++ failure (a CUDA error, a failed allocation) becomes the JS error
// failure_of names, never an abort.
template <class F>
void run_guarded(Napi::Env env, F&& work) {
  try {
    work();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw js_error(env, failure_of(std::current_exception()));
  }
}

// Returns a Promise that settles with result(kept) once work() has run on the queue's job thread, or rejects
// with the message of what work() threw. While jobs are in flight the event loop stays alive; when the env is
// torn down (a worker thread ending, the process exiting) it first waits for its jobs still running.
Napi::Promise run_async(Napi::Env env, moe::JobQueue queue, std::vector<Napi::Value> keep_alive, AsyncWork work,
                        AsyncResult result);

}  // namespace moe_binding
