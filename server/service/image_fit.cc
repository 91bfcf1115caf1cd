#include "server/service/image_fit.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"

namespace ldmserve {
namespace {

// The taps of one output sample: the first input index and the weights.
struct Taps {
  int64_t first = 0;
  std::vector<float> weights;
};

std::vector<Taps> TriangleTaps(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double support = std::max(1.0, scale);
  std::vector<Taps> taps(out_size);
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    const auto first =
        std::max<int64_t>(0, static_cast<int64_t>(center - support));
    const auto last = std::min<int64_t>(
        in_size, static_cast<int64_t>(std::ceil(center + support)));
    double total = 0.0;
    std::vector<double> weights;
    for (int64_t j = first; j < last; ++j) {
      const double w =
          std::max(0.0, 1.0 - std::abs((j + 0.5 - center) / support));
      weights.push_back(w);
      total += w;
    }
    taps[i].first = first;
    for (double w : weights) {
      taps[i].weights.push_back(static_cast<float>(total > 0 ? w / total : 0));
    }
  }
  return taps;
}

int64_t RoundToMultiple(int64_t side, int64_t multiple) {
  return std::max<int64_t>(multiple,
                           (side + multiple / 2) / multiple * multiple);
}

}  // namespace

absl::StatusOr<InputFit> PlanFit(int64_t width, int64_t height, ResizeMode mode,
                                 int64_t multiple, absl::string_view field) {
  InputFit fit{mode, width, height, width, height};
  if (width % multiple == 0 && height % multiple == 0) return fit;
  switch (mode) {
    case ResizeMode::kExact:
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": sides must be multiples of ", multiple, " (got ", width,
          "x", height, "); or set resize_mode to scale, crop or pad it"));
    case ResizeMode::kScale:
      fit.width = RoundToMultiple(width, multiple);
      fit.height = RoundToMultiple(height, multiple);
      break;
    case ResizeMode::kCrop:
      if (width < multiple || height < multiple) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": sides of at least ", multiple,
                         " to crop (got ", width, "x", height, ")"));
      }
      fit.width = width / multiple * multiple;
      fit.height = height / multiple * multiple;
      break;
    case ResizeMode::kPad:
      fit.width = (width + multiple - 1) / multiple * multiple;
      fit.height = (height + multiple - 1) / multiple * multiple;
      break;
  }
  return fit;
}

ldm::RgbImage ApplyFit(const ldm::RgbImage& image, const InputFit& fit) {
  if (fit.width == image.width && fit.height == image.height) return image;
  if (fit.mode == ResizeMode::kScale) {
    return ResizeBilinear(image, fit.width, fit.height);
  }
  ldm::RgbImage out;
  out.width = fit.width;
  out.height = fit.height;
  out.pixels.resize(static_cast<size_t>(fit.width) * fit.height * 3);
  // Crop: the centre. Pad: the original at the top left, its last row and
  // column repeated.
  const int64_t left =
      fit.mode == ResizeMode::kCrop ? (image.width - fit.width) / 2 : 0;
  const int64_t top =
      fit.mode == ResizeMode::kCrop ? (image.height - fit.height) / 2 : 0;
  for (int64_t y = 0; y < fit.height; ++y) {
    const int64_t from_y = std::min(y + top, image.height - 1);
    for (int64_t x = 0; x < fit.width; ++x) {
      const int64_t from_x = std::min(x + left, image.width - 1);
      const size_t to = (static_cast<size_t>(y) * fit.width + x) * 3;
      const size_t from =
          (static_cast<size_t>(from_y) * image.width + from_x) * 3;
      std::copy_n(image.pixels.begin() + static_cast<std::ptrdiff_t>(from), 3,
                  out.pixels.begin() + static_cast<std::ptrdiff_t>(to));
    }
  }
  return out;
}

ldm::RgbImage ResizeBilinear(const ldm::RgbImage& image, int64_t width,
                             int64_t height) {
  const std::vector<Taps> across = TriangleTaps(image.width, width);
  const std::vector<Taps> down = TriangleTaps(image.height, height);
  // Rows first, into floats, then columns.
  std::vector<float> rows(static_cast<size_t>(image.height) * width * 3);
  for (int64_t y = 0; y < image.height; ++y) {
    for (int64_t x = 0; x < width; ++x) {
      for (int c = 0; c < 3; ++c) {
        float sum = 0.0f;
        for (size_t k = 0; k < across[x].weights.size(); ++k) {
          const int64_t from = across[x].first + static_cast<int64_t>(k);
          sum +=
              across[x].weights[k] *
              image.pixels[(static_cast<size_t>(y) * image.width + from) * 3 +
                           c];
        }
        rows[(static_cast<size_t>(y) * width + x) * 3 + c] = sum;
      }
    }
  }
  ldm::RgbImage out;
  out.width = width;
  out.height = height;
  out.pixels.resize(static_cast<size_t>(width) * height * 3);
  for (int64_t y = 0; y < height; ++y) {
    for (int64_t x = 0; x < width; ++x) {
      for (int c = 0; c < 3; ++c) {
        float sum = 0.0f;
        for (size_t k = 0; k < down[y].weights.size(); ++k) {
          const int64_t from = down[y].first + static_cast<int64_t>(k);
          sum += down[y].weights[k] *
                 rows[(static_cast<size_t>(from) * width + x) * 3 + c];
        }
        out.pixels[(static_cast<size_t>(y) * width + x) * 3 + c] =
            static_cast<uint8_t>(std::clamp(std::lround(sum), 0L, 255L));
      }
    }
  }
  return out;
}

}  // namespace ldmserve
