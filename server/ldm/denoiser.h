// The denoiser of a latent diffusion model: the UNet, the noise schedule,
// classifier-free guidance and v-prediction, stepping any mix of images at
// once. Each image carries its own sampler and generator, so what an image
// becomes does not depend on what else shares its batch. Const and
// thread-safe after loading; LibTorch errors come back as statuses.
#ifndef LDMSERVE_SERVER_LDM_DENOISER_H_
#define LDMSERVE_SERVER_LDM_DENOISER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/ldm/model_config.h"
#include "server/ldm/parameters.h"
#include "server/ldm/sampler.h"
#include "server/ldm/schedule.h"
#include "server/ldm/unet.h"
#include "server/ldm/unet_runner.h"

namespace ldm {

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

class Denoiser {
 public:
  // Declares the UNet's parameters under `scope`; it runs on `device` in
  // `dtype` (the sampler's state stays float32).
  Denoiser(const UNetConfig& config, const ParamScope& scope,
           DiffusionSchedule schedule, Parameterization parameterization,
           at::Device device, at::ScalarType dtype);

  // A checkpoint's own schedule (its alphas_cumprod buffer).
  void set_schedule(DiffusionSchedule schedule) {
    schedule_ = std::move(schedule);
  }

  // A fresh image task: noise x_T of [1, C, h, w] from `seed` and the
  // sampler `sampler` asks for. `cond`/`uncond` are rows of the text
  // stage's context; `concat` is the concat conditioning, if the model has
  // one. With `init_latent` the sampler starts part-way (img2img strength).
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
  absl::Status Step(absl::Span<ImageTask* const> tasks,
                    StepTrace* trace = nullptr) const;

  const UNetModel& unet() const { return *unet_; }
  // How Step() makes its UNet calls (padding and CUDA graphs).
  const UNetRunner& unet_runner() const { return *unet_runner_; }
  const DiffusionSchedule& schedule() const { return schedule_; }

 private:
  std::unique_ptr<UNetModel> unet_;
  std::unique_ptr<UNetRunner> unet_runner_;
  DiffusionSchedule schedule_;
  Parameterization parameterization_;
  int64_t latent_channels_;
  at::Device device_;
  at::ScalarType dtype_;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_DENOISER_H_
