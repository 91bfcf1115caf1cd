// The scheduler: a bounded queue of jobs, ordered by priority (FIFO among
// equal priorities; waiting raises a job's priority, so none starves), and a
// pool of workers that run them one denoising step at a time.
//
// Each worker is two threads. Its denoise thread keeps a set of running jobs
// that share a model and a latent shape; every iteration it admits queued
// jobs that fit (same model and shape, at most `max_batch_images` images in
// all), runs ONE denoising step for all their images in one UNet call,
// reports progress, and lets finished jobs leave and stopped ones
// (cancelled, past their deadline) drop out, so jobs join and leave a
// running batch at step boundaries. Its stage thread runs the other stages:
// it encodes the jobs the denoise thread admitted (text, init images) and
// hands them back to join at the next step boundary, and decodes finished
// jobs together, so neither stage stalls the denoising of the others.
//
// Thread-safety: all public methods are thread-safe. Workers start in the
// constructor and are joined by Shutdown() (or the destructor).
//
// Example:
//   Scheduler scheduler({.queue_size = 16, .max_batch_images = 8});
//   absl::Status admitted = scheduler.Submit(job);  // RESOURCE_EXHAUSTED
//                                                    // when full
//   ...
//   scheduler.Shutdown(absl::Seconds(30));
#ifndef LDMSERVE_SERVER_RUNTIME_SCHEDULER_H_
#define LDMSERVE_SERVER_RUNTIME_SCHEDULER_H_

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/runtime/job.h"

namespace ldm {
struct ImageTask;
}  // namespace ldm

namespace ldmserve {

// Which worker did a piece of work: per-worker figures (busy time, call
// times) tell a stuck or slow device from an idle one.
struct WorkerId {
  int index = 0;  // Among the scheduler's workers, from 0.
  // As in SchedulerOptions::worker_devices: "cpu", "cuda:0".
  std::string device;
};

// What the scheduler reports for metrics (the service turns these into
// Prometheus series). Called from worker threads; must not block. `model`
// is the job's registry name (JobSpec::model_name).
class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;
  virtual void OnQueueWait(const std::string& model, absl::Duration wait) = 0;
  // One UNet call: how many jobs and images shared it, and how long it took.
  virtual void OnDenoiseCall(const WorkerId& worker, const std::string& model,
                             int jobs, int images, absl::Duration duration) = 0;
  // "encode" per batch of starting jobs (their conditioning), "decode" per
  // batch of finished jobs; called from the stage threads.
  virtual void OnStage(const WorkerId& worker, const char* stage,
                       absl::Duration duration) = 0;
};

// How jobs share UNet calls.
enum class Batching {
  kStep,     // Jobs join and leave a running batch at every step boundary.
  kRequest,  // Jobs queued together start together; none joins until the
             // whole batch is done (what most servers do).
  kNone,     // One job at a time.
};

struct SchedulerOptions {
  int queue_size = 64;       // Jobs waiting, not counting running ones.
  int max_batch_images = 8;  // Images per UNet call (CFG doubles the rows).
  // Latent pixels (images x h x w) per UNet call; 0 = no limit. A job larger
  // than the budget still runs, alone.
  int64_t max_batch_latent_pixels = 0;
  Batching batching = Batching::kStep;
  // A waiting job's priority rises one level per this much waiting, so that
  // low priorities are delayed, never starved; zero = no ageing.
  absl::Duration priority_aging = absl::Seconds(10);
  int workers = 1;  // 0 = none: jobs queue but never run (tests).
  // One worker per entry, on that device (a device may repeat); empty =
  // `workers` workers on the CPU. A worker takes only jobs whose model has
  // a copy on its device.
  // Devices as ParseDevices (devices.h) checked them: "cpu", "cuda:N".
  std::vector<std::string> worker_devices;
  // CUDA workers decode on a stream of their own (ldm::ScopedSideStream),
  // beside the denoising steps rather than between them.
  bool decode_on_side_stream = true;
  SchedulerObserver* observer = nullptr;  // Must outlive the scheduler.
};

// Hooks for tests only (fault injection, ordering); production passes none.
struct SchedulerTestHooks {
  // Consulted before each UNet call with its number of image tasks; an error
  // is taken as that call's outcome.
  std::function<absl::Status(size_t tasks)> step_fault;
  // Called on the stage thread before each decode call.
  std::function<void()> before_decode;
};

class Scheduler {
 public:
  explicit Scheduler(SchedulerOptions options,
                     SchedulerTestHooks test_hooks = {});
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues `job` and reports its position. RESOURCE_EXHAUSTED when the queue
  // is full, UNAVAILABLE after Shutdown() began; the job is then not admitted
  // and its sink is not called.
  absl::Status Submit(const std::shared_ptr<Job>& job);

  // Stops `job` with `reason`: at once if it is still queued, else at its
  // next step boundary. A job that already ended is left alone.
  void Cancel(const std::shared_ptr<Job>& job, absl::Status reason);

  // Refuses new jobs, lets queued and running ones finish for up to
  // `drain_timeout`, stops the rest with UNAVAILABLE, and joins the workers.
  void Shutdown(absl::Duration drain_timeout);

  int queue_depth() const;
  // The workers, in index order; fixed for the scheduler's life.
  std::vector<WorkerId> workers() const;
  int running_jobs() const;

 private:
  struct Worker;
  // A job the stage thread has encoded (or failed to), for the denoise
  // thread to take at its next step boundary.
  struct Encoded {
    std::shared_ptr<Job> job;
    absl::Status status;
  };

  void DenoiseLoop(Worker& worker);
  void StageLoop(Worker& worker);
  // A queued job can start on `worker` (or the scheduler is stopping).
  bool HasWorkFor(const Worker& worker) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Drained() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Aborting() const;
  void ReportQueuePositions() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the queued jobs that may join the batch of `worker` now (its jobs
  // `running` and those still `encoding`).
  std::vector<std::shared_ptr<Job>> AdmitLocked(
      const std::vector<std::shared_ptr<Job>>& running,
      const std::vector<std::shared_ptr<Job>>& encoding, const Worker& worker)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job's priority plus what its waiting has earned it by `now`.
  double EffectivePriority(const Job& job, absl::Time now) const;
  // Orders the queue by effective priority, FIFO among equals; reports the
  // positions that changed.
  void ReorderLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends a running job (exactly once) with an error.
  void FailJob(const std::shared_ptr<Job>& job, absl::Status status);
  void FinishJob(const std::shared_ptr<Job>& job, JobResult result);
  void JobLeft();

  // Starts `jobs` (of one batch key) on their model's copy on `worker`'s
  // device: encodes their conditioning in one call (their prompts in one
  // text-encoder call) and creates their image tasks. Each job's outcome.
  std::vector<absl::Status> StartJobs(
      const std::vector<std::shared_ptr<Job>>& jobs, const Worker& worker);
  // One step for all of `running`, then progress; returns the jobs whose
  // last step this was (they leave `running`).
  std::vector<std::shared_ptr<Job>> StepBatch(
      const Worker& worker, std::vector<std::shared_ptr<Job>>& running);
  // One denoising call over `tasks`; out of memory, it retries the halves.
  // Returns the outcome for each task.
  std::vector<absl::Status> StepWithRetry(
      const ldm::LatentDiffusion& model,
      const std::vector<ldm::ImageTask*>& tasks);
  // Decodes `finished` (one model's jobs) in one call and ends each job.
  void DecodeAndFinish(const Worker& worker,
                       const std::vector<std::shared_ptr<Job>>& finished);

  const SchedulerOptions options_;
  const SchedulerTestHooks test_hooks_;
  mutable absl::Mutex mu_;
  std::deque<std::shared_ptr<Job>> queue_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;  // Admitted jobs not yet ended.
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool aborting_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_RUNTIME_SCHEDULER_H_
