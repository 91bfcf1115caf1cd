// Fitting client images to a model's size multiple (GenerateRequest's
// resize_mode): scaled, cropped or padded, the same way for an image and its
// mask.
#ifndef LDMSERVE_SERVER_SERVICE_IMAGE_FIT_H_
#define LDMSERVE_SERVER_SERVICE_IMAGE_FIT_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/common/image_file.h"
#include "server/ldm/generation.h"

namespace ldmserve {

// What `mode` makes of a `width` x `height` image for sides that must be
// multiples of `multiple`; sides that already are stay as they are.
// INVALID_ARGUMENT naming `field` when the mode cannot (a side below the
// multiple cropped, or any misfit with ResizeMode::kExact).
absl::StatusOr<InputFit> PlanFit(int64_t width, int64_t height, ResizeMode mode,
                                 int64_t multiple, absl::string_view field);

// `image` brought to `fit`'s size as its mode says.
ldm::RgbImage ApplyFit(const ldm::RgbImage& image, const InputFit& fit);

// Resamples `image` to `width` x `height` with a triangle filter widened by
// the scale when shrinking (antialiased, as PIL's bilinear resize).
ldm::RgbImage ResizeBilinear(const ldm::RgbImage& image, int64_t width,
                             int64_t height);

}  // namespace ldmserve

#endif  // LDMSERVE_SERVER_SERVICE_IMAGE_FIT_H_
