// Untrusted image bytes (init images, masks, low-res images): PNG through
// libspng, JPEG through TurboJPEG, WebP through libwebp, with the service's
// limits; and the metadata reader (EXIF/TIFF, PNG text, WebP chunks). An RGB
// image of the size the header gave, or INVALID_ARGUMENT.
#include <cstdint>

#include "server/service/image_codec.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ldmserve::ImageLimits limits;
  limits.max_width = limits.max_height = 512;
  limits.max_pixels = 256 * 256;
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ldmserve::RgbImage> image =
      ldmserve::DecodeImage(bytes, "inpaint.mask", limits);
  absl::StatusOr<std::string> parameters = ldmserve::ReadImageParameters(bytes);
  if (!parameters.ok()) {
    ldmserve::fuzz::RequireClearStatus(parameters.status(),
                                       {absl::StatusCode::kInvalidArgument});
  }
  if (!image.ok()) {
    ldmserve::fuzz::RequireClearStatus(image.status(),
                                       {absl::StatusCode::kInvalidArgument});
    return 0;
  }
  LDM_FUZZ_CHECK(image->width > 0 && image->height > 0);
  LDM_FUZZ_CHECK(static_cast<uint64_t>(image->width) * image->height <=
                 limits.max_pixels);
  LDM_FUZZ_CHECK(image->pixels.size() ==
                 static_cast<size_t>(image->width * image->height * 3));
  return 0;
}
