#include "server/service/png_codec.h"

#include <spng.h>

#include <cstdlib>
#include <memory>

#include "absl/strings/str_cat.h"

namespace ldmserve {
namespace {

struct SpngDeleter {
  void operator()(spng_ctx* ctx) const { spng_ctx_free(ctx); }
};
using SpngContext = std::unique_ptr<spng_ctx, SpngDeleter>;

}  // namespace

absl::StatusOr<std::string> EncodePng(const uint8_t* rgb, uint32_t width,
                                      uint32_t height) {
  SpngContext ctx(spng_ctx_new(SPNG_CTX_ENCODER));
  if (!ctx) return absl::ResourceExhaustedError("png: cannot allocate");
  spng_set_option(ctx.get(), SPNG_ENCODE_TO_BUFFER, 1);
  spng_ihdr ihdr = {};
  ihdr.width = width;
  ihdr.height = height;
  ihdr.bit_depth = 8;
  ihdr.color_type = SPNG_COLOR_TYPE_TRUECOLOR;
  int error = spng_set_ihdr(ctx.get(), &ihdr);
  if (error == 0) {
    error = spng_encode_image(ctx.get(), rgb,
                              static_cast<size_t>(width) * height * 3,
                              SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
  }
  if (error != 0) {
    return absl::InternalError(
        absl::StrCat("png encode: ", spng_strerror(error)));
  }
  size_t length = 0;
  void* buffer = spng_get_png_buffer(ctx.get(), &length, &error);
  if (buffer == nullptr) {
    return absl::InternalError(
        absl::StrCat("png encode: ", spng_strerror(error)));
  }
  std::string png(static_cast<const char*>(buffer), length);
  std::free(buffer);
  return png;
}

absl::StatusOr<std::string> EncodePng(const RgbImage& image) {
  return EncodePng(image.pixels.data(), static_cast<uint32_t>(image.width),
                   static_cast<uint32_t>(image.height));
}

absl::StatusOr<RgbImage> DecodePng(absl::string_view bytes,
                                   absl::string_view field,
                                   const PngLimits& limits) {
  SpngContext ctx(spng_ctx_new(0));
  if (!ctx) return absl::ResourceExhaustedError("png: cannot allocate");
  spng_set_image_limits(ctx.get(), limits.max_width, limits.max_height);
  spng_set_chunk_limits(ctx.get(), limits.max_chunk_bytes,
                        limits.max_cache_bytes);
  int error = spng_set_png_buffer(ctx.get(), bytes.data(), bytes.size());
  spng_ihdr ihdr = {};
  if (error == 0) error = spng_get_ihdr(ctx.get(), &ihdr);
  if (error != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": not a PNG image within ", limits.max_width, "x",
        limits.max_height, " pixels (", spng_strerror(error), ")"));
  }
  if (limits.max_pixels != 0 &&
      uint64_t{ihdr.width} * ihdr.height > limits.max_pixels) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": width * height at most ", limits.max_pixels,
                     " pixels (got ", ihdr.width, "x", ihdr.height, ")"));
  }
  size_t size = 0;
  error = spng_decoded_image_size(ctx.get(), SPNG_FMT_RGB8, &size);
  RgbImage image;
  if (error == 0) {
    image.width = ihdr.width;
    image.height = ihdr.height;
    image.pixels.resize(size);
    error = spng_decode_image(ctx.get(), image.pixels.data(), size,
                              SPNG_FMT_RGB8, SPNG_DECODE_TRNS);
  }
  if (error != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": corrupt PNG (", spng_strerror(error), ")"));
  }
  return image;
}

}  // namespace ldmserve
