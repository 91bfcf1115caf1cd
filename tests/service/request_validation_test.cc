#include "server/service/request_validation.h"

#include <gtest/gtest.h>

#include "ldm/v1/image_synthesis.pb.h"

namespace ldmserve {
namespace {

ldm::v1::GenerateRequest Text(float guidance) {
  ldm::v1::GenerateRequest request;
  request.mutable_text_to_image()->set_prompt("a red circle");
  request.mutable_sampler()->set_guidance_scale(guidance);
  return request;
}

TEST(RequestValidationTest, GuidanceDefaultsToTheModelsThenTheServers) {
  ldm::ModelConfig model;
  model.latent_height = model.latent_width = 16;
  ServiceLimits limits;
  auto server_default = ValidateRequest(Text(0), model, limits, 1);
  ASSERT_TRUE(server_default.ok()) << server_default.status();
  EXPECT_FLOAT_EQ(server_default->request.sampler.guidance_scale,
                  limits.default_guidance_scale);
  model.default_guidance_scale = 3;
  auto model_default = ValidateRequest(Text(0), model, limits, 1);
  ASSERT_TRUE(model_default.ok()) << model_default.status();
  EXPECT_FLOAT_EQ(model_default->request.sampler.guidance_scale, 3.0f);
  auto asked = ValidateRequest(Text(5), model, limits, 1);
  ASSERT_TRUE(asked.ok()) << asked.status();
  EXPECT_FLOAT_EQ(asked->request.sampler.guidance_scale, 5.0f);
}

TEST(RequestValidationTest, UnsetEtaTakesTheModelsDefaultAndZeroStaysZero) {
  ldm::ModelConfig model;
  model.latent_height = model.latent_width = 16;
  model.default_eta = 1;
  const ServiceLimits limits;
  auto unset = ValidateRequest(Text(0), model, limits, 1);
  ASSERT_TRUE(unset.ok()) << unset.status();
  EXPECT_DOUBLE_EQ(unset->request.sampler.eta, 1.0);
  ldm::v1::GenerateRequest deterministic = Text(0);
  deterministic.mutable_sampler()->set_eta(0);
  auto zero = ValidateRequest(deterministic, model, limits, 1);
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_DOUBLE_EQ(zero->request.sampler.eta, 0.0);
  // Samplers without eta ignore the model's DDIM default.
  ldm::v1::GenerateRequest plms = Text(0);
  plms.mutable_sampler()->set_kind(ldm::v1::SAMPLER_KIND_PLMS);
  auto other = ValidateRequest(plms, model, limits, 1);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_DOUBLE_EQ(other->request.sampler.eta, 0.0);
  deterministic.mutable_sampler()->set_eta(1.5);
  auto out_of_range = ValidateRequest(deterministic, model, limits, 1);
  EXPECT_EQ(out_of_range.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out_of_range.status().message().find("sampler.eta"),
            std::string::npos);
}

}  // namespace
}  // namespace ldmserve
