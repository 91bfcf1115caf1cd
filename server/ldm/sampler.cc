#include "server/ldm/sampler.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace ldm {

at::Generator MakeGenerator(uint64_t seed) {
  return at::detail::createCPUGenerator(seed);
}

at::Tensor StandardNormal(at::IntArrayRef sizes, at::Generator& generator,
                          const at::TensorOptions& options) {
  return at::normal(0.0, 1.0, sizes, generator,
                    at::TensorOptions().dtype(at::kFloat))
      .to(options);
}

std::vector<int64_t> DdimSampler::UniformTimesteps(int64_t num_train_timesteps,
                                                   int steps) {
  const int64_t stride = std::max<int64_t>(1, num_train_timesteps / steps);
  std::vector<int64_t> timesteps;
  // The reference adds 1 to every step ("add one to get the final alpha
  // values right"); a step that lands past the schedule's end is dropped.
  for (int64_t t = 0; t < num_train_timesteps; t += stride) {
    if (t + 1 < num_train_timesteps) timesteps.push_back(t + 1);
  }
  return timesteps;
}

DdimSampler::DdimSampler(const DiffusionSchedule& schedule, int steps,
                         double eta, at::Tensor x_T, at::Generator generator)
    : timesteps_(UniformTimesteps(schedule.timesteps(), steps)),
      x_(std::move(x_T)),
      generator_(std::move(generator)) {
  for (size_t i = 0; i < timesteps_.size(); ++i) {
    const double a = schedule.alphas_cumprod(timesteps_[i]);
    const double a_prev = i == 0 ? schedule.alphas_cumprod(0)
                                 : schedule.alphas_cumprod(timesteps_[i - 1]);
    alphas_.push_back(static_cast<float>(a));
    alphas_prev_.push_back(static_cast<float>(a_prev));
    sigmas_.push_back(static_cast<float>(
        eta * std::sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))));
  }
}

int64_t DdimSampler::timestep() const {
  return timesteps_[timesteps_.size() - 1 - steps_done_];
}

void DdimSampler::Step(const at::Tensor& eps) {
  const size_t index = timesteps_.size() - 1 - steps_done_;
  const at::TensorOptions options = x_.options();
  // Per-step scalars as float32 tensors, the reference's arithmetic.
  const at::Tensor a_t = at::full({}, alphas_[index], options);
  const at::Tensor a_prev = at::full({}, alphas_prev_[index], options);
  const at::Tensor sigma_t = at::full({}, sigmas_[index], options);
  pred_x0_ = (x_ - (1 - a_t).sqrt() * eps) / a_t.sqrt();
  const at::Tensor dir_xt = (1.0 - a_prev - sigma_t * sigma_t).sqrt() * eps;
  at::Tensor x_prev = a_prev.sqrt() * pred_x0_ + dir_xt;
  if (sigmas_[index] != 0.0f) {
    at::Tensor noise = next_noise_.defined()
                           ? next_noise_
                           : StandardNormal(x_.sizes(), generator_, options);
    x_prev = x_prev + sigma_t * noise;
  }
  next_noise_ = at::Tensor();
  x_ = x_prev;
  ++steps_done_;
}

}  // namespace ldm
