#include "server/ldm/latent_diffusion.h"

#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <functional>
#include <set>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "server/common/status_macros.h"
#include "server/ldm/checkpoint.h"
#include "server/ldm/image_tensor.h"
#include "server/ldm/prompt_weights.h"
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

// A fixed latent -> RGB projection for previews. For 4-channel latents these
// are the widely used coefficients fitted for SD v1's autoencoder; other
// channel counts use the channel mean as grey.
at::Tensor PreviewProjection(int64_t channels) {
  if (channels == 4) {
    return at::tensor({0.298f, 0.207f, 0.208f, 0.187f, 0.286f, 0.173f, -0.158f,
                       0.189f, 0.264f, -0.184f, -0.271f, -0.473f})
        .reshape({4, 3});
  }
  return at::full({channels, 3}, 1.0f / static_cast<float>(channels));
}

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

LatentDiffusion::~LatentDiffusion() = default;

absl::Status LatentDiffusion::Build() {
  ParamScope root(&registry_, "");
  unet_ = std::make_unique<UNetModel>(config_.unet, root.Sub(kUNetPrefix));
  autoencoder_ =
      std::make_unique<Autoencoder>(config_.ae, root.Sub(kAutoencoderPrefix));
  if (config_.text_encoder) {
    if (config_.text_encoder->dim != config_.unet.context_dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("config: text_encoder.dim ", config_.text_encoder->dim,
                       " != unet.context_dim ", config_.unet.context_dim));
    }
    text_encoder_ = std::make_unique<TextTransformer>(
        *config_.text_encoder, root.Sub(kTextEncoderPrefix));
    if (!config_.text_encoder->uses_wordpiece()) {
      tokenizer_ = std::make_unique<WordTokenizer>(
          config_.text_encoder->vocab, config_.text_encoder->max_length);
    }
  }
  if (config_.clip) {
    if (config_.clip->text.hidden_size != config_.unet.context_dim) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config: cond_stage.hidden_size ", config_.clip->text.hidden_size,
          " != unet.context_dim ", config_.unet.context_dim));
    }
    clip_text_ = std::make_unique<ClipTextModel>(
        config_.clip->text,
        root.Sub(kTextEncoderPrefix).Sub("transformer").Sub("text_model"));
  }
  LDM_ASSIGN_OR_RETURN(
      schedule_,
      DiffusionSchedule::Make(config_.beta_schedule, config_.linear_start,
                              config_.linear_end, config_.timesteps));
  return absl::OkStatus();
}

absl::Status LatentDiffusion::LoadTokenizer() {
  if (config_.text_encoder && config_.text_encoder->uses_wordpiece()) {
    const TextEncoderConfig& text = *config_.text_encoder;
    absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> loaded =
        WordPieceTokenizer::Load(text.vocab_file);
    if (!loaded.ok()) {
      return absl::Status(
          loaded.status().code(),
          absl::StrCat("model ", config_.name,
                       " reads prompts with BERT's WordPiece vocabulary "
                       "(bert-base-uncased vocab.txt): ",
                       loaded.status().message()));
    }
    wordpiece_tokenizer_ = std::move(*loaded);
    if (wordpiece_tokenizer_->vocab_size() != text.vocab_size) {
      const int64_t found = wordpiece_tokenizer_->vocab_size();
      wordpiece_tokenizer_.reset();
      return absl::InvalidArgumentError(
          absl::StrCat(text.vocab_file, ": ", found,
                       " tokens, the config says ", text.vocab_size));
    }
  }
  if (!config_.clip) return absl::OkStatus();
  LDM_ASSIGN_OR_RETURN(clip_tokenizer_,
                       ClipTokenizer::Load(config_.clip->tokenizer_dir));
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
    LDM_RETURN_IF_ERROR(model->LoadTokenizer());
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
      if (from_buffer.MaxRelativeDifference(*model->schedule_) > 1e-6) {
        model->schedule_ = std::move(from_buffer);
      }
    }
    if (file->Contains("scale_factor")) {
      LDM_ASSIGN_OR_RETURN(at::Tensor stored, file->Get("scale_factor"));
      model->config_.scale_factor = stored.to(at::kDouble).item<double>();
    }
    return absl::OkStatus();
  }));
  return model;
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
    (void)model->LoadTokenizer();
    model->registry_.InitRandom(seed);
    model->registry_.To(options.device, [&model](const std::string& name) {
      return model->DtypeOfParameter(name);
    });
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
        at::tensor(schedule_->alphas_cumprod_f64()).to(at::kFloat);
    tensors["scale_factor"] =
        at::tensor(static_cast<float>(config_.scale_factor)).reshape({});
    return WriteSafetensors(weights_path, tensors,
                            {{"config", ModelConfigToJson(config_)}});
  });
}

absl::StatusOr<TextConditioning> LatentDiffusion::EncodeText(
    const std::vector<std::string>& prompts) const {
  if (clip_text_ && !clip_tokenizer_) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", config_.name, ": no CLIP tokenizer at ",
                     config_.clip->tokenizer_dir));
  }
  if (!clip_text_ && !text_encoder_) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", config_.name, " has no text encoder"));
  }
  if (text_encoder_ && !tokenizer_ && !wordpiece_tokenizer_) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", config_.name, ": no BERT vocabulary at ",
                     config_.text_encoder->vocab_file));
  }
  // Tokens first (one row per prompt), then one encoder call for all.
  TextConditioning result;
  std::vector<int64_t> ids;
  // Each token's emphasis ("(word:1.3)"); 1 everywhere for plain prompts.
  std::vector<float> token_weights;
  bool weighted = false;
  for (const std::string& prompt : prompts) {
    const size_t warnings_before = result.warnings.size();
    const std::vector<PromptSegment> segments = ParsePromptWeights(prompt);
    const std::string text = PromptText(segments);
    std::vector<int64_t> row;
    if (clip_text_) {
      ClipTokenizer::Padded padded = clip_tokenizer_->EncodePadded(text);
      if (padded.truncated) {
        result.warnings.push_back("prompt truncated to 75 CLIP tokens");
      }
      row = std::move(padded.ids);
    } else if (wordpiece_tokenizer_) {
      WordPieceTokenizer::Padded padded = wordpiece_tokenizer_->EncodePadded(
          text, config_.text_encoder->max_length);
      if (padded.truncated) {
        result.warnings.push_back(
            absl::StrCat("prompt truncated to ",
                         config_.text_encoder->max_length - 2, " BERT tokens"));
      }
      row = std::move(padded.ids);
    } else {
      WordTokenizer::Encoding encoding = tokenizer_->Encode(text);
      if (encoding.truncated) {
        result.warnings.push_back(absl::StrCat("prompt truncated to ",
                                               config_.text_encoder->max_length,
                                               " words"));
      }
      if (encoding.unknown_words > 0) {
        result.warnings.push_back(absl::StrCat(
            encoding.unknown_words, " word(s) not in the model's vocabulary"));
      }
      row = std::move(encoding.ids);
    }
    std::vector<float> row_weights(row.size(), 1.0f);
    if (HasWeights(segments)) {
      weighted = true;
      // The segments' tokens in order, after CLIP's or BERT's start token.
      size_t position = clip_text_ || wordpiece_tokenizer_ ? 1 : 0;
      for (const PromptSegment& segment : segments) {
        size_t count = 0;
        if (clip_text_) {
          count = clip_tokenizer_->Encode(segment.text).size();
        } else if (wordpiece_tokenizer_) {
          count = wordpiece_tokenizer_->Encode(segment.text).size();
        } else {
          for (int64_t id : tokenizer_->Encode(segment.text).ids) {
            count += id != WordTokenizer::kPadId;
          }
        }
        for (size_t k = 0; k < count && position < row.size(); ++k) {
          row_weights[position++] = segment.weight;
        }
      }
    }
    ids.insert(ids.end(), row.begin(), row.end());
    token_weights.insert(token_weights.end(), row_weights.begin(),
                         row_weights.end());
    result.row_warnings.emplace_back(result.warnings.begin() + warnings_before,
                                     result.warnings.end());
  }
  return CallTorch("encode text", [&] {
    c10::InferenceMode inference;
    const auto rows = static_cast<int64_t>(prompts.size());
    const at::Tensor id_tensor =
        at::tensor(ids, at::TensorOptions().dtype(at::kLong))
            .reshape({rows, -1})
            .to(options_.device);
    at::Tensor context =
        clip_text_ ? clip_text_->Encode(id_tensor, config_.clip->clip_skip)
                   : text_encoder_->Forward(id_tensor);
    context = context.to(at::kFloat);
    if (weighted) {
      // As those front ends do: scale each token's row by its weight, then
      // give each prompt's rows back their mean (unless it is ~0).
      const at::Tensor weights = at::tensor(token_weights)
                                     .reshape({rows, -1, 1})
                                     .to(context.device(), context.dtype());
      const at::Tensor before = context.mean({1, 2}, /*keepdim=*/true);
      const at::Tensor scaled = context * weights;
      const at::Tensor after = scaled.mean({1, 2}, /*keepdim=*/true);
      context =
          at::where(after.abs() > 1e-6, scaled * (before / after), scaled);
    }
    // The UNet's dtype: what its cross-attention reads.
    result.context = context.to(precision_.unet);
    return result;
  });
}

absl::StatusOr<ImageTask> LatentDiffusion::NewImageTask(
    uint64_t seed, int64_t latent_height, int64_t latent_width,
    const SamplerOptions& sampler, at::Tensor cond, at::Tensor uncond,
    at::Tensor concat, const at::Tensor& init_latent) const {
  ImageTask task;
  LDM_RETURN_IF_ERROR(CallTorchStatus("new image task", [&]() -> absl::Status {
    c10::InferenceMode inference;
    // x_T first, then the sampler's own draws, from the image's generator.
    at::Generator generator = MakeGenerator(seed);
    at::Tensor noise = StandardNormal(
        {1, config_.unet.out_channels, latent_height, latent_width}, generator,
        at::TensorOptions().dtype(at::kFloat).device(options_.device));
    LDM_ASSIGN_OR_RETURN(task.sampler,
                         MakeSampler(sampler, *schedule_, std::move(noise),
                                     std::move(generator), init_latent));
    return absl::OkStatus();
  }));
  task.cond = std::move(cond);
  const bool guided = sampler.guidance_scale != 1.0f && uncond.defined();
  task.uncond = guided ? std::move(uncond) : at::Tensor();
  task.concat = std::move(concat);
  task.guidance_scale = sampler.guidance_scale;
  return task;
}

at::Tensor LatentDiffusion::ToUint8Images(const at::Tensor& images) {
  // The reference truncates: (255 * clamp((x + 1) / 2, 0, 1)).astype(uint8).
  return (at::clamp((images.to(at::kFloat) + 1.0) / 2.0, 0.0, 1.0) * 255.0)
      .to(at::kByte)
      .permute({0, 2, 3, 1})
      .contiguous()
      .to(at::kCPU);
}

absl::StatusOr<at::Tensor> LatentDiffusion::EncodeImages(
    const at::Tensor& images, const at::Tensor& noise) const {
  return CallTorch("encode images", [&] {
    c10::InferenceMode inference;
    // Latents are float32 (the sampler's state) whatever the first stage's
    // dtype.
    const at::Tensor encoded = EncodeMoments(images).to(at::kFloat);
    if (autoencoder_->is_vq()) return config_.scale_factor * encoded;
    const DiagonalGaussian posterior = Autoencoder::Posterior(encoded);
    return config_.scale_factor *
           posterior.SampleWith(noise.to(options_.device, at::kFloat));
  });
}

absl::StatusOr<LatentDiffusion::InpaintConditioning>
LatentDiffusion::PrepareInpaint(const at::Tensor& image, const at::Tensor& mask,
                                const at::Tensor& noise) const {
  InpaintConditioning result;
  LDM_RETURN_IF_ERROR(CallTorchStatus("inpaint conditioning", [&] {
    c10::InferenceMode inference;
    const at::Tensor device_mask = mask.to(options_.device, at::kFloat);
    result.masked_image =
        image.to(options_.device, at::kFloat) * (device_mask < 0.5);
    result.mask_latent =
        at::upsample_nearest2d(device_mask, {noise.size(2), noise.size(3)});
    return absl::OkStatus();
  }));
  LDM_ASSIGN_OR_RETURN(result.masked_image_latent,
                       EncodeImages(result.masked_image, noise));
  LDM_RETURN_IF_ERROR(CallTorchStatus("inpaint conditioning", [&] {
    c10::InferenceMode inference;
    // runwayml's SD inpainting (hybrid) puts the mask first; the paper's
    // concat-conditioned LDM inpainting model the masked image's latent.
    result.c_concat =
        config_.conditioning_key == ConditioningKey::kHybrid
            ? at::cat({result.mask_latent, result.masked_image_latent}, 1)
            : at::cat({result.masked_image_latent, result.mask_latent}, 1);
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<at::Tensor> LatentDiffusion::DecodeLatents(
    const at::Tensor& latents) const {
  const TileOptions& tiles = options_.tiles;
  if (tiles.max_untiled_latent_pixels > 0 &&
      latents.size(2) * latents.size(3) > tiles.max_untiled_latent_pixels) {
    return DecodeLatentsTiled(latents, tiles);
  }
  return CallTorch("decode", [&] {
    c10::InferenceMode inference;
    // Unscaled in float32, then cast: a lowered first stage rounds once.
    return autoencoder_
        ->Decode(((1.0 / config_.scale_factor) * latents.to(options_.device))
                     .to(precision_.first_stage))
        .to(at::kFloat);
  });
}

namespace {

// Start offsets of tiles of `tile` covering `size` with `overlap`.
std::vector<int64_t> TileStarts(int64_t size, int64_t tile, int64_t overlap) {
  std::vector<int64_t> starts;
  if (size <= tile) return {0};
  const int64_t stride = std::max<int64_t>(1, tile - overlap);
  for (int64_t start = 0;; start += stride) {
    if (start + tile >= size) {
      starts.push_back(size - tile);
      break;
    }
    starts.push_back(start);
  }
  return starts;
}

// Blend weights along one axis of a tile at [start, start + length) of
// `size`: ramps of `ramp` pixels up from a neighbour on each inner side.
at::Tensor AxisWeights(int64_t start, int64_t length, int64_t size,
                       int64_t ramp) {
  at::Tensor weights = at::ones({length}, at::kFloat);
  if (ramp <= 0) return weights;
  const at::Tensor up =
      (at::arange(ramp, at::kFloat) + 1) / static_cast<double>(ramp + 1);
  if (start > 0) weights.slice(0, 0, ramp).copy_(up);
  if (start + length < size) {
    weights.slice(0, length - ramp, length).copy_(up.flip(0));
  }
  return weights;
}

// Runs `fn` on overlapping tiles of `input`, whose grid is `h` x `w` cells
// (latent pixels) of `in_scale` tensor pixels a side, and blends the outputs
// (`out_scale` pixels a cell, `out_channels` channels) with linear ramps over
// the overlaps. Blending happens on the CPU in float32, so the device only
// ever holds one tile's activations.
at::Tensor BlendTiles(const at::Tensor& input, int64_t in_scale,
                      int64_t out_scale, int64_t out_channels,
                      const TileOptions& tiles,
                      const std::function<at::Tensor(const at::Tensor&)>& fn) {
  const int64_t h = input.size(2) / in_scale, w = input.size(3) / in_scale;
  const int64_t tile = std::max<int64_t>(1, tiles.tile);
  const int64_t overlap = std::clamp<int64_t>(tiles.overlap, 0, tile - 1);
  const int64_t th = std::min(tile, h), tw = std::min(tile, w);
  at::Tensor sum = at::zeros(
      {input.size(0), out_channels, h * out_scale, w * out_scale}, at::kFloat);
  at::Tensor weight_sum =
      at::zeros({1, 1, h * out_scale, w * out_scale}, at::kFloat);
  for (int64_t y : TileStarts(h, tile, overlap)) {
    for (int64_t x : TileStarts(w, tile, overlap)) {
      const at::Tensor out =
          fn(input.slice(2, y * in_scale, (y + th) * in_scale)
                 .slice(3, x * in_scale, (x + tw) * in_scale))
              .to(at::kCPU, at::kFloat);
      const at::Tensor weights =
          at::outer(AxisWeights(y * out_scale, th * out_scale, h * out_scale,
                                overlap * out_scale),
                    AxisWeights(x * out_scale, tw * out_scale, w * out_scale,
                                overlap * out_scale))
              .unsqueeze(0)
              .unsqueeze(0);
      auto region = [&](const at::Tensor& t) {
        return t.slice(2, y * out_scale, (y + th) * out_scale)
            .slice(3, x * out_scale, (x + tw) * out_scale);
      };
      region(sum).add_(out * weights);
      region(weight_sum).add_(weights);
    }
  }
  return sum / weight_sum;
}

}  // namespace

absl::StatusOr<at::Tensor> LatentDiffusion::DecodeLatentsTiled(
    const at::Tensor& latents, const TileOptions& tiles) const {
  return CallTorch("tiled decode", [&] {
    c10::InferenceMode inference;
    const at::Tensor z =
        ((1.0 / config_.scale_factor) * latents.to(options_.device))
            .to(precision_.first_stage);
    return BlendTiles(z, 1, config_.ae.DownsamplingFactor(), config_.ae.out_ch,
                      tiles,
                      [&](const at::Tensor& tile) {
                        return autoencoder_->Decode(tile);
                      })
        .to(options_.device, at::kFloat);
  });
}

at::Tensor LatentDiffusion::EncodeMoments(const at::Tensor& images) const {
  const at::Tensor x = images.to(options_.device, precision_.first_stage);
  const int64_t f = config_.ae.DownsamplingFactor();
  const TileOptions& tiles = options_.tiles;
  if (tiles.max_untiled_latent_pixels <= 0 ||
      (x.size(2) / f) * (x.size(3) / f) <= tiles.max_untiled_latent_pixels) {
    return autoencoder_->EncodeMoments(x);
  }
  const int64_t channels =
      (autoencoder_->is_vq() ? 1 : 2) * config_.ae.embed_dim;
  return BlendTiles(x, f, 1, channels, tiles,
                    [&](const at::Tensor& tile) {
                      return autoencoder_->EncodeMoments(tile);
                    })
      .to(options_.device, precision_.first_stage);
}

absl::Status LatentDiffusion::DenoiseStep(absl::Span<ImageTask* const> tasks,
                                          StepTrace* trace) const {
  if (tasks.empty()) return absl::OkStatus();
  return CallTorchStatus("denoise step", [&] {
    c10::InferenceMode inference;
    for (ImageTask* task : tasks) {
      if (!task->blend || !task->sampler->at_step_start()) continue;
      ImageTask::Blend& blend = *task->blend;
      const at::Tensor noise = StandardNormal(
          blend.known.sizes(), blend.generator, blend.known.options());
      const at::Tensor noised =
          task->sampler->NoisedToCurrentLevel(blend.known, noise);
      task->sampler->ReplaceLatent(noised * blend.keep +
                                   task->sampler->latent() * (1 - blend.keep));
    }
    std::vector<at::Tensor> inputs, contexts, labels;
    std::vector<float> timesteps;
    for (ImageTask* task : tasks) {
      at::Tensor x = task->sampler->model_input();
      if (task->concat.defined()) x = at::cat({x, task->concat}, 1);
      const float t = static_cast<float>(task->sampler->timestep());
      const int64_t rows = x.size(0);
      if (task->uncond.defined()) {
        // [uncond; cond], the order of the reference's batched CFG call.
        inputs.push_back(x);
        contexts.push_back(task->uncond);
        if (task->uncond_class_labels.defined()) {
          labels.push_back(task->uncond_class_labels);
        }
        timesteps.insert(timesteps.end(), rows, t);
      }
      inputs.push_back(x);
      if (task->cond.defined()) contexts.push_back(task->cond);
      if (task->class_labels.defined()) labels.push_back(task->class_labels);
      timesteps.insert(timesteps.end(), rows, t);
    }
    at::Tensor class_labels;
    if (!labels.empty()) {
      if (labels.size() != inputs.size()) {
        return absl::InvalidArgumentError(
            "denoise step: class labels must be given for every row");
      }
      class_labels = at::cat(labels, 0).to(options_.device);
    }
    at::Tensor context;
    if (!contexts.empty()) {
      if (contexts.size() != inputs.size()) {
        return absl::InvalidArgumentError(
            "denoise step: some tasks have a context and some do not");
      }
      context = at::cat(contexts, 0);
    }
    at::Tensor t = at::tensor(timesteps).to(options_.device);
    // The sampler's float32 state in, the UNet's dtype through it, float32
    // out (no-ops for a float32 model).
    at::Tensor input = at::cat(inputs, 0).to(precision_.unet);
    if (context.defined()) context = context.to(precision_.unet);
    at::Tensor out =
        unet_->Forward(input, t, context, class_labels).to(at::kFloat);
    std::vector<at::Tensor> guided;
    int64_t row = 0;
    for (ImageTask* task : tasks) {
      const int64_t rows = task->sampler->model_input().size(0);
      at::Tensor prediction;
      if (task->uncond.defined()) {
        at::Tensor e_uncond = out.slice(0, row, row + rows);
        at::Tensor e_cond = out.slice(0, row + rows, row + 2 * rows);
        prediction = e_uncond + task->guidance_scale * (e_cond - e_uncond);
        row += 2 * rows;
      } else {
        prediction = out.slice(0, row, row + rows);
        row += rows;
      }
      if (config_.parameterization == Parameterization::kV) {
        // eps = sqrt(a) v + sqrt(1 - a) x_t (the reference's
        // predict_eps_from_z_and_v); linear, so guidance may come first.
        const double a = schedule_->AlphaCumprodAt(task->sampler->timestep());
        prediction = std::sqrt(a) * prediction +
                     std::sqrt(1.0 - a) * task->sampler->model_input();
      }
      if (trace != nullptr) guided.push_back(prediction);
      task->sampler->Step(prediction);
    }
    if (trace != nullptr) {
      *trace = StepTrace{input, t, context, out, at::cat(guided, 0)};
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<at::Tensor> LatentDiffusion::DecodeToImages(
    const std::vector<at::Tensor>& latents) const {
  LDM_ASSIGN_OR_RETURN(at::Tensor joined, CallTorch("decode", [&] {
                         return at::cat(latents, 0);
                       }));
  LDM_ASSIGN_OR_RETURN(at::Tensor images, DecodeLatents(joined));
  return CallTorch("decode", [&] {
    c10::InferenceMode inference;
    return ToUint8Images(images);
  });
}

absl::StatusOr<RgbImage> LatentDiffusion::Preview(
    const PreparedJob& job) const {
  LDM_ASSIGN_OR_RETURN(at::Tensor image, CallTorch("preview", [&] {
                         c10::InferenceMode inference;
                         const at::Tensor& latent =
                             job.images.front().sampler->predicted_x0();
                         at::Tensor x = latent.to(at::kCPU, at::kFloat)[0];
                         at::Tensor rgb = at::einsum(
                             "chw,cr->rhw", {x, PreviewProjection(x.size(0))});
                         return ToUint8Images(rgb.unsqueeze(0));
                       }));
  LDM_ASSIGN_OR_RETURN(std::vector<RgbImage> images,
                       RgbImagesFromTensor(image));
  return std::move(images.front());
}

namespace {

// A generator for an image's encoder noise, independent of its sampler's.
at::Generator EncoderGenerator(uint64_t image_seed) {
  return MakeGenerator(image_seed ^ 0x9E3779B97F4A7C15ull);
}

}  // namespace

absl::StatusOr<PreparedJob> LatentDiffusion::PrepareJob(
    const GenerationRequest& request) const {
  return PrepareJobWithText(request, nullptr);
}

std::vector<absl::StatusOr<PreparedJob>> LatentDiffusion::PrepareJobs(
    absl::Span<const GenerationRequest* const> requests) const {
  std::vector<absl::StatusOr<PreparedJob>> prepared;
  if (!has_text_encoder() || requests.size() < 2) {
    for (const GenerationRequest* request : requests) {
      prepared.push_back(PrepareJob(*request));
    }
    return prepared;
  }
  std::vector<std::string> prompts;
  for (const GenerationRequest* request : requests) {
    prompts.push_back(request->negative_prompt);
    prompts.push_back(request->prompt);
  }
  const absl::StatusOr<TextConditioning> text = EncodeText(prompts);
  for (size_t i = 0; i < requests.size(); ++i) {
    if (!text.ok()) {
      prepared.push_back(text.status());
      continue;
    }
    // This job's two rows, [uncond; cond], and their warnings.
    const auto row = static_cast<int64_t>(2 * i);
    TextConditioning rows{text->context.slice(0, row, row + 2), {}, {}};
    for (size_t r = 2 * i; r < 2 * i + 2; ++r) {
      rows.warnings.insert(rows.warnings.end(), text->row_warnings[r].begin(),
                           text->row_warnings[r].end());
    }
    prepared.push_back(PrepareJobWithText(*requests[i], &rows));
  }
  return prepared;
}

absl::StatusOr<PreparedJob> LatentDiffusion::PrepareJobWithText(
    const GenerationRequest& request, const TextConditioning* text) const {
  PreparedJob job;
  LDM_ASSIGN_OR_RETURN(job.geometry, CheckRequest(capabilities_, request));
  TextConditioning encoded;
  if (has_text_encoder()) {
    if (text == nullptr) {
      LDM_ASSIGN_OR_RETURN(
          encoded, EncodeText({request.negative_prompt, request.prompt}));
      text = &encoded;
    }
    job.warnings = text->warnings;
  }
  LDM_RETURN_IF_ERROR(CallTorchStatus("prepare", [&] {
    at::Tensor cond, uncond;
    if (has_text_encoder()) {
      cond = text->context.slice(0, 1, 2);
      uncond = text->context.slice(0, 0, 1);
    }
    return PrepareImages(request, cond, uncond, job);
  }));
  return job;
}

absl::Status LatentDiffusion::PrepareImages(const GenerationRequest& request,
                                            const at::Tensor& cond,
                                            const at::Tensor& uncond,
                                            PreparedJob& job) const {
  const int64_t height = job.geometry.latent_height;
  const int64_t width = job.geometry.latent_width;
  const Task task = TaskOf(request.task);
  // The task's pixels as tensors, once per job.
  at::Tensor pixels, repaint, low_res;
  if (const auto* image_to_image = std::get_if<ImageToImage>(&request.task)) {
    LDM_ASSIGN_OR_RETURN(pixels, ImageTensor(image_to_image->init_image));
  } else if (const auto* inpaint = std::get_if<Inpaint>(&request.task)) {
    LDM_ASSIGN_OR_RETURN(pixels, ImageTensor(inpaint->image));
    LDM_ASSIGN_OR_RETURN(repaint, MaskTensor(inpaint->mask));
    job.paste_back = *inpaint;
  } else if (const auto* upscale =
                 std::get_if<SuperResolution>(&request.task)) {
    LDM_ASSIGN_OR_RETURN(low_res, ImageTensor(upscale->low_res_image));
    low_res = low_res.to(options_.device, at::kFloat);
  }
  const bool dedicated_inpaint = config_.kind == ModelKind::kInpaint;

  const at::TensorOptions latent_options =
      at::TensorOptions().dtype(at::kFloat).device(options_.device);
  for (int i = 0; i < request.num_images; ++i) {
    const uint64_t seed = ImageSeed(request.seed, i);
    at::Generator encoder_generator = EncoderGenerator(seed);
    auto encoder_noise = [&] {
      c10::InferenceMode inference;
      return StandardNormal({1, config_.ae.embed_dim, height, width},
                            encoder_generator, latent_options);
    };
    at::Tensor concat, init_latent;
    std::optional<ImageTask::Blend> blend;
    switch (task) {
      case Task::kTextToImage:
        break;
      case Task::kImageToImage: {
        LDM_ASSIGN_OR_RETURN(init_latent,
                             EncodeImages(pixels, encoder_noise()));
        break;
      }
      case Task::kInpaint: {
        const at::Tensor noise = encoder_noise();
        if (dedicated_inpaint) {
          LDM_ASSIGN_OR_RETURN(InpaintConditioning prep,
                               PrepareInpaint(pixels, repaint, noise));
          concat = prep.c_concat;
          break;
        }
        LDM_ASSIGN_OR_RETURN(at::Tensor known, EncodeImages(pixels, noise));
        c10::InferenceMode inference;
        const at::Tensor repaint_latent = at::upsample_nearest2d(
            repaint.to(options_.device), {height, width});
        blend = ImageTask::Blend{1 - repaint_latent, known,
                                 MakeGenerator(seed ^ 0xD1B54A32D192ED03ull)};
        break;
      }
      case Task::kSuperResolution:
        concat = low_res;
        break;
    }
    LDM_ASSIGN_OR_RETURN(ImageTask image,
                         NewImageTask(seed, height, width, request.sampler,
                                      cond, uncond, concat, init_latent));
    image.blend = std::move(blend);
    job.images.push_back(std::move(image));
  }
  return absl::OkStatus();
}

namespace {

// The kept pixels of `input` over `image` (same size; else left as it is).
void PasteKeptPixels(const Inpaint& input, RgbImage& image) {
  if (image.width != input.image.width || image.height != input.image.height) {
    return;
  }
  const std::vector<uint8_t>& repaint = input.mask.repaint;
  for (size_t pixel = 0; pixel < repaint.size(); ++pixel) {
    if (repaint[pixel] != 0) continue;
    for (size_t c = 0; c < 3; ++c) {
      image.pixels[3 * pixel + c] = input.image.pixels[3 * pixel + c];
    }
  }
}

}  // namespace

absl::StatusOr<std::vector<std::vector<RgbImage>>> LatentDiffusion::FinishJobs(
    absl::Span<const PreparedJob* const> jobs) const {
  std::vector<at::Tensor> latents;
  for (const PreparedJob* job : jobs) {
    for (const ImageTask& image : job->images) {
      latents.push_back(image.sampler->latent());
    }
  }
  LDM_ASSIGN_OR_RETURN(at::Tensor decoded, DecodeToImages(latents));
  LDM_ASSIGN_OR_RETURN(std::vector<RgbImage> images,
                       RgbImagesFromTensor(decoded));
  std::vector<std::vector<RgbImage>> finished;
  auto next = images.begin();
  for (const PreparedJob* job : jobs) {
    const auto end = next + static_cast<int64_t>(job->images.size());
    std::vector<RgbImage> own(std::make_move_iterator(next),
                              std::make_move_iterator(end));
    next = end;
    if (job->paste_back) {
      for (RgbImage& image : own) PasteKeptPixels(*job->paste_back, image);
    }
    finished.push_back(std::move(own));
  }
  return finished;
}

absl::StatusOr<std::vector<RgbImage>> RunJob(const LatentDiffusion& model,
                                             const GenerationRequest& request) {
  LDM_ASSIGN_OR_RETURN(PreparedJob job, model.PrepareJob(request));
  std::vector<ImageTask*> pointers;
  for (ImageTask& task : job.images) pointers.push_back(&task);
  while (!job.done()) {
    LDM_RETURN_IF_ERROR(model.DenoiseStep(pointers));
  }
  const PreparedJob* jobs[] = {&job};
  LDM_ASSIGN_OR_RETURN(std::vector<std::vector<RgbImage>> images,
                       model.FinishJobs(jobs));
  return std::move(images.front());
}

}  // namespace ldm
