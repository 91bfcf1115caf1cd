// Jobs that outlive their stream: what GetJob, WatchJob, CancelJob and
// ListJobs see.
//
// A TrackedJob is the runtime's sink for one job. It keeps what the job did
// so far (state, queue position, progress, its result or final status) and
// passes every event on to the streams watching it: the Generate call that
// submitted it, and any WatchJob calls. A JobTracker indexes the admitted
// jobs by id and keeps finished ones for a bounded time, count and memory.
//
// Lock order: TrackedJob::mu_ before a watcher's own lock; neither is held
// while calling into the JobTracker, and the tracker's lock is never held
// while calling into a TrackedJob.
#ifndef LDMSERVE_SERVER_SERVICE_JOB_TRACKER_H_
#define LDMSERVE_SERVER_SERVICE_JOB_TRACKER_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ldm/v1/image_synthesis.pb.h"
#include "server/runtime/job.h"
#include "server/service/auth_tokens.h"
#include "server/service/metrics.h"

namespace ldmserve {

// One stream of a job's events (a Generate or WatchJob call). Neither
// method may block.
class JobWatcher {
 public:
  virtual ~JobWatcher() = default;
  // Queued, Started or Progress, in the job's order.
  virtual void Send(const ldm::v1::GenerateResponse& event) = 0;
  // The terminal event, exactly once: `result` (the Result event) when the
  // job succeeded, then `status`.
  virtual void End(const absl::Status& status,
                   const ldm::v1::GenerateResponse* result) = 0;
};

class JobTracker;

class TrackedJob : public JobSink {
 public:
  // `tracker` (null: none) hears when the job ends; it must outlive the job.
  TrackedJob(std::string job_id, std::string client_request_id,
             ServiceMetrics* metrics, JobTracker* tracker);

  // Set before the job is admitted.
  void SetClient(std::string name, AuthTokens::Lease lease)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The labels of its metrics: only names the server serves.
  void SetLabels(std::string model, std::string task) ABSL_LOCKS_EXCLUDED(mu_);
  void SetSettings(ldm::v1::ResolvedSettings settings, int priority,
                   ImageEncoding encoding) ABSL_LOCKS_EXCLUDED(mu_);
  void SetRuntimeJob(const std::shared_ptr<Job>& job) ABSL_LOCKS_EXCLUDED(mu_);
  // Ends a job that was never admitted.
  void Reject(const absl::Status& status) { OnError(status); }

  // Sends `watcher` the job's state so far (Queued, or Started and the
  // latest Progress), then every event until the job ends; at once its end
  // when it already ended.
  void Watch(std::shared_ptr<JobWatcher> watcher) ABSL_LOCKS_EXCLUDED(mu_);
  void Unwatch(const JobWatcher* watcher) ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& id() const { return job_id_; }
  std::string client() const ABSL_LOCKS_EXCLUDED(mu_);
  // The runtime's job while it may still run; null once it ended.
  std::shared_ptr<Job> runtime_job() const ABSL_LOCKS_EXCLUDED(mu_);
  bool ended() const ABSL_LOCKS_EXCLUDED(mu_);
  // The job as the API describes it; the result's images only when
  // `with_result`.
  ldm::v1::Job Describe(bool with_result) const ABSL_LOCKS_EXCLUDED(mu_);
  // Frees the result (retention); the job stays SUCCEEDED.
  void DropResult() ABSL_LOCKS_EXCLUDED(mu_);

  // JobSink.
  void OnQueued(int position) override ABSL_LOCKS_EXCLUDED(mu_);
  void OnStarted(absl::Duration queue_time) override ABSL_LOCKS_EXCLUDED(mu_);
  void OnProgress(const ProgressEvent& event) override ABSL_LOCKS_EXCLUDED(mu_);
  void OnResult(JobResult result) override ABSL_LOCKS_EXCLUDED(mu_);
  void OnError(absl::Status status) override ABSL_LOCKS_EXCLUDED(mu_);

 private:
  enum class State { kQueued, kRunning, kEnded };

  ldm::v1::GenerateResponse NewEvent() const;
  void SendLocked(const ldm::v1::GenerateResponse& event)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The terminal event: records it, then (unlocked) tells the watchers, the
  // metrics and the tracker.
  void End(const absl::Status& status,
           std::optional<ldm::v1::GenerateResponse> result)
      ABSL_LOCKS_EXCLUDED(mu_);

  const std::string job_id_;
  const std::string client_request_id_;
  ServiceMetrics* const metrics_;
  JobTracker* const tracker_;
  const absl::Time created_at_;

  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kQueued;
  std::vector<std::shared_ptr<JobWatcher>> watchers_ ABSL_GUARDED_BY(mu_);
  std::weak_ptr<Job> runtime_job_ ABSL_GUARDED_BY(mu_);
  std::string client_ ABSL_GUARDED_BY(mu_);  // Empty: no tokens.
  AuthTokens::Lease client_lease_ ABSL_GUARDED_BY(mu_);
  std::string model_label_ ABSL_GUARDED_BY(mu_);
  std::string task_label_ ABSL_GUARDED_BY(mu_);
  ldm::v1::ResolvedSettings settings_ ABSL_GUARDED_BY(mu_);
  ImageEncoding encoding_ ABSL_GUARDED_BY(mu_);
  int priority_ ABSL_GUARDED_BY(mu_) = 0;
  int queue_position_ ABSL_GUARDED_BY(mu_) = -1;
  absl::Time started_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time ended_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::optional<ldm::v1::Progress> last_progress_ ABSL_GUARDED_BY(mu_);
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
  // The Result event while kept.
  std::shared_ptr<const ldm::v1::GenerateResponse> result_ ABSL_GUARDED_BY(mu_);
  bool result_dropped_ ABSL_GUARDED_BY(mu_) = false;
};

// How long finished jobs are kept, and in how much memory.
struct JobRetention {
  absl::Duration time = absl::Minutes(10);
  // Results (their encoded images) beyond this are dropped, oldest first;
  // the job itself stays listed.
  size_t result_bytes = size_t{256} << 20;
  int max_finished_jobs = 1000;  // Beyond: the oldest are forgotten.
};

// Thread-safe.
class JobTracker {
 public:
  explicit JobTracker(JobRetention retention,
                      std::function<absl::Time()> clock = absl::Now);

  // Indexes a job about to be submitted; Remove() it if the scheduler
  // refuses it.
  void Add(const std::shared_ptr<TrackedJob>& job) ABSL_LOCKS_EXCLUDED(mu_);
  void Remove(const std::string& job_id) ABSL_LOCKS_EXCLUDED(mu_);
  // From TrackedJob: it ended, keeping `result_bytes` of result.
  void OnJobEnded(const std::string& job_id, size_t result_bytes)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The job, if `client` may see it (nullopt = anyone: no tokens).
  // NOT_FOUND for an unknown or forgotten id, PERMISSION_DENIED for another
  // client's job.
  absl::StatusOr<std::shared_ptr<TrackedJob>> Find(
      const std::string& job_id, const std::optional<std::string>& client)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Every job `client` may see, in admission order.
  std::vector<std::shared_ptr<TrackedJob>> List(
      const std::optional<std::string>& client) ABSL_LOCKS_EXCLUDED(mu_);

  // Jobs indexed, and bytes of results kept (for tests and gauges).
  int size() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t result_bytes() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    std::shared_ptr<TrackedJob> job;
    std::string client;
    uint64_t sequence = 0;  // Admission order.
    bool ended = false;
    absl::Time ended_at;
    size_t result_bytes = 0;
  };
  // Forgets finished jobs past their time and beyond the count.
  void ExpireLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the oldest results off the budget until it fits; returns their
  // jobs, whose results the caller drops outside the lock. Only a job's
  // end adds bytes, so only then can the budget overflow.
  std::vector<std::shared_ptr<TrackedJob>> OverBudgetLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const JobRetention retention_;
  const std::function<absl::Time()> clock_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> jobs_ ABSL_GUARDED_BY(mu_);
  // Finished jobs' ids, oldest end first.
  std::deque<std::string> ended_order_ ABSL_GUARDED_BY(mu_);
  size_t result_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_sequence_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_JOB_TRACKER_H_
