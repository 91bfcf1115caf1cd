#include "server/runtime/scheduler.h"

#include <ATen/Parallel.h>
#include <glog/logging.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/ldm/device_streams.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/lora.h"

namespace ldmserve {
namespace {

bool SameBatchKey(const Job& a, const Job& b) {
  const ldm::ImageGeometry& first = a.spec().geometry;
  const ldm::ImageGeometry& second = b.spec().geometry;
  return a.model() == b.model() &&
         first.latent_height == second.latent_height &&
         first.latent_width == second.latent_width &&
         a.spec().loras == b.spec().loras;
}

int NumImages(const Job& job) { return job.spec().request.num_images; }

int64_t LatentPixelsOf(const Job& job) {
  const ldm::ImageGeometry& geometry = job.spec().geometry;
  return NumImages(job) * geometry.latent_height * geometry.latent_width;
}

// The job's model copy on `device`, or nullptr when it is not loaded there.
const ldm::LatentDiffusion* CopyOn(const Job& job, const at::Device& device) {
  for (const ldm::LatentDiffusion* copy : job.copies()) {
    if (copy->device() == device) return copy;
  }
  return nullptr;
}

}  // namespace

// One worker's two threads and what they hand each other. Lock order: `mu`
// and Scheduler::mu_ are never held together.
struct Scheduler::Worker {
  Worker(int index, const std::string& on) : id{index, on}, device(on) {}
  const WorkerId id;
  const at::Device device;
  absl::Mutex mu;
  // Admitted by the denoise thread, for the stage thread to encode.
  std::vector<std::shared_ptr<Job>> to_encode ABSL_GUARDED_BY(mu);
  // Encoded (or failed), for the denoise thread's next step boundary.
  std::vector<Encoded> encoded ABSL_GUARDED_BY(mu);
  // Denoised, for the stage thread to decode.
  std::vector<std::shared_ptr<Job>> to_decode ABSL_GUARDED_BY(mu);
  // Set when the denoise thread exits: no more work will come.
  bool denoise_done ABSL_GUARDED_BY(mu) = false;
  std::thread denoise;
  std::thread stages;
};

Scheduler::Scheduler(SchedulerOptions options, SchedulerTestHooks test_hooks)
    : options_(std::move(options)), test_hooks_(std::move(test_hooks)) {
  std::vector<std::string> devices = options_.worker_devices;
  if (devices.empty()) devices.assign(options_.workers, "cpu");
  for (size_t i = 0; i < devices.size(); ++i) {
    workers_.push_back(
        std::make_unique<Worker>(static_cast<int>(i), devices[i]));
    Worker& worker = *workers_.back();
    worker.denoise = std::thread([this, &worker] { DenoiseLoop(worker); });
    worker.stages = std::thread([this, &worker] { StageLoop(worker); });
  }
}

Scheduler::~Scheduler() { Shutdown(absl::ZeroDuration()); }

absl::Status Scheduler::Submit(const std::shared_ptr<Job>& job) {
  absl::MutexLock lock(&mu_);
  if (!accepting_) {
    return absl::UnavailableError("server is shutting down");
  }
  if (static_cast<int>(queue_.size()) >= options_.queue_size) {
    return absl::ResourceExhaustedError(
        absl::StrCat("queue is full (", options_.queue_size, " jobs waiting)"));
  }
  queue_.push_back(job);
  // Under the lock so that no worker can start the job before its Queued
  // event is out; sinks do not block. A job that moves up is told by the
  // reordering, one left at the back here: one event either way.
  ReorderLocked(absl::Now());
  if (queue_.back() == job) {
    job->sink().OnQueued(static_cast<int>(queue_.size()) - 1);
  }
  return absl::OkStatus();
}

void Scheduler::Cancel(const std::shared_ptr<Job>& job, absl::Status reason) {
  {
    absl::MutexLock lock(&mu_);
    auto it = std::find(queue_.begin(), queue_.end(), job);
    if (it == queue_.end()) {
      // Running (or already ended): the worker sees it at the next step.
      job->Cancel(std::move(reason));
      return;
    }
    queue_.erase(it);
    ReportQueuePositions();
  }
  job->sink().OnError(std::move(reason));
}

void Scheduler::Shutdown(absl::Duration drain_timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    accepting_ = false;
    if (!mu_.AwaitWithTimeout(absl::Condition(this, &Scheduler::Drained),
                              drain_timeout)) {
      LOG(WARNING) << "drain timeout: stopping " << queue_.size()
                   << " queued and " << running_ << " running job(s)";
    }
    aborting_ = true;
    stopping_ = true;
  }
  for (const std::unique_ptr<Worker>& worker : workers_) {
    worker->denoise.join();
    worker->stages.join();
  }
  workers_.clear();
  // Workers take queued jobs down with them; without workers, do it here.
  std::deque<std::shared_ptr<Job>> left;
  {
    absl::MutexLock lock(&mu_);
    left.swap(queue_);
  }
  for (const auto& job : left) {
    job->sink().OnError(
        absl::UnavailableError("server shut down before the job started"));
  }
}

std::vector<WorkerId> Scheduler::workers() const {
  // workers_ changes only in the constructor and in Shutdown, after which
  // there are none to report.
  std::vector<WorkerId> ids;
  for (const std::unique_ptr<Worker>& worker : workers_) {
    ids.push_back(worker->id);
  }
  return ids;
}

int Scheduler::queue_depth() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

int Scheduler::running_jobs() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

bool Scheduler::HasWorkFor(const Worker& worker) const {
  return stopping_ ||
         (!queue_.empty() && CopyOn(*queue_.front(), worker.device) != nullptr);
}

bool Scheduler::Drained() const { return queue_.empty() && running_ == 0; }

bool Scheduler::Aborting() const {
  absl::MutexLock lock(&mu_);
  return aborting_;
}

double Scheduler::EffectivePriority(const Job& job, absl::Time now) const {
  double priority = job.spec().priority;
  if (options_.priority_aging > absl::ZeroDuration()) {
    priority += std::floor((now - job.admitted_at()) / options_.priority_aging);
  }
  return priority;
}

void Scheduler::ReorderLocked(absl::Time now) {
  // Runs at every step boundary: nothing to order is the common case.
  if (queue_.size() < 2) return;
  std::vector<std::pair<double, std::shared_ptr<Job>>> keyed;
  keyed.reserve(queue_.size());
  for (const auto& job : queue_) {
    keyed.emplace_back(EffectivePriority(*job, now), job);
  }
  // Stable: equal priorities keep their arrival order.
  std::stable_sort(
      keyed.begin(), keyed.end(),
      [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; i < keyed.size(); ++i) {
    if (queue_[i] == keyed[i].second) continue;
    queue_[i] = std::move(keyed[i].second);
    queue_[i]->sink().OnQueued(static_cast<int>(i));
  }
}

void Scheduler::ReportQueuePositions() {
  for (size_t i = 0; i < queue_.size(); ++i) {
    queue_[i]->sink().OnQueued(static_cast<int>(i));
  }
}

std::vector<std::shared_ptr<Job>> Scheduler::AdmitLocked(
    const std::vector<std::shared_ptr<Job>>& running,
    const std::vector<std::shared_ptr<Job>>& encoding, const Worker& worker) {
  const bool idle = running.empty() && encoding.empty();
  // Request-level and unbatched modes only start work on an idle worker.
  if (options_.batching != Batching::kStep && !idle) return {};
  int images = 0;
  int64_t pixels = 0;
  for (const auto* jobs : {&running, &encoding}) {
    for (const auto& job : *jobs) {
      images += NumImages(*job);
      pixels += LatentPixelsOf(*job);
    }
  }
  ReorderLocked(absl::Now());
  // Both lists hold jobs of one batch key; any of them names it.
  const Job* key = idle              ? nullptr
                   : running.empty() ? encoding.front().get()
                                     : running.front().get();
  std::vector<std::shared_ptr<Job>> admitted;
  // FIFO: stop at the first job that cannot join, so none is overtaken.
  while (!queue_.empty()) {
    const std::shared_ptr<Job>& head = queue_.front();
    if (key != nullptr && !SameBatchKey(*key, *head)) break;
    if (CopyOn(*head, worker.device) == nullptr) break;
    const bool empty = images == 0;
    if (!empty && images + NumImages(*head) > options_.max_batch_images) {
      break;
    }
    if (!empty && options_.max_batch_latent_pixels > 0 &&
        pixels + LatentPixelsOf(*head) > options_.max_batch_latent_pixels) {
      break;
    }
    images += NumImages(*head);
    pixels += LatentPixelsOf(*head);
    if (key == nullptr) key = head.get();
    admitted.push_back(head);
    queue_.pop_front();
    if (options_.batching == Batching::kNone) break;
  }
  running_ += static_cast<int>(admitted.size());
  if (!admitted.empty()) ReportQueuePositions();
  return admitted;
}

void Scheduler::JobLeft() {
  absl::MutexLock lock(&mu_);
  --running_;
}

void Scheduler::FailJob(const std::shared_ptr<Job>& job, absl::Status status) {
  if (status.code() != absl::StatusCode::kCancelled &&
      status.code() != absl::StatusCode::kDeadlineExceeded) {
    LOG(WARNING) << "job " << job->id() << " failed: " << status;
  }
  job->running().prepared.reset();
  job->sink().OnError(std::move(status));
  JobLeft();
}

void Scheduler::FinishJob(const std::shared_ptr<Job>& job, JobResult result) {
  job->running().prepared.reset();
  job->sink().OnResult(std::move(result));
  JobLeft();
}

std::vector<absl::Status> Scheduler::StartJobs(
    const std::vector<std::shared_ptr<Job>>& jobs, const Worker& worker) {
  for (const std::shared_ptr<Job>& job : jobs) {
    Job::Running& running = job->running();
    running.model = CopyOn(*job, worker.device);
    running.started_at = absl::Now();
    running.timings.queue = running.started_at - job->admitted_at();
    job->sink().OnStarted(running.timings.queue);
    if (options_.observer != nullptr) {
      options_.observer->OnQueueWait(job->spec().model_name,
                                     running.timings.queue);
    }
  }
  std::vector<absl::Status> outcomes(jobs.size());
  if (jobs.empty()) return outcomes;
  // One model copy for all: a worker admits only jobs of its batch's key
  // while the batch (jobs running or encoding) is not empty, and it is not
  // while any are waiting here.
  const ldm::LatentDiffusion& model = *jobs.front()->running().model;
  std::vector<const ldm::GenerationRequest*> requests;
  for (const std::shared_ptr<Job>& job : jobs) {
    requests.push_back(&job->spec().request);
  }
  const absl::Time start = absl::Now();
  // Their adapters (one set: they share a batch key), bound to this copy
  // once for all of them; the text encoder runs with them too.
  std::shared_ptr<const ldm::BoundLoras> loras;
  if (const std::vector<LoraUse>& uses = jobs.front()->spec().loras;
      !uses.empty()) {
    std::vector<std::pair<std::shared_ptr<const ldm::LoraAdapter>, double>>
        adapters;
    adapters.reserve(uses.size());
    for (const LoraUse& use : uses) {
      adapters.emplace_back(use.adapter, use.weight);
    }
    absl::StatusOr<std::shared_ptr<const ldm::BoundLoras>> bound =
        ldm::BindLoras(model, adapters);
    if (!bound.ok()) {
      for (absl::Status& outcome : outcomes) outcome = bound.status();
      return outcomes;
    }
    loras = *std::move(bound);
    for (const std::shared_ptr<Job>& job : jobs) job->running().loras = loras;
  }
  ldm::ScopedLowRankUpdates active(loras ? &loras->updates : nullptr);
  std::vector<absl::StatusOr<ldm::PreparedJob>> prepared =
      model.PrepareJobs(requests);
  const absl::Time end = absl::Now();
  if (options_.observer != nullptr) {
    options_.observer->OnStage(worker.id, "encode", end - start);
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (!prepared[i].ok()) {
      outcomes[i] = prepared[i].status();
      continue;
    }
    Job::Running& running = jobs[i]->running();
    running.prepared =
        std::make_unique<ldm::PreparedJob>(*std::move(prepared[i]));
    running.timings.encode = end - running.started_at;
  }
  return outcomes;
}

void Scheduler::DenoiseLoop(Worker& worker) {
  // OpenMP's thread count is per calling thread: without this, ops that
  // bypass ATen's lazy set-up (oneDNN's convolutions) use every core here.
  at::init_num_threads();
  std::vector<std::shared_ptr<Job>> running;
  // Admitted and handed to the stage thread, not back yet.
  std::vector<std::shared_ptr<Job>> encoding;
  while (true) {
    std::vector<std::shared_ptr<Job>> admitted;
    bool aborting = false;
    {
      absl::MutexLock lock(&mu_);
      if (running.empty() && encoding.empty()) {
        auto has_work = [this, &worker]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return HasWorkFor(worker);
        };
        mu_.Await(absl::Condition(&has_work));
        if (stopping_ && queue_.empty()) break;
      }
      aborting = aborting_;
      if (aborting) {
        admitted.assign(queue_.begin(), queue_.end());
        running_ += static_cast<int>(queue_.size());
        queue_.clear();
      } else {
        admitted = AdmitLocked(running, encoding, worker);
      }
    }
    if (aborting) {
      // Jobs still encoding come back failed (the stage thread sees the
      // abort too) or join `running` and are failed next time round.
      for (auto& job : admitted) running.push_back(std::move(job));
      for (auto& job : running) {
        FailJob(job, absl::UnavailableError(
                         "server shut down before the job finished"));
      }
      running.clear();
      admitted.clear();
    }
    if (!admitted.empty()) {
      absl::MutexLock lock(&worker.mu);
      worker.to_encode.insert(worker.to_encode.end(), admitted.begin(),
                              admitted.end());
    }
    encoding.insert(encoding.end(), admitted.begin(), admitted.end());
    // Encoded jobs join at this step boundary. With nothing to step, wait:
    // in step mode for the first of them, else for all (jobs admitted
    // together start together).
    std::vector<Encoded> ready;
    {
      absl::MutexLock lock(&worker.mu);
      if (running.empty() && !encoding.empty()) {
        const size_t wanted =
            options_.batching == Batching::kStep ? 1 : encoding.size();
        auto enough = [&worker, wanted]()
                          ABSL_EXCLUSIVE_LOCKS_REQUIRED(worker.mu) {
                            return worker.encoded.size() >= wanted;
                          };
        worker.mu.Await(absl::Condition(&enough));
      }
      ready.swap(worker.encoded);
    }
    for (Encoded& encoded : ready) {
      encoding.erase(std::find(encoding.begin(), encoding.end(), encoded.job));
      if (encoded.status.ok()) {
        running.push_back(std::move(encoded.job));
      } else {
        FailJob(encoded.job, std::move(encoded.status));
      }
    }
    // Stopped jobs leave at the step boundary, before the next UNet call.
    const absl::Time now = absl::Now();
    auto stopped = std::stable_partition(
        running.begin(), running.end(), [now](const std::shared_ptr<Job>& job) {
          return job->StopReason(now).ok();
        });
    for (auto it = stopped; it != running.end(); ++it) {
      FailJob(*it, (*it)->StopReason(now));
    }
    running.erase(stopped, running.end());
    if (running.empty()) continue;
    std::vector<std::shared_ptr<Job>> finished = StepBatch(worker, running);
    if (!finished.empty()) {
      absl::MutexLock lock(&worker.mu);
      worker.to_decode.insert(worker.to_decode.end(), finished.begin(),
                              finished.end());
    }
  }
  absl::MutexLock lock(&worker.mu);
  worker.denoise_done = true;
}

void Scheduler::StageLoop(Worker& worker) {
  at::init_num_threads();  // As in DenoiseLoop.
  while (true) {
    std::vector<std::shared_ptr<Job>> to_encode, to_decode;
    {
      absl::MutexLock lock(&worker.mu);
      auto has_work = [&worker]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(worker.mu) {
        return !worker.to_encode.empty() || !worker.to_decode.empty() ||
               worker.denoise_done;
      };
      worker.mu.Await(absl::Condition(&has_work));
      // The denoise thread hands nothing more after it is done.
      if (worker.to_encode.empty() && worker.to_decode.empty()) return;
      to_encode.swap(worker.to_encode);
      to_decode.swap(worker.to_decode);
    }
    // Decodes first: those jobs need nothing else to end. One call per model.
    while (!to_decode.empty()) {
      const ldm::LatentDiffusion* model = to_decode.front()->running().model;
      auto others =
          std::stable_partition(to_decode.begin(), to_decode.end(),
                                [model](const std::shared_ptr<Job>& job) {
                                  return job->running().model == model;
                                });
      DecodeAndFinish(worker, {to_decode.begin(), others});
      to_decode.erase(to_decode.begin(), others);
    }
    if (to_encode.empty()) continue;
    // Handed back together, so that jobs admitted together join together.
    const bool aborting = Aborting();
    std::vector<Encoded> encoded;
    std::vector<std::shared_ptr<Job>> starting;
    for (std::shared_ptr<Job>& job : to_encode) {
      absl::Status status = aborting
                                ? absl::UnavailableError(
                                      "server shut down before the job started")
                                : job->StopReason(absl::Now());
      if (status.ok()) {
        starting.push_back(std::move(job));
      } else {
        encoded.push_back({std::move(job), std::move(status)});
      }
    }
    std::vector<absl::Status> outcomes = StartJobs(starting, worker);
    for (size_t i = 0; i < starting.size(); ++i) {
      encoded.push_back({std::move(starting[i]), std::move(outcomes[i])});
    }
    absl::MutexLock lock(&worker.mu);
    worker.encoded.insert(worker.encoded.end(),
                          std::make_move_iterator(encoded.begin()),
                          std::make_move_iterator(encoded.end()));
  }
}

std::vector<absl::Status> Scheduler::StepWithRetry(
    const ldm::LatentDiffusion& model,
    const std::vector<ldm::ImageTask*>& tasks) {
  absl::Status status;
  if (test_hooks_.step_fault) {
    status = test_hooks_.step_fault(tasks.size());
  }
  if (status.ok()) status = model.DenoiseStep(tasks);
  if (status.code() == absl::StatusCode::kResourceExhausted &&
      tasks.size() > 1) {
    LOG(WARNING) << "out of memory with " << tasks.size()
                 << " images in a call; retrying in halves";
    const auto middle = tasks.begin() + static_cast<int64_t>(tasks.size() / 2);
    std::vector<absl::Status> outcomes = StepWithRetry(
        model, std::vector<ldm::ImageTask*>(tasks.begin(), middle));
    std::vector<absl::Status> rest =
        StepWithRetry(model, std::vector<ldm::ImageTask*>(middle, tasks.end()));
    outcomes.insert(outcomes.end(), rest.begin(), rest.end());
    return outcomes;
  }
  return std::vector<absl::Status>(tasks.size(), status);
}

std::vector<std::shared_ptr<Job>> Scheduler::StepBatch(
    const Worker& worker, std::vector<std::shared_ptr<Job>>& running) {
  std::vector<ldm::ImageTask*> tasks;
  for (const auto& job : running) {
    for (ldm::ImageTask& image : job->running().prepared->images) {
      tasks.push_back(&image);
    }
  }
  const ldm::LatentDiffusion& model = *running.front()->running().model;
  const ldm::BoundLoras* loras = running.front()->running().loras.get();
  const absl::Time step_start = absl::Now();
  std::vector<absl::Status> outcomes;
  {
    ldm::ScopedLowRankUpdates active(loras ? &loras->updates : nullptr);
    outcomes = StepWithRetry(model, tasks);
  }
  const absl::Time step_end = absl::Now();
  if (options_.observer != nullptr) {
    options_.observer->OnDenoiseCall(
        worker.id, running.front()->spec().model_name,
        static_cast<int>(running.size()), static_cast<int>(tasks.size()),
        step_end - step_start);
  }
  // A failed call fails only the jobs in it; the worker keeps serving.
  size_t task_index = 0;
  std::vector<std::shared_ptr<Job>> stepped;
  for (const auto& job : running) {
    absl::Status status;
    for (size_t i = 0; i < job->running().prepared->images.size(); ++i) {
      if (status.ok()) status = outcomes[task_index];
      ++task_index;
    }
    if (status.ok()) {
      stepped.push_back(job);
    } else {
      FailJob(job, status);
    }
  }
  running = std::move(stepped);
  std::vector<std::shared_ptr<Job>> finished;
  std::vector<std::shared_ptr<Job>> continuing;
  for (const auto& job : running) {
    Job::Running& state = job->running();
    const JobSpec& spec = job->spec();
    state.timings.denoise += step_end - step_start;
    const ldm::PreparedJob& prepared = *state.prepared;
    ProgressEvent event;
    event.step = prepared.steps_done();
    event.total_steps = prepared.total_steps();
    event.elapsed = step_end - state.started_at;
    event.estimated_remaining =
        state.timings.denoise / event.step * (event.total_steps - event.step);
    const bool last = prepared.done();
    if (spec.preview_every > 0 && event.step % spec.preview_every == 0) {
      absl::StatusOr<ldm::RgbImage> preview = model.Preview(prepared);
      if (preview.ok()) event.preview = *std::move(preview);
    }
    if (last || event.step % std::max(1, spec.progress_every) == 0 ||
        event.preview.has_value()) {
      job->sink().OnProgress(event);
    }
    (last ? finished : continuing).push_back(job);
  }
  running = std::move(continuing);
  return finished;
}

void Scheduler::DecodeAndFinish(
    const Worker& worker, const std::vector<std::shared_ptr<Job>>& finished) {
  const ldm::LatentDiffusion& model = *finished.front()->running().model;
  std::vector<const ldm::PreparedJob*> prepared;
  for (const auto& job : finished) {
    prepared.push_back(job->running().prepared.get());
  }
  if (test_hooks_.before_decode) test_hooks_.before_decode();
  const absl::Time decode_start = absl::Now();
  absl::StatusOr<std::vector<std::vector<ldm::RgbImage>>> images;
  {
    const ldm::ScopedSideStream side(model.device(),
                                     options_.decode_on_side_stream);
    images = model.FinishJobs(prepared);
  }
  const absl::Time decode_end = absl::Now();
  if (options_.observer != nullptr) {
    options_.observer->OnStage(worker.id, "decode", decode_end - decode_start);
  }
  for (size_t i = 0; i < finished.size(); ++i) {
    const std::shared_ptr<Job>& job = finished[i];
    if (!images.ok()) {
      FailJob(job, images.status());
      continue;
    }
    const JobSpec& spec = job->spec();
    JobResult result;
    result.model_name = spec.model_name;
    result.images = std::move((*images)[i]);
    for (int image = 0; image < spec.request.num_images; ++image) {
      result.seeds.push_back(ldm::ImageSeed(spec.request.seed, image));
    }
    result.timings = job->running().timings;
    result.timings.decode = decode_end - decode_start;
    result.timings.total = decode_end - job->admitted_at();
    result.warnings = job->running().prepared->warnings;
    FinishJob(job, std::move(result));
  }
}

}  // namespace ldmserve
