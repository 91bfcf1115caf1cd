// The gRPC service ldm.v1.ImageSynthesisService on the callback API.
//
// Generate and WatchJob: one reactor per call. Generate validates the
// request, hands a Job to the Scheduler and returns at once. The job's
// events go to its TrackedJob (job_tracker.h), which keeps them for GetJob
// and ListJobs and passes them on to every call watching the job; each
// call's stream keeps one write in flight, coalesces progress (latest wins)
// so that slow readers never hold up a worker, never drops
// Queued/Started/Result, and finishes exactly once. A Generate call's end
// (cancel, deadline, broken stream) stops its job at the next step boundary
// unless the request set cancel_on_disconnect = false; a WatchJob call's
// end only detaches it.
//
// With AuthTokens, every call of this service carries a bearer token
// (UNAUTHENTICATED otherwise), a client's jobs in flight are bounded by its
// MAX_JOBS (RESOURCE_EXHAUSTED), and it sees and cancels only its own jobs;
// health and reflection are other services and stay open.
#ifndef LDMSERVE_SERVER_SERVICE_IMAGE_SYNTHESIS_SERVICE_H_
#define LDMSERVE_SERVER_SERVICE_IMAGE_SYNTHESIS_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "ldm/v1/image_synthesis.grpc.pb.h"
#include "server/runtime/lora_library.h"
#include "server/runtime/model_registry.h"
#include "server/runtime/scheduler.h"
#include "server/service/auth_tokens.h"
#include "server/service/job_tracker.h"
#include "server/service/metrics.h"
#include "server/service/model_admin.h"
#include "server/service/request_validation.h"

namespace ldmserve {

class ImageSynthesisService final
    : public ldm::v1::ImageSynthesisService::CallbackService {
 public:
  // All pointers must outlive the service; `tokens` null = no
  // authentication; `admin` null = no LoadModel/UnloadModel; `loras` null =
  // no LoRA adapters.
  ImageSynthesisService(const ModelRegistry* models, Scheduler* scheduler,
                        JobTracker* jobs, ServiceMetrics* metrics,
                        ServiceLimits limits, AuthTokens* tokens = nullptr,
                        ModelAdmin* admin = nullptr,
                        LoraLibrary* loras = nullptr);

  grpc::ServerWriteReactor<ldm::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context,
      const ldm::v1::GenerateRequest* request) override;

  grpc::ServerUnaryReactor* ListModels(
      grpc::CallbackServerContext* context,
      const ldm::v1::ListModelsRequest* request,
      ldm::v1::ListModelsResponse* response) override;

  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const ldm::v1::GetJobRequest* request,
                                   ldm::v1::GetJobResponse* response) override;

  grpc::ServerWriteReactor<ldm::v1::GenerateResponse>* WatchJob(
      grpc::CallbackServerContext* context,
      const ldm::v1::WatchJobRequest* request) override;

  grpc::ServerUnaryReactor* CancelJob(
      grpc::CallbackServerContext* context,
      const ldm::v1::CancelJobRequest* request,
      ldm::v1::CancelJobResponse* response) override;

  grpc::ServerUnaryReactor* ListJobs(
      grpc::CallbackServerContext* context,
      const ldm::v1::ListJobsRequest* request,
      ldm::v1::ListJobsResponse* response) override;

  grpc::ServerUnaryReactor* LoadModel(
      grpc::CallbackServerContext* context,
      const ldm::v1::LoadModelRequest* request,
      ldm::v1::LoadModelResponse* response) override;

  grpc::ServerUnaryReactor* UnloadModel(
      grpc::CallbackServerContext* context,
      const ldm::v1::UnloadModelRequest* request,
      ldm::v1::UnloadModelResponse* response) override;

 private:
  // The caller's client name ("" without tokens) or UNAUTHENTICATED.
  absl::StatusOr<std::string> Authenticate(
      const grpc::CallbackServerContext& context) const;
  // Whose jobs `client` sees: its own with tokens, all without.
  std::optional<std::string> VisibleTo(const std::string& client) const;
  // The caller's job `job_id`: UNAUTHENTICATED, INVALID_ARGUMENT,
  // NOT_FOUND or PERMISSION_DENIED otherwise.
  absl::StatusOr<std::shared_ptr<TrackedJob>> FindJob(
      const grpc::CallbackServerContext& context, const std::string& job_id);
  // OK when the caller may load and unload models.
  absl::Status CheckAdmin(const grpc::CallbackServerContext& context) const;
  // Runs `work` on the admin's thread and finishes `reactor` with its
  // status (UNAVAILABLE, `work` not run, when the admin is shutting down).
  void RunAdmin(grpc::ServerUnaryReactor* reactor,
                std::function<absl::Status()> work);
  // Stops new work of model `name`: cancels its jobs when `cancel`. Returns
  // how many jobs it has queued or running.
  int JobsOfModel(const std::string& name, bool cancel);

  const ModelRegistry* models_;
  Scheduler* scheduler_;
  JobTracker* const jobs_;
  ServiceMetrics* metrics_;
  const ServiceLimits limits_;
  AuthTokens* const tokens_;
  ModelAdmin* const admin_;
  LoraLibrary* const loras_;  // Null: no adapters.
  const std::string job_id_prefix_;
  std::atomic<uint64_t> next_job_ = 1;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_IMAGE_SYNTHESIS_SERVICE_H_
