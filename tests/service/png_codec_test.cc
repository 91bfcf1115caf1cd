#include "server/service/png_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace ldmserve {
namespace {

using ::testing::HasSubstr;

TEST(PngCodecTest, RoundTripsPixelsExactly) {
  std::vector<uint8_t> pixels(7 * 5 * 3);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = (i * 37) & 0xff;
  auto png = EncodePng(pixels.data(), 7, 5);
  ASSERT_TRUE(png.ok()) << png.status();
  EXPECT_EQ(png->substr(1, 3), "PNG");
  auto image = DecodePng(*png, "image");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width, 7u);
  EXPECT_EQ(image->height, 5u);
  EXPECT_EQ(image->pixels, pixels);
}

TEST(PngCodecTest, GarbageIsInvalidArgumentNamingTheField) {
  auto image = DecodePng("definitely not a png", "inpaint.mask");
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr("inpaint.mask"));
}

TEST(PngCodecTest, TruncatedPngIsRejected) {
  std::vector<uint8_t> pixels(64 * 64 * 3, 200);
  auto png = EncodePng(pixels.data(), 64, 64);
  ASSERT_TRUE(png.ok());
  auto image = DecodePng(png->substr(0, png->size() / 2), "image");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PngCodecTest, ImagesOverTheLimitAreRejected) {
  std::vector<uint8_t> pixels(32 * 16 * 3, 1);
  auto png = EncodePng(pixels.data(), 32, 16);
  ASSERT_TRUE(png.ok());
  ImageLimits limits;
  limits.max_width = 16;
  auto image = DecodePng(*png, "init_image", limits);
  ASSERT_FALSE(image.ok());
  EXPECT_THAT(image.status().message(), HasSubstr("init_image"));
  EXPECT_THAT(image.status().message(), HasSubstr("16x4096"));
}

TEST(PngCodecTest, TextChunksRoundTripAsUtf8) {
  std::vector<uint8_t> pixels(4 * 4 * 3, 7);
  const std::string parameters =
      "ein Café 東京\nSteps: 25, Sampler: DDIM, Seed: 3";
  auto png = EncodePng(pixels.data(), 4, 4, {{"parameters", parameters}});
  ASSERT_TRUE(png.ok()) << png.status();
  auto text = ReadPngText(*png);
  ASSERT_TRUE(text.ok()) << text.status();
  ASSERT_EQ(text->size(), 1u);
  EXPECT_EQ((*text)[0].first, "parameters");
  EXPECT_EQ((*text)[0].second, parameters);
  // The pixels are unchanged by the metadata.
  EXPECT_EQ(DecodePng(*png, "image")->pixels, pixels);
  EXPECT_TRUE(ReadPngText(*EncodePng(pixels.data(), 4, 4))->empty());
  EXPECT_FALSE(EncodePng(pixels.data(), 4, 4, {{"", "x"}}).ok());
}

TEST(PngCodecTest, PixelLimitIsCheckedFromTheHeaderBeforeDecoding) {
  // A black 2048x2048 image compresses to little; cut after the header
  // (signature + IHDR: 33 bytes), its pixels cannot be decoded at all.
  std::vector<uint8_t> pixels(2048 * 2048 * 3, 0);
  auto png = EncodePng(pixels.data(), 2048, 2048);
  ASSERT_TRUE(png.ok());
  const std::string header_only = png->substr(0, 33);
  ImageLimits limits;
  limits.max_pixels = 1 << 20;
  auto refused = DecodePng(header_only, "init_image", limits);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(),
              HasSubstr("init_image: width * height at most 1048576 pixels "
                        "(got 2048x2048)"));
  // Without the pixel limit the same bytes get as far as decoding.
  auto corrupt = DecodePng(header_only, "init_image");
  ASSERT_FALSE(corrupt.ok());
  EXPECT_THAT(corrupt.status().message(), HasSubstr("corrupt PNG"));
  limits.max_pixels = 2048 * 2048;
  EXPECT_TRUE(DecodePng(*png, "init_image", limits).ok());
}

}  // namespace
}  // namespace ldmserve
