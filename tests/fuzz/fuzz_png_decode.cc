// Untrusted PNG bytes (init images, masks) through libspng with the
// service's limits: an RGB image of the size the header gave, or
// INVALID_ARGUMENT.
#include <cstdint>

#include "server/service/png_codec.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ldmserve::PngLimits limits;
  limits.max_width = limits.max_height = 512;
  limits.max_pixels = 256 * 256;
  absl::StatusOr<ldmserve::RgbImage> image = ldmserve::DecodePng(
      absl::string_view(reinterpret_cast<const char*>(data), size),
      "inpaint.mask", limits);
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
