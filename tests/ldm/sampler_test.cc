#include "server/ldm/sampler.h"

#include <gtest/gtest.h>

#include <cmath>

#include "server/ldm/schedule.h"

namespace ldm {
namespace {

TEST(DiffusionScheduleTest, LinearStartsAtOneMinusBetaAndDecreases) {
  DiffusionSchedule schedule = DiffusionSchedule::Linear(0.00085, 0.012, 1000);
  ASSERT_EQ(schedule.timesteps(), 1000);
  EXPECT_NEAR(schedule.alphas_cumprod(0), 1.0 - 0.00085, 1e-7);
  EXPECT_NEAR(
      schedule.alphas_cumprod(1),
      (1.0 - 0.00085) *
          (1.0 - std::pow(std::sqrt(0.00085) +
                              (std::sqrt(0.012) - std::sqrt(0.00085)) / 999.0,
                          2)),
      1e-7);
  for (int64_t t = 1; t < 1000; ++t) {
    ASSERT_LT(schedule.alphas_cumprod(t), schedule.alphas_cumprod(t - 1));
  }
}

TEST(DiffusionScheduleTest, RejectsIncreasingAlphas) {
  EXPECT_FALSE(DiffusionSchedule::FromAlphasCumprod({0.9f, 0.95f}).ok());
  EXPECT_FALSE(DiffusionSchedule::FromAlphasCumprod({}).ok());
  EXPECT_TRUE(DiffusionSchedule::FromAlphasCumprod({0.9f, 0.5f}).ok());
}

TEST(DdimSamplerTest, UniformTimestepsAsTheReference) {
  EXPECT_EQ(DdimSampler::UniformTimesteps(1000, 5),
            (std::vector<int64_t>{1, 201, 401, 601, 801}));
  EXPECT_EQ(DdimSampler::UniformTimesteps(1000, 50).size(), 50u);
  // 1000 // 30 = 33 gives 31 steps in the reference too.
  EXPECT_EQ(DdimSampler::UniformTimesteps(1000, 30).size(), 31u);
}

TEST(DdimSamplerTest, ScalarsAsTheReference) {
  DiffusionSchedule schedule = DiffusionSchedule::Linear(0.00085, 0.012, 1000);
  DdimSampler sampler(schedule, 5, 1.0, at::zeros({1, 4, 2, 2}),
                      MakeGenerator(0));
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
  DiffusionSchedule schedule = DiffusionSchedule::Linear(0.00085, 0.012, 1000);
  at::Tensor x_T = at::randn({1, 4, 3, 3});
  at::Tensor eps = at::randn({1, 4, 3, 3});
  DdimSampler first(schedule, 5, 0.0, x_T, MakeGenerator(1));
  DdimSampler second(schedule, 5, 0.0, x_T, MakeGenerator(2));
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
  DiffusionSchedule schedule = DiffusionSchedule::Linear(0.00085, 0.012, 1000);
  at::Tensor x_T = at::randn({1, 4, 3, 3});
  at::Tensor eps = at::randn({1, 4, 3, 3});
  DdimSampler a(schedule, 5, 1.0, x_T, MakeGenerator(1));
  DdimSampler b(schedule, 5, 1.0, x_T, MakeGenerator(1));
  DdimSampler c(schedule, 5, 1.0, x_T, MakeGenerator(2));
  a.Step(eps);
  b.Step(eps);
  c.Step(eps);
  EXPECT_TRUE(at::equal(a.latent(), b.latent()));
  EXPECT_FALSE(at::equal(a.latent(), c.latent()));
}

}  // namespace
}  // namespace ldm
