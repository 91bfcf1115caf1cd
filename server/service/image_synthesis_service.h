// The gRPC service ldm.v1.ImageSynthesisService on the callback API.
//
// Generate: one reactor per call. The reactor validates the request, hands a
// Job to the Scheduler and returns at once; the job's events reach the
// client through a per-call GenerateStream (the job's sink), which keeps one
// write in flight, coalesces progress (latest wins) so that slow readers
// never hold up a worker, never drops Queued/Started/Result, and calls Finish
// exactly once. Client cancellation and deadlines stop the job at its next
// step boundary.
//
// With AuthTokens, every call of this service carries a bearer token
// (UNAUTHENTICATED otherwise) and a client's Generate calls in flight are
// bounded by its MAX_JOBS (RESOURCE_EXHAUSTED); health and reflection are
// other services and stay open.
#ifndef LDMSERVE_SERVER_SERVICE_IMAGE_SYNTHESIS_SERVICE_H_
#define LDMSERVE_SERVER_SERVICE_IMAGE_SYNTHESIS_SERVICE_H_

#include <atomic>
#include <cstdint>

#include "ldm/v1/image_synthesis.grpc.pb.h"
#include "server/runtime/model_registry.h"
#include "server/runtime/scheduler.h"
#include "server/service/auth_tokens.h"
#include "server/service/metrics.h"
#include "server/service/request_validation.h"

namespace ldmserve {

class ImageSynthesisService final
    : public ldm::v1::ImageSynthesisService::CallbackService {
 public:
  // All pointers must outlive the service; `tokens` null = no
  // authentication.
  ImageSynthesisService(const ModelRegistry* models, Scheduler* scheduler,
                        ServiceMetrics* metrics, ServiceLimits limits,
                        AuthTokens* tokens = nullptr);

  grpc::ServerWriteReactor<ldm::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context,
      const ldm::v1::GenerateRequest* request) override;

  grpc::ServerUnaryReactor* ListModels(
      grpc::CallbackServerContext* context,
      const ldm::v1::ListModelsRequest* request,
      ldm::v1::ListModelsResponse* response) override;

 private:
  const ModelRegistry* models_;
  Scheduler* scheduler_;
  ServiceMetrics* metrics_;
  // The caller's client name ("" without tokens) or UNAUTHENTICATED.
  absl::StatusOr<std::string> Authenticate(
      const grpc::CallbackServerContext& context) const;

  const ServiceLimits limits_;
  AuthTokens* const tokens_;
  std::atomic<uint64_t> next_job_ = 1;
};

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_IMAGE_SYNTHESIS_SERVICE_H_
