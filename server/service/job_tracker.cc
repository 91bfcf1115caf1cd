#include "server/service/job_tracker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/service/image_codec.h"
#include "server/service/png_codec.h"
#include "server/service/request_validation.h"

namespace ldmserve {
namespace {

using ldm::v1::GenerateResponse;

uint64_t ToMillis(absl::Duration duration) {
  return static_cast<uint64_t>(
      std::max<int64_t>(0, absl::ToInt64Milliseconds(duration)));
}

int64_t UnixMillisOrZero(absl::Time time) {
  return time == absl::InfinitePast() ? 0 : absl::ToUnixMillis(time);
}

}  // namespace

TrackedJob::TrackedJob(std::string job_id, std::string client_request_id,
                       ServiceMetrics* metrics, JobTracker* tracker)
    : job_id_(std::move(job_id)),
      client_request_id_(std::move(client_request_id)),
      metrics_(metrics),
      tracker_(tracker),
      created_at_(absl::Now()) {}

void TrackedJob::SetClient(std::string name, AuthTokens::Lease lease) {
  absl::MutexLock lock(&mu_);
  client_ = std::move(name);
  client_lease_ = std::move(lease);
}

void TrackedJob::SetLabels(std::string model, std::string task) {
  absl::MutexLock lock(&mu_);
  model_label_ = std::move(model);
  task_label_ = std::move(task);
}

void TrackedJob::SetSettings(ldm::v1::ResolvedSettings settings, int priority,
                             ImageEncoding encoding) {
  absl::MutexLock lock(&mu_);
  settings_ = std::move(settings);
  priority_ = priority;
  encoding_ = encoding;
}

void TrackedJob::SetRuntimeJob(const std::shared_ptr<Job>& job) {
  absl::MutexLock lock(&mu_);
  runtime_job_ = job;
}

std::string TrackedJob::client() const {
  absl::MutexLock lock(&mu_);
  return client_;
}

std::shared_ptr<Job> TrackedJob::runtime_job() const {
  absl::MutexLock lock(&mu_);
  return state_ == State::kEnded ? nullptr : runtime_job_.lock();
}

bool TrackedJob::ended() const {
  absl::MutexLock lock(&mu_);
  return state_ == State::kEnded;
}

GenerateResponse TrackedJob::NewEvent() const {
  GenerateResponse event;
  event.set_client_request_id(client_request_id_);
  event.set_job_id(job_id_);
  return event;
}

void TrackedJob::SendLocked(const GenerateResponse& event) {
  for (const std::shared_ptr<JobWatcher>& watcher : watchers_) {
    watcher->Send(event);
  }
}

void TrackedJob::Watch(std::shared_ptr<JobWatcher> watcher) {
  absl::Status status;
  std::shared_ptr<const GenerateResponse> result;
  {
    absl::MutexLock lock(&mu_);
    switch (state_) {
      case State::kQueued:
        if (queue_position_ >= 0) {
          GenerateResponse queued = NewEvent();
          queued.mutable_queued()->set_position(
              static_cast<uint32_t>(queue_position_));
          watcher->Send(queued);
        }
        watchers_.push_back(std::move(watcher));
        return;
      case State::kRunning: {
        GenerateResponse started = NewEvent();
        started.mutable_started()->set_queue_time_ms(
            ToMillis(started_at_ - created_at_));
        watcher->Send(started);
        if (last_progress_.has_value()) {
          GenerateResponse progress = NewEvent();
          *progress.mutable_progress() = *last_progress_;
          watcher->Send(progress);
        }
        watchers_.push_back(std::move(watcher));
        return;
      }
      case State::kEnded:
        status = final_status_;
        result = result_;
        if (status.ok() && result == nullptr) {
          status = absl::NotFoundError(absl::StrCat(
              "the result of ", job_id_,
              " is no longer kept (the server's --job-retention-mib)"));
        }
        break;
    }
  }
  watcher->End(status, result.get());
}

void TrackedJob::Unwatch(const JobWatcher* watcher) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(std::remove_if(watchers_.begin(), watchers_.end(),
                                 [watcher](const auto& entry) {
                                   return entry.get() == watcher;
                                 }),
                  watchers_.end());
}

void TrackedJob::OnQueued(int position) {
  absl::MutexLock lock(&mu_);
  if (state_ != State::kQueued || position == queue_position_) return;
  queue_position_ = position;
  GenerateResponse event = NewEvent();
  event.mutable_queued()->set_position(static_cast<uint32_t>(position));
  SendLocked(event);
}

void TrackedJob::OnStarted(absl::Duration queue_time) {
  absl::MutexLock lock(&mu_);
  if (state_ != State::kQueued) return;
  state_ = State::kRunning;
  started_at_ = created_at_ + queue_time;
  GenerateResponse event = NewEvent();
  event.mutable_started()->set_queue_time_ms(ToMillis(queue_time));
  SendLocked(event);
}

void TrackedJob::OnProgress(const ProgressEvent& event) {
  // Encoded once for every watcher, outside the lock.
  std::string preview;
  if (event.preview.has_value()) {
    absl::StatusOr<std::string> png = EncodePng(*event.preview);
    if (png.ok()) preview = std::move(png).value();
  }
  absl::MutexLock lock(&mu_);
  if (state_ != State::kRunning) return;
  ldm::v1::Progress progress;
  progress.set_step(static_cast<uint32_t>(event.step));
  progress.set_total_steps(static_cast<uint32_t>(event.total_steps));
  progress.set_elapsed_ms(ToMillis(event.elapsed));
  progress.set_estimated_remaining_ms(ToMillis(event.estimated_remaining));
  last_progress_ = progress;
  GenerateResponse response = NewEvent();
  *response.mutable_progress() = std::move(progress);
  response.mutable_progress()->set_preview_png(std::move(preview));
  SendLocked(response);
}

void TrackedJob::OnResult(JobResult result) {
  GenerateResponse last = NewEvent();
  ldm::v1::Result* out = last.mutable_result();
  out->set_model(result.model_name);
  ImageEncoding encoding;
  {
    absl::MutexLock lock(&mu_);
    *out->mutable_settings() = settings_;
    encoding = encoding_;
  }
  for (size_t i = 0; i < result.images.size(); ++i) {
    const RgbImage& image = result.images[i];
    std::string parameters = ParametersText(out->settings(), result.seeds[i]);
    absl::StatusOr<std::string> file = EncodeImage(image, encoding, parameters);
    if (!file.ok()) {
      OnError(file.status());
      return;
    }
    ldm::v1::Image* entry = out->add_images();
    entry->set_data(std::move(file).value());
    entry->set_width(static_cast<uint32_t>(image.width));
    entry->set_height(static_cast<uint32_t>(image.height));
    entry->set_seed(result.seeds[i]);
    entry->set_parameters(std::move(parameters));
  }
  ldm::v1::StageTimings* timings = out->mutable_timings();
  timings->set_queue_ms(ToMillis(result.timings.queue));
  timings->set_encode_ms(ToMillis(result.timings.encode));
  timings->set_denoise_ms(ToMillis(result.timings.denoise));
  timings->set_decode_ms(ToMillis(result.timings.decode));
  timings->set_total_ms(ToMillis(result.timings.total));
  for (std::string& warning : result.warnings) {
    out->add_warnings(std::move(warning));
  }
  End(absl::OkStatus(), std::move(last));
}

void TrackedJob::OnError(absl::Status status) { End(status, std::nullopt); }

void TrackedJob::End(const absl::Status& status,
                     std::optional<GenerateResponse> result) {
  std::vector<std::shared_ptr<JobWatcher>> watchers;
  std::shared_ptr<const GenerateResponse> kept;
  AuthTokens::Lease lease;
  std::string model_label;
  std::string task_label;
  std::string client;
  {
    absl::MutexLock lock(&mu_);
    if (state_ == State::kEnded) return;
    state_ = State::kEnded;
    ended_at_ = absl::Now();
    final_status_ = status;
    if (result.has_value()) {
      kept = std::make_shared<const GenerateResponse>(*std::move(result));
      result_ = kept;
    }
    watchers.swap(watchers_);
    lease = std::move(client_lease_);
    model_label = model_label_;
    task_label = task_label_;
    client = client_;
  }
  // The job is over for its client: the slot is free for its next job
  // (before the metrics: a client that sees this job counted may reuse it).
  lease.Release();
  // Counted before any client hears of the end: one that has seen it may
  // read the metrics.
  if (kept != nullptr) metrics_->ImagesGenerated(kept->result().images_size());
  metrics_->RequestEnded(model_label, task_label, status.code(),
                         absl::Now() - created_at_);
  if (!client.empty()) metrics_->ClientRequestEnded(client, status.code());
  // No event follows the terminal one, so the watchers hear of it unlocked
  // (a watcher may Describe() the job from End).
  for (const std::shared_ptr<JobWatcher>& watcher : watchers) {
    watcher->End(status, kept.get());
  }
  if (tracker_ != nullptr) {
    tracker_->OnJobEnded(job_id_, kept ? kept->ByteSizeLong() : 0);
  }
}

ldm::v1::Job TrackedJob::Describe(bool with_result) const {
  ldm::v1::Job job;
  job.set_job_id(job_id_);
  job.set_client_request_id(client_request_id_);
  job.set_created_unix_ms(absl::ToUnixMillis(created_at_));
  absl::MutexLock lock(&mu_);
  job.set_model(settings_.model());
  job.set_task(settings_.task());
  *job.mutable_settings() = settings_;
  job.set_client(client_);
  job.set_priority(priority_);
  job.set_started_unix_ms(UnixMillisOrZero(started_at_));
  if (last_progress_.has_value()) {
    job.set_step(last_progress_->step());
    job.set_total_steps(last_progress_->total_steps());
  }
  switch (state_) {
    case State::kQueued:
      job.set_state(ldm::v1::JOB_STATE_QUEUED);
      job.set_queue_position(
          static_cast<uint32_t>(std::max(queue_position_, 0)));
      break;
    case State::kRunning:
      job.set_state(ldm::v1::JOB_STATE_RUNNING);
      break;
    case State::kEnded:
      job.set_finished_unix_ms(UnixMillisOrZero(ended_at_));
      job.set_status_code(static_cast<int32_t>(final_status_.code()));
      job.set_status_message(std::string(final_status_.message()));
      if (final_status_.ok()) {
        job.set_state(ldm::v1::JOB_STATE_SUCCEEDED);
        job.set_result_dropped(result_dropped_);
        if (with_result && result_ != nullptr) {
          *job.mutable_result() = result_->result();
        }
      } else if (final_status_.code() == absl::StatusCode::kCancelled) {
        job.set_state(ldm::v1::JOB_STATE_CANCELLED);
      } else {
        job.set_state(ldm::v1::JOB_STATE_FAILED);
      }
      break;
  }
  return job;
}

void TrackedJob::DropResult() {
  absl::MutexLock lock(&mu_);
  if (result_ == nullptr) return;
  result_.reset();
  result_dropped_ = true;
}

JobTracker::JobTracker(JobRetention retention,
                       std::function<absl::Time()> clock)
    : retention_(retention), clock_(std::move(clock)) {}

void JobTracker::Add(const std::shared_ptr<TrackedJob>& job) {
  Entry entry;
  entry.job = job;
  entry.client = job->client();
  absl::MutexLock lock(&mu_);
  entry.sequence = next_sequence_++;
  jobs_[job->id()] = std::move(entry);
}

void JobTracker::Remove(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  auto entry = jobs_.find(job_id);
  if (entry == jobs_.end() || entry->second.ended) return;
  jobs_.erase(entry);
}

void JobTracker::OnJobEnded(const std::string& job_id, size_t result_bytes) {
  std::vector<std::shared_ptr<TrackedJob>> drop;
  {
    absl::MutexLock lock(&mu_);
    auto entry = jobs_.find(job_id);
    if (entry == jobs_.end() || entry->second.ended) return;
    entry->second.ended = true;
    entry->second.ended_at = clock_();
    entry->second.result_bytes = result_bytes;
    result_bytes_ += result_bytes;
    ended_order_.push_back(job_id);
    ExpireLocked(entry->second.ended_at);
    drop = OverBudgetLocked();
  }
  for (const std::shared_ptr<TrackedJob>& job : drop) job->DropResult();
}

void JobTracker::ExpireLocked(absl::Time now) {
  while (!ended_order_.empty()) {
    auto entry = jobs_.find(ended_order_.front());
    const bool expired = entry->second.ended_at + retention_.time <= now;
    const bool surplus =
        ended_order_.size() > static_cast<size_t>(retention_.max_finished_jobs);
    if (!expired && !surplus) break;
    result_bytes_ -= entry->second.result_bytes;
    jobs_.erase(entry);
    ended_order_.pop_front();
  }
}

std::vector<std::shared_ptr<TrackedJob>> JobTracker::OverBudgetLocked() {
  std::vector<std::shared_ptr<TrackedJob>> drop;
  for (const std::string& job_id : ended_order_) {
    if (result_bytes_ <= retention_.result_bytes) break;
    Entry& entry = jobs_.at(job_id);
    if (entry.result_bytes == 0) continue;
    result_bytes_ -= entry.result_bytes;
    entry.result_bytes = 0;
    drop.push_back(entry.job);
  }
  return drop;
}

absl::StatusOr<std::shared_ptr<TrackedJob>> JobTracker::Find(
    const std::string& job_id, const std::optional<std::string>& client) {
  absl::MutexLock lock(&mu_);
  ExpireLocked(clock_());
  auto entry = jobs_.find(job_id);
  if (entry == jobs_.end()) {
    return absl::NotFoundError(
        absl::StrCat("job_id: no job ", job_id,
                     " (unknown, or finished longer ago than the server "
                     "keeps jobs)"));
  }
  if (client.has_value() && entry->second.client != *client) {
    return absl::PermissionDeniedError(
        absl::StrCat("job_id: ", job_id, " belongs to another client"));
  }
  return entry->second.job;
}

std::vector<std::shared_ptr<TrackedJob>> JobTracker::List(
    const std::optional<std::string>& client) {
  std::vector<std::pair<uint64_t, std::shared_ptr<TrackedJob>>> found;
  {
    absl::MutexLock lock(&mu_);
    ExpireLocked(clock_());
    for (const auto& [job_id, entry] : jobs_) {
      if (client.has_value() && entry.client != *client) continue;
      found.emplace_back(entry.sequence, entry.job);
    }
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::shared_ptr<TrackedJob>> jobs;
  jobs.reserve(found.size());
  for (auto& [sequence, job] : found) jobs.push_back(std::move(job));
  return jobs;
}

int JobTracker::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(jobs_.size());
}

size_t JobTracker::result_bytes() const {
  absl::MutexLock lock(&mu_);
  return result_bytes_;
}

}  // namespace ldmserve
