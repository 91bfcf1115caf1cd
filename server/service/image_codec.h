// Image files in and out: PNG (libspng), JPEG (libjpeg-turbo's TurboJPEG API)
// and WebP (libwebp). Decoding is for untrusted client bytes: the format is
// read from the bytes themselves, the size is checked from the header before
// any pixel memory is allocated, and anything malformed gives
// INVALID_ARGUMENT naming the request field. Encoding writes the generation
// parameters where other front ends read them: a PNG iTXt chunk
// "parameters", and for JPEG and WebP an EXIF UserComment (as AUTOMATIC1111
// writes it) plus the XMP dc:description.
#ifndef LDMSERVE_SERVER_SERVICE_IMAGE_CODEC_H_
#define LDMSERVE_SERVER_SERVICE_IMAGE_CODEC_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/common/image_file.h"
#include "server/ldm/generation.h"

namespace ldmserve {

using ldm::RgbImage;

struct ImageLimits {
  uint32_t max_width = 4096;
  uint32_t max_height = 4096;
  // width * height; 0 = only the side limits.
  uint64_t max_pixels = 0;
  // PNG only: the largest chunk, and all ancillary chunks together.
  size_t max_chunk_bytes = 8 << 20;
  size_t max_cache_bytes = 32 << 20;
};

// The format of an encoded image, from its first bytes; nullopt when it is
// none of PNG, JPEG and WebP.
std::optional<ImageFileFormat> SniffImageFormat(absl::string_view bytes);

// Decodes a PNG, JPEG (baseline or progressive; grey, YCbCr or RGB) or a
// still WebP to 8-bit RGB. `field` names the request field in errors.
absl::StatusOr<RgbImage> DecodeImage(absl::string_view bytes,
                                     absl::string_view field,
                                     const ImageLimits& limits = {});

// Encodes `image`, with `parameters` (UTF-8; empty = none) in its metadata.
absl::StatusOr<std::string> EncodeImage(const RgbImage& image,
                                        const ImageEncoding& encoding,
                                        absl::string_view parameters = {});

// The generation parameters an image file carries (PNG "parameters" text,
// else the EXIF UserComment); empty when it has none; INVALID_ARGUMENT when
// the file does not parse.
absl::StatusOr<std::string> ReadImageParameters(absl::string_view bytes);

// The file name extension of `format`, without the dot.
const char* ImageFileExtension(ImageFileFormat format);

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_IMAGE_CODEC_H_
