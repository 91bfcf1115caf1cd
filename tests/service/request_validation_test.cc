#include "server/service/request_validation.h"

#include <gtest/gtest.h>

#include <array>
#include <string>
#include <variant>
#include <vector>

#include "ldm/v1/image_synthesis.pb.h"
#include "server/service/png_codec.h"

namespace ldmserve {
namespace {

// An SD-like text-to-image model: f = 8, four UNet levels.
ldm::ModelCapabilities TextModel() {
  ldm::ModelCapabilities model;
  model.tasks = {ldm::Task::kTextToImage, ldm::Task::kImageToImage,
                 ldm::Task::kInpaint};
  model.downsampling_factor = 8;
  model.size_multiple = 64;
  model.latent_height = model.latent_width = 16;
  model.native_height = model.native_width = 128;
  return model;
}

std::string Png(int width, int height, std::array<uint8_t, 3> colour) {
  std::vector<uint8_t> pixels;
  for (int i = 0; i < width * height; ++i) {
    pixels.insert(pixels.end(), colour.begin(), colour.end());
  }
  return EncodePng(pixels.data(), width, height).value();
}

ldm::v1::GenerateRequest Text(float guidance) {
  ldm::v1::GenerateRequest request;
  request.mutable_text_to_image()->set_prompt("a red circle");
  request.mutable_sampler()->set_guidance_scale(guidance);
  return request;
}

TEST(RequestValidationTest, GuidanceDefaultsToTheModelsThenTheServers) {
  ldm::ModelCapabilities model = TextModel();
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
  ldm::ModelCapabilities model = TextModel();
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

TEST(RequestValidationTest, TheModelDecidesTaskAndSizeBeforeTheJobIsQueued) {
  const ldm::ModelCapabilities model = TextModel();
  const ServiceLimits limits;
  ldm::v1::GenerateRequest request = Text(0);
  request.mutable_text_to_image()->set_width(96);
  auto not_multiple = ValidateRequest(request, model, limits, 1);
  EXPECT_EQ(not_multiple.status().message(),
            "text_to_image.width: must be a positive multiple of 64 (got 96)");
  request.mutable_text_to_image()->set_width(0);
  EXPECT_EQ(ValidateRequest(request, model, limits, 1).status().message(),
            "text_to_image.width: must be a positive multiple of 64 (got 0)");
  request.mutable_text_to_image()->set_width(256);
  auto wide = ValidateRequest(request, model, limits, 1);
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_EQ(wide->task(), ldm::Task::kTextToImage);
  EXPECT_EQ(wide->geometry.width, 256);
  EXPECT_EQ(wide->geometry.height, 128);  // Native.
  EXPECT_EQ(wide->geometry.latent_width, 32);
  EXPECT_EQ(wide->geometry.latent_height, 16);

  ldm::ModelCapabilities upscaler;
  upscaler.tasks = {ldm::Task::kSuperResolution};
  upscaler.downsampling_factor = 4;
  upscaler.size_multiple = 16;
  EXPECT_EQ(ValidateRequest(Text(0), upscaler, limits, 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ldm::v1::GenerateRequest upscale;
  upscale.mutable_super_resolution()->set_low_res_image(Png(8, 12, {1, 2, 3}));
  auto upscaled = ValidateRequest(upscale, upscaler, limits, 1);
  ASSERT_TRUE(upscaled.ok()) << upscaled.status();
  EXPECT_EQ(upscaled->geometry.width, 32);
  EXPECT_EQ(upscaled->geometry.height, 48);
  EXPECT_EQ(upscaled->geometry.latent_width, 8);
  upscale.mutable_super_resolution()->set_low_res_image(Png(6, 8, {1, 2, 3}));
  EXPECT_EQ(ValidateRequest(upscale, upscaler, limits, 1).status().message(),
            "super_resolution.low_res_image: sides must be multiples of 4 (got "
            "6x8); or set resize_mode to scale, crop or pad it");
  // Fitted, the low-res image takes the latent's multiple: 6x8 -> 8x8.
  upscale.set_resize_mode(ldm::v1::RESIZE_MODE_PAD);
  upscaled = ValidateRequest(upscale, upscaler, limits, 1);
  ASSERT_TRUE(upscaled.ok()) << upscaled.status();
  EXPECT_EQ(upscaled->geometry.width, 32);
  EXPECT_EQ(upscaled->geometry.height, 32);
  ASSERT_TRUE(upscaled->input_fit.has_value());
  EXPECT_EQ(upscaled->input_fit->original_width, 6);
}

TEST(RequestValidationTest, OnlyTheMasksRedChannelDecidesWhatIsRepainted) {
  const ldm::ModelCapabilities model = TextModel();
  ldm::v1::GenerateRequest request;
  ldm::v1::Inpaint* inpaint = request.mutable_inpaint();
  inpaint->set_image(Png(64, 64, {10, 20, 30}));
  inpaint->set_mask(Png(64, 64, {200, 0, 0}));
  auto red = ValidateRequest(request, model, ServiceLimits(), 1);
  ASSERT_TRUE(red.ok()) << red.status();
  const ldm::Mask& repaint = std::get<ldm::Inpaint>(red->request.task).mask;
  EXPECT_EQ(repaint.repaint, std::vector<uint8_t>(64 * 64, 1));
  inpaint->set_mask(Png(64, 64, {127, 255, 255}));
  auto cyan = ValidateRequest(request, model, ServiceLimits(), 1);
  ASSERT_TRUE(cyan.ok()) << cyan.status();
  EXPECT_EQ(std::get<ldm::Inpaint>(cyan->request.task).mask.repaint,
            std::vector<uint8_t>(64 * 64, 0));
  inpaint->set_mask(Png(64, 32, {255, 255, 255}));
  EXPECT_EQ(
      ValidateRequest(request, model, ServiceLimits(), 1).status().message(),
      "inpaint.mask: must be the image's size 64x64 (got 64x32)");
}

TEST(RequestValidationTest, InputImageSidesAreLimitedBeforeDecoding) {
  ldm::ModelCapabilities model = TextModel();
  ServiceLimits limits;
  limits.max_image_side = 64;
  ldm::v1::GenerateRequest request;
  request.mutable_image_to_image()->set_prompt("a red circle");
  request.mutable_image_to_image()->set_init_image(Png(128, 64, {9, 9, 9}));
  auto refused = ValidateRequest(request, model, limits, 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("image_to_image.init_image"),
            absl::string_view::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("64x64"), absl::string_view::npos)
      << refused.status();
  limits.max_image_side = 128;
  auto accepted = ValidateRequest(request, model, limits, 1);
  EXPECT_TRUE(accepted.ok()) << accepted.status();
}

}  // namespace
}  // namespace ldmserve
