// Conversions between 8-bit RGB pixels and the model's image tensors.
#ifndef LDMSERVE_SERVER_LDM_IMAGE_TENSOR_H_
#define LDMSERVE_SERVER_LDM_IMAGE_TENSOR_H_

#include <ATen/ATen.h>

#include <cstdint>

#include "absl/status/statusor.h"

namespace ldm {

// Row-major RGB bytes -> [1, 3, height, width] float32 in [-1, 1].
absl::StatusOr<at::Tensor> ImageTensorFromRgb(const uint8_t* rgb,
                                              int64_t height, int64_t width);

// `count` such images back to back -> [count, 3, height, width], each
// converted exactly as ImageTensorFromRgb does, in one pass.
absl::StatusOr<at::Tensor> ImagesTensorFromRgb(const uint8_t* rgb,
                                               int64_t count, int64_t height,
                                               int64_t width);

// Row-major RGB bytes of a mask -> [1, 1, height, width] float32, 1 where
// the first channel is >= 128 (white = repaint), else 0.
absl::StatusOr<at::Tensor> MaskTensorFromRgb(const uint8_t* rgb, int64_t height,
                                             int64_t width);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_IMAGE_TENSOR_H_
