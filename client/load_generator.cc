#include "client/load_generator.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

namespace ldmctl {
namespace {

// One whole streaming call; latency runs from `arrival`.
Outcome RunOne(ldm::v1::ImageSynthesisService::Stub& stub,
               const LoadOptions& options, const RequestBuilder& build,
               int64_t index, absl::Time arrival) {
  Outcome outcome;
  ldm::v1::GenerateRequest request;
  if (!build(PlanRequest(options, index), &request)) {
    outcome.code = "INVALID_ARGUMENT";
    return outcome;
  }
  grpc::ClientContext context;
  if (options.timeout_seconds > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(static_cast<int64_t>(
                             options.timeout_seconds * 1000)));
  }
  auto reader = stub.Generate(&context, request);
  ldm::v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (response.has_result()) {
      outcome.images = response.result().images_size();
    }
  }
  const grpc::Status status = reader->Finish();
  outcome.code = StatusCodeName(status.error_code());
  outcome.latency_seconds = absl::ToDoubleSeconds(absl::Now() - arrival);
  return outcome;
}

}  // namespace

LoadReport RunLoad(ldm::v1::ImageSynthesisService::Stub& stub,
                   const LoadOptions& options, const RequestBuilder& build) {
  return RunLoadLoop(options, [&](int64_t index, absl::Time arrival) {
    return RunOne(stub, options, build, index, arrival);
  });
}

const char* StatusCodeName(int code) {
  switch (static_cast<grpc::StatusCode>(code)) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

}  // namespace ldmctl
