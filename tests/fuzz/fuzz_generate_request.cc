// GenerateRequest bytes from the wire through parsing and validation: the
// result is a job within the limits or INVALID_ARGUMENT/FAILED_PRECONDITION
// with a message, never a crash.
#include <cstdint>

#include "ldm/v1/image_synthesis.pb.h"
#include "server/service/request_validation.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using ldmserve::fuzz::RequireClearStatus;

ldm::ModelCapabilities TextModel() {
  ldm::ModelCapabilities model;
  model.tasks = {ldm::Task::kTextToImage, ldm::Task::kImageToImage,
                 ldm::Task::kInpaint};
  model.native_width = model.native_height = 64;
  model.size_multiple = 16;
  model.downsampling_factor = 4;
  model.latent_height = model.latent_width = 16;
  return model;
}

ldm::ModelCapabilities UpscaleModel() {
  ldm::ModelCapabilities model;
  model.tasks = {ldm::Task::kSuperResolution};
  model.native_width = model.native_height = 64;
  model.size_multiple = 16;
  model.downsampling_factor = 4;
  model.latent_channels = 3;
  model.latent_height = model.latent_width = 16;
  model.default_eta = 1.0;
  return model;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ldm::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  absl::StatusOr<ldm::Task> task = ldmserve::RequestedTask(request);
  if (!task.ok()) {
    RequireClearStatus(task.status(), {absl::StatusCode::kInvalidArgument});
    return 0;
  }
  // Small limits keep each input fast; the checks are the same.
  ldmserve::ServiceLimits limits;
  limits.max_pixels = uint64_t{128} * 128;
  limits.max_image_side = 256;
  for (const ldm::ModelCapabilities& model : {TextModel(), UpscaleModel()}) {
    absl::StatusOr<ldmserve::JobSpec> spec =
        ldmserve::ValidateRequest(request, model, limits, 12345);
    if (!spec.ok()) {
      RequireClearStatus(spec.status(),
                         {absl::StatusCode::kInvalidArgument,
                          absl::StatusCode::kFailedPrecondition});
      continue;
    }
    // An admitted job is within every limit.
    const ldm::GenerationRequest& job = spec->request;
    LDM_FUZZ_CHECK(job.sampler.steps >= 1 &&
                   job.sampler.steps <= static_cast<int>(limits.max_steps));
    LDM_FUZZ_CHECK(job.num_images >= 1 &&
                   job.num_images <= static_cast<int>(limits.max_images));
    LDM_FUZZ_CHECK(job.prompt.size() <= limits.max_prompt_bytes);
    LDM_FUZZ_CHECK(job.seed != 0);
    LDM_FUZZ_CHECK(spec->geometry.width > 0 && spec->geometry.height > 0);
    LDM_FUZZ_CHECK(static_cast<uint64_t>(spec->geometry.width) *
                       static_cast<uint64_t>(spec->geometry.height) <=
                   limits.max_pixels);
    LDM_FUZZ_CHECK(spec->geometry.width % model.size_multiple == 0);
  }
  return 0;
}
