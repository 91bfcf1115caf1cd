#include "server/ldm/schedule.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace ldm {

DiffusionSchedule DiffusionSchedule::Linear(double linear_start,
                                            double linear_end,
                                            int64_t timesteps) {
  std::vector<float> alphas_cumprod(timesteps);
  const double first = std::sqrt(linear_start);
  const double last = std::sqrt(linear_end);
  double product = 1.0;
  for (int64_t t = 0; t < timesteps; ++t) {
    // np.linspace computes start + t * step.
    const double root =
        timesteps == 1
            ? first
            : first + static_cast<double>(t) *
                          ((last - first) / static_cast<double>(timesteps - 1));
    product *= 1.0 - root * root;
    alphas_cumprod[t] = static_cast<float>(product);
  }
  return DiffusionSchedule(std::move(alphas_cumprod));
}

absl::StatusOr<DiffusionSchedule> DiffusionSchedule::FromAlphasCumprod(
    std::vector<float> alphas_cumprod) {
  if (alphas_cumprod.empty()) {
    return absl::InvalidArgumentError("alphas_cumprod is empty");
  }
  for (size_t t = 0; t < alphas_cumprod.size(); ++t) {
    const float value = alphas_cumprod[t];
    if (!(value > 0.0f && value <= 1.0f) ||
        (t > 0 && value > alphas_cumprod[t - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("alphas_cumprod[", t, "] = ", value,
                       " is not a decreasing value in (0, 1]"));
    }
  }
  return DiffusionSchedule(std::move(alphas_cumprod));
}

}  // namespace ldm
