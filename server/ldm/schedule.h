// The DDPM noise schedule (reference `DDPM.register_schedule`): betas and the
// cumulative products the samplers index by timestep. Values are kept as the
// reference keeps its buffers: computed in float64, stored as float32.
#ifndef LDMSERVE_SERVER_LDM_SCHEDULE_H_
#define LDMSERVE_SERVER_LDM_SCHEDULE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "server/ldm/safetensors.h"

namespace ldm {

class DiffusionSchedule {
 public:
  // The "linear" schedule: betas = linspace(sqrt(start), sqrt(end), T)^2.
  static DiffusionSchedule Linear(double linear_start, double linear_end,
                                  int64_t timesteps);
  // The checkpoint's own `alphas_cumprod` buffer where it has one.
  static absl::StatusOr<DiffusionSchedule> FromAlphasCumprod(
      std::vector<float> alphas_cumprod);

  int64_t timesteps() const {
    return static_cast<int64_t>(alphas_cumprod_.size());
  }
  // As float32, the dtype of the reference buffer.
  float alphas_cumprod(int64_t t) const { return alphas_cumprod_.at(t); }
  const std::vector<float>& alphas_cumprod() const { return alphas_cumprod_; }

 private:
  explicit DiffusionSchedule(std::vector<float> alphas_cumprod)
      : alphas_cumprod_(std::move(alphas_cumprod)) {}
  std::vector<float> alphas_cumprod_;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_SCHEDULE_H_
