#include "server/ldm/sampler.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace ldm {
namespace {

// A float32 scalar tensor: the reference's per-step scalars are float32.
at::Tensor Scalar(float value, const at::Tensor& like) {
  return at::full({}, value, like.options());
}

}  // namespace

at::Generator MakeGenerator(uint64_t seed) {
  return at::detail::createCPUGenerator(seed);
}

at::Tensor StandardNormal(at::IntArrayRef sizes, at::Generator& generator,
                          const at::TensorOptions& options) {
  return FromHost(at::normal(0.0, 1.0, sizes, generator,
                             at::TensorOptions().dtype(at::kFloat)),
                  options);
}

at::Tensor FromHost(const at::Tensor& host, const at::TensorOptions& options) {
  if (!options.device().is_cuda() || !host.is_cpu()) return host.to(options);
  // From pinned memory, asynchronously: a copy from pageable memory waits
  // for the device's queued work (the step's UNet call) before it returns,
  // a host synchronisation in every stochastic step. LibTorch's pinned
  // allocator keeps the buffer until the copy is done.
  return host.pin_memory().to(options, /*non_blocking=*/true);
}

at::Tensor Sampler::DrawNoise() {
  if (next_noise_.defined()) {
    at::Tensor noise = FromHost(next_noise_, x_.options());
    next_noise_ = at::Tensor();
    return noise;
  }
  return StandardNormal(x_.sizes(), generator_, x_.options());
}

at::Tensor Sampler::NoisedToCurrentLevel(const at::Tensor& x0,
                                         const at::Tensor& noise) const {
  const double a = schedule_->AlphaCumprodAt(timestep());
  return std::sqrt(a) * x0 + std::sqrt(1.0 - a) * noise;
}

std::vector<int64_t> DdimTimesteps(int64_t num_train_timesteps, int steps,
                                   bool quadratic) {
  std::vector<int64_t> timesteps;
  if (quadratic) {
    const double last =
        std::sqrt(0.8 * static_cast<double>(num_train_timesteps));
    for (int i = 0; i < steps; ++i) {
      const double root =
          steps == 1 ? 0.0 : static_cast<double>(i) * (last / (steps - 1));
      timesteps.push_back(static_cast<int64_t>(root * root) + 1);
    }
    return timesteps;
  }
  const int64_t stride =
      std::max<int64_t>(1, num_train_timesteps / std::max(1, steps));
  // "add one to get the final alpha values right"; a step that lands past
  // the schedule's end is dropped.
  for (int64_t t = 0; t < num_train_timesteps; t += stride) {
    if (t + 1 < num_train_timesteps) timesteps.push_back(t + 1);
  }
  return timesteps;
}

DdimSampler::DdimSampler(const DiffusionSchedule& schedule,
                         std::vector<int64_t> timesteps, double eta,
                         at::Tensor x, at::Generator generator, int first_steps)
    : Sampler(schedule, std::move(x), std::move(generator)),
      timesteps_(std::move(timesteps)) {
  for (size_t i = 0; i < timesteps_.size(); ++i) {
    const float a = schedule.alphas_cumprod(timesteps_[i]);
    const float a_prev = i == 0 ? schedule.alphas_cumprod(0)
                                : schedule.alphas_cumprod(timesteps_[i - 1]);
    alphas_.push_back(a);
    alphas_prev_.push_back(a_prev);
    // The reference evaluates this in float64 from the float32 buffers.
    const double ad = a, apd = a_prev;
    sigmas_.push_back(static_cast<float>(
        eta * std::sqrt((1.0 - apd) / (1.0 - ad) * (1.0 - ad / apd))));
  }
  const int count = static_cast<int>(timesteps_.size());
  first_index_ = (first_steps > 0 ? std::min(first_steps, count) : count) - 1;
}

double DdimSampler::timestep() const {
  return static_cast<double>(timesteps_[first_index_ - steps_done_]);
}

at::Tensor DdimSampler::NoiseTo(int index, const at::Tensor& x0,
                                const at::Tensor& noise) const {
  const at::Tensor a = Scalar(alphas_[index], x0);
  return a.sqrt() * x0 + (1 - a).sqrt() * noise;
}

void DdimSampler::Step(const at::Tensor& eps) {
  const int index = first_index_ - steps_done_;
  const at::Tensor a_t = Scalar(alphas_[index], x_);
  const at::Tensor a_prev = Scalar(alphas_prev_[index], x_);
  const at::Tensor sigma_t = Scalar(sigmas_[index], x_);
  pred_x0_ = (x_ - (1 - a_t).sqrt() * eps) / a_t.sqrt();
  const at::Tensor dir_xt = (1.0 - a_prev - sigma_t * sigma_t).sqrt() * eps;
  at::Tensor x_prev = a_prev.sqrt() * pred_x0_ + dir_xt;
  if (sigmas_[index] != 0.0f) x_prev = x_prev + sigma_t * DrawNoise();
  x_ = x_prev;
  ++steps_done_;
}

PlmsSampler::PlmsSampler(const DiffusionSchedule& schedule,
                         std::vector<int64_t> timesteps, at::Tensor x,
                         at::Generator generator)
    : Sampler(schedule, std::move(x), std::move(generator)),
      timesteps_(std::move(timesteps)) {
  for (size_t i = 0; i < timesteps_.size(); ++i) {
    alphas_.push_back(schedule.alphas_cumprod(timesteps_[i]));
    alphas_prev_.push_back(i == 0 ? schedule.alphas_cumprod(0)
                                  : schedule.alphas_cumprod(timesteps_[i - 1]));
  }
}

double PlmsSampler::timestep() const {
  const int n = total_steps();
  const int i = steps_done_;
  // Descending order: step i runs at timesteps_[n - 1 - i]; the second call
  // of the first step runs at the next one (or the same, at the end).
  const int position = second_call_ ? std::min(i + 1, n - 1) : i;
  return static_cast<double>(timesteps_[n - 1 - position]);
}

std::pair<at::Tensor, at::Tensor> PlmsSampler::Update(const at::Tensor& eps,
                                                      int index) const {
  const at::Tensor a_t = Scalar(alphas_[index], x_);
  const at::Tensor a_prev = Scalar(alphas_prev_[index], x_);
  at::Tensor pred_x0 = (x_ - (1 - a_t).sqrt() * eps) / a_t.sqrt();
  at::Tensor x_prev = a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * eps;
  return {x_prev, pred_x0};
}

void PlmsSampler::Step(const at::Tensor& eps) {
  const int index = total_steps() - 1 - steps_done_;
  at::Tensor e_t = eps;
  at::Tensor e_prime;
  if (old_eps_.empty()) {
    if (!second_call_) {
      first_eps_ = eps;
      x_probe_ = Update(eps, index).first;
      second_call_ = true;
      return;
    }
    second_call_ = false;
    e_t = first_eps_;
    e_prime = (first_eps_ + eps) / 2;
    x_probe_ = at::Tensor();
    first_eps_ = at::Tensor();
  } else if (old_eps_.size() == 1) {
    e_prime = (3 * e_t - old_eps_[0]) / 2;
  } else if (old_eps_.size() == 2) {
    e_prime = (23 * e_t - 16 * old_eps_[1] + 5 * old_eps_[0]) / 12;
  } else {
    e_prime =
        (55 * e_t - 59 * old_eps_[2] + 37 * old_eps_[1] - 9 * old_eps_[0]) / 24;
  }
  auto [x_prev, pred_x0] = Update(e_prime, index);
  x_ = x_prev;
  pred_x0_ = pred_x0;
  old_eps_.push_back(e_t);
  if (old_eps_.size() > 3) old_eps_.pop_front();
  ++steps_done_;
}

DdpmSampler::DdpmSampler(const DiffusionSchedule& schedule,
                         std::vector<int64_t> timesteps_descending,
                         at::Tensor x, at::Generator generator)
    : Sampler(schedule, std::move(x), std::move(generator)),
      timesteps_(std::move(timesteps_descending)) {
  for (size_t i = 0; i < timesteps_.size(); ++i) {
    const double a = schedule.alphas_cumprod_f64(timesteps_[i]);
    // The chain's previous level: the next timestep in the sequence, or the
    // clean image after the last one.
    const double a_prev = i + 1 < timesteps_.size()
                              ? schedule.alphas_cumprod_f64(timesteps_[i + 1])
                              : 1.0;
    const double beta = 1.0 - a / a_prev;
    const double variance = beta * (1.0 - a_prev) / (1.0 - a);
    Coefficients c;
    c.sqrt_recip_alphas_cumprod = static_cast<float>(std::sqrt(1.0 / a));
    c.sqrt_recipm1_alphas_cumprod =
        static_cast<float>(std::sqrt(1.0 / a - 1.0));
    c.posterior_mean_coef1 =
        static_cast<float>(beta * std::sqrt(a_prev) / (1.0 - a));
    c.posterior_mean_coef2 =
        static_cast<float>((1.0 - a_prev) * std::sqrt(1.0 - beta) / (1.0 - a));
    c.posterior_std = static_cast<float>(std::exp(
        0.5 * static_cast<float>(std::log(std::max(variance, 1e-20)))));
    coefficients_.push_back(c);
  }
}

void DdpmSampler::Step(const at::Tensor& eps) {
  const Coefficients& c = coefficients_[steps_done_];
  pred_x0_ = Scalar(c.sqrt_recip_alphas_cumprod, x_) * x_ -
             Scalar(c.sqrt_recipm1_alphas_cumprod, x_) * eps;
  at::Tensor mean = Scalar(c.posterior_mean_coef1, x_) * pred_x0_ +
                    Scalar(c.posterior_mean_coef2, x_) * x_;
  const bool last = steps_done_ + 1 == total_steps();
  // The reference draws noise at the last step too and multiplies it by 0.
  at::Tensor noise = DrawNoise();
  x_ = last ? mean : mean + Scalar(c.posterior_std, x_) * noise;
  ++steps_done_;
}

namespace {

// Each sigma's timestep (the uniform ones exactly), then the sigmas.
struct SigmaSteps {
  std::vector<double> timesteps;
  std::vector<double> sigmas;  // One more: the final 0.
};

SigmaSteps MakeSigmaSteps(const DiffusionSchedule& schedule, int steps,
                          SigmaSchedule kind) {
  SigmaSteps out;
  const double t_max = static_cast<double>(schedule.timesteps() - 1);
  const double sigma_max = schedule.sigma(schedule.timesteps() - 1);
  const double sigma_min = schedule.sigma(0);
  for (int i = 0; i < steps; ++i) {
    // Position along the schedule: 0 at the noisiest step, 1 at the last.
    const double ramp = steps == 1 ? 0.0 : static_cast<double>(i) / (steps - 1);
    switch (kind) {
      case SigmaSchedule::kUniform: {
        const double t = t_max - ramp * t_max;
        out.timesteps.push_back(t);
        out.sigmas.push_back(schedule.SigmaForTimestep(t));
        continue;
      }
      case SigmaSchedule::kKarras: {
        constexpr double kRho = 7.0;
        const double max_inv = std::pow(sigma_max, 1.0 / kRho);
        const double min_inv = std::pow(sigma_min, 1.0 / kRho);
        out.sigmas.push_back(
            std::pow(max_inv + ramp * (min_inv - max_inv), kRho));
        break;
      }
      case SigmaSchedule::kExponential:
        out.sigmas.push_back(
            std::exp(std::log(sigma_max) +
                     ramp * (std::log(sigma_min) - std::log(sigma_max))));
        break;
    }
    out.timesteps.push_back(schedule.TimestepForSigma(out.sigmas.back()));
  }
  out.sigmas.push_back(0.0);
  return out;
}

}  // namespace

std::vector<double> KarrasStyleSigmas(const DiffusionSchedule& schedule,
                                      int steps, SigmaSchedule kind) {
  return MakeSigmaSteps(schedule, steps, kind).sigmas;
}

KarrasStyleSampler::KarrasStyleSampler(const DiffusionSchedule& schedule,
                                       int steps, at::Tensor unit_noise,
                                       at::Generator generator,
                                       const at::Tensor& init_latent,
                                       int first_steps,
                                       SigmaSchedule sigma_schedule)
    : Sampler(schedule, std::move(unit_noise), std::move(generator)) {
  const int skip = init_latent.defined() && first_steps > 0
                       ? std::max(0, steps - first_steps)
                       : 0;
  SigmaSteps all = MakeSigmaSteps(schedule, steps, sigma_schedule);
  timesteps_.assign(all.timesteps.begin() + skip, all.timesteps.end());
  sigmas_.assign(all.sigmas.begin() + skip, all.sigmas.end());
  x_ = init_latent.defined() ? init_latent + x_ * sigmas_[0] : x_ * sigmas_[0];
  PrepareInput();
}

at::Tensor KarrasStyleSampler::NoisedToCurrentLevel(
    const at::Tensor& x0, const at::Tensor& noise) const {
  return x0 + noise * sigmas_[steps_done_];
}

void KarrasStyleSampler::ReplaceLatent(at::Tensor x) {
  x_ = std::move(x);
  PrepareInput();
}

void KarrasStyleSampler::PrepareInput() {
  if (done()) return;
  scaled_input_ = ScaledInput(x_, sigmas_[steps_done_]);
}

void KarrasStyleSampler::Step(const at::Tensor& eps) {
  const int i = steps_done_;
  pred_x0_ = x_ - eps * sigmas_[i];
  Advance(pred_x0_, i);
  ++steps_done_;
  PrepareInput();
}

AncestralSigmas AncestralStep(double sigma, double sigma_next) {
  AncestralSigmas out;
  out.up =
      std::min(sigma_next, std::sqrt(sigma_next * sigma_next *
                                     (sigma * sigma - sigma_next * sigma_next) /
                                     (sigma * sigma)));
  out.down = std::sqrt(sigma_next * sigma_next - out.up * out.up);
  return out;
}

void EulerAncestralSampler::Advance(const at::Tensor& denoised, int i) {
  const double sigma = sigmas_[i], sigma_next = sigmas_[i + 1];
  const AncestralSigmas step = AncestralStep(sigma, sigma_next);
  const at::Tensor d = (x_ - denoised) / sigma;
  x_ = x_ + d * (step.down - sigma);
  if (sigma_next > 0) x_ = x_ + DrawNoise() * step.up;
}

void DpmSolverPP2MSampler::Advance(const at::Tensor& denoised, int i) {
  const double sigma = sigmas_[i], sigma_next = sigmas_[i + 1];
  auto t_of = [](double s) { return -std::log(s); };
  if (sigma_next == 0.0) {
    x_ = denoised;
  } else {
    const double h = t_of(sigma_next) - t_of(sigma);
    at::Tensor direction = denoised;
    if (old_denoised_.defined()) {
      const double h_last = t_of(sigma) - t_of(sigmas_[i - 1]);
      const double r = h_last / h;
      direction = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised_;
    }
    x_ = (sigma_next / sigma) * x_ - std::expm1(-h) * direction;
  }
  old_denoised_ = denoised;
}

void EulerSampler::Advance(const at::Tensor& denoised, int i) {
  const at::Tensor slope = (x_ - denoised) / sigmas_[i];
  x_ = x_ + slope * (sigmas_[i + 1] - sigmas_[i]);
}

void TwoCallSampler::Step(const at::Tensor& eps) {
  const int i = steps_done_;
  if (!second_call_) {
    pred_x0_ = x_ - eps * sigmas_[i];
    std::optional<Probe> probe = FirstCall(pred_x0_, i);
    if (probe.has_value()) {
      probe_ = *std::move(probe);
      probe_input_ = ScaledInput(probe_.x, probe_.sigma);
      probe_timestep_ = probe_.timestep;
      second_call_ = true;
      return;
    }
  } else {
    SecondCall(probe_.x - eps * probe_.sigma, i);
    second_call_ = false;
    probe_ = Probe();
    probe_input_ = at::Tensor();
  }
  ++steps_done_;
  if (!done()) scaled_input_ = ScaledInput(x_, sigmas_[steps_done_]);
}

std::optional<TwoCallSampler::Probe> HeunSampler::FirstCall(
    const at::Tensor& denoised, int i) {
  const double sigma = sigmas_[i], sigma_next = sigmas_[i + 1];
  slope_ = (x_ - denoised) / sigma;
  const at::Tensor euler = x_ + slope_ * (sigma_next - sigma);
  // The last step, to sigma 0: Euler (a second call there is undefined).
  if (sigma_next == 0.0) {
    x_ = euler;
    return std::nullopt;
  }
  return Probe{euler, sigma_next, timesteps_[i + 1]};
}

void HeunSampler::SecondCall(const at::Tensor& probe_denoised, int i) {
  const double sigma = sigmas_[i], sigma_next = sigmas_[i + 1];
  const at::Tensor probe_slope = (probe().x - probe_denoised) / sigma_next;
  x_ = x_ + (slope_ + probe_slope) * (0.5 * (sigma_next - sigma));
}

std::optional<TwoCallSampler::Probe> DpmSolverPP2SAncestralSampler::FirstCall(
    const at::Tensor& denoised, int i) {
  const double sigma = sigmas_[i];
  sigma_down_ = AncestralStep(sigma, sigmas_[i + 1]).down;
  if (sigma_down_ == 0.0) {
    // Euler to sigma 0.
    x_ = x_ + (x_ - denoised) / sigma * (sigma_down_ - sigma);
    AddNoise(i);
    return std::nullopt;
  }
  // Half way from sigma to sigma_down in log sigma (r = 1/2).
  const double h = std::log(sigma) - std::log(sigma_down_);
  const double sigma_mid = std::exp(std::log(sigma) - 0.5 * h);
  const at::Tensor x_mid =
      (sigma_mid / sigma) * x_ - std::expm1(-0.5 * h) * denoised;
  return Probe{x_mid, sigma_mid, schedule_->TimestepForSigma(sigma_mid)};
}

void DpmSolverPP2SAncestralSampler::SecondCall(const at::Tensor& probe_denoised,
                                               int i) {
  const double sigma = sigmas_[i];
  const double h = std::log(sigma) - std::log(sigma_down_);
  x_ = (sigma_down_ / sigma) * x_ - std::expm1(-h) * probe_denoised;
  AddNoise(i);
}

void DpmSolverPP2SAncestralSampler::AddNoise(int i) {
  if (sigmas_[i + 1] > 0.0) {
    x_ = x_ + DrawNoise() * AncestralStep(sigmas_[i], sigmas_[i + 1]).up;
  }
}

namespace {

// The integral over [sigmas[i], sigmas[i + 1]] of the Lagrange basis
// polynomial of sigmas[i - j] over sigmas[i], ..., sigmas[i - order + 1]
// (k-diffusion's linear_multistep_coeff). The polynomial has degree
// order - 1 <= 3, which 3-point Gauss-Legendre integrates exactly.
double LinearMultistepCoefficient(const std::vector<double>& sigmas, int order,
                                  int i, int j) {
  auto basis = [&](double tau) {
    double product = 1.0;
    for (int k = 0; k < order; ++k) {
      if (k == j) continue;
      product *= (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k]);
    }
    return product;
  };
  const double a = sigmas[i], b = sigmas[i + 1];
  const double half = 0.5 * (b - a), middle = 0.5 * (a + b);
  const double node = std::sqrt(3.0 / 5.0);
  return half *
         (5.0 / 9.0 * basis(middle - half * node) + 8.0 / 9.0 * basis(middle) +
          5.0 / 9.0 * basis(middle + half * node));
}

}  // namespace

void LmsSampler::Advance(const at::Tensor& denoised, int i) {
  constexpr int kOrder = 4;
  slopes_.push_back((x_ - denoised) / sigmas_[i]);
  if (slopes_.size() > kOrder) slopes_.pop_front();
  const int order = std::min(i + 1, kOrder);
  for (int j = 0; j < order; ++j) {
    // slopes_ newest last: j steps back.
    x_ = x_ + LinearMultistepCoefficient(sigmas_, order, i, j) *
                  slopes_[slopes_.size() - 1 - static_cast<size_t>(j)];
  }
}

void DpmSolverPP2MSdeSampler::Advance(const at::Tensor& denoised, int i) {
  const double sigma = sigmas_[i], sigma_next = sigmas_[i + 1];
  if (sigma_next == 0.0) {
    x_ = denoised;
  } else {
    // eta = 1: h in log-sigma time, as much noise as the step removes.
    const double h = std::log(sigma) - std::log(sigma_next);
    const double decay = -std::expm1(-2.0 * h);
    x_ = (sigma_next / sigma) * std::exp(-h) * x_ + decay * denoised;
    if (old_denoised_.defined()) {
      const double r = h_last_ / h;
      x_ = x_ + (0.5 * decay / r) * (denoised - old_denoised_);
    }
    x_ = x_ + DrawNoise() * (sigma_next * std::sqrt(decay));
    h_last_ = h;
  }
  old_denoised_ = denoised;
}

namespace {

// UniPC's coefficients for one step of log-sigma length `h` (B(h) =
// e^h - 1 in the decreasing-noise direction): phi_1 and B_h, and the b_k
// of its linear system (Zhao et al., Algorithm "bh2"; diffusers'
// multistep_uni_*_bh_update).
struct UniPcTerms {
  double h_phi_1 = 0.0;
  double b_h = 0.0;
  std::vector<double> b;
};

UniPcTerms UniPcCoefficients(double h, int order) {
  const double hh = -h;
  UniPcTerms terms;
  terms.h_phi_1 = std::expm1(hh);
  terms.b_h = std::expm1(hh);
  double h_phi_k = terms.h_phi_1 / hh - 1.0;
  double factorial = 1.0;
  for (int k = 1; k <= order; ++k) {
    terms.b.push_back(h_phi_k * factorial / terms.b_h);
    factorial *= k + 1;
    h_phi_k = h_phi_k / hh - 1.0 / factorial;
  }
  return terms;
}

double LambdaOf(double sigma) { return -std::log(sigma); }

}  // namespace

void UniPcSampler::Correct(const at::Tensor& denoised, int i) {
  const double sigma_s0 = sigmas_[i - 1], sigma_t = sigmas_[i];
  const double h = LambdaOf(sigma_t) - LambdaOf(sigma_s0);
  const at::Tensor& m0 = denoised_.back();
  const UniPcTerms terms = UniPcCoefficients(h, last_order_);
  at::Tensor x = (sigma_t / sigma_s0) * last_sample_ - terms.h_phi_1 * m0;
  const at::Tensor d1_t = denoised - m0;
  if (last_order_ == 1) {
    x_ = x - terms.b_h * 0.5 * d1_t;
    return;
  }
  // Order 2: the output before m0 (at sigmas_[i - 2]) as a divided
  // difference, the weights solving R rho = b with R = [[1, 1], [r, 1]].
  const double r = (LambdaOf(sigmas_[i - 2]) - LambdaOf(sigma_s0)) / h;
  const at::Tensor d1 = (denoised_[denoised_.size() - 2] - m0) / r;
  const double det = 1.0 - r;
  const double rho_0 = (terms.b[0] - terms.b[1]) / det;
  const double rho_1 = (terms.b[1] - r * terms.b[0]) / det;
  x_ = x - terms.b_h * (rho_0 * d1 + rho_1 * d1_t);
}

void UniPcSampler::Advance(const at::Tensor& denoised, int i) {
  if (last_sample_.defined()) Correct(denoised, i);
  denoised_.push_back(denoised);
  if (denoised_.size() > kOrder) denoised_.pop_front();
  // Warm-up: as many previous outputs as there are; the last step (to
  // sigma 0, where lambda is infinite) first order.
  const int remaining = total_steps() - i;
  const int order =
      std::min({kOrder, remaining, static_cast<int>(denoised_.size())});
  last_sample_ = x_;
  last_order_ = order;
  const double sigma = sigmas_[i], sigma_next = sigmas_[i + 1];
  if (sigma_next == 0.0) {
    x_ = denoised;
    return;
  }
  const double h = LambdaOf(sigma_next) - LambdaOf(sigma);
  const UniPcTerms terms = UniPcCoefficients(h, order);
  x_ = (sigma_next / sigma) * x_ - terms.h_phi_1 * denoised;
  if (order == 2) {
    // UniP-2's weight is 1/2 (diffusers' rhos_p).
    const double r = (LambdaOf(sigmas_[i - 1]) - LambdaOf(sigma)) / h;
    const at::Tensor d1 = (denoised_.front() - denoised) / r;
    x_ = x_ - terms.b_h * 0.5 * d1;
  }
}

namespace {

template <typename KarrasStyle>
std::unique_ptr<Sampler> MakeKarrasStyle(const SamplerOptions& options,
                                         const DiffusionSchedule& schedule,
                                         at::Tensor& noise,
                                         at::Generator& generator,
                                         const at::Tensor& init_latent,
                                         bool partial, int first_steps) {
  return std::make_unique<KarrasStyle>(schedule, options.steps,
                                       std::move(noise), std::move(generator),
                                       partial ? init_latent : at::Tensor(),
                                       first_steps, options.sigma_schedule);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Sampler>> MakeSampler(
    const SamplerOptions& options, const DiffusionSchedule& schedule,
    at::Tensor noise, at::Generator generator, const at::Tensor& init_latent) {
  if (options.steps < 1) {
    return absl::InvalidArgumentError("sampler: steps must be >= 1");
  }
  if (!(options.strength > 0.0 && options.strength <= 1.0)) {
    return absl::InvalidArgumentError("sampler: strength must be in (0, 1]");
  }
  const bool karras_style = options.kind != SamplerKind::kDdim &&
                            options.kind != SamplerKind::kPlms &&
                            options.kind != SamplerKind::kDdpm;
  if (!karras_style && options.sigma_schedule != SigmaSchedule::kUniform) {
    return absl::InvalidArgumentError(
        "sampler: DDIM, PLMS and DDPM take the uniform schedule only");
  }
  std::vector<int64_t> uniform = DdimTimesteps(
      schedule.timesteps(), options.steps, options.quadratic_timesteps);
  // img2img: run the first t_enc entries of the (ascending) timesteps,
  // i.e. the last t_enc steps, as the reference's img2img.py.
  const bool partial = init_latent.defined() && options.strength < 1.0;
  const int count = static_cast<int>(uniform.size());
  const int t_enc =
      partial ? std::clamp(static_cast<int>(options.strength * count), 1, count)
              : count;
  if (partial) {
    // DDIM's reference noising index is t_enc (one past the first step it
    // runs); at t_enc == count the last index stands in.
    const DdimSampler encoder(schedule, uniform, 0.0, init_latent,
                              MakeGenerator(0));
    const int index = std::min(t_enc, count - 1);
    if (options.kind == SamplerKind::kDdim ||
        options.kind == SamplerKind::kPlms) {
      noise = encoder.NoiseTo(index, init_latent, noise);
    }
  }
  switch (options.kind) {
    case SamplerKind::kDdim:
      return std::make_unique<DdimSampler>(schedule, uniform, options.eta,
                                           std::move(noise),
                                           std::move(generator), t_enc);
    case SamplerKind::kPlms:
      if (options.eta != 0.0) {
        return absl::InvalidArgumentError("sampler: PLMS needs eta = 0");
      }
      uniform.resize(t_enc);
      return std::make_unique<PlmsSampler>(schedule, uniform, std::move(noise),
                                           std::move(generator));
    case SamplerKind::kDdpm: {
      uniform.resize(t_enc);
      if (partial) {
        // Noised exactly to the first timestep it denoises.
        const double a = schedule.alphas_cumprod_f64(uniform.back());
        noise = std::sqrt(a) * init_latent + std::sqrt(1.0 - a) * noise;
      }
      return std::make_unique<DdpmSampler>(
          schedule, std::vector<int64_t>(uniform.rbegin(), uniform.rend()),
          std::move(noise), std::move(generator));
    }
    case SamplerKind::kEulerAncestral:
      return MakeKarrasStyle<EulerAncestralSampler>(
          options, schedule, noise, generator, init_latent, partial, t_enc);
    case SamplerKind::kDpmSolverPP2M:
      return MakeKarrasStyle<DpmSolverPP2MSampler>(
          options, schedule, noise, generator, init_latent, partial, t_enc);
    case SamplerKind::kEuler:
      return MakeKarrasStyle<EulerSampler>(options, schedule, noise, generator,
                                           init_latent, partial, t_enc);
    case SamplerKind::kHeun:
      return MakeKarrasStyle<HeunSampler>(options, schedule, noise, generator,
                                          init_latent, partial, t_enc);
    case SamplerKind::kLms:
      return MakeKarrasStyle<LmsSampler>(options, schedule, noise, generator,
                                         init_latent, partial, t_enc);
    case SamplerKind::kDpmSolverPP2MSde:
      return MakeKarrasStyle<DpmSolverPP2MSdeSampler>(
          options, schedule, noise, generator, init_latent, partial, t_enc);
    case SamplerKind::kDpmSolverPP2SAncestral:
      return MakeKarrasStyle<DpmSolverPP2SAncestralSampler>(
          options, schedule, noise, generator, init_latent, partial, t_enc);
    case SamplerKind::kUniPc:
      return MakeKarrasStyle<UniPcSampler>(options, schedule, noise, generator,
                                           init_latent, partial, t_enc);
  }
  return absl::InvalidArgumentError("sampler: unknown kind");
}

}  // namespace ldm
