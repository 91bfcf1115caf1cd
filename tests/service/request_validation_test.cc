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

}  // namespace
}  // namespace ldmserve
