#include "server/service/request_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/ldm/image_tensor.h"
#include "server/service/png_codec.h"

namespace ldmserve {
namespace {

// GenerateRequest.priority's range.
constexpr int kMaxPriority = 10;

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

absl::Status ValidatePrompts(const char* task, const std::string& prompt,
                             const std::string& negative,
                             const ServiceLimits& limits,
                             ldm::JobRequest* job) {
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"prompt", &prompt},
        {"negative_prompt", &negative}}) {
    if (value->size() > limits.max_prompt_bytes) {
      return Invalid(absl::StrCat(task, ".", name),
                     absl::StrCat("at most ", limits.max_prompt_bytes,
                                  " bytes (got ", value->size(), ")"));
    }
  }
  job->prompt = prompt;
  job->negative_prompt = negative;
  return absl::OkStatus();
}

absl::Status CheckPixels(const std::string& field, int64_t width,
                         int64_t height, const ServiceLimits& limits) {
  if (static_cast<uint64_t>(width) * static_cast<uint64_t>(height) >
      limits.max_pixels) {
    return Invalid(field,
                   absl::StrCat("width * height at most ", limits.max_pixels,
                                " pixels (got ", width, "x", height, ")"));
  }
  return absl::OkStatus();
}

// A PNG field decoded to RGB, within the byte and pixel limits; its sides a
// multiple of `multiple` (the output size) unless `multiple` is 0.
absl::StatusOr<RgbImage> DecodeImageField(const std::string& field,
                                          const std::string& bytes,
                                          int64_t multiple,
                                          const ServiceLimits& limits) {
  if (bytes.empty()) return Invalid(field, "required (a PNG image)");
  if (bytes.size() > limits.max_image_bytes) {
    return Invalid(field, absl::StrCat("at most ", limits.max_image_bytes,
                                       " bytes (got ", bytes.size(), ")"));
  }
  auto image = DecodePng(bytes, field);
  if (!image.ok()) return image.status();
  if (multiple > 0 &&
      (image->width % multiple != 0 || image->height % multiple != 0)) {
    return Invalid(
        field, absl::StrCat("sides must be multiples of ", multiple, " (got ",
                            image->width, "x", image->height, ")"));
  }
  absl::Status pixels = CheckPixels(field, image->width, image->height, limits);
  if (!pixels.ok()) return pixels;
  return image;
}

absl::StatusOr<at::Tensor> ImageTensor(const RgbImage& image) {
  return ldm::ImageTensorFromRgb(image.pixels.data(), image.height,
                                 image.width);
}

absl::Status ValidateTask(const GenerateRequest& request,
                          const ldm::ModelConfig& model,
                          const ServiceLimits& limits, JobSpec* spec) {
  ldm::JobRequest& job = spec->request;
  const int64_t f = model.ae.DownsamplingFactor();
  const int64_t multiple = SizeMultiple(model);
  switch (spec->task) {
    case TaskKind::kTextToImage: {
      const ldm::v1::TextToImage& text = request.text_to_image();
      absl::Status status = ValidatePrompts(
          "text_to_image", text.prompt(), text.negative_prompt(), limits, &job);
      if (!status.ok()) return status;
      auto width = ValidateSide("text_to_image.width", text.has_width(),
                                text.width(), model.native_width(), multiple);
      if (!width.ok()) return width.status();
      auto height =
          ValidateSide("text_to_image.height", text.has_height(), text.height(),
                       model.native_height(), multiple);
      if (!height.ok()) return height.status();
      status = CheckPixels("text_to_image.width", *width, *height, limits);
      if (!status.ok()) return status;
      job.latent_width = *width / f;
      job.latent_height = *height / f;
      return absl::OkStatus();
    }
    case TaskKind::kImageToImage: {
      const ldm::v1::ImageToImage& task = request.image_to_image();
      absl::Status status =
          ValidatePrompts("image_to_image", task.prompt(),
                          task.negative_prompt(), limits, &job);
      if (!status.ok()) return status;
      if (!(task.strength() >= 0.0f && task.strength() <= 1.0f)) {
        return Invalid("image_to_image.strength", "must be in (0, 1]");
      }
      job.sampler.strength = task.strength() == 0.0f ? 0.75 : task.strength();
      auto image = DecodeImageField("image_to_image.init_image",
                                    task.init_image(), multiple, limits);
      if (!image.ok()) return image.status();
      auto tensor = ImageTensor(*image);
      if (!tensor.ok()) return tensor.status();
      job.init_image = *std::move(tensor);
      job.latent_width = image->width / f;
      job.latent_height = image->height / f;
      return absl::OkStatus();
    }
    case TaskKind::kInpaint: {
      const ldm::v1::Inpaint& task = request.inpaint();
      absl::Status status = ValidatePrompts(
          "inpaint", task.prompt(), task.negative_prompt(), limits, &job);
      if (!status.ok()) return status;
      auto image =
          DecodeImageField("inpaint.image", task.image(), multiple, limits);
      if (!image.ok()) return image.status();
      auto mask = DecodeImageField("inpaint.mask", task.mask(), 0, limits);
      if (!mask.ok()) return mask.status();
      if (mask->width != image->width || mask->height != image->height) {
        return Invalid("inpaint.mask",
                       absl::StrCat("must be the image's size ", image->width,
                                    "x", image->height, " (got ", mask->width,
                                    "x", mask->height, ")"));
      }
      auto image_tensor = ImageTensor(*image);
      if (!image_tensor.ok()) return image_tensor.status();
      auto mask_tensor = ldm::MaskTensorFromRgb(mask->pixels.data(),
                                                mask->height, mask->width);
      if (!mask_tensor.ok()) return mask_tensor.status();
      job.inpaint_image = *std::move(image_tensor);
      job.inpaint_mask = *std::move(mask_tensor);
      job.latent_width = image->width / f;
      job.latent_height = image->height / f;
      return absl::OkStatus();
    }
    case TaskKind::kSuperResolution: {
      const ldm::v1::SuperResolution& task = request.super_resolution();
      if (task.scale() != 0 && task.scale() != static_cast<uint32_t>(f)) {
        return Invalid("super_resolution.scale",
                       absl::StrCat("this model upscales by ", f, " (got ",
                                    task.scale(), ")"));
      }
      // The low-res image is the latent: its sides obey the UNet's multiple.
      auto image = DecodeImageField("super_resolution.low_res_image",
                                    task.low_res_image(), multiple / f, limits);
      if (!image.ok()) return image.status();
      absl::Status status =
          CheckPixels("super_resolution.low_res_image", image->width * f,
                      image->height * f, limits);
      if (!status.ok()) return status;
      auto tensor = ImageTensor(*image);
      if (!tensor.ok()) return tensor.status();
      job.low_res = *std::move(tensor);
      job.latent_width = image->width;
      job.latent_height = image->height;
      return absl::OkStatus();
    }
  }
  return Invalid("task", "unknown");
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
  if (request.client_request_id().size() > limits.max_client_request_id_bytes) {
    return Invalid(
        "client_request_id",
        absl::StrCat("at most ", limits.max_client_request_id_bytes, " bytes"));
  }
  spec.client_request_id = request.client_request_id();
  if (request.priority() < -kMaxPriority || request.priority() > kMaxPriority) {
    return Invalid("priority", absl::StrCat("must be in [-", kMaxPriority, ", ",
                                            kMaxPriority, "] (got ",
                                            request.priority(), ")"));
  }
  spec.priority = request.priority();
  ldm::JobRequest& job = spec.request;

  const ldm::v1::SamplerSettings& sampler = request.sampler();
  switch (sampler.kind()) {
    case ldm::v1::SAMPLER_KIND_UNSPECIFIED:
    case ldm::v1::SAMPLER_KIND_DDIM:
      job.sampler.kind = ldm::SamplerKind::kDdim;
      break;
    case ldm::v1::SAMPLER_KIND_PLMS:
      job.sampler.kind = ldm::SamplerKind::kPlms;
      break;
    case ldm::v1::SAMPLER_KIND_DDPM:
      job.sampler.kind = ldm::SamplerKind::kDdpm;
      break;
    case ldm::v1::SAMPLER_KIND_EULER_ANCESTRAL:
      job.sampler.kind = ldm::SamplerKind::kEulerAncestral;
      break;
    case ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2M:
      job.sampler.kind = ldm::SamplerKind::kDpmSolverPP2M;
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
  job.sampler.steps = sampler.steps() == 0
                          ? static_cast<int>(limits.default_steps)
                          : static_cast<int>(sampler.steps());
  if (!(sampler.eta() >= 0.0f && sampler.eta() <= 1.0f)) {
    return Invalid("sampler.eta", "must be in [0, 1]");
  }
  if (sampler.eta() != 0.0f && job.sampler.kind != ldm::SamplerKind::kDdim) {
    return Invalid("sampler.eta", "only DDIM takes eta; leave it 0");
  }
  job.sampler.eta = sampler.has_eta() ? sampler.eta()
                    : job.sampler.kind == ldm::SamplerKind::kDdim
                        ? model.default_eta
                        : 0.0;
  if (!(sampler.guidance_scale() >= 0.0f &&
        sampler.guidance_scale() <= limits.max_guidance_scale)) {
    return Invalid(
        "sampler.guidance_scale",
        absl::StrCat("must be in [0, ", limits.max_guidance_scale, "]"));
  }
  const auto model_default = static_cast<float>(model.default_guidance_scale);
  job.sampler.guidance_scale =
      sampler.guidance_scale() != 0.0f ? sampler.guidance_scale()
      : model_default > 0.0f           ? model_default
                                       : limits.default_guidance_scale;
  if (request.num_images() > limits.max_images) {
    return Invalid("num_images",
                   absl::StrCat("at most ", limits.max_images, " (got ",
                                request.num_images(), ")"));
  }
  job.num_images =
      request.num_images() == 0 ? 1 : static_cast<int>(request.num_images());
  job.seed = request.seed() == 0 ? random_seed : request.seed();
  spec.preview_every = static_cast<int>(
      std::min<uint32_t>(request.preview_every(), limits.max_steps));
  spec.progress_every = static_cast<int>(std::max<uint32_t>(
      1, std::min<uint32_t>(request.progress_every(), limits.max_steps)));
  if (request.output_format() != ldm::v1::IMAGE_FORMAT_UNSPECIFIED &&
      request.output_format() != ldm::v1::IMAGE_FORMAT_PNG) {
    return Invalid("output_format", "only IMAGE_FORMAT_PNG is served");
  }
  absl::Status status = ValidateTask(request, model, limits, &spec);
  if (!status.ok()) return status;
  return spec;
}

}  // namespace ldmserve
