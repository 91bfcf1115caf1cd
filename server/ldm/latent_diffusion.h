// A loaded latent diffusion model: its three stages and the task pipelines
// over them, cut where the scheduler batches separately:
//
//   text_conditioner.h   prompts -> context, once per job (EncodeText)
//   denoiser.h           ONE UNet call for any mix of images from different
//                        jobs, each at its own timestep, with its own
//                        guidance scale and sampler (DenoiseStep)
//   first_stage.h        the autoencoder: images <-> latents, tiled
//   task_pipelines.cc    each task's preparation (PrepareJob), the decode and
//                        paste-back that finish it (FinishJobs), previews
//   model_loader.cc      building the stages and loading their weights
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
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/ldm/denoiser.h"
#include "server/ldm/first_stage.h"
#include "server/ldm/generation.h"
#include "server/ldm/model_config.h"
#include "server/ldm/parameters.h"
#include "server/ldm/precision.h"
#include "server/ldm/text_conditioner.h"

namespace ldm {

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
  // The UNet's convolution weights stored channels-last (NHWC), which
  // cuDNN's and oneDNN's convolutions then follow through the UNet; the
  // results are the same up to rounding. For measuring (ldmbench
  // --channels-last): whether it is faster depends on the device.
  bool channels_last = false;

  StagePrecision Precision() const;
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
  // The parameter of reference name `name` ("model.diffusion_model...."),
  // aliasing the model's own, or null.
  const at::Tensor* Parameter(const std::string& name) const {
    return registry_.Find(name);
  }
  bool has_text_encoder() const { return text_ != nullptr; }

  // The stages, for the pipelines below, tests and tools.
  const Denoiser& denoiser() const { return *denoiser_; }
  const FirstStage& first_stage() const { return *first_stage_; }

  // The prompts' context [B, L, D] in the UNet's dtype (`clip_skip` as in
  // PromptGroup); FAILED_PRECONDITION for a model without a text encoder.
  absl::StatusOr<TextConditioning> EncodeText(
      const std::vector<std::string>& prompts, int clip_skip = 0) const;
  // Denoiser::NewImageTask and Denoiser::Step, as the scheduler calls them.
  absl::StatusOr<ImageTask> NewImageTask(
      uint64_t seed, int64_t latent_height, int64_t latent_width,
      const SamplerOptions& sampler, at::Tensor cond, at::Tensor uncond,
      at::Tensor concat = {}, const at::Tensor& init_latent = {}) const {
    return denoiser_->NewImageTask(seed, latent_height, latent_width, sampler,
                                   std::move(cond), std::move(uncond),
                                   std::move(concat), init_latent);
  }
  using StepTrace = Denoiser::StepTrace;
  absl::Status DenoiseStep(absl::Span<ImageTask* const> tasks,
                           StepTrace* trace = nullptr) const {
    return denoiser_->Step(tasks, trace);
  }

  // The concat conditioning of an inpainting model (runwayml inpaint_st):
  // masked_image = image * (mask < 0.5), mask resized to the latent size
  // (nearest), and the masked image's latent: [mask_latent, latent].
  struct InpaintConditioning {
    at::Tensor masked_image, mask_latent, masked_image_latent, c_concat;
  };
  absl::StatusOr<InpaintConditioning> PrepareInpaint(
      const at::Tensor& image, const at::Tensor& mask,
      const at::Tensor& noise) const;

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

  // For training (tools/train): the parameters, by reference key name (the
  // tensors alias the model's own), and our word-level text stage (null
  // for CLIP- or BERT-conditioned and unconditional models).
  std::map<std::string, at::Tensor> MutableParameters() {
    return registry_.Named("");
  }
  const WordConditioner* word_conditioner() const {
    return dynamic_cast<const WordConditioner*>(text_.get());
  }

 private:
  // LoadOptions::channels_last, once the weights are in place.
  void StoreUNetChannelsLast();
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
  // Declares every stage's parameters (model_loader.cc).
  absl::Status Build();

  // The dtype of parameter `name` (a reference key): its stage's.
  at::ScalarType DtypeOfParameter(const std::string& name) const;

  ModelConfig config_;
  ModelCapabilities capabilities_;
  LoadOptions options_;
  StagePrecision precision_;
  ParameterRegistry registry_;
  std::unique_ptr<TextConditioner> text_;
  std::unique_ptr<Denoiser> denoiser_;
  std::unique_ptr<FirstStage> first_stage_;
};

// A whole job run alone, stage after stage: the reference result that
// batched serving must reproduce.
absl::StatusOr<std::vector<RgbImage>> RunJob(const LatentDiffusion& model,
                                             const GenerationRequest& request);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_LATENT_DIFFUSION_H_
