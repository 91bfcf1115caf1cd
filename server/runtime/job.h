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
//
// No LibTorch here: the service sees requests, previews and results as the
// model library's plain types (server/ldm/generation.h); the models and a
// running job's tensors are opaque to it.
#ifndef LDMSERVE_SERVER_RUNTIME_JOB_H_
#define LDMSERVE_SERVER_RUNTIME_JOB_H_

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
#include "server/common/image_file.h"
#include "server/ldm/generation.h"

namespace ldm {
class LatentDiffusion;
class LoraAdapter;
struct BoundLoras;
struct PreparedJob;
}  // namespace ldm

namespace ldmserve {

// A LoRA adapter a job applies, as its request named it.
struct LoraUse {
  std::string name;
  float weight = 1.0f;
  std::shared_ptr<const ldm::LoraAdapter> adapter;  // Read and checked.

  // Jobs share a batch only with the same adapters at the same weights.
  bool operator==(const LoraUse& other) const {
    return name == other.name && weight == other.weight &&
           adapter == other.adapter;
  }
};

// A validated request: every field is within limits, defaults are resolved
// and the model has accepted it (ldm::CheckRequest) before it is queued.
struct JobSpec {
  std::string model_name;  // As the registry names it.
  ldm::GenerationRequest request;
  ldm::ImageGeometry geometry;  // What CheckRequest gave for the model.
  int preview_every = 0;        // 0 = no previews.
  int progress_every = 1;       // The last step is always reported.
  std::string client_request_id;
  int priority = 0;        // Higher starts sooner (Scheduler: FIFO within one).
  ImageEncoding encoding;  // Of the result images (the service's).
  // What was done to the input image to fit the model; nullopt = nothing.
  std::optional<InputFit> input_fit;
  std::vector<LoraUse> loras;  // In the request's order.

  ldm::Task task() const { return ldm::TaskOf(request.task); }
};

struct ProgressEvent {
  int step = 0;
  int total_steps = 0;
  absl::Duration elapsed;
  absl::Duration estimated_remaining;
  std::optional<ldm::RgbImage> preview;  // At latent size.
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
  std::vector<ldm::RgbImage> images;
  std::vector<uint64_t> seeds;  // One per image.
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
  // `copies`: the model's copies on every device it is loaded on (at
  // least one); the first names the model. `model_lease` (the registry's,
  // may be null) keeps them alive until the job is destroyed.
  Job(std::string id, JobSpec spec,
      std::vector<const ldm::LatentDiffusion*> copies,
      std::shared_ptr<JobSink> sink, absl::Time deadline,
      std::shared_ptr<const void> model_lease = nullptr);
  ~Job();

  const std::string& id() const { return id_; }
  const JobSpec& spec() const { return spec_; }
  // The model's identity: jobs with the same model() may share a batch.
  const ldm::LatentDiffusion* model() const { return copies_.front(); }
  const std::vector<const ldm::LatentDiffusion*>& copies() const {
    return copies_;
  }
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
    std::unique_ptr<ldm::PreparedJob> prepared;  // Set once encoded.
    // spec().loras bound to `model`; null without adapters.
    std::shared_ptr<const ldm::BoundLoras> loras;
    absl::Time started_at;
    StageTimings timings;
  };
  Running& running() { return running_; }

 private:
  // First, so that it is released last: the running state's tensors go
  // before the model they came from.
  const std::shared_ptr<const void> model_lease_;
  const std::string id_;
  const JobSpec spec_;
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
