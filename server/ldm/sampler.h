// Samplers that keep all their state per job, so that one batched UNet call
// can serve many jobs at different timesteps: the caller asks each job's
// sampler for the timestep of its next model call, runs the model for the
// whole batch, and hands each sampler its slice of the (guided) noise
// prediction.
//
// Example (one job alone):
//   DdimSampler sampler(schedule, /*steps=*/25, /*eta=*/0.0, x_T, generator);
//   while (!sampler.done()) {
//     at::Tensor eps = Predict(sampler.latent(), sampler.timestep());
//     sampler.Step(eps);
//   }
//   at::Tensor x_0 = sampler.latent();
//
// A sampler is used by one thread at a time.
#ifndef LDMSERVE_SERVER_LDM_SAMPLER_H_
#define LDMSERVE_SERVER_LDM_SAMPLER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "server/ldm/schedule.h"

namespace ldm {

// A CPU generator seeded with `seed`. Noise is always drawn on the CPU, so a
// seed gives the same noise on every device.
at::Generator MakeGenerator(uint64_t seed);

// N(0, 1) noise of `sizes` from `generator`, returned with `options`.
at::Tensor StandardNormal(at::IntArrayRef sizes, at::Generator& generator,
                          const at::TensorOptions& options);

class Sampler {
 public:
  virtual ~Sampler() = default;

  // Model calls (= steps) in all, and done so far.
  virtual int total_steps() const = 0;
  virtual int steps_done() const = 0;
  bool done() const { return steps_done() >= total_steps(); }
  // The timestep to run the model at for the next step.
  virtual int64_t timestep() const = 0;
  // The current latent x_t (the final sample once done()).
  virtual const at::Tensor& latent() const = 0;
  // The model's estimate of x_0 after the last step (for previews).
  virtual const at::Tensor& predicted_x0() const = 0;
  // Advances one step with the noise prediction `eps` for latent().
  virtual void Step(const at::Tensor& eps) = 0;
};

// DDIM (Song et al.) exactly as the reference `DDIMSampler`: "uniform"
// timesteps range(0, T, T // steps) + 1, alphas_prev[0] = alphas_cumprod[0],
// sigma_t = eta * sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev)).
class DdimSampler : public Sampler {
 public:
  DdimSampler(const DiffusionSchedule& schedule, int steps, double eta,
              at::Tensor x_T, at::Generator generator);

  // The timesteps the reference uses for `steps` (ascending). For steps that
  // do not divide T it yields more than `steps` entries, as the reference.
  static std::vector<int64_t> UniformTimesteps(int64_t num_train_timesteps,
                                               int steps);

  int total_steps() const override {
    return static_cast<int>(timesteps_.size());
  }
  int steps_done() const override { return steps_done_; }
  int64_t timestep() const override;
  const at::Tensor& latent() const override { return x_; }
  const at::Tensor& predicted_x0() const override { return pred_x0_; }
  void Step(const at::Tensor& eps) override;

  // Uses `noise` instead of the generator for the next Step (tests).
  void SetNextNoise(at::Tensor noise) { next_noise_ = std::move(noise); }
  const std::vector<float>& alphas() const { return alphas_; }
  const std::vector<float>& alphas_prev() const { return alphas_prev_; }
  const std::vector<float>& sigmas() const { return sigmas_; }

 private:
  std::vector<int64_t> timesteps_;
  std::vector<float> alphas_, alphas_prev_, sigmas_;
  at::Tensor x_;
  at::Tensor pred_x0_;
  at::Tensor next_noise_;
  at::Generator generator_;
  int steps_done_ = 0;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_SAMPLER_H_
