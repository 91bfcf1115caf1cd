#include "server/ldm/sampler.h"

#include <gtest/gtest.h>

#include <cmath>

#include "server/ldm/schedule.h"

namespace ldm {
namespace {

DiffusionSchedule SdSchedule() {
  return DiffusionSchedule::Linear(0.00085, 0.012, 1000);
}

TEST(DiffusionScheduleTest, LinearStartsAtOneMinusBetaAndDecreases) {
  DiffusionSchedule schedule = SdSchedule();
  ASSERT_EQ(schedule.timesteps(), 1000);
  EXPECT_NEAR(schedule.alphas_cumprod_f64(0), 1.0 - 0.00085, 1e-12);
  const double beta_1 = std::pow(
      std::sqrt(0.00085) + (std::sqrt(0.012) - std::sqrt(0.00085)) / 999.0, 2);
  EXPECT_NEAR(schedule.alphas_cumprod_f64(1), (1 - 0.00085) * (1 - beta_1),
              1e-12);
  for (int64_t t = 1; t < 1000; ++t) {
    ASSERT_LT(schedule.alphas_cumprod_f64(t),
              schedule.alphas_cumprod_f64(t - 1));
  }
}

TEST(DiffusionScheduleTest, OtherBetaSchedules) {
  auto sqrt_linear =
      DiffusionSchedule::Make(BetaSchedule::kSqrtLinear, 0.001, 0.02, 10);
  ASSERT_TRUE(sqrt_linear.ok());
  EXPECT_NEAR(sqrt_linear->alphas_cumprod_f64(0), 0.999, 1e-12);
  auto cosine = DiffusionSchedule::Make(BetaSchedule::kCosine, 0, 0, 1000);
  ASSERT_TRUE(cosine.ok());
  // The cosine schedule ends near zero signal and starts near one.
  EXPECT_GT(cosine->alphas_cumprod_f64(0), 0.9999);
  EXPECT_LT(cosine->alphas_cumprod_f64(999), 1e-3);
  EXPECT_FALSE(DiffusionSchedule::Make(BetaSchedule::kSqrt, 0.1, 0.2, 0).ok());
}

TEST(DiffusionScheduleTest, SigmaAndTimestepAreInverse) {
  DiffusionSchedule schedule = SdSchedule();
  EXPECT_NEAR(schedule.SigmaForTimestep(500),
              std::sqrt((1 - schedule.alphas_cumprod_f64(500)) /
                        schedule.alphas_cumprod_f64(500)),
              1e-9);
  for (double t : {0.0, 10.5, 333.25, 998.0}) {
    EXPECT_NEAR(schedule.TimestepForSigma(schedule.SigmaForTimestep(t)), t,
                1e-6);
  }
  EXPECT_DOUBLE_EQ(schedule.AlphaCumprodAt(250),
                   schedule.alphas_cumprod_f64(250));
}

TEST(DiffusionScheduleTest, RejectsIncreasingAlphas) {
  EXPECT_FALSE(DiffusionSchedule::FromAlphasCumprod({0.9, 0.95}).ok());
  EXPECT_FALSE(DiffusionSchedule::FromAlphasCumprod({}).ok());
  EXPECT_TRUE(DiffusionSchedule::FromAlphasCumprod({0.9, 0.5}).ok());
}

TEST(DdimTimestepsTest, UniformAndQuadraticAsTheReference) {
  EXPECT_EQ(DdimTimesteps(1000, 5),
            (std::vector<int64_t>{1, 201, 401, 601, 801}));
  EXPECT_EQ(DdimTimesteps(1000, 50).size(), 50u);
  // 1000 // 30 = 33 gives 31 steps in the reference too.
  EXPECT_EQ(DdimTimesteps(1000, 30).size(), 31u);
  // ((linspace(0, sqrt(800), 5)) ** 2).astype(int) + 1
  EXPECT_EQ(DdimTimesteps(1000, 5, /*quadratic=*/true),
            (std::vector<int64_t>{1, 51, 201, 451, 801}));
}

TEST(DdimSamplerTest, ScalarsAsTheReference) {
  DiffusionSchedule schedule = SdSchedule();
  DdimSampler sampler(schedule, DdimTimesteps(1000, 5), 1.0,
                      at::zeros({1, 4, 2, 2}), MakeGenerator(0));
  // alphas_prev[0] is alphas_cumprod[0], not 1.
  EXPECT_FLOAT_EQ(sampler.alphas_prev()[0], schedule.alphas_cumprod(0));
  EXPECT_FLOAT_EQ(sampler.alphas_prev()[1], schedule.alphas_cumprod(1));
  EXPECT_FLOAT_EQ(sampler.alphas()[4], schedule.alphas_cumprod(801));
  for (size_t i = 0; i < 5; ++i) {
    const double a = sampler.alphas()[i], a_prev = sampler.alphas_prev()[i];
    EXPECT_NEAR(sampler.sigmas()[i],
                std::sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev)), 1e-6);
  }
  EXPECT_GT(sampler.sigmas()[0], 0.0f);
}

TEST(DdimSamplerTest, EtaZeroIsDeterministicAndExact) {
  DiffusionSchedule schedule = SdSchedule();
  at::Tensor x_T = at::randn({1, 4, 3, 3});
  at::Tensor eps = at::randn({1, 4, 3, 3});
  DdimSampler first(schedule, DdimTimesteps(1000, 5), 0.0, x_T,
                    MakeGenerator(1));
  DdimSampler second(schedule, DdimTimesteps(1000, 5), 0.0, x_T,
                     MakeGenerator(2));
  EXPECT_EQ(first.timestep(), 801);
  first.Step(eps);
  second.Step(eps);
  EXPECT_TRUE(at::equal(first.latent(), second.latent()));
  const double a = schedule.alphas_cumprod(801);
  const double a_prev = schedule.alphas_cumprod(601);
  at::Tensor pred_x0 = (x_T - std::sqrt(1 - a) * eps) / std::sqrt(a);
  at::Tensor expected =
      std::sqrt(a_prev) * pred_x0 + std::sqrt(1 - a_prev) * eps;
  EXPECT_TRUE(at::allclose(first.latent(), expected, 1e-5, 1e-6));
  EXPECT_EQ(first.timestep(), 601);
  for (int i = 0; i < 4; ++i) first.Step(eps);
  EXPECT_TRUE(first.done());
}

TEST(DdimSamplerTest, EtaOneDrawsFromItsOwnGenerator) {
  DiffusionSchedule schedule = SdSchedule();
  at::Tensor x_T = at::randn({1, 4, 3, 3});
  at::Tensor eps = at::randn({1, 4, 3, 3});
  auto make = [&](uint64_t seed) {
    return DdimSampler(schedule, DdimTimesteps(1000, 5), 1.0, x_T,
                       MakeGenerator(seed));
  };
  DdimSampler a = make(1), b = make(1), c = make(2);
  a.Step(eps);
  b.Step(eps);
  c.Step(eps);
  EXPECT_TRUE(at::equal(a.latent(), b.latent()));
  EXPECT_FALSE(at::equal(a.latent(), c.latent()));
}

TEST(DdimSamplerTest, FirstStepsStartsPartWay) {
  DdimSampler sampler(SdSchedule(), DdimTimesteps(1000, 5), 0.0,
                      at::zeros({1, 1, 1, 1}), MakeGenerator(0),
                      /*first_steps=*/3);
  EXPECT_EQ(sampler.total_steps(), 3);
  EXPECT_EQ(sampler.timestep(), 401);
}

TEST(PlmsSamplerTest, FirstStepCallsTheModelTwice) {
  PlmsSampler sampler(SdSchedule(), DdimTimesteps(1000, 5),
                      at::zeros({1, 1, 2, 2}), MakeGenerator(0));
  std::vector<double> calls;
  while (!sampler.done()) {
    calls.push_back(sampler.timestep());
    sampler.Step(at::ones({1, 1, 2, 2}));
  }
  // As the reference's plms.model_t: 801, 601, 601, 401, 201, 1.
  EXPECT_EQ(calls, (std::vector<double>{801, 601, 601, 401, 201, 1}));
  EXPECT_EQ(sampler.steps_done(), 5);
}

// x_0 ~ N(mu, s^2) element-wise: the optimal noise prediction is known in
// closed form, so a correct sampler must land on that distribution.
struct GaussianData {
  double mu = 0.5;
  double s = 0.3;
  at::Tensor OptimalEps(const at::Tensor& x_t, double a) const {
    return std::sqrt(1 - a) * (x_t - std::sqrt(a) * mu) / (a * s * s + 1 - a);
  }
};

struct ConvergenceCase {
  SamplerKind kind;
  int few_steps;
  int many_steps;
  double std_tolerance;  // |std - s| allowed at many_steps.
  SigmaSchedule sigma_schedule = SigmaSchedule::kUniform;
};

class SamplerConvergenceTest
    : public ::testing::TestWithParam<ConvergenceCase> {
 protected:
  // The final samples' (mean, std) after `steps` steps with the optimal
  // noise prediction.
  std::pair<double, double> Sample(SamplerKind kind, int steps,
                                   SigmaSchedule sigma_schedule) {
    DiffusionSchedule schedule = SdSchedule();
    at::Generator generator = MakeGenerator(1234);
    at::Tensor noise =
        StandardNormal({1, 4, 100, 100}, generator, at::TensorOptions());
    SamplerOptions options;
    options.kind = kind;
    options.steps = steps;
    options.sigma_schedule = sigma_schedule;
    auto sampler = MakeSampler(options, schedule, noise, generator);
    EXPECT_TRUE(sampler.ok()) << sampler.status();
    while (!(*sampler)->done()) {
      const double a = schedule.AlphaCumprodAt((*sampler)->timestep());
      (*sampler)->Step(data_.OptimalEps((*sampler)->model_input(), a));
    }
    const at::Tensor x = (*sampler)->latent();
    return {x.mean().item<double>(), x.std().item<double>()};
  }

  GaussianData data_;
};

// Discretisation error shrinks with more steps and ends small. (The SD
// schedule's terminal alpha is 0.0047, not 0: starting from pure noise
// biases deterministic samplers' mean by about mu * sqrt(a_T) * s = 0.01.)
TEST_P(SamplerConvergenceTest, ErrorShrinksWithStepsAndEndsSmall) {
  const ConvergenceCase& c = GetParam();
  const auto [few_mean, few_std] =
      Sample(c.kind, c.few_steps, c.sigma_schedule);
  const auto [many_mean, many_std] =
      Sample(c.kind, c.many_steps, c.sigma_schedule);
  EXPECT_LT(std::abs(many_std - data_.s), std::abs(few_std - data_.s));
  EXPECT_LT(std::abs(many_std - data_.s), c.std_tolerance);
  EXPECT_NEAR(many_mean, data_.mu, 0.015);
}

std::string KindName(const ::testing::TestParamInfo<ConvergenceCase>& info) {
  const std::string schedule =
      info.param.sigma_schedule == SigmaSchedule::kKarras        ? "Karras"
      : info.param.sigma_schedule == SigmaSchedule::kExponential ? "Exponential"
                                                                 : "";
  switch (info.param.kind) {
    case SamplerKind::kDdim:
      return "Ddim";
    case SamplerKind::kPlms:
      return "Plms";
    case SamplerKind::kDdpm:
      return "Ddpm";
    case SamplerKind::kEulerAncestral:
      return "EulerAncestral";
    case SamplerKind::kDpmSolverPP2M:
      return "DpmSolverPP2M" + schedule;
    case SamplerKind::kEuler:
      return "Euler" + schedule;
    case SamplerKind::kHeun:
      return "Heun" + schedule;
    case SamplerKind::kLms:
      return "Lms" + schedule;
    case SamplerKind::kDpmSolverPP2MSde:
      return "DpmSolverPP2MSde" + schedule;
    case SamplerKind::kDpmSolverPP2SAncestral:
      return "DpmSolverPP2SAncestral" + schedule;
    case SamplerKind::kUniPc:
      return "UniPc" + schedule;
  }
  return "Unknown";
}

INSTANTIATE_TEST_SUITE_P(
    AllSamplers, SamplerConvergenceTest,
    ::testing::Values(
        ConvergenceCase{SamplerKind::kDdim, 10, 100, 0.012},
        ConvergenceCase{SamplerKind::kPlms, 10, 100, 0.006},
        ConvergenceCase{SamplerKind::kDdpm, 25, 500, 0.013},
        ConvergenceCase{SamplerKind::kEulerAncestral, 25, 500, 0.013},
        ConvergenceCase{SamplerKind::kDpmSolverPP2M, 10, 100, 0.013},
        ConvergenceCase{SamplerKind::kDpmSolverPP2M, 10, 100, 0.013,
                        SigmaSchedule::kKarras},
        ConvergenceCase{SamplerKind::kEuler, 10, 200, 0.013},
        ConvergenceCase{SamplerKind::kEuler, 10, 200, 0.013,
                        SigmaSchedule::kExponential},
        ConvergenceCase{SamplerKind::kHeun, 5, 50, 0.013},
        ConvergenceCase{SamplerKind::kHeun, 5, 50, 0.013,
                        SigmaSchedule::kKarras},
        ConvergenceCase{SamplerKind::kLms, 10, 100, 0.013},
        ConvergenceCase{SamplerKind::kDpmSolverPP2MSde, 25, 500, 0.013},
        ConvergenceCase{SamplerKind::kDpmSolverPP2MSde, 25, 500, 0.013,
                        SigmaSchedule::kKarras},
        ConvergenceCase{SamplerKind::kDpmSolverPP2SAncestral, 10, 200, 0.013},
        ConvergenceCase{SamplerKind::kDpmSolverPP2SAncestral, 10, 200, 0.013,
                        SigmaSchedule::kKarras},
        ConvergenceCase{SamplerKind::kUniPc, 10, 100, 0.013},
        ConvergenceCase{SamplerKind::kUniPc, 10, 100, 0.013,
                        SigmaSchedule::kKarras}),
    KindName);

TEST(SigmaScheduleTest, KarrasAndExponentialSpanTheModelsSigmas) {
  const DiffusionSchedule schedule = SdSchedule();
  const double sigma_max = schedule.sigma(999), sigma_min = schedule.sigma(0);
  for (SigmaSchedule kind : {SigmaSchedule::kUniform, SigmaSchedule::kKarras,
                             SigmaSchedule::kExponential}) {
    const std::vector<double> sigmas = KarrasStyleSigmas(schedule, 10, kind);
    ASSERT_EQ(sigmas.size(), 11u);
    EXPECT_NEAR(sigmas.front(), sigma_max, 1e-9 * sigma_max);
    EXPECT_NEAR(sigmas[9], sigma_min, 1e-9);
    EXPECT_EQ(sigmas.back(), 0.0);
    for (size_t i = 1; i < sigmas.size(); ++i) {
      EXPECT_LT(sigmas[i], sigmas[i - 1]);
    }
  }
  // Exponential: one ratio between neighbours; Karras: sigma^(1/7) evenly
  // spaced, so more of its steps at low noise than exponential's.
  const std::vector<double> exponential =
      KarrasStyleSigmas(schedule, 10, SigmaSchedule::kExponential);
  const std::vector<double> karras =
      KarrasStyleSigmas(schedule, 10, SigmaSchedule::kKarras);
  for (size_t i = 1; i < 9; ++i) {
    EXPECT_NEAR(exponential[i + 1] / exponential[i],
                exponential[1] / exponential[0], 1e-9);
    EXPECT_NEAR(std::pow(karras[i + 1], 1 / 7.0) - std::pow(karras[i], 1 / 7.0),
                std::pow(karras[1], 1 / 7.0) - std::pow(karras[0], 1 / 7.0),
                1e-9);
  }
  EXPECT_GT(karras[5], exponential[5]);
}

// The probability-flow ODE of N(mu, s^2) data has a closed-form solution:
// x(sigma) = mu + (x(sigma_max) - mu) * sqrt(s^2 + sigma^2) /
// sqrt(s^2 + sigma_max^2) in k-diffusion's space. A deterministic sampler's
// error against it shrinks as its order says when the steps double. Every
// sampler's last step jumps from the smallest sigma to 0 with the model's
// x0 prediction, D(x) = mu + (x - mu) s^2 / (s^2 + sigma^2), whose error
// (about 0.004 here) does not shrink with steps: with `exact_last_step` the
// reference takes that same jump from the exact x(sigma_min), so that only
// the solver's own error is measured.
double OdeError(SamplerKind kind, int steps,
                SigmaSchedule sigma_schedule = SigmaSchedule::kUniform,
                bool exact_last_step = false) {
  const DiffusionSchedule schedule = SdSchedule();
  const GaussianData data;
  at::Generator generator = MakeGenerator(7);
  const at::Tensor noise =
      StandardNormal({1, 1, 16, 16}, generator, at::TensorOptions());
  SamplerOptions options;
  options.kind = kind;
  options.steps = steps;
  options.sigma_schedule = sigma_schedule;
  auto sampler = MakeSampler(options, schedule, noise, generator);
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  const double sigma_max = schedule.SigmaForTimestep(999);
  // The start in k-diffusion's space (x_k = x / sqrt(a)), its closed-form
  // end at sigma 0, in the same space (a = 1 there).
  const at::Tensor start = noise.to(at::kDouble) * sigma_max;
  const double s2 = data.s * data.s;
  at::Tensor exact = data.mu + (start - data.mu) * data.s /
                                   std::sqrt(s2 + sigma_max * sigma_max);
  if (exact_last_step) {
    const double sigma_min = schedule.SigmaForTimestep(0);
    const at::Tensor at_sigma_min =
        data.mu +
        (exact - data.mu) * std::sqrt(s2 + sigma_min * sigma_min) / data.s;
    exact =
        data.mu + (at_sigma_min - data.mu) * s2 / (s2 + sigma_min * sigma_min);
  }
  while (!(*sampler)->done()) {
    const double a = schedule.AlphaCumprodAt((*sampler)->timestep());
    (*sampler)->Step(data.OptimalEps((*sampler)->model_input(), a));
  }
  return ((*sampler)->latent().to(at::kDouble) - exact)
      .abs()
      .max()
      .item<double>();
}

TEST(SamplerOrderTest, EulerIsFirstOrderHeunAndLmsHigher) {
  const double euler_20 = OdeError(SamplerKind::kEuler, 20);
  const double euler_40 = OdeError(SamplerKind::kEuler, 40);
  const double heun_20 = OdeError(SamplerKind::kHeun, 20);
  const double heun_40 = OdeError(SamplerKind::kHeun, 40);
  const double lms_40 = OdeError(SamplerKind::kLms, 40);
  // First order: doubling the steps about halves the error.
  EXPECT_GT(euler_20 / euler_40, 1.5);
  EXPECT_LT(euler_20 / euler_40, 2.6);
  // Second order (but its last step, to sigma 0, is Euler's).
  EXPECT_GT(heun_20 / heun_40, 2.8);
  EXPECT_LT(heun_40, euler_40 / 4);
  EXPECT_LT(lms_40, euler_40 / 4);
}

// UniPC: its corrector lifts the order-2 predictor (DPM++ 2M's step) to
// third order without a model call. On exponential sigmas (equal steps in
// log sigma, where the multistep solvers' orders show), doubling 40 steps
// to 80 measured: DPM++ 2M's error / 4.0, UniPC's / 8.0, and UniPC 4x more
// accurate at 40 steps.
TEST(SamplerOrderTest, UniPcIsThirdOrderWhereDpmSolverPP2MIsSecond) {
  const auto exponential = SigmaSchedule::kExponential;
  const double unipc_40 = OdeError(SamplerKind::kUniPc, 40, exponential, true);
  const double unipc_80 = OdeError(SamplerKind::kUniPc, 80, exponential, true);
  const double dpmpp_40 =
      OdeError(SamplerKind::kDpmSolverPP2M, 40, exponential, true);
  const double dpmpp_80 =
      OdeError(SamplerKind::kDpmSolverPP2M, 80, exponential, true);
  EXPECT_GT(dpmpp_40 / dpmpp_80, 3.0);
  EXPECT_LT(dpmpp_40 / dpmpp_80, 5.5);
  EXPECT_GT(unipc_40 / unipc_80, 6.0);
  EXPECT_LT(unipc_40, dpmpp_40 / 3);
}

TEST(MakeSamplerTest, RefusesPlmsWithEta) {
  SamplerOptions options;
  options.kind = SamplerKind::kPlms;
  options.eta = 0.5;
  EXPECT_FALSE(MakeSampler(options, SdSchedule(), at::zeros({1, 1, 1, 1}),
                           MakeGenerator(0))
                   .ok());
}

}  // namespace
}  // namespace ldm
