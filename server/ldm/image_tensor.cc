#include "server/ldm/image_tensor.h"

#include "server/ldm/torch_boundary.h"

namespace ldm {
namespace {

// [count, 3, height, width] float32 with the bytes' values.
at::Tensor RgbAsTensor(const uint8_t* rgb, int64_t count, int64_t height,
                       int64_t width) {
  // from_blob does not copy; the conversion to float does, before `rgb`
  // goes away.
  return at::from_blob(const_cast<uint8_t*>(rgb), {count, height, width, 3},
                       at::kByte)
      .permute({0, 3, 1, 2})
      .to(at::kFloat);
}

}  // namespace

absl::StatusOr<at::Tensor> ImageTensorFromRgb(const uint8_t* rgb,
                                              int64_t height, int64_t width) {
  return ImagesTensorFromRgb(rgb, 1, height, width);
}

absl::StatusOr<at::Tensor> ImagesTensorFromRgb(const uint8_t* rgb,
                                               int64_t count, int64_t height,
                                               int64_t width) {
  return CallTorch("image", [&] {
    return (RgbAsTensor(rgb, count, height, width) / 127.5 - 1.0).contiguous();
  });
}

absl::StatusOr<at::Tensor> MaskTensorFromRgb(const uint8_t* rgb, int64_t height,
                                             int64_t width) {
  return CallTorch("mask", [&] {
    return (RgbAsTensor(rgb, 1, height, width).slice(1, 0, 1) >= 128.0)
        .to(at::kFloat)
        .contiguous();
  });
}

}  // namespace ldm
