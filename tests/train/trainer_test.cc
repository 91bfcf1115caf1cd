// The training stages on a few tiny steps: which weights each one may move.
// (What training reaches is measured by the quality tests on the shipped
// models, not here.)
#include "tools/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "server/ldm/safetensors.h"
#include "tools/shapes/shapes_world.h"
#include "tools/train/shapes_batch.h"

namespace ldmtrain {
namespace {

namespace fs = std::filesystem;

class TrainerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    at::set_num_threads(2);
    root_ =
        fs::temp_directory_path() /
        ("ldmserve_trainer_test_" +
         std::string(
             ::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  TrainOptions Tiny(const std::string& out) const {
    TrainOptions options;
    options.out_dir = (root_ / out).string();
    options.steps = 2;
    options.batch_size = 2;
    options.warmup_steps = 1;
    options.learning_rate = 1e-3;
    options.log_every = 1;
    return options;
  }

  static std::shared_ptr<const ldm::SafetensorsFile> Open(
      const fs::path& path) {
    auto file = ldm::SafetensorsFile::Open(path.string());
    EXPECT_TRUE(file.ok()) << file.status();
    return file.ok() ? *file : nullptr;
  }

  // Keys of `a` whose tensors differ from `b`'s.
  static std::vector<std::string> ChangedKeys(const ldm::SafetensorsFile& a,
                                              const ldm::SafetensorsFile& b) {
    std::vector<std::string> changed;
    for (const auto& [key, entry] : a.entries()) {
      const at::Tensor left = *a.Get(key);
      const at::Tensor right = *b.Get(key);
      if (!at::equal(left.to(at::kFloat), right.to(at::kFloat))) {
        changed.push_back(key);
      }
    }
    return changed;
  }

  void TrainAutoencoder() {
    const absl::Status trained = Train(Task::kAutoencoder, Tiny("ae"));
    ASSERT_TRUE(trained.ok()) << trained;
  }

  // A text-to-image model on the autoencoder, two steps.
  void TrainTextToImage(const std::string& out, double pixel_loss_weight) {
    TrainOptions options = Tiny(out);
    options.autoencoder_dir = (root_ / "ae").string();
    options.prediction = "v";
    options.pixel_loss_weight = pixel_loss_weight;
    // Every row gets the pixel loss.
    options.pixel_loss_max_timestep = 1000;
    const absl::Status trained = Train(Task::kTextToImage, options);
    ASSERT_TRUE(trained.ok()) << trained;
  }

  fs::path root_;
};

TEST_F(TrainerTest, PixelLossTrainsTheUNetThroughAFrozenDecoder) {
  TrainAutoencoder();
  TrainTextToImage("plain", 0);
  TrainTextToImage("pixel", 1.0);
  auto autoencoder = Open(root_ / "ae" / "ae.safetensors");
  auto plain = Open(root_ / "plain" / "weights.safetensors");
  auto pixel = Open(root_ / "pixel" / "weights.safetensors");
  ASSERT_NE(autoencoder, nullptr);
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(pixel, nullptr);
  // Same seed, same data: only the pixel loss tells the two apart, and it
  // reaches the UNet.
  bool unet_differs = false;
  for (const std::string& key : ChangedKeys(*pixel, *plain)) {
    EXPECT_FALSE(absl::StartsWith(key, "first_stage_model.")) << key;
    unet_differs |= absl::StartsWith(key, "model.diffusion_model.");
  }
  EXPECT_TRUE(unet_differs);
  // The decoder it flows through stays as trained (exported in F16).
  for (const auto& [key, entry] : autoencoder->entries()) {
    EXPECT_TRUE(
        at::equal(autoencoder->Get(key)->to(at::kHalf), *pixel->Get(key)))
        << key;
  }
}

TEST_F(TrainerTest, OutlineWeightChangesOnlyTheTrainedUpdate) {
  TrainAutoencoder();
  TrainTextToImage("plain", 0);
  TrainOptions options = Tiny("outline");
  options.autoencoder_dir = (root_ / "ae").string();
  options.prediction = "v";
  options.outline_weight = 20;
  const absl::Status trained = Train(Task::kTextToImage, options);
  ASSERT_TRUE(trained.ok()) << trained;
  auto plain = Open(root_ / "plain" / "weights.safetensors");
  auto outline = Open(root_ / "outline" / "weights.safetensors");
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(outline, nullptr);
  const std::vector<std::string> changed = ChangedKeys(*outline, *plain);
  EXPECT_FALSE(changed.empty());
  for (const std::string& key : changed) {
    EXPECT_FALSE(absl::StartsWith(key, "first_stage_model.")) << key;
  }
}

TEST(OutlineBandMaskTest, CoversTheOutlineNotTheInsideOrTheBackground) {
  shapes::Scene scene;
  shapes::SceneObject square;
  square.shape = shapes::Shape::kSquare;
  square.center_x = 32;
  square.center_y = 32;
  square.size = 10;  // Half side 9 px: corners at 32 +- 9.
  scene.objects = {square};
  const std::vector<uint8_t> band = OutlineBandMask(scene);
  auto at = [&](int x, int y) { return band[y * 64 + x]; };
  EXPECT_EQ(at(32, 32), 0);  // Centre.
  EXPECT_EQ(at(2, 2), 0);    // Background.
  EXPECT_EQ(at(40, 40), 1);  // Near the corner (40.5, 40.5).
  EXPECT_EQ(at(40, 32), 1);  // The middle of a side.
  EXPECT_EQ(at(32, 23), 1);
  int count = 0;
  for (uint8_t inside : band) count += inside;
  // Between the squares of half side 11.25 and 6.75: pixel centres
  // 21.5 ... 42.5 (22 across) less 25.5 ... 38.5 (14 across).
  EXPECT_EQ(count, 22 * 22 - 14 * 14);
}

TEST_F(TrainerTest, NegativeLossWeightsAreRejected) {
  TrainOptions options = Tiny("txt2img");
  options.autoencoder_dir = (root_ / "ae").string();
  options.pixel_loss_weight = -1;
  absl::Status status = Train(Task::kTextToImage, options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "--pixel-loss")) << status;
  options.pixel_loss_weight = 0;
  options.outline_weight = -1;
  status = Train(Task::kTextToImage, options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "--outline-weight"))
      << status;
  options.outline_weight = 0;
  options.two_object_fraction = 1.5;
  status = Train(Task::kTextToImage, options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "--two-objects")) << status;
}

}  // namespace
}  // namespace ldmtrain
