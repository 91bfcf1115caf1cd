#include "server/service/image_fit.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace ldmserve {
namespace {

using ::testing::HasSubstr;

ldm::RgbImage Numbered(int64_t width, int64_t height) {
  ldm::RgbImage image{width, height, {}};
  image.pixels.resize(static_cast<size_t>(width) * height * 3);
  for (size_t i = 0; i < image.pixels.size(); ++i) {
    image.pixels[i] = static_cast<uint8_t>((i * 31) % 251);
  }
  return image;
}

const uint8_t* PixelAt(const ldm::RgbImage& image, int64_t x, int64_t y) {
  return &image.pixels[(y * image.width + x) * 3];
}

TEST(PlanFitTest, EachModeGivesMultiplesOfTheModelsSide) {
  struct Case {
    ResizeMode mode;
    int64_t width;
    int64_t height;
  };
  for (const Case& expected :
       {Case{ResizeMode::kScale, 96, 64}, Case{ResizeMode::kCrop, 96, 64},
        Case{ResizeMode::kPad, 112, 80}}) {
    absl::StatusOr<InputFit> fit = PlanFit(100, 70, expected.mode, 16, "image");
    ASSERT_TRUE(fit.ok()) << fit.status();
    EXPECT_EQ(fit->original_width, 100);
    EXPECT_EQ(fit->original_height, 70);
    EXPECT_EQ(fit->width, expected.width);
    EXPECT_EQ(fit->height, expected.height);
  }
}

TEST(PlanFitTest, ExactRefusesAMisfitAndSaysWhatToSet) {
  absl::StatusOr<InputFit> fit =
      PlanFit(100, 64, ResizeMode::kExact, 64, "inpaint.image");
  ASSERT_EQ(fit.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(fit.status().message(), HasSubstr("inpaint.image"));
  EXPECT_THAT(fit.status().message(), HasSubstr("multiples of 64"));
  EXPECT_THAT(fit.status().message(), HasSubstr("resize_mode"));
}

TEST(PlanFitTest, FittingSidesAreLeftAlone) {
  for (ResizeMode mode : {ResizeMode::kExact, ResizeMode::kScale,
                          ResizeMode::kCrop, ResizeMode::kPad}) {
    absl::StatusOr<InputFit> fit = PlanFit(128, 64, mode, 64, "image");
    ASSERT_TRUE(fit.ok());
    EXPECT_EQ(fit->width, 128);
    EXPECT_EQ(fit->height, 64);
    const ldm::RgbImage image = Numbered(128, 64);
    EXPECT_EQ(ApplyFit(image, *fit), image);
  }
}

TEST(PlanFitTest, TinyImagesScaleAndPadUpButDoNotCrop) {
  EXPECT_EQ(PlanFit(10, 20, ResizeMode::kScale, 64, "x")->width, 64);
  EXPECT_EQ(PlanFit(10, 20, ResizeMode::kPad, 64, "x")->height, 64);
  EXPECT_EQ(PlanFit(10, 20, ResizeMode::kCrop, 64, "x").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ApplyFitTest, PadKeepsTheImageTopLeftAndRepeatsItsEdges) {
  const ldm::RgbImage image = Numbered(10, 7);
  const InputFit fit = PlanFit(10, 7, ResizeMode::kPad, 8, "x").value();
  const ldm::RgbImage padded = ApplyFit(image, fit);
  ASSERT_EQ(padded.width, 16);
  ASSERT_EQ(padded.height, 8);
  for (int64_t y = 0; y < 8; ++y) {
    for (int64_t x = 0; x < 16; ++x) {
      const uint8_t* from =
          PixelAt(image, std::min<int64_t>(x, 9), std::min<int64_t>(y, 6));
      ASSERT_TRUE(std::equal(from, from + 3, PixelAt(padded, x, y)))
          << x << "," << y;
    }
  }
}

TEST(ApplyFitTest, CropKeepsTheCentre) {
  const ldm::RgbImage image = Numbered(21, 13);
  const InputFit fit = PlanFit(21, 13, ResizeMode::kCrop, 8, "x").value();
  const ldm::RgbImage cropped = ApplyFit(image, fit);
  ASSERT_EQ(cropped.width, 16);
  ASSERT_EQ(cropped.height, 8);
  // (21 - 16) / 2 = 2 columns off the left, (13 - 8) / 2 = 2 rows off the top.
  for (int64_t y = 0; y < 8; ++y) {
    for (int64_t x = 0; x < 16; ++x) {
      const uint8_t* from = PixelAt(image, x + 2, y + 2);
      ASSERT_TRUE(std::equal(from, from + 3, PixelAt(cropped, x, y)));
    }
  }
}

TEST(ResizeBilinearTest, AFlatImageStaysFlat) {
  ldm::RgbImage flat{37, 23, std::vector<uint8_t>(37 * 23 * 3, 173)};
  for (auto [width, height] : {std::pair{64, 64}, std::pair{16, 8}}) {
    const ldm::RgbImage resized = ResizeBilinear(flat, width, height);
    ASSERT_EQ(resized.pixels.size(), static_cast<size_t>(width * height * 3));
    for (uint8_t value : resized.pixels) ASSERT_EQ(value, 173);
  }
}

TEST(ResizeBilinearTest, ShrinkingAveragesInsteadOfAliasing) {
  // One-pixel black and white stripes: point sampling at half size would
  // keep one colour; an antialiased resize gives the mean grey.
  ldm::RgbImage stripes{64, 8, {}};
  for (int64_t y = 0; y < 8; ++y) {
    for (int64_t x = 0; x < 64; ++x) {
      for (int c = 0; c < 3; ++c) stripes.pixels.push_back(x % 2 ? 255 : 0);
    }
  }
  const ldm::RgbImage half = ResizeBilinear(stripes, 32, 4);
  for (int64_t x = 1; x < 31; ++x) {
    EXPECT_NEAR(PixelAt(half, x, 2)[0], 127.5, 1.0) << x;
  }
}

TEST(ResizeBilinearTest, EnlargingARampKeepsItMonotonic) {
  ldm::RgbImage ramp{8, 1, {}};
  for (int x = 0; x < 8; ++x) {
    for (int c = 0; c < 3; ++c)
      ramp.pixels.push_back(static_cast<uint8_t>(x * 30));
  }
  const ldm::RgbImage wide = ResizeBilinear(ramp, 32, 1);
  for (int64_t x = 1; x < 32; ++x) {
    EXPECT_GE(PixelAt(wide, x, 0)[0], PixelAt(wide, x - 1, 0)[0]);
  }
  EXPECT_LE(PixelAt(wide, 0, 0)[0], 5);
  EXPECT_GE(PixelAt(wide, 31, 0)[0], 205);
}

}  // namespace
}  // namespace ldmserve
