// A loaded latent diffusion model and its pipeline, cut into the stages the
// scheduler batches separately:
//
//   EncodeText(prompts)            conditioning, once per job
//   NewImageTask(...)              initial noise + sampler state, per image
//   DenoiseStep(tasks)             ONE UNet call for any mix of images from
//                                  different jobs, each at its own timestep,
//                                  with its own guidance scale and sampler
//   DecodeToImages(latents)        autoencoder decode to uint8 RGB
//
// Each image carries its own sampler and generator (seed + i for image i of a
// job), so what an image becomes does not depend on what else shares its
// batch.
//
// A LatentDiffusion is immutable after loading; all stage functions are const
// and safe to call from several threads at once. Every entry point catches
// LibTorch errors and returns them as statuses.
//
// Example:
//   LDM_ASSIGN_OR_RETURN(auto model, LatentDiffusion::Load(config, weights));
//   GenerationRequest request;
//   request.prompt = "a red circle";
//   LDM_ASSIGN_OR_RETURN(std::vector<RgbImage> images,
//                        RunJob(*model, request));
#ifndef LDMSERVE_SERVER_LDM_LATENT_DIFFUSION_H_
#define LDMSERVE_SERVER_LDM_LATENT_DIFFUSION_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/ldm/autoencoder.h"
#include "server/ldm/clip_text_model.h"
#include "server/ldm/clip_tokenizer.h"
#include "server/ldm/generation.h"
#include "server/ldm/model_config.h"
#include "server/ldm/parameters.h"
#include "server/ldm/precision.h"
#include "server/ldm/sampler.h"
#include "server/ldm/schedule.h"
#include "server/ldm/text_encoder.h"
#include "server/ldm/unet.h"
#include "server/ldm/wordpiece_tokenizer.h"

namespace ldm {

// Large images are decoded (and encoded) tile by tile so that memory stays
// bounded; tiles overlap and are blended with linear ramps.
struct TileOptions {
  int64_t tile = 64;     // Tile side in latent pixels.
  int64_t overlap = 16;  // Overlap between neighbouring tiles, latent pixels.
  // Latents with more pixels (h * w) than this are tiled; 0 = never.
  int64_t max_untiled_latent_pixels = int64_t{96} * 96;
};

struct LoadOptions {
  at::Device device = at::kCPU;
  // The model's dtype: its UNet's. The autoencoder and the text encoder are
  // float32 unless set here (precision.h says why).
  at::ScalarType dtype = at::kFloat;
  std::optional<at::ScalarType> first_stage_dtype;
  std::optional<at::ScalarType> text_dtype;
  bool strict = true;
  // Read the UNet from the checkpoint's EMA copy (CompVis `model_ema.*`,
  // names without dots) instead of its training weights; FAILED_PRECONDITION
  // when the file has none. Either way the other copy is skipped.
  bool use_ema = false;
  TileOptions tiles;

  StagePrecision Precision() const;
};

// One image's (or one batch's) progress through the denoising loop.
struct ImageTask {
  std::unique_ptr<Sampler> sampler;
  at::Tensor cond;    // [n, L, D] context (undefined without cross-attention).
  at::Tensor uncond;  // [n, L, D]; undefined = no guidance.
  // [n, c, h, w] concatenated to the UNet input after the latent ("concat"
  // and "hybrid" conditioning: masked-image latent and mask, low-res image).
  at::Tensor concat;
  float guidance_scale = 1.0f;
  // "adm" conditioning: class labels [n] (int64) fed to the UNet's
  // label_emb; `uncond_class_labels` for the unconditional rows of CFG.
  at::Tensor class_labels;
  at::Tensor uncond_class_labels;
  // Inpainting with a plain model: before each step the kept region
  // (keep = 1, latent resolution) is reset to `known` noised to the step's
  // level, as the reference DDIM sampler's mask/x0 arguments do.
  struct Blend {
    at::Tensor keep;
    at::Tensor known;
    at::Generator generator;
  };
  std::optional<Blend> blend;
};

struct TextConditioning {
  at::Tensor context;  // [B, L, D]
  std::vector<std::string> warnings;
  std::vector<std::vector<std::string>> row_warnings;  // Per prompt (row).
};

// A job ready for the denoising loop, and what finishing it needs.
struct PreparedJob {
  std::vector<ImageTask> images;  // One per image; they step together.
  std::vector<std::string> warnings;
  ImageGeometry geometry;
  // Inpainting: the input, whose kept pixels are pasted back after decoding.
  std::optional<Inpaint> paste_back;

  int steps_done() const { return images.front().sampler->steps_done(); }
  int total_steps() const { return images.front().sampler->total_steps(); }
  bool done() const { return images.front().sampler->done(); }
};

class LatentDiffusion {
 public:
  // Builds the model from `config_path` and loads `weights_path`: a
  // safetensors file with CompVis key names (model.diffusion_model.*,
  // first_stage_model.*, cond_stage_model.*) or a diffusers folder
  // (checkpoint.h).
  static absl::StatusOr<std::unique_ptr<LatentDiffusion>> Load(
      const std::string& config_path, const std::string& weights_path,
      const LoadOptions& options = {});
  // The same model with seeded random weights.
  static absl::StatusOr<std::unique_ptr<LatentDiffusion>> CreateRandom(
      const ModelConfig& config, uint64_t seed,
      const LoadOptions& options = {});

  ~LatentDiffusion();

  // Every parameter `config` builds, with its shape, under the reference
  // checkpoint key names; nothing is allocated.
  static absl::StatusOr<std::map<std::string, std::vector<int64_t>>>
  ExpectedParameters(const ModelConfig& config);

  // All parameters (as `dtype`) and the schedule, under the reference key
  // names, with the config in the file's metadata.
  absl::Status Save(const std::string& weights_path,
                    at::ScalarType dtype = at::kFloat) const;

  const ModelConfig& config() const { return config_; }
  // What the model can run, and at which sizes (CheckRequest).
  const ModelCapabilities& capabilities() const { return capabilities_; }
  const at::Device& device() const { return options_.device; }
  // The dtype of each stage's weights and arithmetic.
  const StagePrecision& precision() const { return precision_; }
  int64_t NumParameters() const { return registry_.NumElements(); }
  bool has_text_encoder() const {
    return text_encoder_ != nullptr || clip_text_ != nullptr;
  }

  absl::StatusOr<TextConditioning> EncodeText(
      const std::vector<std::string>& prompts) const;

  // A fresh image task: noise x_T of [1, C, h, w] from `seed` and the
  // sampler `sampler` asks for. `cond`/`uncond` are rows of EncodeText
  // results; `concat` is the concat conditioning, if the model has one.
  // With `init_latent` the sampler starts part-way (img2img strength).
  absl::StatusOr<ImageTask> NewImageTask(
      uint64_t seed, int64_t latent_height, int64_t latent_width,
      const SamplerOptions& sampler, at::Tensor cond, at::Tensor uncond,
      at::Tensor concat = {}, const at::Tensor& init_latent = {}) const;

  // Runs one denoising step for every task in one batched UNet call
  // (conditional and unconditional rows of guided tasks included) and
  // advances each task's sampler. Tasks must not be done().
  //
  // `trace`, when given, receives the UNet call as made (inputs after
  // concat, timesteps, contexts, raw output) and each task's guided
  // prediction, concatenated: what parity checks compare with the reference.
  struct StepTrace {
    at::Tensor unet_input, timesteps, context, unet_output, guided;
  };
  absl::Status DenoiseStep(absl::Span<ImageTask* const> tasks,
                           StepTrace* trace = nullptr) const;

  // Images [B, 3, H, W] in [-1, 1] -> latents in sampler space:
  // scale_factor * a sample of the posterior, with `noise` (N(0, 1) of the
  // latent shape) for its randomness (get_first_stage_encoding); a VQ first
  // stage's latent is deterministic and `noise` is unused.
  absl::StatusOr<at::Tensor> EncodeImages(const at::Tensor& images,
                                          const at::Tensor& noise) const;

  // The concat conditioning of an inpainting model (runwayml inpaint_st):
  // masked_image = image * (mask < 0.5), mask resized to the latent size
  // (nearest), and the masked image's latent: [mask_latent, latent].
  struct InpaintConditioning {
    at::Tensor masked_image, mask_latent, masked_image_latent, c_concat;
  };
  absl::StatusOr<InpaintConditioning> PrepareInpaint(
      const at::Tensor& image, const at::Tensor& mask,
      const at::Tensor& noise) const;

  // Latents in sampler space -> the decoder's output [B, 3, H, W] in about
  // [-1, 1] (decode_first_stage); tiled past the load options' threshold.
  absl::StatusOr<at::Tensor> DecodeLatents(const at::Tensor& latents) const;
  // The same, always in tiles of `tiles` (for tests and tools).
  absl::StatusOr<at::Tensor> DecodeLatentsTiled(const at::Tensor& latents,
                                                const TileOptions& tiles) const;

  // Latents, each [n_i, C, h, w] in sampler space, decoded in one batch ->
  // uint8 RGB [sum n_i, H, W, 3] on the CPU.
  absl::StatusOr<at::Tensor> DecodeToImages(
      const std::vector<at::Tensor>& latents) const;

  // The reference's uint8 conversion: (255 * clamp((x + 1) / 2, 0, 1)),
  // truncated, as [B, H, W, 3] on the CPU.
  static at::Tensor ToUint8Images(const at::Tensor& images);

  // Checks `request` (CheckRequest), encodes its conditioning and creates
  // one ImageTask per image. Which pipeline runs follows from the task:
  //   TextToImage       noise to image
  //   ImageToImage      from the encoded image, sampler.strength of the way
  //   Inpaint           concat/hybrid-conditioned models get the masked
  //                     image as conditioning; plain models blend the known
  //                     region in latent space at every step; either way the
  //                     kept pixels are pasted back after decoding
  //   SuperResolution   the low-resolution image as concat conditioning
  absl::StatusOr<PreparedJob> PrepareJob(
      const GenerationRequest& request) const;
  // PrepareJob for each request, their prompts encoded in one text-encoder
  // call (the stage that admits several jobs at once); each job's result is
  // what PrepareJob alone gives (bit for bit with SetBatchInvariant(true)).
  std::vector<absl::StatusOr<PreparedJob>> PrepareJobs(
      absl::Span<const GenerationRequest* const> requests) const;
  // The final images of `jobs` (all done()), their latents decoded in one
  // call: one vector per job (inpainting pastes the kept pixels back).
  absl::StatusOr<std::vector<std::vector<RgbImage>>> FinishJobs(
      absl::Span<const PreparedJob* const> jobs) const;

  // A cheap preview of the job's first image: a fixed linear projection of
  // its predicted x_0's latent channels to RGB, at latent size, no decoder
  // involved.
  absl::StatusOr<RgbImage> Preview(const PreparedJob& job) const;

  // For tests and tools: the raw UNet and autoencoder.
  const UNetModel& unet() const { return *unet_; }
  const Autoencoder& autoencoder() const { return *autoencoder_; }
  const DiffusionSchedule& schedule() const { return *schedule_; }

  // For training (tools/train): the parameters, by reference key name (the
  // tensors alias the model's own), and our word-level text encoder (null
  // for CLIP-conditioned and unconditional models).
  std::map<std::string, at::Tensor> MutableParameters() {
    return registry_.Named("");
  }
  const TextTransformer* word_text_encoder() const {
    return text_encoder_.get();
  }
  const WordTokenizer* word_tokenizer() const { return tokenizer_.get(); }

 private:
  // PrepareJob with the job's [uncond; cond] text rows already encoded
  // (`text`, or nullptr to encode them here).
  absl::StatusOr<PreparedJob> PrepareJobWithText(
      const GenerationRequest& request, const TextConditioning* text) const;
  // The per-image noise, sampler and conditioning of one task's pipeline.
  absl::Status PrepareImages(const GenerationRequest& request,
                             const at::Tensor& cond, const at::Tensor& uncond,
                             PreparedJob& job) const;

  LatentDiffusion(ModelConfig config, LoadOptions options,
                  at::Device declare_on = at::kCPU);
  // quant_conv(encoder(images)), tiled past the load options' threshold.
  at::Tensor EncodeMoments(const at::Tensor& images) const;
  absl::Status Build();
  // The tokenizer's files: CLIP's, or BERT's vocabulary for the paper's
  // text-to-image encoder.
  absl::Status LoadTokenizer();

  // The dtype of parameter `name` (a reference key): its stage's.
  at::ScalarType DtypeOfParameter(const std::string& name) const;

  ModelConfig config_;
  ModelCapabilities capabilities_;
  LoadOptions options_;
  StagePrecision precision_;
  ParameterRegistry registry_;
  std::unique_ptr<UNetModel> unet_;
  std::unique_ptr<Autoencoder> autoencoder_;
  std::unique_ptr<TextTransformer> text_encoder_;
  std::unique_ptr<WordTokenizer> tokenizer_;
  std::unique_ptr<WordPieceTokenizer> wordpiece_tokenizer_;
  std::unique_ptr<ClipTextModel> clip_text_;
  std::unique_ptr<ClipTokenizer> clip_tokenizer_;
  std::optional<DiffusionSchedule> schedule_;
};

// A whole job run alone, stage after stage: the reference result that
// batched serving must reproduce.
absl::StatusOr<std::vector<RgbImage>> RunJob(const LatentDiffusion& model,
                                             const GenerationRequest& request);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_LATENT_DIFFUSION_H_
