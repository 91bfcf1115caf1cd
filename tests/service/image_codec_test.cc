#include "server/service/image_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <turbojpeg.h>

#include <cmath>
#include <memory>

#include "server/service/image_metadata.h"

namespace ldmserve {
namespace {

using ::testing::HasSubstr;

// A smooth picture with some detail: what a lossy codec keeps well.
RgbImage Gradient(int64_t width, int64_t height) {
  RgbImage image{width, height, {}};
  image.pixels.resize(static_cast<size_t>(width) * height * 3);
  for (int64_t y = 0; y < height; ++y) {
    for (int64_t x = 0; x < width; ++x) {
      uint8_t* pixel = &image.pixels[(y * width + x) * 3];
      pixel[0] = static_cast<uint8_t>(255 * x / (width - 1));
      pixel[1] = static_cast<uint8_t>(255 * y / (height - 1));
      pixel[2] = static_cast<uint8_t>(128 + 100 * std::sin(0.2 * (x + y)));
    }
  }
  return image;
}

double Psnr(const RgbImage& a, const RgbImage& b) {
  double squared = 0.0;
  for (size_t i = 0; i < a.pixels.size(); ++i) {
    const double d = static_cast<double>(a.pixels[i]) - b.pixels[i];
    squared += d * d;
  }
  const double mse = squared / static_cast<double>(a.pixels.size());
  return mse == 0.0 ? 1e9 : 10.0 * std::log10(255.0 * 255.0 / mse);
}

// Prompt text that trips every encoding: non-ASCII (two, three and four
// byte UTF-8), XML's special characters, a newline.
const char kParameters[] =
    "a café in 東京 🌸 <b>&\"bold\"</b>\nNegative prompt: blur\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 64x48";

struct FormatCase {
  ImageFileFormat format;
  const char* extension;
  double min_psnr;  // 1e9 = exact.
};

// Names the case in test listings (not the struct's bytes).
void PrintTo(const FormatCase& c, std::ostream* os) {
  *os << ImageFileExtension(c.format)
      << (c.format == ImageFileFormat::kWebpLossless ? " lossless" : "");
}

class ImageCodecTest : public ::testing::TestWithParam<FormatCase> {};

TEST_P(ImageCodecTest, RoundTripsPixelsAndParameters) {
  const RgbImage image = Gradient(64, 48);
  const ImageEncoding encoding{GetParam().format, 95};
  absl::StatusOr<std::string> file = EncodeImage(image, encoding, kParameters);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(SniffImageFormat(*file),
            GetParam().format == ImageFileFormat::kWebpLossless
                ? ImageFileFormat::kWebp
                : GetParam().format);
  absl::StatusOr<RgbImage> decoded = DecodeImage(*file, "image");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->width, 64);
  ASSERT_EQ(decoded->height, 48);
  EXPECT_GE(Psnr(image, *decoded), GetParam().min_psnr);
  absl::StatusOr<std::string> parameters = ReadImageParameters(*file);
  ASSERT_TRUE(parameters.ok()) << parameters.status();
  EXPECT_EQ(*parameters, kParameters);
  EXPECT_STREQ(ImageFileExtension(GetParam().format), GetParam().extension);
}

TEST_P(ImageCodecTest, WithoutParametersTheFileHasNone) {
  absl::StatusOr<std::string> file =
      EncodeImage(Gradient(16, 16), {GetParam().format, 90});
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(ReadImageParameters(*file).value(), "");
}

TEST_P(ImageCodecTest, HeaderSizeOverTheLimitIsRefusedNamingTheField) {
  absl::StatusOr<std::string> file =
      EncodeImage(Gradient(64, 48), {GetParam().format, 90});
  ASSERT_TRUE(file.ok()) << file.status();
  ImageLimits limits;
  limits.max_pixels = 64 * 47;
  absl::StatusOr<RgbImage> decoded =
      DecodeImage(*file, "image_to_image.init_image", limits);
  ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(decoded.status().message(),
              HasSubstr("image_to_image.init_image"));
  EXPECT_THAT(decoded.status().message(), HasSubstr("64x48"));
}

TEST_P(ImageCodecTest, TruncatedFilesAreInvalidArgumentOrStillAnImage) {
  absl::StatusOr<std::string> file =
      EncodeImage(Gradient(64, 48), {GetParam().format, 90});
  ASSERT_TRUE(file.ok()) << file.status();
  for (size_t keep : {size_t{3}, size_t{20}, file->size() / 2}) {
    absl::StatusOr<RgbImage> decoded =
        DecodeImage(file->substr(0, keep), "inpaint.image");
    // A JPEG cut short decodes grey to the end, as in every reader; the
    // others refuse. Neither crashes.
    if (!decoded.ok()) {
      EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(decoded.status().message(), HasSubstr("inpaint.image"));
    } else {
      EXPECT_EQ(GetParam().format, ImageFileFormat::kJpeg);
      EXPECT_EQ(decoded->pixels.size(), 64u * 48 * 3);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Formats, ImageCodecTest,
    ::testing::Values(FormatCase{ImageFileFormat::kPng, "png", 1e9},
                      FormatCase{ImageFileFormat::kJpeg, "jpg", 35.0},
                      FormatCase{ImageFileFormat::kWebp, "webp", 30.0},
                      FormatCase{ImageFileFormat::kWebpLossless, "webp", 1e9}),
    [](const auto& info) {
      switch (info.param.format) {
        case ImageFileFormat::kPng:
          return std::string("Png");
        case ImageFileFormat::kJpeg:
          return std::string("Jpeg");
        case ImageFileFormat::kWebp:
          return std::string("Webp");
        case ImageFileFormat::kWebpLossless:
          return std::string("WebpLossless");
      }
      return std::string("Unknown");
    });

TEST(ImageCodecFormatTest, JpegQualityTradesSizeForFidelity) {
  const RgbImage image = Gradient(96, 96);
  const std::string low =
      EncodeImage(image, {ImageFileFormat::kJpeg, 30}).value();
  const std::string high =
      EncodeImage(image, {ImageFileFormat::kJpeg, 95}).value();
  EXPECT_LT(low.size(), high.size());
  EXPECT_LT(Psnr(image, DecodeImage(low, "x").value()),
            Psnr(image, DecodeImage(high, "x").value()));
}

TEST(ImageCodecFormatTest, GreyJpegDecodesToEqualChannels) {
  std::vector<uint8_t> grey(32 * 24);
  for (size_t i = 0; i < grey.size(); ++i) grey[i] = (i * 7) & 0xFF;
  std::unique_ptr<void, decltype(&tjDestroy)> handle(tjInitCompress(),
                                                     &tjDestroy);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;  // NOLINT(google-runtime-int): TurboJPEG's type.
  ASSERT_EQ(tjCompress2(handle.get(), grey.data(), 32, 0, 24, TJPF_GRAY,
                        &buffer, &size, TJSAMP_GRAY, 90, 0),
            0);
  const std::string file(reinterpret_cast<char*>(buffer), size);
  tjFree(buffer);
  absl::StatusOr<RgbImage> decoded = DecodeImage(file, "image");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  ASSERT_EQ(decoded->pixels.size(), 32u * 24 * 3);
  for (size_t i = 0; i < grey.size(); ++i) {
    ASSERT_EQ(decoded->pixels[3 * i], decoded->pixels[3 * i + 1]);
    ASSERT_EQ(decoded->pixels[3 * i], decoded->pixels[3 * i + 2]);
  }
}

TEST(ImageCodecFormatTest, UnknownBytesAreRefusedNamingTheField) {
  for (const std::string bytes : {std::string(), std::string("GIF89a..."),
                                  std::string("RIFF\0\0\0\0WAVE", 12)}) {
    absl::StatusOr<RgbImage> decoded = DecodeImage(bytes, "inpaint.mask");
    ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(decoded.status().message(), HasSubstr("inpaint.mask"));
    EXPECT_THAT(decoded.status().message(), HasSubstr("PNG, JPEG or WebP"));
  }
}

TEST(ImageCodecFormatTest, JpegCarriesExifAndXmpSegments) {
  const std::string file =
      EncodeImage(Gradient(16, 16), {ImageFileFormat::kJpeg, 90}, kParameters)
          .value();
  // The EXIF APP1 segment, and the XMP one with the text escaped.
  EXPECT_NE(file.find(std::string("Exif\0\0MM", 8)), std::string::npos);
  EXPECT_NE(file.find("http://ns.adobe.com/xap/1.0/"), std::string::npos);
  EXPECT_NE(file.find("&lt;b&gt;&amp;&quot;bold&quot;&lt;/b&gt;"),
            std::string::npos);
  EXPECT_NE(file.find("<dc:description>"), std::string::npos);
}

TEST(ImageMetadataTest, ReadsALittleEndianAsciiUserComment) {
  // Built by hand as another writer would: "II", IFD0 -> Exif IFD ->
  // UserComment in the ASCII charset.
  std::string tiff("II\x2A\x00\x08\x00\x00\x00", 8);
  tiff += std::string("\x01\x00\x69\x87\x04\x00\x01\x00\x00\x00", 10);
  tiff += std::string("\x1A\x00\x00\x00\x00\x00\x00\x00", 8);
  tiff += std::string("\x01\x00\x86\x92\x07\x00\x0D\x00\x00\x00", 10);
  tiff += std::string("\x2C\x00\x00\x00\x00\x00\x00\x00", 8);
  tiff += std::string("ASCII\0\0\0hello", 13);
  absl::StatusOr<std::string> comment = ExifUserComment(tiff);
  ASSERT_TRUE(comment.ok()) << comment.status();
  EXPECT_EQ(*comment, "hello");
}

TEST(ImageMetadataTest, MalformedExifIsInvalidArgumentNotACrash) {
  const std::string good = ExifWithUserComment(kParameters);
  EXPECT_EQ(ExifUserComment(good).value(), kParameters);
  for (size_t keep = 0; keep < 60; ++keep) {
    absl::StatusOr<std::string> comment = ExifUserComment(good.substr(0, keep));
    if (!comment.ok()) {
      EXPECT_EQ(comment.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace ldmserve
