#include "server/ldm/schedule.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace ldm {
namespace {

// np.linspace(start, stop, n)[i]
double Linspace(double start, double stop, int64_t n, int64_t i) {
  if (n == 1) return start;
  return start +
         static_cast<double>(i) * ((stop - start) / static_cast<double>(n - 1));
}

std::vector<double> CumulativeAlphas(const std::vector<double>& betas) {
  std::vector<double> alphas_cumprod(betas.size());
  double product = 1.0;
  for (size_t t = 0; t < betas.size(); ++t) {
    product *= 1.0 - betas[t];
    alphas_cumprod[t] = product;
  }
  return alphas_cumprod;
}

}  // namespace

DiffusionSchedule::DiffusionSchedule(std::vector<double> alphas_cumprod)
    : alphas_cumprod_(std::move(alphas_cumprod)) {
  log_sigmas_.reserve(alphas_cumprod_.size());
  for (double a : alphas_cumprod_) {
    log_sigmas_.push_back(0.5 * std::log((1.0 - a) / a));
  }
}

absl::StatusOr<DiffusionSchedule> DiffusionSchedule::Make(BetaSchedule kind,
                                                          double linear_start,
                                                          double linear_end,
                                                          int64_t timesteps) {
  if (timesteps <= 0) {
    return absl::InvalidArgumentError("schedule: timesteps must be > 0");
  }
  std::vector<double> betas(timesteps);
  switch (kind) {
    case BetaSchedule::kLinear:
      return Linear(linear_start, linear_end, timesteps);
    case BetaSchedule::kSqrtLinear:
    case BetaSchedule::kSqrt:
      for (int64_t t = 0; t < timesteps; ++t) {
        betas[t] = Linspace(linear_start, linear_end, timesteps, t);
        if (kind == BetaSchedule::kSqrt) betas[t] = std::sqrt(betas[t]);
      }
      break;
    case BetaSchedule::kCosine: {
      constexpr double kOffset = 8e-3;
      auto f = [&](int64_t t) {
        const double x =
            (static_cast<double>(t) / static_cast<double>(timesteps) +
             kOffset) /
            (1.0 + kOffset) * M_PI / 2.0;
        return std::cos(x) * std::cos(x);
      };
      const double f0 = f(0);
      for (int64_t t = 0; t < timesteps; ++t) {
        const double a = f(t) / f0, a_next = f(t + 1) / f0;
        betas[t] = std::clamp(1.0 - a_next / a, 0.0, 0.999);
      }
      break;
    }
  }
  return DiffusionSchedule(CumulativeAlphas(betas));
}

DiffusionSchedule DiffusionSchedule::Linear(double linear_start,
                                            double linear_end,
                                            int64_t timesteps) {
  std::vector<double> betas(timesteps);
  for (int64_t t = 0; t < timesteps; ++t) {
    const double root =
        Linspace(std::sqrt(linear_start), std::sqrt(linear_end), timesteps, t);
    betas[t] = root * root;
  }
  return DiffusionSchedule(CumulativeAlphas(betas));
}

absl::StatusOr<DiffusionSchedule> DiffusionSchedule::FromAlphasCumprod(
    std::vector<double> alphas_cumprod) {
  if (alphas_cumprod.empty()) {
    return absl::InvalidArgumentError("alphas_cumprod is empty");
  }
  for (size_t t = 0; t < alphas_cumprod.size(); ++t) {
    const double value = alphas_cumprod[t];
    if (!(value > 0.0 && value < 1.0) ||
        (t > 0 && value > alphas_cumprod[t - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("alphas_cumprod[", t, "] = ", value,
                       " is not a decreasing value in (0, 1)"));
    }
  }
  return DiffusionSchedule(std::move(alphas_cumprod));
}

double DiffusionSchedule::sigma(int64_t t) const {
  return std::exp(log_sigmas_.at(t));
}

double DiffusionSchedule::TimestepForSigma(double sigma) const {
  const double log_sigma = std::log(sigma);
  // log sigma increases with t.
  auto upper =
      std::lower_bound(log_sigmas_.begin(), log_sigmas_.end(), log_sigma);
  if (upper == log_sigmas_.begin()) return 0.0;
  if (upper == log_sigmas_.end()) {
    return static_cast<double>(log_sigmas_.size() - 1);
  }
  const int64_t high = upper - log_sigmas_.begin();
  const int64_t low = high - 1;
  const double w =
      (log_sigmas_[low] - log_sigma) / (log_sigmas_[low] - log_sigmas_[high]);
  return (1.0 - w) * static_cast<double>(low) + w * static_cast<double>(high);
}

double DiffusionSchedule::SigmaForTimestep(double t) const {
  t = std::clamp(t, 0.0, static_cast<double>(timesteps() - 1));
  const int64_t low = static_cast<int64_t>(std::floor(t));
  const int64_t high = std::min<int64_t>(low + 1, timesteps() - 1);
  const double w = t - static_cast<double>(low);
  return std::exp((1.0 - w) * log_sigmas_[low] + w * log_sigmas_[high]);
}

double DiffusionSchedule::AlphaCumprodAt(double t) const {
  const double rounded = std::round(t);
  if (std::abs(t - rounded) < 1e-9) {
    return alphas_cumprod_.at(static_cast<int64_t>(rounded));
  }
  const double s = SigmaForTimestep(t);
  return 1.0 / (1.0 + s * s);
}

double DiffusionSchedule::MaxRelativeDifference(
    const DiffusionSchedule& other) const {
  if (other.timesteps() != timesteps()) return INFINITY;
  double worst = 0.0;
  for (int64_t t = 0; t < timesteps(); ++t) {
    worst = std::max(worst,
                     std::abs(alphas_cumprod_[t] - other.alphas_cumprod_[t]) /
                         alphas_cumprod_[t]);
  }
  return worst;
}

}  // namespace ldm
