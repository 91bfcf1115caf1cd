// PNG encoding and decoding through libspng. Decoding is for untrusted client
// bytes: image size and chunk sizes are limited, and anything malformed gives
// INVALID_ARGUMENT naming the field.
#ifndef LDMSERVE_SERVER_SERVICE_PNG_CODEC_H_
#define LDMSERVE_SERVER_SERVICE_PNG_CODEC_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/ldm/generation.h"
#include "server/service/image_codec.h"

namespace ldmserve {

using ldm::RgbImage;

// Text chunks (iTXt: UTF-8) written before the pixels: keyword, text.
using PngText = std::vector<std::pair<std::string, std::string>>;

// Encodes 8-bit RGB pixels (`width * height * 3` bytes).
absl::StatusOr<std::string> EncodePng(const uint8_t* rgb, uint32_t width,
                                      uint32_t height,
                                      const PngText& text = {});
absl::StatusOr<std::string> EncodePng(const RgbImage& image,
                                      const PngText& text = {});

// The iTXt and tEXt chunks of a PNG (for tests and tools); INVALID_ARGUMENT
// when it does not parse or its header exceeds ImageLimits' defaults.
absl::StatusOr<PngText> ReadPngText(absl::string_view bytes);

// Decodes any PNG (grey, palette, alpha, 16-bit) to 8-bit RGB. `field` names
// the request field in error messages.
absl::StatusOr<RgbImage> DecodePng(absl::string_view bytes,
                                   absl::string_view field,
                                   const ImageLimits& limits = {});

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_PNG_CODEC_H_
