#include "server/service/image_codec.h"

#include <turbojpeg.h>
#include <webp/decode.h>
#include <webp/encode.h>
#include <webp/mux.h>

#include <memory>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/service/image_metadata.h"
#include "server/service/png_codec.h"

namespace ldmserve {
namespace {

constexpr absl::string_view kExifPrefix("Exif\0\0", 6);
constexpr absl::string_view kXmpPrefix("http://ns.adobe.com/xap/1.0/\0", 29);
// A JPEG segment's payload: its 16-bit length counts itself.
constexpr size_t kMaxJpegSegmentPayload = 65535 - 2;

absl::Status TooLarge(absl::string_view field, uint64_t width, uint64_t height,
                      const ImageLimits& limits) {
  if (width > limits.max_width || height > limits.max_height) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": at most ", limits.max_width, "x", limits.max_height,
        " pixels (got ", width, "x", height, ")"));
  }
  if (limits.max_pixels != 0 && width * height > limits.max_pixels) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": width * height at most ", limits.max_pixels,
                     " pixels (got ", width, "x", height, ")"));
  }
  return absl::OkStatus();
}

struct TurboJpegDeleter {
  void operator()(void* handle) const { tjDestroy(handle); }
};
using TurboJpegHandle = std::unique_ptr<void, TurboJpegDeleter>;

absl::StatusOr<RgbImage> DecodeJpeg(absl::string_view bytes,
                                    absl::string_view field,
                                    const ImageLimits& limits) {
  TurboJpegHandle handle(tjInitDecompress());
  if (!handle) return absl::ResourceExhaustedError("jpeg: cannot allocate");
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  int width = 0;
  int height = 0;
  int subsampling = 0;
  int colorspace = 0;
  if (tjDecompressHeader3(handle.get(), data, bytes.size(), &width, &height,
                          &subsampling, &colorspace) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": corrupt JPEG (", tjGetErrorStr2(handle.get()), ")"));
  }
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": CMYK JPEGs are not read; send RGB or grey"));
  }
  if (width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": empty JPEG"));
  }
  if (absl::Status size = TooLarge(field, width, height, limits); !size.ok()) {
    return size;
  }
  RgbImage image;
  image.width = width;
  image.height = height;
  image.pixels.resize(static_cast<size_t>(width) * height * 3);
  // LIMITSCANS refuses progressive files built to take forever to decode.
  // A warning (a truncated file, stray bytes) still gives an image, as in
  // every common reader.
  if (tjDecompress2(handle.get(), data, bytes.size(), image.pixels.data(),
                    width, 0, height, TJPF_RGB, TJFLAG_LIMITSCANS) != 0 &&
      tjGetErrorCode(handle.get()) != TJERR_WARNING) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": corrupt JPEG (", tjGetErrorStr2(handle.get()), ")"));
  }
  return image;
}

std::string JpegSegment(uint8_t marker, absl::string_view payload) {
  const size_t length = payload.size() + 2;
  std::string segment = {'\xFF', static_cast<char>(marker),
                         static_cast<char>(length >> 8),
                         static_cast<char>(length & 0xFF)};
  segment.append(payload.data(), payload.size());
  return segment;
}

absl::StatusOr<std::string> EncodeJpeg(const RgbImage& image, int quality,
                                       absl::string_view parameters) {
  TurboJpegHandle handle(tjInitCompress());
  if (!handle) return absl::ResourceExhaustedError("jpeg: cannot allocate");
  unsigned char* buffer = nullptr;
  unsigned long size = 0;  // NOLINT(google-runtime-int): TurboJPEG's type.
  // Full chroma at high quality, where 4:2:0 visibly blurs colour edges.
  const int subsampling = quality >= 90 ? TJSAMP_444 : TJSAMP_420;
  const int error = tjCompress2(handle.get(), image.pixels.data(),
                                static_cast<int>(image.width), 0,
                                static_cast<int>(image.height), TJPF_RGB,
                                &buffer, &size, subsampling, quality, 0);
  std::unique_ptr<unsigned char, decltype(&tjFree)> owned(buffer, &tjFree);
  if (error != 0) {
    return absl::InternalError(
        absl::StrCat("jpeg encode: ", tjGetErrorStr2(handle.get())));
  }
  std::string jpeg(reinterpret_cast<const char*>(buffer), size);
  if (parameters.empty()) return jpeg;
  // After SOI and the JFIF APP0 segment, as most writers place them.
  size_t insert_at = 2;
  if (jpeg.size() > 6 && static_cast<uint8_t>(jpeg[2]) == 0xFF &&
      static_cast<uint8_t>(jpeg[3]) == 0xE0) {
    insert_at = 4 + ((static_cast<uint8_t>(jpeg[4]) << 8) |
                     static_cast<uint8_t>(jpeg[5]));
  }
  std::string segments;
  // A segment holds at most 64 KiB: metadata that would not fit is left out
  // (the parameters still travel in the Result).
  const std::string exif =
      absl::StrCat(kExifPrefix, ExifWithUserComment(parameters));
  if (exif.size() <= kMaxJpegSegmentPayload) {
    segments += JpegSegment(0xE1, exif);
  }
  const std::string xmp =
      absl::StrCat(kXmpPrefix, XmpWithDescription(parameters));
  if (xmp.size() <= kMaxJpegSegmentPayload) {
    segments += JpegSegment(0xE1, xmp);
  }
  jpeg.insert(insert_at, segments);
  return jpeg;
}

// The payload of the first APP1 segment starting with `prefix`, before the
// image data; empty when there is none.
absl::StatusOr<absl::string_view> JpegApp1(absl::string_view jpeg,
                                           absl::string_view prefix) {
  size_t at = 2;
  while (at + 4 <= jpeg.size()) {
    if (static_cast<uint8_t>(jpeg[at]) != 0xFF) {
      return absl::InvalidArgumentError("jpeg: bad marker");
    }
    const auto marker = static_cast<uint8_t>(jpeg[at + 1]);
    if (marker == 0xDA || marker == 0xD9) break;  // Start of scan, end.
    const size_t length = (static_cast<uint8_t>(jpeg[at + 2]) << 8) |
                          static_cast<uint8_t>(jpeg[at + 3]);
    if (length < 2 || at + 2 + length > jpeg.size()) {
      return absl::InvalidArgumentError("jpeg: segment out of bounds");
    }
    const absl::string_view payload = jpeg.substr(at + 4, length - 2);
    if (marker == 0xE1 && absl::StartsWith(payload, prefix)) {
      return payload.substr(prefix.size());
    }
    at += 2 + length;
  }
  return absl::string_view();
}

absl::StatusOr<RgbImage> DecodeWebp(absl::string_view bytes,
                                    absl::string_view field,
                                    const ImageLimits& limits) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  WebPBitstreamFeatures features;
  if (WebPGetFeatures(data, bytes.size(), &features) != VP8_STATUS_OK) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": corrupt WebP"));
  }
  if (features.has_animation != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": animated WebP; send a still image"));
  }
  if (absl::Status size =
          TooLarge(field, features.width, features.height, limits);
      !size.ok()) {
    return size;
  }
  RgbImage image;
  image.width = features.width;
  image.height = features.height;
  image.pixels.resize(static_cast<size_t>(image.width) * image.height * 3);
  if (WebPDecodeRGBInto(data, bytes.size(), image.pixels.data(),
                        image.pixels.size(),
                        static_cast<int>(image.width * 3)) == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": corrupt WebP"));
  }
  return image;
}

struct WebpMuxDeleter {
  void operator()(WebPMux* mux) const { WebPMuxDelete(mux); }
};
using WebpMuxHandle = std::unique_ptr<WebPMux, WebpMuxDeleter>;

absl::StatusOr<std::string> EncodeWebp(const RgbImage& image, bool lossless,
                                       int quality,
                                       absl::string_view parameters) {
  uint8_t* output = nullptr;
  const auto width = static_cast<int>(image.width);
  const auto height = static_cast<int>(image.height);
  const size_t size =
      lossless ? WebPEncodeLosslessRGB(image.pixels.data(), width, height,
                                       width * 3, &output)
               : WebPEncodeRGB(image.pixels.data(), width, height, width * 3,
                               static_cast<float>(quality), &output);
  std::unique_ptr<uint8_t, decltype(&WebPFree)> owned(output, &WebPFree);
  if (size == 0) return absl::InternalError("webp encode failed");
  if (parameters.empty()) {
    return std::string(reinterpret_cast<const char*>(output), size);
  }
  const WebPData bitstream = {output, size};
  WebpMuxHandle mux(WebPMuxCreate(&bitstream, /*copy_data=*/0));
  if (!mux) return absl::InternalError("webp mux: cannot parse own output");
  const std::string exif = ExifWithUserComment(parameters);
  const std::string xmp = XmpWithDescription(parameters);
  const WebPData exif_chunk = {reinterpret_cast<const uint8_t*>(exif.data()),
                               exif.size()};
  const WebPData xmp_chunk = {reinterpret_cast<const uint8_t*>(xmp.data()),
                              xmp.size()};
  WebPData assembled = {nullptr, 0};
  if (WebPMuxSetChunk(mux.get(), "EXIF", &exif_chunk, 1) != WEBP_MUX_OK ||
      WebPMuxSetChunk(mux.get(), "XMP ", &xmp_chunk, 1) != WEBP_MUX_OK ||
      WebPMuxAssemble(mux.get(), &assembled) != WEBP_MUX_OK) {
    WebPDataClear(&assembled);
    return absl::InternalError("webp mux: cannot add the metadata");
  }
  std::string webp(reinterpret_cast<const char*>(assembled.bytes),
                   assembled.size);
  WebPDataClear(&assembled);
  return webp;
}

absl::StatusOr<std::string> WebpExifComment(absl::string_view bytes) {
  const WebPData data = {reinterpret_cast<const uint8_t*>(bytes.data()),
                         bytes.size()};
  WebpMuxHandle mux(WebPMuxCreate(&data, /*copy_data=*/0));
  if (!mux) return absl::InvalidArgumentError("webp: does not parse");
  WebPData chunk = {nullptr, 0};
  if (WebPMuxGetChunk(mux.get(), "EXIF", &chunk) != WEBP_MUX_OK) {
    return std::string();
  }
  return ExifUserComment(absl::string_view(
      reinterpret_cast<const char*>(chunk.bytes), chunk.size));
}

}  // namespace

std::optional<ImageFileFormat> SniffImageFormat(absl::string_view bytes) {
  if (absl::StartsWith(bytes, "\x89PNG\r\n\x1A\n")) {
    return ImageFileFormat::kPng;
  }
  if (absl::StartsWith(bytes, "\xFF\xD8\xFF")) return ImageFileFormat::kJpeg;
  if (bytes.size() >= 12 && bytes.substr(0, 4) == "RIFF" &&
      bytes.substr(8, 4) == "WEBP") {
    return ImageFileFormat::kWebp;
  }
  return std::nullopt;
}

absl::StatusOr<RgbImage> DecodeImage(absl::string_view bytes,
                                     absl::string_view field,
                                     const ImageLimits& limits) {
  const std::optional<ImageFileFormat> format = SniffImageFormat(bytes);
  if (!format.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": not a PNG, JPEG or WebP image"));
  }
  switch (*format) {
    case ImageFileFormat::kPng:
      return DecodePng(bytes, field, limits);
    case ImageFileFormat::kJpeg:
      return DecodeJpeg(bytes, field, limits);
    case ImageFileFormat::kWebp:
    case ImageFileFormat::kWebpLossless:
      return DecodeWebp(bytes, field, limits);
  }
  return absl::InternalError("unreachable");
}

absl::StatusOr<std::string> EncodeImage(const RgbImage& image,
                                        const ImageEncoding& encoding,
                                        absl::string_view parameters) {
  switch (encoding.format) {
    case ImageFileFormat::kPng:
      if (parameters.empty()) return EncodePng(image);
      return EncodePng(image, {{"parameters", std::string(parameters)}});
    case ImageFileFormat::kJpeg:
      return EncodeJpeg(image, encoding.quality, parameters);
    case ImageFileFormat::kWebp:
      return EncodeWebp(image, /*lossless=*/false, encoding.quality,
                        parameters);
    case ImageFileFormat::kWebpLossless:
      return EncodeWebp(image, /*lossless=*/true, encoding.quality, parameters);
  }
  return absl::InternalError("unreachable");
}

absl::StatusOr<std::string> ReadImageParameters(absl::string_view bytes) {
  const std::optional<ImageFileFormat> format = SniffImageFormat(bytes);
  if (!format.has_value()) {
    return absl::InvalidArgumentError("not a PNG, JPEG or WebP image");
  }
  switch (*format) {
    case ImageFileFormat::kPng: {
      absl::StatusOr<PngText> text = ReadPngText(bytes);
      if (!text.ok()) return text.status();
      for (const auto& [keyword, value] : *text) {
        if (keyword == "parameters") return value;
      }
      return std::string();
    }
    case ImageFileFormat::kJpeg: {
      absl::StatusOr<absl::string_view> exif = JpegApp1(bytes, kExifPrefix);
      if (!exif.ok()) return exif.status();
      if (exif->empty()) return std::string();
      return ExifUserComment(*exif);
    }
    case ImageFileFormat::kWebp:
    case ImageFileFormat::kWebpLossless:
      return WebpExifComment(bytes);
  }
  return absl::InternalError("unreachable");
}

const char* ImageFileExtension(ImageFileFormat format) {
  switch (format) {
    case ImageFileFormat::kPng:
      return "png";
    case ImageFileFormat::kJpeg:
      return "jpg";
    case ImageFileFormat::kWebp:
    case ImageFileFormat::kWebpLossless:
      return "webp";
  }
  return "bin";
}

}  // namespace ldmserve
