#include "server/service/image_synthesis_service.h"

#include <glog/logging.h>

#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "server/common/status_macros.h"

namespace ldmserve {
namespace {

using ldm::v1::GenerateResponse;

grpc::Status ToGrpc(const absl::Status& status) {
  // absl codes are gRPC codes.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

uint64_t RandomSeed() {
  static thread_local std::mt19937_64 generator(std::random_device{}());
  uint64_t seed = 0;
  while (seed == 0) seed = generator() >> 1;  // Fits int64 for JSON clients.
  return seed;
}

// A job id prefix of this process, random: a client holding an id from
// before a restart gets NOT_FOUND rather than another job (but for a 1 in
// 2^32 chance).
std::string ProcessJobIdPrefix() {
  std::mt19937_64 generator(std::random_device{}());
  return absl::StrFormat("job-%08x-", static_cast<uint32_t>(generator()));
}

class JobStreamReactor;

// A job's events on their way to one call (Generate or WatchJob): keeps one
// write in flight, coalesces progress (latest wins) so that slow readers
// never hold up a worker, never drops Queued/Started/Result, and finishes
// the call exactly once. Shared by the reactor (which gRPC deletes after
// OnDone) and the job (which may outlive the call).
class EventStream : public JobWatcher {
 public:
  explicit EventStream(JobStreamReactor* reactor) : reactor_(reactor) {}

  void Send(const GenerateResponse& event) override {
    absl::MutexLock lock(&mu_);
    if (ended_) return;
    // A progress event still waiting to be written is replaced, unless it
    // carries a preview the client asked for.
    if (event.has_progress() && !pending_.empty() &&
        pending_.back().has_progress() &&
        pending_.back().progress().preview_png().empty()) {
      pending_.back() = event;
    } else {
      pending_.push_back(event);
    }
    WriteNextLocked();
  }

  void End(const absl::Status& status,
           const GenerateResponse* result) override {
    absl::MutexLock lock(&mu_);
    if (ended_) return;
    ended_ = true;
    if (result != nullptr) {
      // A result is never coalesced away: it queues behind pending events.
      pending_.push_back(*result);
    } else if (!status.ok()) {
      // Nothing else matters to a failed call; end it promptly.
      pending_.clear();
    }
    final_status_ = ToGrpc(status);
    WriteNextLocked();
  }

  // The call is over for its client (cancelled, disconnected, past its
  // deadline): finish it with `status` now. Returns whether the job had not
  // ended yet from this stream's view.
  bool Abandon(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    const bool was_open = !ended_;
    ended_ = true;
    cancelled_ = true;
    pending_.clear();
    if (!final_status_) final_status_ = ToGrpc(status);
    WriteNextLocked();
    return was_open;
  }

  void OnWriteDone(bool ok);

 private:
  // Starts the next write or the Finish if nothing is in flight.
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  JobStreamReactor* reactor_ ABSL_GUARDED_BY(mu_);
  std::deque<GenerateResponse> pending_ ABSL_GUARDED_BY(mu_);
  // The message being written; gRPC reads it until OnWriteDone.
  GenerateResponse in_flight_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;     // Terminal event received.
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish called.
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> final_status_ ABSL_GUARDED_BY(mu_);
};

// The server side of a Generate or WatchJob call.
class JobStreamReactor : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  JobStreamReactor(grpc::CallbackServerContext* context, Scheduler* scheduler)
      : context_(context),
        scheduler_(scheduler),
        stream_(std::make_shared<EventStream>(this)) {}

  const std::shared_ptr<EventStream>& stream() const { return stream_; }

  // The call follows `job`. `cancel_job_on_disconnect`: whether the call's
  // end cancels the job (a Generate call unless it asked otherwise) or only
  // detaches from it (WatchJob).
  void Attach(std::shared_ptr<TrackedJob> job, bool cancel_job_on_disconnect) {
    absl::MutexLock lock(&mu_);
    job_ = std::move(job);
    cancel_job_on_disconnect_ = cancel_job_on_disconnect;
  }

  // Ends a call that never reached a job.
  void Reject(const absl::Status& status) { stream_->End(status, nullptr); }

  void OnWriteDone(bool ok) override {
    // Keeps the stream alive should Finish lead to OnDone (and our deletion)
    // before the call returns.
    std::shared_ptr<EventStream> stream = stream_;
    stream->OnWriteDone(ok);
  }

  void OnCancel() override {
    std::shared_ptr<TrackedJob> job;
    bool cancel_job = false;
    {
      absl::MutexLock lock(&mu_);
      job = job_;
      cancel_job = cancel_job_on_disconnect_;
    }
    // A client's deadline travels as a timeout, so our copy ends later by
    // the transit time, and the client's own cancel at its deadline can
    // reach us first: within this margin it is a deadline, not a cancel.
    constexpr absl::Duration kDeadlineMargin = absl::Milliseconds(100);
    const bool expired =
        absl::Now() + kDeadlineMargin >= absl::FromChrono(context_->deadline());
    const absl::Status reason =
        expired ? absl::DeadlineExceededError("deadline exceeded")
                : absl::CancelledError("cancelled by the client");
    if (job != nullptr) job->Unwatch(stream_.get());
    if (!stream_->Abandon(reason) || job == nullptr || !cancel_job) return;
    if (std::shared_ptr<Job> running = job->runtime_job()) {
      scheduler_->Cancel(running, reason);
    }
  }

  void OnDone() override { delete this; }

 private:
  grpc::CallbackServerContext* const context_;
  Scheduler* const scheduler_;
  const std::shared_ptr<EventStream> stream_;
  absl::Mutex mu_;
  std::shared_ptr<TrackedJob> job_ ABSL_GUARDED_BY(mu_);
  bool cancel_job_on_disconnect_ ABSL_GUARDED_BY(mu_) = true;
};

void EventStream::WriteNextLocked() {
  if (write_in_flight_ || finished_ || reactor_ == nullptr) return;
  if (!pending_.empty() && !cancelled_) {
    in_flight_ = std::move(pending_.front());
    pending_.pop_front();
    write_in_flight_ = true;
    // gRPC runs OnWriteDone on another thread, never inside StartWrite on
    // the callback API, so calling it under mu_ is safe.
    reactor_->StartWrite(&in_flight_);
    return;
  }
  if (final_status_) {
    finished_ = true;
    JobStreamReactor* reactor = reactor_;
    reactor_ = nullptr;
    reactor->Finish(*final_status_);
  }
}

void EventStream::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  write_in_flight_ = false;
  if (!ok) {
    // The client is gone; the cancellation reaches the job via OnCancel.
    cancelled_ = true;
    pending_.clear();
    if (!final_status_) {
      final_status_ = grpc::Status(grpc::StatusCode::CANCELLED,
                                   "stream closed by the client");
    }
  }
  WriteNextLocked();
}

// Finishes a CancelJob call once its job has ended (at its next step
// boundary when it was running).
class CancelWaiter : public JobWatcher {
 public:
  CancelWaiter(grpc::ServerUnaryReactor* reactor, ldm::v1::Job* response,
               std::shared_ptr<TrackedJob> job)
      : reactor_(reactor), response_(response), job_(std::move(job)) {}
  void Send(const GenerateResponse&) override {}
  void End(const absl::Status&, const GenerateResponse*) override {
    *response_ = job_->Describe(/*with_result=*/false);
    reactor_->Finish(grpc::Status::OK);
  }

 private:
  grpc::ServerUnaryReactor* const reactor_;
  ldm::v1::Job* const response_;
  const std::shared_ptr<TrackedJob> job_;
};

// At most this many bytes of job id: longer is no id of ours.
constexpr size_t kMaxJobIdBytes = 128;

absl::Status CheckJobId(const std::string& job_id) {
  if (job_id.empty()) return absl::InvalidArgumentError("job_id: required");
  if (job_id.size() > kMaxJobIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("job_id: at most ", kMaxJobIdBytes, " bytes"));
  }
  return absl::OkStatus();
}

// Running first, then the queue in order, then finished jobs, most recent
// first.
bool ListedBefore(const ldm::v1::Job& a, const ldm::v1::Job& b) {
  auto rank = [](const ldm::v1::Job& job) {
    switch (job.state()) {
      case ldm::v1::JOB_STATE_RUNNING:
        return 0;
      case ldm::v1::JOB_STATE_QUEUED:
        return 1;
      default:
        return 2;
    }
  };
  if (rank(a) != rank(b)) return rank(a) < rank(b);
  switch (a.state()) {
    case ldm::v1::JOB_STATE_RUNNING:
      return a.started_unix_ms() < b.started_unix_ms();
    case ldm::v1::JOB_STATE_QUEUED:
      return a.queue_position() < b.queue_position();
    default:
      return a.finished_unix_ms() > b.finished_unix_ms();
  }
}

// A model as ListModels and LoadModel show it.
ldm::v1::ModelInfo ModelInfoOf(const ModelRegistry::ModelStatus& status) {
  ldm::v1::ModelInfo info;
  info.set_name(status.entry.name);
  for (ldm::Task kind : status.entry.tasks) {
    info.add_tasks(TaskToProto(kind));
  }
  for (ldm::Task kind : status.entry.default_for) {
    info.add_default_for(TaskToProto(kind));
  }
  for (const std::string& device : status.entry.devices) {
    info.add_devices(device);
  }
  switch (status.state) {
    case ModelState::kLoading:
      info.set_state(ldm::v1::MODEL_STATE_LOADING);
      break;
    case ModelState::kReady:
      info.set_state(ldm::v1::MODEL_STATE_READY);
      break;
    case ModelState::kUnloading:
      info.set_state(ldm::v1::MODEL_STATE_UNLOADING);
      break;
    case ModelState::kFailed:
      info.set_state(ldm::v1::MODEL_STATE_FAILED);
      info.set_error(status.error);
      break;
  }
  // Placements and capabilities are set from READY until the model is gone.
  if (!status.placements.empty()) {
    const ldm::ModelCapabilities& model = status.capabilities;
    info.set_native_width(static_cast<uint32_t>(model.native_width));
    info.set_native_height(static_cast<uint32_t>(model.native_height));
    info.set_latent_channels(static_cast<uint32_t>(model.latent_channels));
    info.set_latent_height(static_cast<uint32_t>(model.latent_height));
    info.set_latent_width(static_cast<uint32_t>(model.latent_width));
    info.set_size_multiple(static_cast<uint32_t>(model.size_multiple));
  }
  for (const ModelPlacement& copy : status.placements) {
    ldm::v1::ModelPlacement* placement = info.add_placements();
    placement->set_device(copy.device);
    placement->set_dtype(copy.dtype);
    placement->set_vae_dtype(copy.vae_dtype);
    placement->set_text_dtype(copy.text_dtype);
    placement->set_weight_bytes(static_cast<uint64_t>(copy.weight_bytes));
  }
  return info;
}

}  // namespace

ImageSynthesisService::ImageSynthesisService(
    const ModelRegistry* models, Scheduler* scheduler, JobTracker* jobs,
    ServiceMetrics* metrics, ServiceLimits limits, AuthTokens* tokens,
    ModelAdmin* admin, LoraLibrary* loras)
    : models_(models),
      scheduler_(scheduler),
      jobs_(jobs),
      metrics_(metrics),
      limits_(limits),
      tokens_(tokens),
      admin_(admin),
      loras_(loras),
      job_id_prefix_(ProcessJobIdPrefix()) {}

absl::StatusOr<std::string> ImageSynthesisService::Authenticate(
    const grpc::CallbackServerContext& context) const {
  if (tokens_ == nullptr) return std::string();
  const auto& metadata = context.client_metadata();
  auto header = metadata.find("authorization");
  if (header == metadata.end()) {
    return absl::UnauthenticatedError(
        "this server needs a token: authorization: Bearer TOKEN");
  }
  absl::StatusOr<std::string> name = tokens_->Authenticate(
      absl::string_view(header->second.data(), header->second.size()));
  if (!name.ok()) {
    LOG_EVERY_N(WARNING, 100)
        << "refused a call from " << context.peer() << ": "
        << name.status().message() << " (" << google::COUNTER << " so far)";
  }
  return name;
}

grpc::ServerWriteReactor<GenerateResponse>* ImageSynthesisService::Generate(
    grpc::CallbackServerContext* context,
    const ldm::v1::GenerateRequest* request) {
  const std::string job_id =
      absl::StrCat(job_id_prefix_, next_job_.fetch_add(1));
  auto* reactor = new JobStreamReactor(context, scheduler_);
  // Every call, refused or not, is counted once by its job's end.
  auto tracked = std::make_shared<TrackedJob>(
      job_id, request->client_request_id(), metrics_, jobs_);
  reactor->Attach(tracked, request->has_cancel_on_disconnect()
                               ? request->cancel_on_disconnect()
                               : true);
  tracked->Watch(reactor->stream());
  absl::StatusOr<std::string> client = Authenticate(*context);
  if (!client.ok()) {
    tracked->Reject(client.status());
    return reactor;
  }
  if (tokens_ != nullptr) {
    absl::StatusOr<AuthTokens::Lease> lease = tokens_->Acquire(*client);
    if (!lease.ok()) {
      LOG_EVERY_N(WARNING, 100) << lease.status().message() << " ("
                                << google::COUNTER << " refusals so far)";
      // Named first, so that the refusal counts against the client.
      tracked->SetClient(*client, AuthTokens::Lease());
      tracked->Reject(lease.status());
      return reactor;
    }
    tracked->SetClient(*client, *std::move(lease));
  }
  absl::StatusOr<ldm::Task> task = RequestedTask(*request);
  if (!task.ok()) {
    tracked->Reject(task.status());
    return reactor;
  }
  // No model label until the registry has resolved one: a label holds only
  // names we serve, so that clients cannot create series.
  tracked->SetLabels("", std::string(ldm::TaskName(*task)));
  absl::StatusOr<std::shared_ptr<const ModelRegistry::Model>> model =
      models_->Find(request->model(), *task);
  if (!model.ok()) {
    tracked->Reject(model.status());
    return reactor;
  }
  absl::StatusOr<JobSpec> spec =
      ValidateRequest(*request, (*model)->capabilities, limits_, RandomSeed());
  if (!spec.ok()) {
    tracked->Reject(spec.status());
    return reactor;
  }
  if (!spec->loras.empty()) {
    absl::StatusOr<std::vector<LoraUse>> loras =
        loras_ == nullptr
            ? absl::FailedPreconditionError(
                  "loras: this server offers no LoRA adapters")
            : loras_->Resolve(std::move(spec->loras), *(*model)->model);
    if (!loras.ok()) {
      tracked->Reject(loras.status());
      return reactor;
    }
    spec->loras = *std::move(loras);
  }
  spec->model_name = (*model)->entry.name;
  tracked->SetLabels(spec->model_name, std::string(ldm::TaskName(*task)));
  tracked->SetSettings(ResolvedSettingsOf(*spec), spec->priority,
                       spec->encoding);
  auto job = std::make_shared<Job>(
      job_id, *std::move(spec), (*model)->Copies(), tracked,
      absl::FromChrono(context->deadline()), *model);
  tracked->SetRuntimeJob(job);
  // Sent with the first event: the id even to a client that reads only
  // headers.
  context->AddInitialMetadata("job-id", job_id);
  jobs_->Add(tracked);
  absl::Status admitted = scheduler_->Submit(job);
  if (!admitted.ok()) {
    jobs_->Remove(job_id);
    if (admitted.code() == absl::StatusCode::kResourceExhausted) {
      context->AddTrailingMetadata("retry-after-ms", "1000");
    }
    tracked->Reject(admitted);
  }
  return reactor;
}

std::optional<std::string> ImageSynthesisService::VisibleTo(
    const std::string& client) const {
  // Without tokens every caller sees every job.
  if (tokens_ == nullptr) return std::nullopt;
  return client;
}

grpc::ServerUnaryReactor* ImageSynthesisService::GetJob(
    grpc::CallbackServerContext* context, const ldm::v1::GetJobRequest* request,
    ldm::v1::GetJobResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::shared_ptr<TrackedJob>> job =
      FindJob(*context, request->job_id());
  if (!job.ok()) {
    reactor->Finish(ToGrpc(job.status()));
    return reactor;
  }
  *response->mutable_job() = (*job)->Describe(!request->omit_result());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<GenerateResponse>* ImageSynthesisService::WatchJob(
    grpc::CallbackServerContext* context,
    const ldm::v1::WatchJobRequest* request) {
  auto* reactor = new JobStreamReactor(context, scheduler_);
  absl::StatusOr<std::shared_ptr<TrackedJob>> job =
      FindJob(*context, request->job_id());
  if (!job.ok()) {
    reactor->Reject(job.status());
    return reactor;
  }
  reactor->Attach(*job, /*cancel_job_on_disconnect=*/false);
  (*job)->Watch(reactor->stream());
  return reactor;
}

grpc::ServerUnaryReactor* ImageSynthesisService::CancelJob(
    grpc::CallbackServerContext* context,
    const ldm::v1::CancelJobRequest* request,
    ldm::v1::CancelJobResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::shared_ptr<TrackedJob>> job =
      FindJob(*context, request->job_id());
  if (!job.ok()) {
    reactor->Finish(ToGrpc(job.status()));
    return reactor;
  }
  // Answered once the job has ended: at once when queued, at its next step
  // boundary when running, as it is when it already ended.
  (*job)->Watch(
      std::make_shared<CancelWaiter>(reactor, response->mutable_job(), *job));
  if (std::shared_ptr<Job> running = (*job)->runtime_job()) {
    scheduler_->Cancel(
        running, absl::CancelledError(absl::StrCat("cancelled by CancelJob")));
  }
  return reactor;
}

grpc::ServerUnaryReactor* ImageSynthesisService::ListJobs(
    grpc::CallbackServerContext* context,
    const ldm::v1::ListJobsRequest* request,
    ldm::v1::ListJobsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::string> client = Authenticate(*context);
  if (!client.ok()) {
    reactor->Finish(ToGrpc(client.status()));
    return reactor;
  }
  constexpr uint32_t kDefaultJobs = 100;
  constexpr uint32_t kMaxJobs = 1000;
  if (request->max_jobs() > kMaxJobs) {
    reactor->Finish(ToGrpc(absl::InvalidArgumentError(
        absl::StrCat("max_jobs: at most ", kMaxJobs))));
    return reactor;
  }
  absl::flat_hash_set<int> states;
  for (int state : request->states()) {
    if (state == ldm::v1::JOB_STATE_UNSPECIFIED ||
        !ldm::v1::JobState_IsValid(state)) {
      reactor->Finish(ToGrpc(absl::InvalidArgumentError(
          absl::StrCat("states: ", state, " is not a job state"))));
      return reactor;
    }
    states.insert(state);
  }
  std::vector<ldm::v1::Job> jobs;
  for (const std::shared_ptr<TrackedJob>& job :
       jobs_->List(VisibleTo(*client))) {
    ldm::v1::Job described = job->Describe(/*with_result=*/false);
    if (states.empty() || states.contains(described.state())) {
      jobs.push_back(std::move(described));
    }
  }
  std::stable_sort(jobs.begin(), jobs.end(), ListedBefore);
  response->set_total_matching(static_cast<uint32_t>(jobs.size()));
  const size_t limit =
      request->max_jobs() == 0 ? kDefaultJobs : request->max_jobs();
  for (size_t i = 0; i < jobs.size() && i < limit; ++i) {
    *response->add_jobs() = std::move(jobs[i]);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

absl::Status ImageSynthesisService::CheckAdmin(
    const grpc::CallbackServerContext& context) const {
  LDM_ASSIGN_OR_RETURN(std::string client, Authenticate(context));
  if (admin_ == nullptr) {
    return absl::FailedPreconditionError(
        "loading and unloading models is off on this server");
  }
  return admin_->CheckAllowed(client, tokens_ != nullptr);
}

int ImageSynthesisService::JobsOfModel(const std::string& name, bool cancel) {
  int jobs = 0;
  for (const std::shared_ptr<TrackedJob>& tracked :
       jobs_->List(/*client=*/std::nullopt)) {
    std::shared_ptr<Job> job = tracked->runtime_job();
    if (job == nullptr || job->spec().model_name != name) continue;
    ++jobs;
    if (cancel) {
      scheduler_->Cancel(job, absl::CancelledError(absl::StrCat(
                                  "model ", name, " is being unloaded")));
    }
  }
  return jobs;
}

void ImageSynthesisService::RunAdmin(grpc::ServerUnaryReactor* reactor,
                                     std::function<absl::Status()> work) {
  admin_->Post([reactor, work = std::move(work)](bool stopping) {
    reactor->Finish(
        ToGrpc(stopping ? absl::UnavailableError("the server is shutting down")
                        : work()));
  });
}

grpc::ServerUnaryReactor* ImageSynthesisService::LoadModel(
    grpc::CallbackServerContext* context,
    const ldm::v1::LoadModelRequest* request,
    ldm::v1::LoadModelResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status allowed = CheckAdmin(*context); !allowed.ok()) {
    reactor->Finish(ToGrpc(allowed));
    return reactor;
  }
  absl::StatusOr<ModelEntry> entry = admin_->EntryFor(*request);
  if (!entry.ok()) {
    reactor->Finish(ToGrpc(entry.status()));
    return reactor;
  }
  LOG(INFO) << "LoadModel " << entry->name << " from " << entry->weights_path
            << " (" << context->peer() << ")";
  RunAdmin(reactor, [this, response, entry = *std::move(entry)] {
    absl::Status loaded = admin_->models().Load(entry, admin_->options().load);
    if (!loaded.ok()) {
      LOG(WARNING) << "LoadModel " << entry.name << ": " << loaded;
      return loaded;
    }
    for (const ModelRegistry::ModelStatus& status : models_->Snapshot()) {
      if (status.entry.name == entry.name) {
        *response->mutable_model() = ModelInfoOf(status);
      }
    }
    return absl::OkStatus();
  });
  return reactor;
}

grpc::ServerUnaryReactor* ImageSynthesisService::UnloadModel(
    grpc::CallbackServerContext* context,
    const ldm::v1::UnloadModelRequest* request,
    ldm::v1::UnloadModelResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status allowed = CheckAdmin(*context); !allowed.ok()) {
    reactor->Finish(ToGrpc(allowed));
    return reactor;
  }
  if (request->name().empty()) {
    reactor->Finish(ToGrpc(absl::InvalidArgumentError(
        "name: the model to unload (see ListModels)")));
    return reactor;
  }
  LOG(INFO) << "UnloadModel " << request->name()
            << (request->cancel_jobs() ? " cancelling its jobs" : "") << " ("
            << context->peer() << ")";
  RunAdmin(reactor, [this, response, name = request->name(),
                     cancel = request->cancel_jobs()] {
    int jobs = 0;
    absl::Status unloaded = admin_->models().Unload(
        name, [&] { jobs = JobsOfModel(name, cancel); });
    response->set_jobs_drained(static_cast<uint32_t>(jobs));
    return unloaded;
  });
  return reactor;
}

absl::StatusOr<std::shared_ptr<TrackedJob>> ImageSynthesisService::FindJob(
    const grpc::CallbackServerContext& context, const std::string& job_id) {
  LDM_ASSIGN_OR_RETURN(std::string client, Authenticate(context));
  LDM_RETURN_IF_ERROR(CheckJobId(job_id));
  return jobs_->Find(job_id, VisibleTo(client));
}

grpc::ServerUnaryReactor* ImageSynthesisService::ListModels(
    grpc::CallbackServerContext* context, const ldm::v1::ListModelsRequest*,
    ldm::v1::ListModelsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::StatusOr<std::string> client = Authenticate(*context);
      !client.ok()) {
    reactor->Finish(ToGrpc(client.status()));
    return reactor;
  }
  for (const ModelRegistry::ModelStatus& status : models_->Snapshot()) {
    *response->add_models() = ModelInfoOf(status);
  }
  if (admin_ != nullptr) {
    for (const DeviceModelMemory& device :
         models_->MemoryUse(admin_->options().load)) {
      ldm::v1::DeviceModelMemory* memory = response->add_model_memory();
      memory->set_device(device.device);
      memory->set_budget_bytes(static_cast<uint64_t>(device.budget_bytes));
      memory->set_used_bytes(static_cast<uint64_t>(device.used_bytes));
    }
  }
  if (loras_ != nullptr) {
    for (const std::string& name : loras_->Names()) response->add_loras(name);
  }
  ldm::v1::RequestLimits* limits = response->mutable_limits();
  limits->set_max_pixels(limits_.max_pixels);
  limits->set_max_image_side(limits_.max_image_side);
  limits->set_max_steps(limits_.max_steps);
  limits->set_max_images(limits_.max_images);
  limits->set_max_prompt_bytes(limits_.max_prompt_bytes);
  limits->set_max_image_bytes(limits_.max_image_bytes);
  limits->set_max_message_bytes(limits_.max_message_bytes);
  limits->set_max_guidance_scale(limits_.max_guidance_scale);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace ldmserve
