// Conversions between 8-bit RGB pixels and the model's image tensors.
#ifndef LDMSERVE_SERVER_LDM_IMAGE_TENSOR_H_
#define LDMSERVE_SERVER_LDM_IMAGE_TENSOR_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "server/ldm/generation.h"

namespace ldm {

// `count` RGB images of `height` x `width` back to back (row-major bytes)
// -> [count, 3, height, width] float32 in [-1, 1], in one pass.
absl::StatusOr<at::Tensor> ImagesTensorFromRgb(const uint8_t* rgb,
                                               int64_t count, int64_t height,
                                               int64_t width);

// An RGB image -> [1, 3, height, width] float32 in [-1, 1].
absl::StatusOr<at::Tensor> ImageTensor(const RgbImage& image);

// A mask -> [1, 1, height, width] float32: 1 = repaint, 0 = keep.
absl::StatusOr<at::Tensor> MaskTensor(const Mask& mask);

// For tests and tools (these throw as at:: calls do):
// images of one size -> uint8 [N, H, W, 3] on the CPU, a copy;
at::Tensor Uint8ImagesTensor(const std::vector<RgbImage>& images);
// [B, 3, H, W] in about [-1, 1] -> the nearest bytes, uint8 [B, H, W, 3] on
// the CPU (rounded, clamped; not the reference's truncation);
at::Tensor RoundToUint8Images(const at::Tensor& images);
// [1, 3, H, W] in [-1, 1] -> the nearest 8-bit image;
RgbImage RgbImageFromTensor(const at::Tensor& image);
// [1, 1, H, W], >= 0.5 = repaint -> a Mask.
Mask MaskFromTensor(const at::Tensor& mask);

// uint8 [N, H, W, 3] (any device) -> N images.
absl::StatusOr<std::vector<RgbImage>> RgbImagesFromTensor(
    const at::Tensor& images);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_IMAGE_TENSOR_H_
