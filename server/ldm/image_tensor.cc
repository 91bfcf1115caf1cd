#include "server/ldm/image_tensor.h"

#include <algorithm>

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

absl::StatusOr<at::Tensor> ImagesTensorFromRgb(const uint8_t* rgb,
                                               int64_t count, int64_t height,
                                               int64_t width) {
  return CallTorch("image", [&] {
    return (RgbAsTensor(rgb, count, height, width) / 127.5 - 1.0).contiguous();
  });
}

absl::StatusOr<at::Tensor> ImageTensor(const RgbImage& image) {
  return ImagesTensorFromRgb(image.pixels.data(), 1, image.height, image.width);
}

absl::StatusOr<at::Tensor> MaskTensor(const Mask& mask) {
  return CallTorch("mask", [&] {
    return at::from_blob(const_cast<uint8_t*>(mask.repaint.data()),
                         {1, 1, mask.height, mask.width}, at::kByte)
        .to(at::kFloat);
  });
}

absl::StatusOr<std::vector<RgbImage>> RgbImagesFromTensor(
    const at::Tensor& images) {
  return CallTorch("images", [&] {
    const at::Tensor bytes = images.to(at::kCPU, at::kByte).contiguous();
    std::vector<RgbImage> out(static_cast<size_t>(bytes.size(0)));
    const int64_t height = bytes.size(1);
    const int64_t width = bytes.size(2);
    const uint8_t* data = bytes.data_ptr<uint8_t>();
    const int64_t image_bytes = height * width * 3;
    for (size_t i = 0; i < out.size(); ++i) {
      out[i].width = width;
      out[i].height = height;
      const uint8_t* begin = data + static_cast<int64_t>(i) * image_bytes;
      out[i].pixels.assign(begin, begin + image_bytes);
    }
    return out;
  });
}

at::Tensor Uint8ImagesTensor(const std::vector<RgbImage>& images) {
  if (images.empty()) return at::empty({0, 0, 0, 3}, at::kByte);
  const int64_t height = images.front().height;
  const int64_t width = images.front().width;
  at::Tensor out = at::empty(
      {static_cast<int64_t>(images.size()), height, width, 3}, at::kByte);
  for (size_t i = 0; i < images.size(); ++i) {
    TORCH_CHECK(images[i].height == height && images[i].width == width,
                "images of different sizes");
    std::copy(images[i].pixels.begin(), images[i].pixels.end(),
              out[static_cast<int64_t>(i)].data_ptr<uint8_t>());
  }
  return out;
}

at::Tensor RoundToUint8Images(const at::Tensor& images) {
  return at::round((images.detach().to(at::kCPU, at::kFloat) + 1.0) * 127.5)
      .clamp(0, 255)
      .to(at::kByte)
      .permute({0, 2, 3, 1})
      .contiguous();
}

RgbImage RgbImageFromTensor(const at::Tensor& image) {
  const at::Tensor bytes = RoundToUint8Images(image)[0];
  RgbImage out{bytes.size(1), bytes.size(0), {}};
  out.pixels.assign(bytes.data_ptr<uint8_t>(),
                    bytes.data_ptr<uint8_t>() + bytes.numel());
  return out;
}

Mask MaskFromTensor(const at::Tensor& mask) {
  const at::Tensor repaint =
      (mask[0][0].to(at::kCPU) >= 0.5).to(at::kByte).contiguous();
  Mask out{repaint.size(1), repaint.size(0), {}};
  out.repaint.assign(repaint.data_ptr<uint8_t>(),
                     repaint.data_ptr<uint8_t>() + repaint.numel());
  return out;
}

}  // namespace ldm
