#include "server/ldm/precision.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/ldm/latent_diffusion.h"
#include "tests/ldm/test_util.h"

namespace ldm {
namespace {

using ::testing::HasSubstr;

TEST(PrecisionTest, ParsesTheServedDtypeNames) {
  EXPECT_EQ(*ParseDtypeName("f32"), at::kFloat);
  EXPECT_EQ(*ParseDtypeName("f16"), at::kHalf);
  EXPECT_EQ(*ParseDtypeName("bf16"), at::kBFloat16);
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    EXPECT_EQ(*ParseDtypeName(DtypeName(dtype)), dtype);
  }
  const absl::Status wrong = ParseDtypeName("fp16").status();
  EXPECT_EQ(wrong.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.message(), HasSubstr("f32, f16 or bf16"));
}

TEST(PrecisionTest, HalfOnCudaFloatOnTheCpuByDefault) {
  EXPECT_EQ(DefaultDtypeFor(at::Device("cuda:0")), at::kHalf);
  EXPECT_EQ(DefaultDtypeFor(at::kCPU), at::kFloat);
  const StagePrecision half = StagePrecision::ForModelDtype(at::kHalf);
  EXPECT_EQ(half.unet, at::kHalf);
  EXPECT_EQ(half.first_stage, at::kFloat);
  EXPECT_EQ(half.text, at::kFloat);
}

// Every parameter of `model` under `prefix` has `dtype`; false (with the
// offending name) otherwise.
::testing::AssertionResult AllOfStageAre(const LatentDiffusion& model,
                                         const std::string& prefix,
                                         at::ScalarType dtype) {
  auto& mutable_model = const_cast<LatentDiffusion&>(model);
  int count = 0;
  for (const auto& [name, tensor] : mutable_model.MutableParameters()) {
    if (!absl::StartsWith(name, prefix)) continue;
    ++count;
    if (tensor.scalar_type() != dtype) {
      return ::testing::AssertionFailure()
             << name << " is " << c10::toString(tensor.scalar_type());
    }
  }
  if (count == 0) {
    return ::testing::AssertionFailure() << "none under " << prefix;
  }
  return ::testing::AssertionSuccess();
}

// The tiny model saved as a float32 checkpoint `name`.safetensors and its
// config `name`.json in the test's temporary folder.
struct SavedModel {
  std::string config_path, weights_path;
};
SavedModel SaveTinyModel(const std::string& name) {
  const ModelConfig config = testing::TinyTextToImageConfig();
  SavedModel saved{::testing::TempDir() + "/" + name + ".json",
                   ::testing::TempDir() + "/" + name + ".safetensors"};
  auto model = LatentDiffusion::CreateRandom(config, 3);
  EXPECT_TRUE(model.ok() && (*model)->Save(saved.weights_path).ok());
  std::ofstream(saved.config_path) << ModelConfigToJson(config);
  return saved;
}

TEST(PrecisionTest, OnlyTheUNetIsLoweredUnlessAsked) {
  const SavedModel saved = SaveTinyModel("precision");
  LoadOptions bf16{.dtype = at::kBFloat16};
  auto loaded =
      LatentDiffusion::Load(saved.config_path, saved.weights_path, bf16);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->precision(),
            StagePrecision::ForModelDtype(at::kBFloat16));
  EXPECT_TRUE(AllOfStageAre(**loaded, "model.diffusion_model.", at::kBFloat16));
  EXPECT_TRUE(AllOfStageAre(**loaded, "first_stage_model.", at::kFloat));
  EXPECT_TRUE(AllOfStageAre(**loaded, "cond_stage_model.", at::kFloat));

  bf16.first_stage_dtype = at::kBFloat16;
  bf16.text_dtype = at::kBFloat16;
  auto all_low =
      LatentDiffusion::CreateRandom(testing::TinyTextToImageConfig(), 3, bf16);
  ASSERT_TRUE(all_low.ok());
  EXPECT_TRUE(AllOfStageAre(**all_low, "first_stage_model.", at::kBFloat16));
  EXPECT_TRUE(AllOfStageAre(**all_low, "cond_stage_model.", at::kBFloat16));
}

// A dtype this LibTorch cannot run on a device fails the load with one
// clear line instead of the first request; one it can run serves jobs.
TEST(PrecisionTest, AnUnsupportedDtypeFailsAtLoad) {
  const SavedModel saved = SaveTinyModel("half");
  const absl::Status supported = CheckDtypeSupported(at::kCPU, at::kHalf);
  auto loaded = LatentDiffusion::Load(saved.config_path, saved.weights_path,
                                      {.dtype = at::kHalf});
  if (supported.ok()) {
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    GenerationRequest request{.prompt = "a red circle"};
    request.sampler.steps = 2;
    EXPECT_TRUE(testing::RunToTensor(**loaded, request).ok());
  } else {
    EXPECT_EQ(supported.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(supported.message(), HasSubstr("f16 on cpu"));
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_TRUE(CheckDtypeSupported(at::kCPU, at::kFloat).ok());
  EXPECT_TRUE(CheckDtypeSupported(at::kCPU, at::kBFloat16).ok());
}

}  // namespace
}  // namespace ldm
