#include "server/service/request_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace ldmserve {
namespace {

using ldm::v1::GenerateRequest;

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

// Latent sides must survive every UNet downsampling exactly, so pixel sides
// are multiples of f * 2^(levels - 1).
int64_t SizeMultiple(const ldm::ModelConfig& model) {
  return model.ae.DownsamplingFactor() *
         (int64_t{1} << (model.unet.channel_mult.size() - 1));
}

absl::StatusOr<int64_t> ValidateSide(const char* field, bool has_value,
                                     uint32_t value, int64_t native,
                                     int64_t multiple) {
  if (!has_value) return native;
  if (value == 0 || value % multiple != 0) {
    return Invalid(field, absl::StrCat("must be a positive multiple of ",
                                       multiple, " (got ", value, ")"));
  }
  return static_cast<int64_t>(value);
}

}  // namespace

absl::StatusOr<TaskKind> RequestedTask(const GenerateRequest& request) {
  switch (request.task_case()) {
    case GenerateRequest::kTextToImage:
      return TaskKind::kTextToImage;
    case GenerateRequest::kImageToImage:
      return TaskKind::kImageToImage;
    case GenerateRequest::kInpaint:
      return TaskKind::kInpaint;
    case GenerateRequest::kSuperResolution:
      return TaskKind::kSuperResolution;
    case GenerateRequest::TASK_NOT_SET:
      break;
  }
  return Invalid("task",
                 "set one of text_to_image, image_to_image, "
                 "inpaint, super_resolution");
}

absl::StatusOr<JobSpec> ValidateRequest(const GenerateRequest& request,
                                        const ldm::ModelConfig& model,
                                        const ServiceLimits& limits,
                                        uint64_t random_seed) {
  JobSpec spec;
  auto task = RequestedTask(request);
  if (!task.ok()) return task.status();
  spec.task = *task;
  if (spec.task != TaskKind::kTextToImage) {
    return absl::FailedPreconditionError(
        absl::StrCat("task ", TaskKindName(spec.task), " is not served yet"));
  }
  if (request.client_request_id().size() > limits.max_client_request_id_bytes) {
    return Invalid(
        "client_request_id",
        absl::StrCat("at most ", limits.max_client_request_id_bytes, " bytes"));
  }
  spec.client_request_id = request.client_request_id();

  const ldm::v1::TextToImage& text = request.text_to_image();
  for (const auto& [field, value] :
       {std::pair<const char*, const std::string*>{"text_to_image.prompt",
                                                   &text.prompt()},
        {"text_to_image.negative_prompt", &text.negative_prompt()}}) {
    if (value->size() > limits.max_prompt_bytes) {
      return Invalid(field, absl::StrCat("at most ", limits.max_prompt_bytes,
                                         " bytes (got ", value->size(), ")"));
    }
  }
  spec.prompt = text.prompt();
  spec.negative_prompt = text.negative_prompt();

  const int64_t multiple = SizeMultiple(model);
  auto width = ValidateSide("text_to_image.width", text.has_width(),
                            text.width(), model.native_width(), multiple);
  if (!width.ok()) return width.status();
  auto height = ValidateSide("text_to_image.height", text.has_height(),
                             text.height(), model.native_height(), multiple);
  if (!height.ok()) return height.status();
  if (static_cast<uint64_t>(*width) * static_cast<uint64_t>(*height) >
      limits.max_pixels) {
    return Invalid("text_to_image.width",
                   absl::StrCat("width * height at most ", limits.max_pixels,
                                " pixels (got ", *width, "x", *height, ")"));
  }
  const int64_t f = model.ae.DownsamplingFactor();
  spec.latent_width = *width / f;
  spec.latent_height = *height / f;

  const ldm::v1::SamplerSettings& sampler = request.sampler();
  switch (sampler.kind()) {
    case ldm::v1::SAMPLER_KIND_UNSPECIFIED:
    case ldm::v1::SAMPLER_KIND_DDIM:
      spec.sampler.kind = ldm::SamplerKind::kDdim;
      break;
    case ldm::v1::SAMPLER_KIND_PLMS:
      spec.sampler.kind = ldm::SamplerKind::kPlms;
      break;
    case ldm::v1::SAMPLER_KIND_DDPM:
      spec.sampler.kind = ldm::SamplerKind::kDdpm;
      break;
    case ldm::v1::SAMPLER_KIND_EULER_ANCESTRAL:
      spec.sampler.kind = ldm::SamplerKind::kEulerAncestral;
      break;
    case ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2M:
      spec.sampler.kind = ldm::SamplerKind::kDpmSolverPP2M;
      break;
    default:
      return Invalid("sampler.kind",
                     absl::StrCat("unknown value ", sampler.kind()));
  }
  if (sampler.steps() > limits.max_steps) {
    return Invalid("sampler.steps",
                   absl::StrCat("at most ", limits.max_steps, " (got ",
                                sampler.steps(), ")"));
  }
  spec.sampler.steps = sampler.steps() == 0
                           ? static_cast<int>(limits.default_steps)
                           : static_cast<int>(sampler.steps());
  if (!(sampler.eta() >= 0.0f && sampler.eta() <= 1.0f)) {
    return Invalid("sampler.eta", "must be in [0, 1]");
  }
  if (sampler.eta() != 0.0f && spec.sampler.kind != ldm::SamplerKind::kDdim) {
    return Invalid("sampler.eta", "only DDIM takes eta; leave it 0");
  }
  spec.sampler.eta = sampler.eta();
  if (!(sampler.guidance_scale() >= 0.0f &&
        sampler.guidance_scale() <= limits.max_guidance_scale)) {
    return Invalid(
        "sampler.guidance_scale",
        absl::StrCat("must be in [0, ", limits.max_guidance_scale, "]"));
  }
  spec.sampler.guidance_scale = sampler.guidance_scale() == 0.0f
                                    ? limits.default_guidance_scale
                                    : sampler.guidance_scale();

  if (request.num_images() > limits.max_images) {
    return Invalid("num_images",
                   absl::StrCat("at most ", limits.max_images, " (got ",
                                request.num_images(), ")"));
  }
  spec.num_images =
      request.num_images() == 0 ? 1 : static_cast<int>(request.num_images());
  spec.seed = request.seed() == 0 ? random_seed : request.seed();
  spec.preview_every = static_cast<int>(
      std::min<uint32_t>(request.preview_every(), limits.max_steps));
  spec.progress_every = static_cast<int>(std::max<uint32_t>(
      1, std::min<uint32_t>(request.progress_every(), limits.max_steps)));
  if (request.output_format() != ldm::v1::IMAGE_FORMAT_UNSPECIFIED &&
      request.output_format() != ldm::v1::IMAGE_FORMAT_PNG) {
    return Invalid("output_format", "only IMAGE_FORMAT_PNG is served");
  }
  return spec;
}

}  // namespace ldmserve
