// Samplers that keep all their state per job, so that one batched UNet call
// can serve many jobs at different timesteps: the caller asks each sampler
// for its next model input and timestep, runs the model for the whole batch,
// and hands each sampler its slice of the (guided) noise prediction.
//
// Example (one job alone):
//   LDM_ASSIGN_OR_RETURN(auto sampler,
//                        MakeSampler(options, schedule, noise, generator));
//   while (!sampler->done()) {
//     sampler->Step(PredictNoise(sampler->model_input(),
//                                sampler->timestep()));
//   }
//   at::Tensor x_0 = sampler->latent();
//
// The reference samplers (DDIM, PLMS, DDPM) reproduce the CompVis code's
// arithmetic, quirks included; Euler ancestral and DPM-Solver++ 2M follow
// k-diffusion on the model's own sigmas. A sampler is used by one thread at
// a time; its latent may hold several images (a batch dimension).
#ifndef LDMSERVE_SERVER_LDM_SAMPLER_H_
#define LDMSERVE_SERVER_LDM_SAMPLER_H_

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "server/ldm/sampler_options.h"
#include "server/ldm/schedule.h"

namespace ldm {

// A CPU generator seeded with `seed`. Noise is always drawn on the CPU, so a
// seed gives the same noise on every device.
at::Generator MakeGenerator(uint64_t seed);

// N(0, 1) noise of `sizes` from `generator`, returned with `options`.
at::Tensor StandardNormal(at::IntArrayRef sizes, at::Generator& generator,
                          const at::TensorOptions& options);

// `host` with `options`; from the CPU to CUDA without the host waiting for
// the device.
at::Tensor FromHost(const at::Tensor& host, const at::TensorOptions& options);

class Sampler {
 public:
  // `schedule` must outlive the sampler.
  Sampler(const DiffusionSchedule& schedule, at::Tensor x,
          at::Generator generator)
      : schedule_(&schedule),
        x_(std::move(x)),
        generator_(std::move(generator)) {}
  virtual ~Sampler() = default;

  // Steps in all (PLMS's first step makes two model calls but is one step).
  virtual int total_steps() const = 0;
  int steps_done() const { return steps_done_; }
  bool done() const { return steps_done_ >= total_steps(); }
  // What to feed the UNet next, and at which (possibly fractional) timestep.
  virtual const at::Tensor& model_input() const { return x_; }
  virtual double timestep() const = 0;
  // The current latent x_t (the final sample once done()).
  const at::Tensor& latent() const { return x_; }
  // The model's estimate of x_0 after the last step (for previews).
  const at::Tensor& predicted_x0() const { return pred_x0_; }
  // Takes the noise prediction for model_input() at timestep().
  virtual void Step(const at::Tensor& eps) = 0;

  // Inpainting by blending: false between the model calls of one step
  // (PLMS's first step), when the latent must not be replaced.
  virtual bool at_step_start() const { return true; }
  // `x0` noised to the level of the next step, with `noise` (the reference's
  // q_sample at the current timestep), in the sampler's own space.
  virtual at::Tensor NoisedToCurrentLevel(const at::Tensor& x0,
                                          const at::Tensor& noise) const;
  // Replaces the current latent (same shape).
  virtual void ReplaceLatent(at::Tensor x) { x_ = std::move(x); }

  // The next stochastic update uses `noise` instead of the generator
  // (reproducing a reference run's stored draws).
  void SetNextNoise(at::Tensor noise) { next_noise_ = std::move(noise); }

 protected:
  at::Tensor DrawNoise();

  const DiffusionSchedule* schedule_;
  at::Tensor x_;
  at::Tensor pred_x0_;
  int steps_done_ = 0;

 private:
  at::Generator generator_;
  at::Tensor next_noise_;
};

// The timesteps DDIM uses for `steps` (ascending), as the reference's
// make_ddim_timesteps: "uniform" is range(0, T, T // steps) + 1 (a count that
// does not divide T can give more entries); "quad" is
// (linspace(0, sqrt(0.8 T), steps) ** 2).astype(int) + 1.
std::vector<int64_t> DdimTimesteps(int64_t num_train_timesteps, int steps,
                                   bool quadratic = false);

// DDIM (Song et al.) as the reference `DDIMSampler`: alphas_prev[0] =
// alphas_cumprod[0]; sigma_t = eta * sqrt((1 - a_prev) / (1 - a) *
// (1 - a / a_prev)).
class DdimSampler : public Sampler {
 public:
  // `first_steps` > 0 runs only the first that many indices, from index
  // first_steps - 1 down (img2img's decode from t_enc).
  DdimSampler(const DiffusionSchedule& schedule, std::vector<int64_t> timesteps,
              double eta, at::Tensor x, at::Generator generator,
              int first_steps = 0);

  int total_steps() const override { return first_index_ + 1; }
  double timestep() const override;
  void Step(const at::Tensor& eps) override;

  // x_0 noised to DDIM index `index` (the reference's stochastic_encode).
  at::Tensor NoiseTo(int index, const at::Tensor& x0,
                     const at::Tensor& noise) const;
  const std::vector<int64_t>& timesteps() const { return timesteps_; }
  const std::vector<float>& alphas() const { return alphas_; }
  const std::vector<float>& alphas_prev() const { return alphas_prev_; }
  const std::vector<float>& sigmas() const { return sigmas_; }

 private:
  std::vector<int64_t> timesteps_;
  std::vector<float> alphas_, alphas_prev_, sigmas_;
  int first_index_;
};

// PLMS (Liu et al.) as the reference `PLMSSampler`: the first step is a
// pseudo improved Euler step (two model calls), then Adams-Bashforth of
// orders 2, 3, 4 over at most three earlier noise predictions.
class PlmsSampler : public Sampler {
 public:
  PlmsSampler(const DiffusionSchedule& schedule, std::vector<int64_t> timesteps,
              at::Tensor x, at::Generator generator);

  int total_steps() const override {
    return static_cast<int>(timesteps_.size());
  }
  const at::Tensor& model_input() const override {
    return second_call_ ? x_probe_ : x_;
  }
  bool at_step_start() const override { return !second_call_; }
  double timestep() const override;
  void Step(const at::Tensor& eps) override;

 private:
  // x_prev and pred_x0 from x_ with noise estimate `eps` at `index`.
  std::pair<at::Tensor, at::Tensor> Update(const at::Tensor& eps,
                                           int index) const;
  std::vector<int64_t> timesteps_;
  std::vector<float> alphas_, alphas_prev_;
  std::deque<at::Tensor> old_eps_;
  bool second_call_ = false;
  at::Tensor x_probe_;
  at::Tensor first_eps_;
};

// Ancestral DDPM (Ho et al.), the reference `p_sample` with eps
// parameterisation and no clipping, over any descending subsequence of the
// training timesteps (the reference walks consecutive ones; a sparser one is
// the respaced chain). No noise is added at the last step.
class DdpmSampler : public Sampler {
 public:
  DdpmSampler(const DiffusionSchedule& schedule,
              std::vector<int64_t> timesteps_descending, at::Tensor x,
              at::Generator generator);

  int total_steps() const override {
    return static_cast<int>(timesteps_.size());
  }
  double timestep() const override {
    return static_cast<double>(timesteps_[steps_done_]);
  }
  void Step(const at::Tensor& eps) override;

 private:
  struct Coefficients {
    float sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod;
    float posterior_mean_coef1, posterior_mean_coef2;
    float posterior_std;  // exp(0.5 * posterior_log_variance_clipped)
  };
  std::vector<int64_t> timesteps_;
  std::vector<Coefficients> coefficients_;
};

// The k-diffusion samplers work on x_k = x / sqrt(a) at noise level sigma;
// the model sees x_k * c_in with c_in = 1 / sqrt(sigma^2 + 1), which is the
// LDM latent, at the timestep whose sigma that is. Sigmas are
// sigma(linspace(T - 1, 0, steps)) then 0.
// An ancestral step from sigma to sigma_next (k-diffusion's
// get_ancestral_step, eta 1): deterministically down to `down`, then fresh
// noise of std `up`, so that down^2 + up^2 = sigma_next^2.
struct AncestralSigmas {
  double down = 0.0;
  double up = 0.0;
};
AncestralSigmas AncestralStep(double sigma, double sigma_next);

// The sigmas of `kind` for `steps` steps, descending, then 0.
std::vector<double> KarrasStyleSigmas(const DiffusionSchedule& schedule,
                                      int steps, SigmaSchedule kind);

class KarrasStyleSampler : public Sampler {
 public:
  // With `init_latent`, only the last `first_steps` of the `steps` sigmas
  // run, from init_latent + sigma * unit_noise.
  KarrasStyleSampler(const DiffusionSchedule& schedule, int steps,
                     at::Tensor unit_noise, at::Generator generator,
                     const at::Tensor& init_latent = {}, int first_steps = 0,
                     SigmaSchedule sigma_schedule = SigmaSchedule::kUniform);
  int total_steps() const override {
    return static_cast<int>(sigmas_.size()) - 1;
  }
  const at::Tensor& model_input() const override { return scaled_input_; }
  double timestep() const override { return timesteps_[steps_done_]; }
  void Step(const at::Tensor& eps) override;
  at::Tensor NoisedToCurrentLevel(const at::Tensor& x0,
                                  const at::Tensor& noise) const override;
  void ReplaceLatent(at::Tensor x) override;
  const std::vector<double>& sigmas() const { return sigmas_; }

 protected:
  // Advances x_ from sigmas_[i] to sigmas_[i + 1] given `denoised`.
  virtual void Advance(const at::Tensor& denoised, int i) = 0;
  // The model's input for latent `x` at noise level `sigma`.
  static at::Tensor ScaledInput(const at::Tensor& x, double sigma) {
    return x * (1.0 / std::sqrt(sigma * sigma + 1.0));
  }
  std::vector<double> sigmas_;
  std::vector<double> timesteps_;  // The timestep of each sigma but the 0.
  at::Tensor scaled_input_;

 private:
  void PrepareInput();
};

class EulerAncestralSampler : public KarrasStyleSampler {
 public:
  using KarrasStyleSampler::KarrasStyleSampler;

 private:
  void Advance(const at::Tensor& denoised, int i) override;
};

class DpmSolverPP2MSampler : public KarrasStyleSampler {
 public:
  using KarrasStyleSampler::KarrasStyleSampler;

 private:
  void Advance(const at::Tensor& denoised, int i) override;
  at::Tensor old_denoised_;
};

// Euler on the probability-flow ODE (k-diffusion's sample_euler, s_churn 0).
class EulerSampler : public KarrasStyleSampler {
 public:
  using KarrasStyleSampler::KarrasStyleSampler;

 private:
  void Advance(const at::Tensor& denoised, int i) override;
};

// A k-diffusion sampler that may call the model twice in a step: first at
// the step's sigma, then at a probe point the first call leads to. One step
// either way (as PLMS's first), so progress counts steps, not calls.
class TwoCallSampler : public KarrasStyleSampler {
 public:
  using KarrasStyleSampler::KarrasStyleSampler;
  const at::Tensor& model_input() const override {
    return second_call_ ? probe_input_ : scaled_input_;
  }
  double timestep() const override {
    return second_call_ ? probe_timestep_ : timesteps_[steps_done_];
  }
  bool at_step_start() const override { return !second_call_; }
  void Step(const at::Tensor& eps) override;

 protected:
  struct Probe {
    at::Tensor x;     // Where the second call looks, at...
    double sigma;     // ...this noise level,
    double timestep;  // ...which is this timestep.
  };
  // Step i's first call gave `denoised`: either finish the step (Advance's
  // job; return nullopt) or ask for a second call at the returned probe.
  virtual std::optional<Probe> FirstCall(const at::Tensor& denoised, int i) = 0;
  // The second call's denoised estimate at the probe: finish step i.
  virtual void SecondCall(const at::Tensor& probe_denoised, int i) = 0;
  const Probe& probe() const { return probe_; }

 private:
  void Advance(const at::Tensor&, int) override {}
  bool second_call_ = false;
  Probe probe_;
  at::Tensor probe_input_;
  double probe_timestep_ = 0.0;
};

// Heun's second-order method (k-diffusion's sample_heun, s_churn 0): an
// Euler step to sigma_next, a second model call there, the average slope.
// Two model calls a step but the last (plain Euler to sigma 0).
class HeunSampler : public TwoCallSampler {
 public:
  using TwoCallSampler::TwoCallSampler;

 private:
  std::optional<Probe> FirstCall(const at::Tensor& denoised, int i) override;
  void SecondCall(const at::Tensor& probe_denoised, int i) override;
  at::Tensor slope_;  // dx/dsigma at the step's start.
};

// DPM-Solver++(2S) ancestral (k-diffusion's sample_dpmpp_2s_ancestral, eta
// 1): a second-order single step down to the ancestral sigma_down through a
// model call at its midpoint in log sigma, then fresh noise up to
// sigma_next. Two model calls a step but the last.
class DpmSolverPP2SAncestralSampler : public TwoCallSampler {
 public:
  using TwoCallSampler::TwoCallSampler;

 private:
  std::optional<Probe> FirstCall(const at::Tensor& denoised, int i) override;
  void SecondCall(const at::Tensor& probe_denoised, int i) override;
  // Adds the ancestral noise of step i (none into sigma 0).
  void AddNoise(int i);
  double sigma_down_ = 0.0;
};

// Linear multistep (k-diffusion's sample_lms, order 4): the slopes of the
// last four steps, each weighted by its Lagrange basis polynomial integrated
// over the step in sigma.
class LmsSampler : public KarrasStyleSampler {
 public:
  using KarrasStyleSampler::KarrasStyleSampler;

 private:
  void Advance(const at::Tensor& denoised, int i) override;
  std::deque<at::Tensor> slopes_;  // Newest last.
};

// DPM-Solver++(2M) SDE (k-diffusion's sample_dpmpp_2m_sde, eta 1, midpoint
// solver), its noise from the job's generator step by step.
class DpmSolverPP2MSdeSampler : public KarrasStyleSampler {
 public:
  using KarrasStyleSampler::KarrasStyleSampler;

 private:
  void Advance(const at::Tensor& denoised, int i) override;
  at::Tensor old_denoised_;
  double h_last_ = 0.0;
};

// UniPC (Zhao et al. 2023; diffusers' UniPCMultistepScheduler with its
// defaults: data prediction, B(h) = e^h - 1 ("bh2"), order 2, lower order
// at the last step): a multistep predictor, and a corrector that refines
// each sample with the model output already computed at it, so that no
// step costs a second model call. In k-diffusion's space (alpha = 1,
// lambda = -log sigma).
class UniPcSampler : public KarrasStyleSampler {
 public:
  using KarrasStyleSampler::KarrasStyleSampler;

 private:
  void Advance(const at::Tensor& denoised, int i) override;
  // UniC: x_ (at sigmas_[i], predicted from last_sample_ at sigmas_[i - 1])
  // corrected with `denoised`, the model's output at it.
  void Correct(const at::Tensor& denoised, int i);

  static constexpr int kOrder = 2;
  std::deque<at::Tensor> denoised_;  // Of the last steps, newest last.
  at::Tensor last_sample_;           // x at sigmas_[i - 1], corrected.
  int last_order_ = 1;               // The order of the last prediction.
};

// The sampler `options` ask for, starting from unit Gaussian `noise`, or,
// with `init_latent` and strength < 1, from init_latent noised to the level
// of the first step that runs (img2img). DDIM follows the reference's
// img2img exactly: t_enc = int(strength * steps), noised to DDIM index t_enc,
// denoised from index t_enc - 1.
absl::StatusOr<std::unique_ptr<Sampler>> MakeSampler(
    const SamplerOptions& options, const DiffusionSchedule& schedule,
    at::Tensor noise, at::Generator generator,
    const at::Tensor& init_latent = {});

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_SAMPLER_H_
