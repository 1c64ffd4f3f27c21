// Runs a computation off the event loop, on the library's job thread (moe::post_job), and settles a Promise
// with its result back on the JS thread, through one thread-safe function per env. The job keeps references
// to the JS values whose memory the computation reads or writes, so they outlive it.
#pragma once
#include <napi.h>

#include <functional>
#include <vector>

#include "moe/moe.h"

namespace moe_binding {

using AsyncWork = std::function<void()>;
// Builds the resolved value from the kept values (in the order given to run_async): napi_value handles do not
// outlive the call that made them, so results must come from these references.
using AsyncResult = std::function<Napi::Value(Napi::Env, const std::vector<Napi::Value>& kept)>;

// Returns a Promise that settles with result(kept) once work() has run on the queue's job thread, or rejects
// with the message of what work() threw. While jobs are in flight the event loop stays alive; when the env is
// torn down (a worker thread ending, the process exiting) it first waits for its jobs still running.
Napi::Promise run_async(Napi::Env env, moe::JobQueue queue, std::vector<Napi::Value> keep_alive, AsyncWork work,
                        AsyncResult result);

}  // namespace moe_binding
