#include "server/ldm/latent_diffusion.h"

#include "absl/strings/str_cat.h"

namespace ldm {
namespace {

ModelCapabilities CapabilitiesOf(const ModelConfig& config) {
  ModelCapabilities model;
  switch (config.kind) {
    case ModelKind::kInpaint:
      model.tasks = {Task::kInpaint};
      break;
    case ModelKind::kSuperResolution:
      model.tasks = {Task::kSuperResolution};
      break;
    case ModelKind::kTextToImage:
      model.tasks = {Task::kTextToImage, Task::kImageToImage, Task::kInpaint};
      break;
  }
  model.native_width = config.native_width();
  model.native_height = config.native_height();
  model.downsampling_factor = config.ae.DownsamplingFactor();
  model.size_multiple = model.downsampling_factor *
                        (int64_t{1} << (config.unet.channel_mult.size() - 1));
  model.latent_channels = config.unet.out_channels;
  model.latent_height = config.latent_height;
  model.latent_width = config.latent_width;
  model.default_eta = config.default_eta;
  model.default_guidance_scale = config.default_guidance_scale;
  if (config.clip) {
    model.max_clip_skip = static_cast<int>(config.clip->text.num_hidden_layers);
    model.default_clip_skip = config.clip->clip_skip;
  }
  return model;
}

}  // namespace

StagePrecision LoadOptions::Precision() const {
  StagePrecision precision = StagePrecision::ForModelDtype(dtype);
  if (first_stage_dtype) precision.first_stage = *first_stage_dtype;
  if (text_dtype) precision.text = *text_dtype;
  return precision;
}

LatentDiffusion::LatentDiffusion(ModelConfig config, LoadOptions options,
                                 at::Device declare_on)
    : config_(std::move(config)),
      capabilities_(CapabilitiesOf(config_)),
      options_(options),
      precision_(options.Precision()),
      registry_(declare_on) {}

LatentDiffusion::~LatentDiffusion() = default;

absl::StatusOr<TextConditioning> LatentDiffusion::EncodeText(
    const std::vector<std::string>& prompts, int clip_skip) const {
  if (text_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", config_.name, " has no text encoder"));
  }
  return text_->Encode(prompts, options_.device, precision_.unet, clip_skip);
}

}  // namespace ldm
