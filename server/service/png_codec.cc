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
                                      uint32_t height, const PngText& text) {
  SpngContext ctx(spng_ctx_new(SPNG_CTX_ENCODER));
  if (!ctx) return absl::ResourceExhaustedError("png: cannot allocate");
  spng_set_option(ctx.get(), SPNG_ENCODE_TO_BUFFER, 1);
  spng_ihdr ihdr = {};
  ihdr.width = width;
  ihdr.height = height;
  ihdr.bit_depth = 8;
  ihdr.color_type = SPNG_COLOR_TYPE_TRUECOLOR;
  int error = spng_set_ihdr(ctx.get(), &ihdr);
  // spng keeps pointers into these until the image is encoded.
  std::vector<spng_text> chunks(text.size());
  std::vector<std::string> texts;
  texts.reserve(text.size());
  char empty[1] = "";
  for (size_t i = 0; i < text.size() && error == 0; ++i) {
    const std::string& keyword = text[i].first;
    if (keyword.empty() || keyword.size() >= sizeof(chunks[i].keyword)) {
      return absl::InvalidArgumentError(
          absl::StrCat("png encode: bad text keyword \"", keyword, "\""));
    }
    keyword.copy(chunks[i].keyword, keyword.size());
    chunks[i].keyword[keyword.size()] = '\0';
    texts.push_back(text[i].second);
    chunks[i].type = SPNG_ITXT;
    chunks[i].length = texts.back().size();
    chunks[i].text = texts.back().data();
    chunks[i].language_tag = empty;
    chunks[i].translated_keyword = empty;
  }
  if (error == 0 && !chunks.empty()) {
    error = spng_set_text(ctx.get(), chunks.data(),
                          static_cast<uint32_t>(chunks.size()));
  }
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

absl::StatusOr<std::string> EncodePng(const RgbImage& image,
                                      const PngText& text) {
  return EncodePng(image.pixels.data(), static_cast<uint32_t>(image.width),
                   static_cast<uint32_t>(image.height), text);
}

absl::StatusOr<PngText> ReadPngText(absl::string_view bytes) {
  SpngContext ctx(spng_ctx_new(0));
  if (!ctx) return absl::ResourceExhaustedError("png: cannot allocate");
  // The pixels are decoded to reach text after them: within the decoder's
  // default limits, so that a header claiming a huge image costs nothing.
  const ImageLimits limits;
  spng_set_image_limits(ctx.get(), limits.max_width, limits.max_height);
  spng_set_chunk_limits(ctx.get(), limits.max_chunk_bytes,
                        limits.max_cache_bytes);
  int error = spng_set_png_buffer(ctx.get(), bytes.data(), bytes.size());
  spng_ihdr ihdr = {};
  if (error == 0) error = spng_get_ihdr(ctx.get(), &ihdr);
  // Text may follow the pixels: read to the end first.
  size_t size = 0;
  if (error == 0) {
    error = spng_decoded_image_size(ctx.get(), SPNG_FMT_RGB8, &size);
  }
  std::vector<uint8_t> pixels(size);
  if (error == 0) {
    error = spng_decode_image(ctx.get(), pixels.data(), size, SPNG_FMT_RGB8, 0);
  }
  uint32_t count = 0;
  if (error == 0) {
    error = spng_get_text(ctx.get(), nullptr, &count);
    if (error == SPNG_ECHUNKAVAIL) return PngText();
  }
  std::vector<spng_text> chunks(count);
  if (error == 0) error = spng_get_text(ctx.get(), chunks.data(), &count);
  if (error != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("png text: ", spng_strerror(error)));
  }
  PngText text;
  for (const spng_text& chunk : chunks) {
    text.emplace_back(chunk.keyword, std::string(chunk.text, chunk.length));
  }
  return text;
}

absl::StatusOr<RgbImage> DecodePng(absl::string_view bytes,
                                   absl::string_view field,
                                   const ImageLimits& limits) {
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
