// The DDPM noise schedule (reference `DDPM.register_schedule`): betas and the
// cumulative products the samplers index by timestep. Kept in float64, as the
// reference computes its buffers; samplers round to float32 where the
// reference's own arithmetic is float32.
#ifndef LDMSERVE_SERVER_LDM_SCHEDULE_H_
#define LDMSERVE_SERVER_LDM_SCHEDULE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ldm {

// The reference's beta_schedule: "linear" (betas =
// linspace(sqrt(start), sqrt(end), T)^2, the LDM/SD default), "sqrt_linear"
// (linspace(start, end, T)), "sqrt" (its square root) or "cosine" (Nichol &
// Dhariwal, s = 8e-3).
enum class BetaSchedule { kLinear, kSqrtLinear, kSqrt, kCosine };

class DiffusionSchedule {
 public:
  static absl::StatusOr<DiffusionSchedule> Make(BetaSchedule kind,
                                                double linear_start,
                                                double linear_end,
                                                int64_t timesteps);
  static DiffusionSchedule Linear(double linear_start, double linear_end,
                                  int64_t timesteps);
  // A checkpoint's own `alphas_cumprod` buffer.
  static absl::StatusOr<DiffusionSchedule> FromAlphasCumprod(
      std::vector<double> alphas_cumprod);

  int64_t timesteps() const {
    return static_cast<int64_t>(alphas_cumprod_.size());
  }
  // alphas_cumprod[t] rounded to float32, the dtype of the reference buffer
  // that DDIM and PLMS index.
  float alphas_cumprod(int64_t t) const {
    return static_cast<float>(alphas_cumprod_.at(t));
  }
  double alphas_cumprod_f64(int64_t t) const { return alphas_cumprod_.at(t); }
  const std::vector<double>& alphas_cumprod_f64() const {
    return alphas_cumprod_;
  }
  // k-diffusion's sigma(t) = sqrt((1 - a_t) / a_t).
  double sigma(int64_t t) const;
  // The fractional timestep whose sigma is `sigma`, interpolating log sigma
  // linearly between neighbouring timesteps (k-diffusion's sigma_to_t).
  double TimestepForSigma(double sigma) const;
  // The inverse: sigma at a fractional timestep (k-diffusion's t_to_sigma).
  double SigmaForTimestep(double t) const;
  // alphas_cumprod at a fractional timestep: exact at integers, else
  // 1 / (1 + sigma(t)^2).
  double AlphaCumprodAt(double t) const;
  // The largest relative difference to `other` (for checkpoint buffers).
  double MaxRelativeDifference(const DiffusionSchedule& other) const;

 private:
  explicit DiffusionSchedule(std::vector<double> alphas_cumprod);
  std::vector<double> alphas_cumprod_;
  std::vector<double> log_sigmas_;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_SCHEDULE_H_
