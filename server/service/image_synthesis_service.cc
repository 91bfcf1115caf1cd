#include "server/service/image_synthesis_service.h"

#include <glog/logging.h>

#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/service/png_codec.h"

namespace ldmserve {
namespace {

using ldm::v1::GenerateResponse;

grpc::Status ToGrpc(const absl::Status& status) {
  // absl codes are gRPC codes.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

uint64_t ToMillis(absl::Duration duration) {
  return static_cast<uint64_t>(
      std::max<int64_t>(0, absl::ToInt64Milliseconds(duration)));
}

uint64_t RandomSeed() {
  static thread_local std::mt19937_64 generator(std::random_device{}());
  uint64_t seed = 0;
  while (seed == 0) seed = generator() >> 1;  // Fits int64 for JSON clients.
  return seed;
}

class GenerateReactor;

// The job's sink and the call's write queue; shared by the reactor (which
// gRPC deletes after OnDone) and the job (which may outlive the call).
class GenerateStream : public JobSink {
 public:
  GenerateStream(GenerateReactor* reactor, std::string client_request_id,
                 std::string job_id, ServiceMetrics* metrics)
      : reactor_(reactor),
        client_request_id_(std::move(client_request_id)),
        job_id_(std::move(job_id)),
        metrics_(metrics),
        created_at_(absl::Now()) {}

  // JobSink.
  void OnQueued(int position) override {
    absl::MutexLock lock(&mu_);
    if (position == last_position_) return;
    last_position_ = position;
    NewEventLocked()->mutable_queued()->set_position(position);
    WriteNextLocked();
  }
  void OnStarted(absl::Duration queue_time) override {
    absl::MutexLock lock(&mu_);
    NewEventLocked()->mutable_started()->set_queue_time_ms(
        ToMillis(queue_time));
    WriteNextLocked();
  }
  void OnProgress(const ProgressEvent& event) override {
    std::string preview;
    if (event.preview.has_value()) {
      absl::StatusOr<std::string> png = EncodePng(*event.preview);
      if (png.ok()) preview = std::move(png).value();
    }
    absl::MutexLock lock(&mu_);
    // Latest wins: a progress event still waiting to be written is replaced,
    // unless it carries a preview the client asked for.
    GenerateResponse* response =
        (!pending_.empty() && pending_.back().has_progress() &&
         pending_.back().progress().preview_png().empty())
            ? &pending_.back()
            : NewEventLocked();
    ldm::v1::Progress* progress = response->mutable_progress();
    progress->set_step(event.step);
    progress->set_total_steps(event.total_steps);
    progress->set_elapsed_ms(ToMillis(event.elapsed));
    progress->set_estimated_remaining_ms(ToMillis(event.estimated_remaining));
    progress->set_preview_png(std::move(preview));
    WriteNextLocked();
  }
  void OnResult(JobResult result) override;
  void OnError(absl::Status status) override {
    absl::MutexLock lock(&mu_);
    EndLocked(ToGrpc(status), std::nullopt);
  }

  // Ends a call whose job was never admitted.
  void Reject(const absl::Status& status) { OnError(status); }
  // The model and task the call's metrics are labelled with.
  void SetLabels(std::string model, std::string task) {
    absl::MutexLock lock(&mu_);
    model_label_ = std::move(model);
    task_label_ = std::move(task);
  }
  // What the job runs with, for its Result and its images' metadata.
  void SetSettings(ldm::v1::ResolvedSettings settings) {
    absl::MutexLock lock(&mu_);
    settings_ = std::move(settings);
  }
  // The authenticated client and its slot, held until the call ends.
  void SetClient(std::string name, AuthTokens::Lease lease) {
    absl::MutexLock lock(&mu_);
    client_name_ = std::move(name);
    client_lease_ = std::move(lease);
  }
  void OnWriteDone(bool ok);

  // Marks the call cancelled; returns whether the job still needs stopping.
  bool MarkCancelled() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    return !ended_;
  }

 private:
  GenerateResponse* NewEventLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    pending_.emplace_back();
    pending_.back().set_client_request_id(client_request_id_);
    pending_.back().set_job_id(job_id_);
    return &pending_.back();
  }
  // The terminal event: an optional last message, then the status.
  void EndLocked(grpc::Status status,
                 std::optional<GenerateResponse> last_message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts the next write or the Finish if nothing is in flight.
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  GenerateReactor* reactor_ ABSL_GUARDED_BY(mu_);
  const std::string client_request_id_;
  const std::string job_id_;
  ServiceMetrics* const metrics_;
  const absl::Time created_at_;
  std::deque<GenerateResponse> pending_ ABSL_GUARDED_BY(mu_);
  // The message being written; gRPC reads it until OnWriteDone.
  GenerateResponse in_flight_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;     // Terminal event received.
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // Finish called.
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> final_status_ ABSL_GUARDED_BY(mu_);
  int last_position_ ABSL_GUARDED_BY(mu_) = -1;
  std::string model_label_ ABSL_GUARDED_BY(mu_);
  std::string task_label_ ABSL_GUARDED_BY(mu_);
  std::string client_name_ ABSL_GUARDED_BY(mu_);  // Empty: no tokens.
  ldm::v1::ResolvedSettings settings_ ABSL_GUARDED_BY(mu_);
  AuthTokens::Lease client_lease_ ABSL_GUARDED_BY(mu_);
};

class GenerateReactor : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  GenerateReactor(grpc::CallbackServerContext* context, Scheduler* scheduler,
                  std::string client_request_id, std::string job_id,
                  ServiceMetrics* metrics)
      : context_(context),
        scheduler_(scheduler),
        stream_(std::make_shared<GenerateStream>(
            this, std::move(client_request_id), std::move(job_id), metrics)) {}

  const std::shared_ptr<GenerateStream>& stream() const { return stream_; }

  void AttachJob(std::shared_ptr<Job> job) {
    absl::MutexLock lock(&mu_);
    job_ = std::move(job);
  }

  void OnWriteDone(bool ok) override {
    // Keeps the stream alive should Finish lead to OnDone (and our deletion)
    // before the call returns.
    std::shared_ptr<GenerateStream> stream = stream_;
    stream->OnWriteDone(ok);
  }

  void OnCancel() override {
    std::shared_ptr<Job> job;
    {
      absl::MutexLock lock(&mu_);
      job = job_;
    }
    if (!stream_->MarkCancelled() || job == nullptr) return;
    // A client's deadline travels as a timeout, so our copy ends later by
    // the transit time, and the client's own cancel at its deadline can
    // reach us first: within this margin it is a deadline, not a cancel.
    constexpr absl::Duration kDeadlineMargin = absl::Milliseconds(100);
    const bool expired =
        absl::Now() + kDeadlineMargin >= absl::FromChrono(context_->deadline());
    scheduler_->Cancel(
        job, expired ? absl::DeadlineExceededError("deadline exceeded")
                     : absl::CancelledError("cancelled by the client"));
  }

  void OnDone() override { delete this; }

 private:
  grpc::CallbackServerContext* const context_;
  Scheduler* const scheduler_;
  const std::shared_ptr<GenerateStream> stream_;
  absl::Mutex mu_;
  std::shared_ptr<Job> job_ ABSL_GUARDED_BY(mu_);
};

void GenerateStream::OnResult(JobResult result) {
  GenerateResponse last;
  last.set_client_request_id(client_request_id_);
  last.set_job_id(job_id_);
  ldm::v1::Result* out = last.mutable_result();
  out->set_model(result.model_name);
  {
    absl::MutexLock lock(&mu_);
    *out->mutable_settings() = settings_;
  }
  for (size_t i = 0; i < result.images.size(); ++i) {
    const RgbImage& image = result.images[i];
    std::string parameters = ParametersText(out->settings(), result.seeds[i]);
    absl::StatusOr<std::string> png =
        EncodePng(image, {{"parameters", parameters}});
    if (!png.ok()) {
      OnError(png.status());
      return;
    }
    ldm::v1::Image* entry = out->add_images();
    entry->set_data(std::move(png).value());
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
  metrics_->ImagesGenerated(static_cast<int>(result.images.size()));
  absl::MutexLock lock(&mu_);
  EndLocked(grpc::Status::OK, std::move(last));
}

void GenerateStream::EndLocked(grpc::Status status,
                               std::optional<GenerateResponse> last_message) {
  if (ended_) return;
  ended_ = true;
  // The job is over for its client: the slot is free for its next call
  // (before the metrics: a client that sees this call counted may reuse it).
  client_lease_.Release();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  metrics_->RequestEnded(model_label_, task_label_, code,
                         absl::Now() - created_at_);
  if (!client_name_.empty()) {
    metrics_->ClientRequestEnded(client_name_, code);
  }
  if (last_message) {
    // A result is never coalesced away: it queues behind pending events.
    pending_.push_back(std::move(*last_message));
  } else if (!status.ok()) {
    // Nothing else matters to a failed call; end it promptly.
    pending_.clear();
  }
  final_status_ = std::move(status);
  WriteNextLocked();
}

void GenerateStream::WriteNextLocked() {
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
    GenerateReactor* reactor = reactor_;
    reactor_ = nullptr;
    reactor->Finish(*final_status_);
  }
}

void GenerateStream::OnWriteDone(bool ok) {
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

}  // namespace

ImageSynthesisService::ImageSynthesisService(const ModelRegistry* models,
                                             Scheduler* scheduler,
                                             ServiceMetrics* metrics,
                                             ServiceLimits limits,
                                             AuthTokens* tokens)
    : models_(models),
      scheduler_(scheduler),
      metrics_(metrics),
      limits_(limits),
      tokens_(tokens) {}

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
  const std::string job_id = absl::StrCat("job-", next_job_.fetch_add(1));
  auto* reactor = new GenerateReactor(
      context, scheduler_, request->client_request_id(), job_id, metrics_);
  // A copy: a rejected call may be done (and the reactor deleted) before
  // Reject returns.
  std::shared_ptr<GenerateStream> stream = reactor->stream();
  absl::StatusOr<std::string> client = Authenticate(*context);
  if (!client.ok()) {
    stream->Reject(client.status());
    return reactor;
  }
  if (tokens_ != nullptr) {
    absl::StatusOr<AuthTokens::Lease> lease = tokens_->Acquire(*client);
    if (!lease.ok()) {
      LOG_EVERY_N(WARNING, 100) << lease.status().message() << " ("
                                << google::COUNTER << " refusals so far)";
      // Labelled first, so that the refusal counts against the client.
      stream->SetClient(*client, AuthTokens::Lease());
      stream->Reject(lease.status());
      return reactor;
    }
    stream->SetClient(*client, *std::move(lease));
  }
  absl::StatusOr<ldm::Task> task = RequestedTask(*request);
  if (!task.ok()) {
    stream->Reject(task.status());
    return reactor;
  }
  // No model label until the registry has resolved one: a label holds only
  // names we serve, so that clients cannot create series.
  stream->SetLabels("", std::string(ldm::TaskName(*task)));
  absl::StatusOr<const ModelRegistry::Model*> model =
      models_->Find(request->model(), *task);
  if (!model.ok()) {
    stream->Reject(model.status());
    return reactor;
  }
  absl::StatusOr<JobSpec> spec =
      ValidateRequest(*request, (*model)->capabilities, limits_, RandomSeed());
  if (!spec.ok()) {
    stream->Reject(spec.status());
    return reactor;
  }
  spec->model_name = (*model)->entry.name;
  stream->SetLabels(spec->model_name, std::string(ldm::TaskName(*task)));
  stream->SetSettings(ResolvedSettingsOf(*spec));
  auto job =
      std::make_shared<Job>(job_id, *std::move(spec), (*model)->Copies(),
                            stream, absl::FromChrono(context->deadline()));
  reactor->AttachJob(job);
  absl::Status admitted = scheduler_->Submit(job);
  if (!admitted.ok()) {
    if (admitted.code() == absl::StatusCode::kResourceExhausted) {
      context->AddTrailingMetadata("retry-after-ms", "1000");
    }
    stream->Reject(admitted);
  }
  return reactor;
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
    ldm::v1::ModelInfo* info = response->add_models();
    info->set_name(status.entry.name);
    for (ldm::Task kind : status.entry.tasks)
      info->add_tasks(TaskToProto(kind));
    for (ldm::Task kind : status.entry.default_for) {
      info->add_default_for(TaskToProto(kind));
    }
    for (const std::string& device : status.entry.devices) {
      info->add_devices(device);
    }
    switch (status.state) {
      case ModelState::kLoading:
        info->set_state(ldm::v1::MODEL_STATE_LOADING);
        break;
      case ModelState::kReady:
        info->set_state(ldm::v1::MODEL_STATE_READY);
        break;
      case ModelState::kFailed:
        info->set_state(ldm::v1::MODEL_STATE_FAILED);
        info->set_error(status.error);
        break;
    }
    if (status.state == ModelState::kReady) {
      const ldm::ModelCapabilities& model = status.capabilities;
      info->set_native_width(static_cast<uint32_t>(model.native_width));
      info->set_native_height(static_cast<uint32_t>(model.native_height));
      info->set_latent_channels(static_cast<uint32_t>(model.latent_channels));
      info->set_latent_height(static_cast<uint32_t>(model.latent_height));
      info->set_latent_width(static_cast<uint32_t>(model.latent_width));
      info->set_size_multiple(static_cast<uint32_t>(model.size_multiple));
    }
    for (const ModelPlacement& copy : status.placements) {
      ldm::v1::ModelPlacement* placement = info->add_placements();
      placement->set_device(copy.device);
      placement->set_dtype(copy.dtype);
      placement->set_vae_dtype(copy.vae_dtype);
      placement->set_text_dtype(copy.text_dtype);
    }
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
