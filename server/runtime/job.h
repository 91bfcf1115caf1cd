// A job: one Generate request as the runtime sees it, from admission to its
// single terminal event.
//
// The service creates a Job with a JobSink (where events go) and submits it
// to the Scheduler. From then on the runtime owns the job's progress and
// reports, in order: OnQueued (whenever its queue position changes),
// OnStarted, OnProgress per step, and finally exactly one of OnResult or
// OnError. After the terminal call the runtime never touches the sink again.
//
// Sink methods are called from worker threads and must not block: a slow
// client must never stall a batch (the service coalesces progress).
#ifndef LDMSERVE_SERVER_RUNTIME_JOB_H_
#define LDMSERVE_SERVER_RUNTIME_JOB_H_

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/ldm/latent_diffusion.h"

namespace ldmserve {

enum class TaskKind { kTextToImage, kImageToImage, kInpaint, kSuperResolution };

const char* TaskKindName(TaskKind kind);

// A validated request: every field is within limits and defaults are
// resolved.
struct JobSpec {
  std::string model_name;  // As the registry names it.
  TaskKind task = TaskKind::kTextToImage;
  ldm::JobRequest request;  // Latent size resolved (never 0).
  int preview_every = 0;    // 0 = no previews.
  int progress_every = 1;   // The last step is always reported.
  std::string client_request_id;
  int priority = 0;  // Higher starts sooner (Scheduler: FIFO within one).
};

struct ProgressEvent {
  int step = 0;
  int total_steps = 0;
  absl::Duration elapsed;
  absl::Duration estimated_remaining;
  at::Tensor preview;  // uint8 [h, w, 3] or undefined.
};

struct StageTimings {
  absl::Duration queue;
  absl::Duration encode;
  absl::Duration denoise;
  absl::Duration decode;
  absl::Duration total;
};

struct JobResult {
  std::string model_name;
  at::Tensor images;  // uint8 [N, H, W, 3], CPU.
  std::vector<uint64_t> seeds;
  StageTimings timings;
  std::vector<std::string> warnings;
};

class JobSink {
 public:
  virtual ~JobSink() = default;
  virtual void OnQueued(int position) = 0;
  virtual void OnStarted(absl::Duration queue_time) = 0;
  virtual void OnProgress(const ProgressEvent& event) = 0;
  virtual void OnResult(JobResult result) = 0;
  virtual void OnError(absl::Status status) = 0;
};

// Thread-safety: Cancel() and StopReason() may be called from any thread;
// the rest is used by the one worker running the job (its threads hand the
// job to each other under a lock, so one touches it at a time).
class Job {
 public:
  // `model` names the model (and is its copy on its first device); `copies`
  // are its copies on every device it is loaded on (empty = `model` alone).
  Job(std::string id, JobSpec spec, const ldm::LatentDiffusion* model,
      std::shared_ptr<JobSink> sink, absl::Time deadline,
      std::vector<const ldm::LatentDiffusion*> copies = {});

  const std::string& id() const { return id_; }
  const JobSpec& spec() const { return spec_; }
  // The model's identity: jobs with the same model() may share a batch.
  const ldm::LatentDiffusion& model() const { return *model_; }
  // The model's copy on `device`, or nullptr when it is not loaded there.
  const ldm::LatentDiffusion* ModelOn(const at::Device& device) const;
  JobSink& sink() { return *sink_; }
  absl::Time deadline() const { return deadline_; }
  absl::Time admitted_at() const { return admitted_at_; }

  // Asks the job to stop with `reason` (CANCELLED, DEADLINE_EXCEEDED, ...);
  // it leaves its batch at the next step boundary. The first reason wins.
  void Cancel(absl::Status reason);
  // OK while the job may go on; otherwise why it must stop (cancelled, or
  // its deadline passed by `now`).
  absl::Status StopReason(absl::Time now) const;

  // Worker-owned running state.
  struct Running {
    // The copy on the worker's device: what every stage of the job runs.
    const ldm::LatentDiffusion* model = nullptr;
    ldm::PreparedJob prepared;
    absl::Time started_at;
    StageTimings timings;
  };
  Running& running() { return running_; }

 private:
  const std::string id_;
  const JobSpec spec_;
  const ldm::LatentDiffusion* const model_;
  const std::vector<const ldm::LatentDiffusion*> copies_;
  const std::shared_ptr<JobSink> sink_;
  const absl::Time deadline_;
  const absl::Time admitted_at_;
  std::atomic<bool> cancelled_{false};
  mutable absl::Mutex mu_;
  absl::Status cancel_reason_ ABSL_GUARDED_BY(mu_);
  Running running_;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_RUNTIME_JOB_H_
