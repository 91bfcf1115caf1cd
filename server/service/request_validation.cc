#include "server/service/request_validation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/runtime/folder_paths.h"
#include "server/service/image_codec.h"
#include "server/service/image_fit.h"

namespace ldmserve {
namespace {

// GenerateRequest.priority's range.
constexpr int kMaxPriority = 10;
constexpr int kMaxLoras = 8;
constexpr size_t kMaxLoraName = 128;
constexpr float kMaxLoraWeight = 10.0f;

using ldm::v1::GenerateRequest;

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

absl::Status ValidatePrompts(const char* task, const std::string& prompt,
                             const std::string& negative,
                             const ServiceLimits& limits,
                             ldm::GenerationRequest& job) {
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"prompt", &prompt},
        {"negative_prompt", &negative}}) {
    if (value->size() > limits.max_prompt_bytes) {
      return Invalid(absl::StrCat(task, ".", name),
                     absl::StrCat("at most ", limits.max_prompt_bytes,
                                  " bytes (got ", value->size(), ")"));
    }
  }
  job.prompt = prompt;
  job.negative_prompt = negative;
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

// An image field decoded to RGB, within the byte and pixel limits.
absl::StatusOr<RgbImage> DecodeImageField(const std::string& field,
                                          const std::string& bytes,
                                          const ServiceLimits& limits) {
  if (bytes.empty()) {
    return Invalid(field, "required (a PNG, JPEG or WebP image)");
  }
  if (bytes.size() > limits.max_image_bytes) {
    return Invalid(field, absl::StrCat("at most ", limits.max_image_bytes,
                                       " bytes (got ", bytes.size(), ")"));
  }
  ImageLimits image_limits;
  image_limits.max_width = limits.max_image_side;
  image_limits.max_height = limits.max_image_side;
  image_limits.max_pixels = limits.max_pixels;
  return DecodeImage(bytes, field, image_limits);
}

// The input images of a task, fitted to the model's multiple as the
// request's resize_mode says (the mask exactly as its image).
struct InputFitter {
  ResizeMode mode = ResizeMode::kExact;
  int64_t multiple = 1;
  std::optional<InputFit>* fit;

  absl::Status Fit(const std::string& field, RgbImage& image,
                   RgbImage* mask = nullptr) const {
    LDM_ASSIGN_OR_RETURN(InputFit plan, PlanFit(image.width, image.height, mode,
                                                multiple, field));
    if (plan.width == image.width && plan.height == image.height) {
      return absl::OkStatus();
    }
    image = ApplyFit(image, plan);
    if (mask != nullptr) *mask = ApplyFit(*mask, plan);
    *fit = plan;
    return absl::OkStatus();
  }
};

absl::StatusOr<ResizeMode> ResizeModeOf(ldm::v1::ResizeMode mode) {
  switch (mode) {
    case ldm::v1::RESIZE_MODE_UNSPECIFIED:
      return ResizeMode::kExact;
    case ldm::v1::RESIZE_MODE_SCALE:
      return ResizeMode::kScale;
    case ldm::v1::RESIZE_MODE_CROP:
      return ResizeMode::kCrop;
    case ldm::v1::RESIZE_MODE_PAD:
      return ResizeMode::kPad;
    default:
      break;
  }
  return Invalid("resize_mode", absl::StrCat("unknown value ", mode));
}

// GenerateRequest's output_format and output_quality.
absl::StatusOr<ImageEncoding> EncodingOf(const GenerateRequest& request) {
  ImageEncoding encoding;
  switch (request.output_format()) {
    case ldm::v1::IMAGE_FORMAT_UNSPECIFIED:
    case ldm::v1::IMAGE_FORMAT_PNG:
      encoding.format = ImageFileFormat::kPng;
      break;
    case ldm::v1::IMAGE_FORMAT_JPEG:
      encoding.format = ImageFileFormat::kJpeg;
      break;
    case ldm::v1::IMAGE_FORMAT_WEBP:
      encoding.format = ImageFileFormat::kWebp;
      break;
    case ldm::v1::IMAGE_FORMAT_WEBP_LOSSLESS:
      encoding.format = ImageFileFormat::kWebpLossless;
      break;
    default:
      return Invalid("output_format",
                     absl::StrCat("unknown value ", request.output_format()));
  }
  const bool lossy = encoding.format == ImageFileFormat::kJpeg ||
                     encoding.format == ImageFileFormat::kWebp;
  if (request.output_quality() > 100) {
    return Invalid("output_quality",
                   absl::StrCat("in [1, 100]; 0 = 90 (got ",
                                request.output_quality(), ")"));
  }
  if (!lossy && request.output_quality() != 0) {
    return Invalid("output_quality",
                   "only JPEG and lossy WebP take a quality; leave it 0");
  }
  if (request.output_quality() != 0) {
    encoding.quality = static_cast<int>(request.output_quality());
  }
  return encoding;
}

// Which field's pixels the output size is checked as.
const char* OutputSizeField(ldm::Task task) {
  switch (task) {
    case ldm::Task::kTextToImage:
      return "text_to_image.width";
    case ldm::Task::kImageToImage:
      return "image_to_image.init_image";
    case ldm::Task::kInpaint:
      return "inpaint.image";
    case ldm::Task::kSuperResolution:
      return "super_resolution.low_res_image";
  }
  return "task";
}

// The task's own fields -> the request's prompts and typed task input.
absl::Status ValidateTask(const GenerateRequest& request,
                          const ldm::ModelCapabilities& model,
                          const ServiceLimits& limits,
                          ldm::GenerationRequest& job,
                          std::optional<InputFit>& fit) {
  LDM_ASSIGN_OR_RETURN(const ResizeMode mode,
                       ResizeModeOf(request.resize_mode()));
  InputFitter fitter{mode, model.size_multiple, &fit};
  switch (request.task_case()) {
    case GenerateRequest::kTextToImage: {
      const ldm::v1::TextToImage& text = request.text_to_image();
      LDM_RETURN_IF_ERROR(ValidatePrompts("text_to_image", text.prompt(),
                                          text.negative_prompt(), limits, job));
      // Unset sides stay unset: CheckRequest gives them the model's native
      // size and refuses a side set to 0.
      ldm::TextToImage task;
      if (text.has_width()) task.width = text.width();
      if (text.has_height()) task.height = text.height();
      job.task = task;
      return absl::OkStatus();
    }
    case GenerateRequest::kImageToImage: {
      const ldm::v1::ImageToImage& task = request.image_to_image();
      LDM_RETURN_IF_ERROR(ValidatePrompts("image_to_image", task.prompt(),
                                          task.negative_prompt(), limits, job));
      if (!(task.strength() >= 0.0f && task.strength() <= 1.0f)) {
        return Invalid("image_to_image.strength", "must be in (0, 1]");
      }
      job.sampler.strength = task.strength() == 0.0f ? 0.75 : task.strength();
      LDM_ASSIGN_OR_RETURN(RgbImage image,
                           DecodeImageField("image_to_image.init_image",
                                            task.init_image(), limits));
      LDM_RETURN_IF_ERROR(fitter.Fit("image_to_image.init_image", image));
      job.task = ldm::ImageToImage{std::move(image)};
      return absl::OkStatus();
    }
    case GenerateRequest::kInpaint: {
      const ldm::v1::Inpaint& task = request.inpaint();
      LDM_RETURN_IF_ERROR(ValidatePrompts("inpaint", task.prompt(),
                                          task.negative_prompt(), limits, job));
      LDM_ASSIGN_OR_RETURN(
          RgbImage image,
          DecodeImageField("inpaint.image", task.image(), limits));
      LDM_ASSIGN_OR_RETURN(
          RgbImage mask, DecodeImageField("inpaint.mask", task.mask(), limits));
      if (mask.width != image.width || mask.height != image.height) {
        return Invalid("inpaint.mask",
                       absl::StrCat("must be the image's size ", image.width,
                                    "x", image.height, " (got ", mask.width,
                                    "x", mask.height, ")"));
      }
      LDM_RETURN_IF_ERROR(fitter.Fit("inpaint.image", image, &mask));
      job.task = ldm::Inpaint{std::move(image), ldm::MaskFromRgb(mask)};
      return absl::OkStatus();
    }
    case GenerateRequest::kSuperResolution: {
      const ldm::v1::SuperResolution& task = request.super_resolution();
      const int64_t factor = model.downsampling_factor;
      if (task.scale() != 0 && task.scale() != static_cast<uint32_t>(factor)) {
        return Invalid("super_resolution.scale",
                       absl::StrCat("this model upscales by ", factor, " (got ",
                                    task.scale(), ")"));
      }
      LDM_ASSIGN_OR_RETURN(RgbImage image,
                           DecodeImageField("super_resolution.low_res_image",
                                            task.low_res_image(), limits));
      // Its pixels are the latent's: the UNet's multiple over the factor.
      fitter.multiple = std::max<int64_t>(1, model.size_multiple / factor);
      LDM_RETURN_IF_ERROR(fitter.Fit("super_resolution.low_res_image", image));
      job.task = ldm::SuperResolution{std::move(image)};
      return absl::OkStatus();
    }
    case GenerateRequest::TASK_NOT_SET:
      break;
  }
  return Invalid("task", "unknown");
}

}  // namespace

absl::StatusOr<ldm::Task> RequestedTask(const GenerateRequest& request) {
  switch (request.task_case()) {
    case GenerateRequest::kTextToImage:
      return ldm::Task::kTextToImage;
    case GenerateRequest::kImageToImage:
      return ldm::Task::kImageToImage;
    case GenerateRequest::kInpaint:
      return ldm::Task::kInpaint;
    case GenerateRequest::kSuperResolution:
      return ldm::Task::kSuperResolution;
    case GenerateRequest::TASK_NOT_SET:
      break;
  }
  return Invalid("task",
                 "set one of text_to_image, image_to_image, "
                 "inpaint, super_resolution");
}

// The request's adapters, names and weights checked (the files are the
// LoRA library's to find).
absl::StatusOr<std::vector<LoraUse>> LorasOf(const GenerateRequest& request) {
  if (request.loras_size() > kMaxLoras) {
    return Invalid("loras",
                   absl::StrCat("at most ", kMaxLoras, " adapters (got ",
                                request.loras_size(), ")"));
  }
  std::vector<LoraUse> loras;
  for (int i = 0; i < request.loras_size(); ++i) {
    const ldm::v1::LoraAdapter& lora = request.loras(i);
    const std::string field = absl::StrCat("loras[", i, "]");
    LDM_RETURN_IF_ERROR(
        CheckSafeName(absl::StrCat(field, ".name"), lora.name(), kMaxLoraName));
    const float weight = lora.has_weight() ? lora.weight() : 1.0f;
    if (!std::isfinite(weight) || std::fabs(weight) > kMaxLoraWeight) {
      return Invalid(absl::StrCat(field, ".weight"),
                     absl::StrCat("must be in [-", kMaxLoraWeight, ", ",
                                  kMaxLoraWeight, "] (got ", weight, ")"));
    }
    for (const LoraUse& earlier : loras) {
      if (earlier.name == lora.name()) {
        return Invalid(absl::StrCat(field, ".name"),
                       absl::StrCat("'", lora.name(), "' is named twice"));
      }
    }
    loras.push_back(LoraUse{.name = lora.name(), .weight = weight});
  }
  return loras;
}

absl::StatusOr<JobSpec> ValidateRequest(const GenerateRequest& request,
                                        const ldm::ModelCapabilities& model,
                                        const ServiceLimits& limits,
                                        uint64_t random_seed) {
  JobSpec spec;
  LDM_ASSIGN_OR_RETURN(const ldm::Task task, RequestedTask(request));
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
  ldm::GenerationRequest& job = spec.request;

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
    case ldm::v1::SAMPLER_KIND_EULER:
      job.sampler.kind = ldm::SamplerKind::kEuler;
      break;
    case ldm::v1::SAMPLER_KIND_HEUN:
      job.sampler.kind = ldm::SamplerKind::kHeun;
      break;
    case ldm::v1::SAMPLER_KIND_LMS:
      job.sampler.kind = ldm::SamplerKind::kLms;
      break;
    case ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2M_SDE:
      job.sampler.kind = ldm::SamplerKind::kDpmSolverPP2MSde;
      break;
    case ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2S_ANCESTRAL:
      job.sampler.kind = ldm::SamplerKind::kDpmSolverPP2SAncestral;
      break;
    case ldm::v1::SAMPLER_KIND_UNI_PC:
      job.sampler.kind = ldm::SamplerKind::kUniPc;
      break;
    default:
      return Invalid("sampler.kind",
                     absl::StrCat("unknown value ", sampler.kind()));
  }
  switch (sampler.sigma_schedule()) {
    case ldm::v1::SIGMA_SCHEDULE_UNSPECIFIED:
      job.sampler.sigma_schedule = ldm::SigmaSchedule::kUniform;
      break;
    case ldm::v1::SIGMA_SCHEDULE_KARRAS:
      job.sampler.sigma_schedule = ldm::SigmaSchedule::kKarras;
      break;
    case ldm::v1::SIGMA_SCHEDULE_EXPONENTIAL:
      job.sampler.sigma_schedule = ldm::SigmaSchedule::kExponential;
      break;
    default:
      return Invalid("sampler.sigma_schedule",
                     absl::StrCat("unknown value ", sampler.sigma_schedule()));
  }
  if (job.sampler.sigma_schedule != ldm::SigmaSchedule::kUniform &&
      (job.sampler.kind == ldm::SamplerKind::kDdim ||
       job.sampler.kind == ldm::SamplerKind::kPlms ||
       job.sampler.kind == ldm::SamplerKind::kDdpm)) {
    return Invalid("sampler.sigma_schedule",
                   "UNSPECIFIED for DDIM, PLMS and DDPM (they have their own "
                   "timesteps)");
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
  if (request.has_clip_skip()) {
    // Bounded here so that the cast is exact; the model checks its range.
    job.clip_skip =
        static_cast<int>(std::min<uint32_t>(request.clip_skip(), 1000));
    if (job.clip_skip == 0) {
      return Invalid("clip_skip", "1 or more when set (unset = the model's)");
    }
  } else {
    job.clip_skip = model.default_clip_skip;
  }
  spec.preview_every = static_cast<int>(
      std::min<uint32_t>(request.preview_every(), limits.max_steps));
  spec.progress_every = static_cast<int>(std::max<uint32_t>(
      1, std::min<uint32_t>(request.progress_every(), limits.max_steps)));
  LDM_ASSIGN_OR_RETURN(spec.encoding, EncodingOf(request));
  LDM_ASSIGN_OR_RETURN(spec.loras, LorasOf(request));
  LDM_RETURN_IF_ERROR(
      ValidateTask(request, model, limits, job, spec.input_fit));
  LDM_ASSIGN_OR_RETURN(spec.geometry, ldm::CheckRequest(model, job));
  LDM_RETURN_IF_ERROR(CheckPixels(OutputSizeField(task), spec.geometry.width,
                                  spec.geometry.height, limits));
  return spec;
}

ldm::v1::Task TaskToProto(ldm::Task task) {
  switch (task) {
    case ldm::Task::kTextToImage:
      return ldm::v1::TASK_TEXT_TO_IMAGE;
    case ldm::Task::kImageToImage:
      return ldm::v1::TASK_IMAGE_TO_IMAGE;
    case ldm::Task::kInpaint:
      return ldm::v1::TASK_INPAINT;
    case ldm::Task::kSuperResolution:
      return ldm::v1::TASK_SUPER_RESOLUTION;
  }
  return ldm::v1::TASK_UNSPECIFIED;
}

std::optional<ldm::Task> TaskFromProto(int task) {
  for (ldm::Task known : {ldm::Task::kTextToImage, ldm::Task::kImageToImage,
                          ldm::Task::kInpaint, ldm::Task::kSuperResolution}) {
    if (TaskToProto(known) == task) return known;
  }
  return std::nullopt;
}

namespace {

struct SamplerNames {
  ldm::v1::SamplerKind proto;
  const char* display;  // As AUTOMATIC1111 names it.
};

SamplerNames NamesOf(ldm::SamplerKind kind) {
  switch (kind) {
    case ldm::SamplerKind::kDdim:
      return {ldm::v1::SAMPLER_KIND_DDIM, "DDIM"};
    case ldm::SamplerKind::kPlms:
      return {ldm::v1::SAMPLER_KIND_PLMS, "PLMS"};
    case ldm::SamplerKind::kDdpm:
      return {ldm::v1::SAMPLER_KIND_DDPM, "DDPM"};
    case ldm::SamplerKind::kEulerAncestral:
      return {ldm::v1::SAMPLER_KIND_EULER_ANCESTRAL, "Euler a"};
    case ldm::SamplerKind::kDpmSolverPP2M:
      return {ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2M, "DPM++ 2M"};
    case ldm::SamplerKind::kEuler:
      return {ldm::v1::SAMPLER_KIND_EULER, "Euler"};
    case ldm::SamplerKind::kHeun:
      return {ldm::v1::SAMPLER_KIND_HEUN, "Heun"};
    case ldm::SamplerKind::kLms:
      return {ldm::v1::SAMPLER_KIND_LMS, "LMS"};
    case ldm::SamplerKind::kDpmSolverPP2MSde:
      return {ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2M_SDE, "DPM++ 2M SDE"};
    case ldm::SamplerKind::kDpmSolverPP2SAncestral:
      return {ldm::v1::SAMPLER_KIND_DPM_SOLVER_PP_2S_ANCESTRAL, "DPM++ 2S a"};
    case ldm::SamplerKind::kUniPc:
      return {ldm::v1::SAMPLER_KIND_UNI_PC, "UniPC"};
  }
  return {ldm::v1::SAMPLER_KIND_UNSPECIFIED, "?"};
}

}  // namespace

ldm::v1::ResolvedSettings ResolvedSettingsOf(const JobSpec& spec) {
  const ldm::GenerationRequest& job = spec.request;
  ldm::v1::ResolvedSettings settings;
  settings.set_model(spec.model_name);
  settings.set_task(TaskToProto(spec.task()));
  for (const LoraUse& use : spec.loras) {
    ldm::v1::LoraAdapter* lora = settings.add_loras();
    lora->set_name(use.name);
    lora->set_weight(use.weight);
  }
  settings.set_prompt(job.prompt);
  settings.set_negative_prompt(job.negative_prompt);
  settings.set_sampler(NamesOf(job.sampler.kind).proto);
  settings.set_steps(static_cast<uint32_t>(job.sampler.steps));
  settings.set_guidance_scale(job.sampler.guidance_scale);
  settings.set_eta(static_cast<float>(job.sampler.eta));
  settings.set_strength(static_cast<float>(job.sampler.strength));
  settings.set_width(static_cast<uint32_t>(spec.geometry.width));
  settings.set_height(static_cast<uint32_t>(spec.geometry.height));
  settings.set_seed(job.seed);
  settings.set_num_images(static_cast<uint32_t>(job.num_images));
  settings.set_clip_skip(static_cast<uint32_t>(job.clip_skip));
  switch (job.sampler.sigma_schedule) {
    case ldm::SigmaSchedule::kUniform:
      break;
    case ldm::SigmaSchedule::kKarras:
      settings.set_sigma_schedule(ldm::v1::SIGMA_SCHEDULE_KARRAS);
      break;
    case ldm::SigmaSchedule::kExponential:
      settings.set_sigma_schedule(ldm::v1::SIGMA_SCHEDULE_EXPONENTIAL);
      break;
  }
  switch (spec.encoding.format) {
    case ImageFileFormat::kPng:
      settings.set_output_format(ldm::v1::IMAGE_FORMAT_PNG);
      break;
    case ImageFileFormat::kJpeg:
      settings.set_output_format(ldm::v1::IMAGE_FORMAT_JPEG);
      settings.set_output_quality(spec.encoding.quality);
      break;
    case ImageFileFormat::kWebp:
      settings.set_output_format(ldm::v1::IMAGE_FORMAT_WEBP);
      settings.set_output_quality(spec.encoding.quality);
      break;
    case ImageFileFormat::kWebpLossless:
      settings.set_output_format(ldm::v1::IMAGE_FORMAT_WEBP_LOSSLESS);
      break;
  }
  if (spec.input_fit.has_value()) {
    const InputFit& fit = *spec.input_fit;
    ldm::v1::InputResize* resize = settings.mutable_input_resize();
    static constexpr ldm::v1::ResizeMode kModes[] = {
        ldm::v1::RESIZE_MODE_UNSPECIFIED, ldm::v1::RESIZE_MODE_SCALE,
        ldm::v1::RESIZE_MODE_CROP, ldm::v1::RESIZE_MODE_PAD};
    resize->set_mode(kModes[static_cast<int>(fit.mode)]);
    resize->set_original_width(static_cast<uint32_t>(fit.original_width));
    resize->set_original_height(static_cast<uint32_t>(fit.original_height));
    resize->set_width(static_cast<uint32_t>(fit.width));
    resize->set_height(static_cast<uint32_t>(fit.height));
  }
  return settings;
}

std::string ParametersText(const ldm::v1::ResolvedSettings& settings,
                           uint64_t seed) {
  std::string text = settings.prompt();
  // As AUTOMATIC1111 writes adapters: in the prompt, where it reads them.
  for (const ldm::v1::LoraAdapter& lora : settings.loras()) {
    absl::StrAppend(&text, " <lora:", lora.name(), ":", lora.weight(), ">");
  }
  if (!settings.negative_prompt().empty()) {
    absl::StrAppend(&text, "\nNegative prompt: ", settings.negative_prompt());
  }
  std::string sampler = "?";
  for (ldm::SamplerKind kind :
       {ldm::SamplerKind::kDdim, ldm::SamplerKind::kPlms,
        ldm::SamplerKind::kDdpm, ldm::SamplerKind::kEulerAncestral,
        ldm::SamplerKind::kDpmSolverPP2M, ldm::SamplerKind::kEuler,
        ldm::SamplerKind::kHeun, ldm::SamplerKind::kLms,
        ldm::SamplerKind::kDpmSolverPP2MSde,
        ldm::SamplerKind::kDpmSolverPP2SAncestral, ldm::SamplerKind::kUniPc}) {
    if (NamesOf(kind).proto == settings.sampler()) {
      sampler = NamesOf(kind).display;
    }
  }
  // As AUTOMATIC1111 names them: "DPM++ 2M Karras".
  if (settings.sigma_schedule() == ldm::v1::SIGMA_SCHEDULE_KARRAS) {
    sampler += " Karras";
  } else if (settings.sigma_schedule() == ldm::v1::SIGMA_SCHEDULE_EXPONENTIAL) {
    sampler += " Exponential";
  }
  absl::StrAppend(&text, "\nSteps: ", settings.steps(), ", Sampler: ", sampler,
                  ", CFG scale: ", settings.guidance_scale(), ", Seed: ", seed,
                  ", Size: ", settings.width(), "x", settings.height(),
                  ", Model: ", settings.model());
  if (settings.eta() != 0.0f) absl::StrAppend(&text, ", Eta: ", settings.eta());
  // As AUTOMATIC1111: only when not the last layer.
  if (settings.clip_skip() > 1) {
    absl::StrAppend(&text, ", Clip skip: ", settings.clip_skip());
  }
  if (settings.task() == ldm::v1::TASK_IMAGE_TO_IMAGE) {
    absl::StrAppend(&text, ", Denoising strength: ", settings.strength());
  }
  return text;
}

}  // namespace ldmserve
