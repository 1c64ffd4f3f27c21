#include "async_job.h"

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace moe_binding {

namespace {

struct EnvJobs;

struct Job {
  EnvJobs* owner = nullptr;
  napi_deferred deferred = nullptr;
  std::vector<napi_ref> kept;
  AsyncWork work;
  AsyncResult result;
  std::optional<Failure> failure;  // what work() threw, if it did
};

// Per env: the thread-safe function that carries finished jobs back to the JS thread, and the jobs whose work
// has not finished yet (the env's cleanup waits for them: they read and write its buffers).
struct EnvJobs {
  napi_threadsafe_function settler = nullptr;
  int unsettled = 0;  // JS thread only; the settler keeps the event loop alive while this is above 0
  std::mutex mutex;
  std::condition_variable idle;
  int running = 0;
};

// Resolves (or rejects) one job's Promise. Throws what node-addon-api throws when the env cannot run JS any more.
void settle_job(napi_env env, Job& job) {
  Napi::Env e(env);
  Napi::HandleScope scope(e);
  try {
    if (job.failure) throw js_error(e, *job.failure);
    std::vector<Napi::Value> kept;
    for (napi_ref ref : job.kept) {
      napi_value value = nullptr;
      napi_get_reference_value(env, ref, &value);
      kept.emplace_back(e, value);
    }
    napi_resolve_deferred(env, job.deferred, job.result(e, kept));
  } catch (const Napi::Error& error) {
    napi_reject_deferred(env, job.deferred, error.Value());
  } catch (const std::exception&) {  // building the result ran out of memory, say: reject, never crash
    napi_reject_deferred(env, job.deferred, js_error(e, failure_of(std::current_exception())).Value());
  }
}

// On the JS thread. env is null when the env is being torn down with this job still queued: nothing to settle,
// and its references go with the env.
void settle(napi_env env, napi_value, void*, void* data) {
  std::unique_ptr<Job> job(static_cast<Job*>(data));
  if (env == nullptr) return;
  EnvJobs& jobs = *job->owner;
  if (--jobs.unsettled == 0) napi_unref_threadsafe_function(env, jobs.settler);
  // Nothing may escape this callback, which Node calls from C: in an env being torn down (a worker terminated
  // with calls in flight) every call into JS fails, node-addon-api throws, and an escaping exception would
  // abort the whole process. Such a Promise can no longer be observed by anyone.
  try {
    settle_job(env, *job);
  } catch (...) {
  }
  for (napi_ref ref : job->kept) napi_delete_reference(env, ref);
}

// On the job thread.
void execute(Job* job) {
  try {
    job->work();
  } catch (...) {
    job->failure = failure_of(std::current_exception());
  }
  EnvJobs& jobs = *job->owner;
  // The queue is unbounded, so this fails only once the settler is closing, and closing waits for this job.
  napi_call_threadsafe_function(jobs.settler, job, napi_tsfn_nonblocking);
  std::lock_guard<std::mutex> lock(jobs.mutex);
  --jobs.running;
  jobs.idle.notify_all();  // under the lock: the env's cleanup may free `jobs` as soon as it sees 0
}

// An env cleanup hook, registered after the settler was made, so it runs before Node's own cleanup of it.
void wait_for_jobs(void* data) {
  auto& jobs = *static_cast<EnvJobs*>(data);
  {
    std::unique_lock<std::mutex> lock(jobs.mutex);
    jobs.idle.wait(lock, [&] { return jobs.running == 0; });
  }
  napi_release_threadsafe_function(jobs.settler, napi_tsfn_abort);
}

EnvJobs& env_jobs(Napi::Env env) {
  if (auto* jobs = env.GetInstanceData<EnvJobs>()) return *jobs;
  auto jobs = std::make_unique<EnvJobs>();
  if (napi_create_threadsafe_function(env, nullptr, nullptr, Napi::String::New(env, "moe-kernels"), 0, 1, nullptr,
                                      nullptr, nullptr, settle, &jobs->settler) != napi_ok)
    throw Napi::Error::New(env, "moe-kernels: could not create the thread-safe function for async calls");
  napi_unref_threadsafe_function(env, jobs->settler);
  napi_add_env_cleanup_hook(env, wait_for_jobs, jobs.get());
  env.SetInstanceData(jobs.get());  // deleted with the env, after the cleanup hook
  return *jobs.release();
}

}  // namespace

Failure failure_of(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::bad_alloc&) {
    return {"moe-kernels: expected a call whose working memory this machine can allocate but got std::bad_alloc", true};
  } catch (const std::overflow_error& e) {
    return {e.what(), true};
  } catch (const std::invalid_argument& e) {  // moe::Unsupported: a call this layer's backend does not offer
    return {e.what(), true};
  } catch (const std::exception& e) {
    const std::string what = e.what();
    return {what.rfind("moe-kernels: ", 0) == 0 ? what : "moe-kernels: " + what, false};
  } catch (...) {
    return {"moe-kernels: unknown error in a native call", false};
  }
}

Napi::Error js_error(Napi::Env env, const Failure& failure) {
  if (failure.range_error) return Napi::RangeError::New(env, failure.message);
  return Napi::Error::New(env, failure.message);
}

Napi::Promise run_async(Napi::Env env, moe::JobQueue queue, std::vector<Napi::Value> keep_alive, AsyncWork work,
                        AsyncResult result) {
  EnvJobs& jobs = env_jobs(env);
  auto job = std::make_unique<Job>();
  job->owner = &jobs;
  napi_value promise = nullptr;
  NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &job->deferred, &promise), Napi::Promise());
  for (const Napi::Value& value : keep_alive) {
    napi_ref ref = nullptr;
    NAPI_THROW_IF_FAILED(env, napi_create_reference(env, value, 1, &ref), Napi::Promise());
    job->kept.push_back(ref);
  }
  job->work = std::move(work);
  job->result = std::move(result);
  if (jobs.unsettled++ == 0) napi_ref_threadsafe_function(env, jobs.settler);
  {
    std::lock_guard<std::mutex> lock(jobs.mutex);
    ++jobs.running;
  }
  moe::post_job(queue, [job = job.release()] { execute(job); });
  return Napi::Promise(env, promise);
}

}  // namespace moe_binding
