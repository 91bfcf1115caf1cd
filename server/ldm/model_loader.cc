// Building a LatentDiffusion's stages and filling them: from a checkpoint
// (CompVis or diffusers names, checkpoint.h), at random, or to a file.
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>

#include <functional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "server/common/status_macros.h"
#include "server/ldm/checkpoint.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/safetensors.h"
#include "server/ldm/torch_boundary.h"

namespace ldm {
namespace {

constexpr char kUNetPrefix[] = "model.diffusion_model";
constexpr char kAutoencoderPrefix[] = "first_stage_model";
constexpr char kTextEncoderPrefix[] = "cond_stage_model";

// DDPM.register_schedule buffers, and scale_factor: in reference state_dicts
// but not parameters of any module.
const std::set<std::string>& ScheduleBufferNames() {
  static const auto* names = new std::set<std::string>{
      "betas",
      "alphas_cumprod",
      "alphas_cumprod_prev",
      "sqrt_alphas_cumprod",
      "sqrt_one_minus_alphas_cumprod",
      "log_one_minus_alphas_cumprod",
      "sqrt_recip_alphas_cumprod",
      "sqrt_recipm1_alphas_cumprod",
      "posterior_variance",
      "posterior_log_variance_clipped",
      "posterior_mean_coef1",
      "posterior_mean_coef2",
      "scale_factor",
      "logvar",
  };
  return *names;
}

bool IsKnownExtraKey(const std::string& key) {
  // EMA copies are skipped; the non-EMA weights are the model's own. CLIP's
  // position_ids are optional: positions are always 0..76.
  return ScheduleBufferNames().count(key) > 0 ||
         absl::StartsWith(key, "model_ema.") ||
         key ==
             "cond_stage_model.transformer.text_model.embeddings."
             "position_ids";
}

// CompVis keeps the UNet's EMA in a LitEma module: the key of
// "model.diffusion_model.input_blocks.0.0.weight" there is
// "model_ema.diffusion_modelinput_blocks00weight" (dots dropped).
constexpr char kEmaSourcePrefix[] = "model.diffusion_model.";
std::string EmaKey(const std::string& key) {
  if (!absl::StartsWith(key, kEmaSourcePrefix)) return key;
  return "model_ema." +
         absl::StrReplaceAll(key.substr(std::string("model.").size()),
                             {{".", ""}});
}

bool HasEmaWeights(const Checkpoint& file) {
  auto it = file.tensors().lower_bound("model_ema.diffusion_model");
  return it != file.tensors().end() &&
         absl::StartsWith(it->first, "model_ema.diffusion_model");
}

}  // namespace

at::ScalarType LatentDiffusion::DtypeOfParameter(
    const std::string& name) const {
  if (absl::StartsWith(name, kAutoencoderPrefix)) return precision_.first_stage;
  if (absl::StartsWith(name, kTextEncoderPrefix)) return precision_.text;
  return precision_.unet;
}

absl::StatusOr<std::map<std::string, std::vector<int64_t>>>
LatentDiffusion::ExpectedParameters(const ModelConfig& config) {
  LatentDiffusion model(config, LoadOptions{}, at::kMeta);
  LDM_RETURN_IF_ERROR(CallTorchStatus("build " + config.name, [&] {
    c10::InferenceMode inference;
    return model.Build();
  }));
  return model.registry_.Shapes();
}

absl::Status LatentDiffusion::Build() {
  LDM_ASSIGN_OR_RETURN(
      DiffusionSchedule schedule,
      DiffusionSchedule::Make(config_.beta_schedule, config_.linear_start,
                              config_.linear_end, config_.timesteps));
  // Declared in the order random weights are drawn: UNet, autoencoder, text.
  ParamScope root(&registry_, "");
  denoiser_ = std::make_unique<Denoiser>(
      config_.unet, root.Sub(kUNetPrefix), std::move(schedule),
      config_.parameterization, options_.device, precision_.unet);
  first_stage_ = std::make_unique<FirstStage>(
      config_.ae, root.Sub(kAutoencoderPrefix), config_.scale_factor,
      options_.device, precision_.first_stage, options_.tiles);
  LDM_ASSIGN_OR_RETURN(
      text_, MakeTextConditioner(config_, root.Sub(kTextEncoderPrefix)));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LatentDiffusion>> LatentDiffusion::Load(
    const std::string& config_path, const std::string& weights_path,
    const LoadOptions& options) {
  LDM_ASSIGN_OR_RETURN(ModelConfig config, ReadModelConfig(config_path));
  LDM_ASSIGN_OR_RETURN(std::shared_ptr<const Checkpoint> file,
                       Checkpoint::Open(weights_path));
  // Declared on the meta device: nothing is allocated until each parameter
  // is read from the file, straight into its device and dtype.
  std::unique_ptr<LatentDiffusion> model(
      new LatentDiffusion(std::move(config), options, at::kMeta));
  // Each distinct dtype once (usually f32 alone, or the UNet's and f32).
  const StagePrecision& precision = model->precision_;
  for (at::ScalarType dtype : std::set<at::ScalarType>{
           precision.unet, precision.first_stage, precision.text}) {
    LDM_RETURN_IF_ERROR(CheckDtypeSupported(options.device, dtype));
  }
  LDM_RETURN_IF_ERROR(CallTorchStatus("load " + weights_path, [&] {
    c10::InferenceMode inference;
    LDM_RETURN_IF_ERROR(model->Build());
    if (model->text_) LDM_RETURN_IF_ERROR(model->text_->LoadTokenizer());
    std::function<std::string(const std::string&)> key_for;
    if (options.use_ema) {
      if (!HasEmaWeights(*file)) {
        return absl::FailedPreconditionError(absl::StrCat(
            weights_path, ": no EMA weights (model_ema.*) to use"));
      }
      key_for = EmaKey;
    }
    LDM_RETURN_IF_ERROR(model->registry_.LoadFrom(
        *file, "", options.strict,
        [&options](const std::string& key) {
          // With the EMA copy in use, the training weights are the extra.
          return IsKnownExtraKey(key) ||
                 (options.use_ema && absl::StartsWith(key, kEmaSourcePrefix));
        },
        options.device,
        [&model](const std::string& name) {
          return model->DtypeOfParameter(name);
        },
        key_for));
    if (file->Contains("alphas_cumprod")) {
      // The checkpoint's buffer wins where it disagrees with the config;
      // where it agrees (to its float32 storage), the float64 schedule from
      // the config is kept, as exact as the reference's own.
      LDM_ASSIGN_OR_RETURN(at::Tensor stored, file->Get("alphas_cumprod"));
      at::Tensor values = stored.to(at::kDouble).contiguous();
      LDM_ASSIGN_OR_RETURN(
          DiffusionSchedule from_buffer,
          DiffusionSchedule::FromAlphasCumprod(
              std::vector<double>(values.data_ptr<double>(),
                                  values.data_ptr<double>() + values.numel())));
      if (from_buffer.MaxRelativeDifference(model->denoiser_->schedule()) >
          1e-6) {
        model->denoiser_->set_schedule(std::move(from_buffer));
      }
    }
    if (file->Contains("scale_factor")) {
      LDM_ASSIGN_OR_RETURN(at::Tensor stored, file->Get("scale_factor"));
      model->config_.scale_factor = stored.to(at::kDouble).item<double>();
      model->first_stage_->set_scale_factor(model->config_.scale_factor);
    }
    if (options.channels_last) model->StoreUNetChannelsLast();
    return absl::OkStatus();
  }));
  return model;
}

void LatentDiffusion::StoreUNetChannelsLast() {
  const std::string unet = absl::StrCat(kUNetPrefix, ".");
  for (auto& [name, weight] : registry_.Named("")) {
    if (weight.dim() != 4 || !absl::StartsWith(name, unet)) continue;
    // In place: the layers hold this tensor, not a copy of it.
    weight.set_(weight.contiguous(at::MemoryFormat::ChannelsLast));
  }
}

absl::StatusOr<std::unique_ptr<LatentDiffusion>> LatentDiffusion::CreateRandom(
    const ModelConfig& config, uint64_t seed, const LoadOptions& options) {
  std::unique_ptr<LatentDiffusion> model(new LatentDiffusion(config, options));
  LDM_RETURN_IF_ERROR(CallTorchStatus("create random model", [&] {
    // Plain tensors, not inference tensors: the trainer trains them.
    c10::NoGradGuard no_grad;
    LDM_RETURN_IF_ERROR(model->Build());
    // Random weights serve tools and benchmarks: a missing tokenizer only
    // matters once text is encoded (EncodeText then says so).
    if (model->text_) (void)model->text_->LoadTokenizer();
    model->registry_.InitRandom(seed);
    model->registry_.To(options.device, [&model](const std::string& name) {
      return model->DtypeOfParameter(name);
    });
    if (options.channels_last) model->StoreUNetChannelsLast();
    return absl::OkStatus();
  }));
  return model;
}

absl::Status LatentDiffusion::Save(const std::string& weights_path,
                                   at::ScalarType dtype) const {
  return CallTorchStatus("save " + weights_path, [&] {
    std::map<std::string, at::Tensor> tensors = registry_.Named("");
    for (auto& [name, tensor] : tensors) tensor = tensor.to(dtype);
    tensors["alphas_cumprod"] =
        at::tensor(denoiser_->schedule().alphas_cumprod_f64()).to(at::kFloat);
    tensors["scale_factor"] =
        at::tensor(static_cast<float>(config_.scale_factor)).reshape({});
    return WriteSafetensors(weights_path, tensors,
                            {{"config", ModelConfigToJson(config_)}});
  });
}

}  // namespace ldm
