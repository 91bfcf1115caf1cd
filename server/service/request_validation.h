// Turns a GenerateRequest into a runtime JobSpec: every field is checked
// against the server's limits (INVALID_ARGUMENT naming the field and the
// limit), defaults are resolved, images are decoded once into the model
// library's plain types, and the model's own check (ldm::CheckRequest: task,
// size multiple, mask size) runs here, before the job is queued. Untrusted
// input never reaches the model unchecked.
#ifndef LDMSERVE_SERVER_SERVICE_REQUEST_VALIDATION_H_
#define LDMSERVE_SERVER_SERVICE_REQUEST_VALIDATION_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "ldm/v1/image_synthesis.pb.h"
#include "server/ldm/generation.h"
#include "server/runtime/job.h"

namespace ldmserve {

struct ServiceLimits {
  uint64_t max_pixels = 1 << 20;  // width * height of one image.
  uint32_t max_steps = 200;
  uint32_t max_images = 4;
  uint32_t max_prompt_bytes = 1000;
  uint32_t max_image_bytes = 16 << 20;
  // Either side of an input image or mask, read from its header.
  uint32_t max_image_side = 4096;
  // A whole request on the wire (gRPC refuses larger with
  // RESOURCE_EXHAUSTED before it is parsed): room for an image and a mask.
  uint32_t max_message_bytes = 64 << 20;
  uint32_t max_client_request_id_bytes = 128;
  uint32_t default_steps = 25;
  float default_guidance_scale = 7.5f;
  float max_guidance_scale = 30.0f;
};

// The task a request asks for; INVALID_ARGUMENT when none is set.
absl::StatusOr<ldm::Task> RequestedTask(
    const ldm::v1::GenerateRequest& request);

// Validates `request` for `model`. `random_seed` is used when the request
// leaves the seed at 0.
absl::StatusOr<JobSpec> ValidateRequest(const ldm::v1::GenerateRequest& request,
                                        const ldm::ModelCapabilities& model,
                                        const ServiceLimits& limits,
                                        uint64_t random_seed);

// The API's name for `task`.
ldm::v1::Task TaskToProto(ldm::Task task);
// nullopt for TASK_UNSPECIFIED and values this server does not know.
std::optional<ldm::Task> TaskFromProto(int task);

// The settings `spec` runs with, every default resolved (Result.settings).
ldm::v1::ResolvedSettings ResolvedSettingsOf(const JobSpec& spec);

// The generation parameters of image `seed` as AUTOMATIC1111 writes them
// into a PNG ("parameters"), so that other front ends read them.
std::string ParametersText(const ldm::v1::ResolvedSettings& settings,
                           uint64_t seed);

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_REQUEST_VALIDATION_H_
