#include "tools/train/shapes_batch.h"

#include <algorithm>
#include <cmath>

#include "server/ldm/image_tensor.h"

namespace ldmtrain {
namespace {

constexpr int64_t kSize = shapes::kImageSize;

void FillBox(std::vector<uint8_t>& mask, float x0, float y0, float x1,
             float y1) {
  const int left = std::max(0, static_cast<int>(std::floor(x0)));
  const int top = std::max(0, static_cast<int>(std::floor(y0)));
  const int right = std::min<int>(kSize, static_cast<int>(std::ceil(x1)));
  const int bottom = std::min<int>(kSize, static_cast<int>(std::ceil(y1)));
  for (int y = top; y < bottom; ++y) {
    for (int x = left; x < right; ++x) mask[y * kSize + x] = 1;
  }
}

void FillDisc(std::vector<uint8_t>& mask, float cx, float cy, float radius) {
  const int top = std::max(0, static_cast<int>(cy - radius - 1));
  const int bottom = std::min<int>(kSize, static_cast<int>(cy + radius + 2));
  const int left = std::max(0, static_cast<int>(cx - radius - 1));
  const int right = std::min<int>(kSize, static_cast<int>(cx + radius + 2));
  for (int y = top; y < bottom; ++y) {
    for (int x = left; x < right; ++x) {
      const float dx = x + 0.5f - cx;
      const float dy = y + 0.5f - cy;
      if (dx * dx + dy * dy <= radius * radius) mask[y * kSize + x] = 1;
    }
  }
}

}  // namespace

at::Tensor ImagesToTensor(const std::vector<std::vector<uint8_t>>& images) {
  // The server's own conversion, so training sees what serving feeds in; one
  // pass over the batch, since this runs on the thread that feeds the GPU.
  const size_t image_bytes = size_t{kSize} * kSize * 3;
  std::vector<uint8_t> batch(images.size() * image_bytes);
  for (size_t i = 0; i < images.size(); ++i) {
    std::copy(images[i].begin(), images[i].end(),
              batch.begin() + static_cast<std::ptrdiff_t>(i * image_bytes));
  }
  return ldm::ImagesTensorFromRgb(
             batch.data(), static_cast<int64_t>(images.size()), kSize, kSize)
      .value();
}

at::Tensor MasksToTensor(const std::vector<std::vector<uint8_t>>& masks) {
  const auto count = static_cast<int64_t>(masks.size());
  at::Tensor bytes = at::empty({count, 1, kSize, kSize}, at::kByte);
  for (int64_t i = 0; i < count; ++i) {
    std::copy(masks[i].begin(), masks[i].end(), bytes[i].data_ptr<uint8_t>());
  }
  return bytes.to(at::kFloat);
}

std::vector<uint8_t> OutlineBandMask(const shapes::Scene& scene) {
  constexpr float kBand = 0.25f;
  std::vector<uint8_t> mask(static_cast<size_t>(kSize) * kSize, 0);
  for (const shapes::SceneObject& object : scene.objects) {
    // Only pixels the grown object can reach (one more for the edge).
    const float reach = shapes::kExtent * object.size * (1 + kBand) + 1;
    const auto first = [&](float centre) {
      return std::max(0, static_cast<int>(centre - reach));
    };
    const auto last = [&](float centre) {
      return std::min(static_cast<int>(kSize) - 1,
                      static_cast<int>(centre + reach));
    };
    for (int y = first(object.center_y); y <= last(object.center_y); ++y) {
      for (int x = first(object.center_x); x <= last(object.center_x); ++x) {
        const float px = static_cast<float>(x) + 0.5f;
        const float py = static_cast<float>(y) + 0.5f;
        const bool in_grown =
            shapes::ShapeCoverage(object.shape, object.center_x,
                                  object.center_y, object.size * (1 + kBand),
                                  px, py) >= 0.5f;
        const bool in_shrunk =
            shapes::ShapeCoverage(object.shape, object.center_x,
                                  object.center_y, object.size * (1 - kBand),
                                  px, py) >= 0.5f;
        if (in_grown && !in_shrunk) mask[y * kSize + x] = 1;
      }
    }
  }
  return mask;
}

std::vector<uint8_t> ObjectBoxMask(const shapes::SceneObject& object,
                                   float margin) {
  std::vector<uint8_t> mask(kSize * kSize, 0);
  const float reach = shapes::kExtent * object.size + margin;
  FillBox(mask, object.center_x - reach, object.center_y - reach,
          object.center_x + reach, object.center_y + reach);
  return mask;
}

std::vector<uint8_t> RandomInpaintMask(const shapes::Scene& scene,
                                       shapes::ShapesRng& rng) {
  const double kind = rng.Uniform();
  if (kind < 0.5 && !scene.objects.empty()) {
    const auto& object =
        scene.objects[rng.Below(static_cast<int>(scene.objects.size()))];
    shapes::SceneObject shifted = object;
    shifted.center_x += static_cast<float>(rng.Uniform(-2, 2));
    shifted.center_y += static_cast<float>(rng.Uniform(-2, 2));
    return ObjectBoxMask(shifted, static_cast<float>(rng.Uniform(2, 6)));
  }
  std::vector<uint8_t> mask(kSize * kSize, 0);
  if (kind < 0.75) {
    const auto width = static_cast<float>(rng.Uniform(12, 40));
    const auto height = static_cast<float>(rng.Uniform(12, 40));
    const auto x = static_cast<float>(rng.Uniform(0, kSize - width));
    const auto y = static_cast<float>(rng.Uniform(0, kSize - height));
    FillBox(mask, x, y, x + width, y + height);
    return mask;
  }
  // Free-form: a few random-walk brush strokes.
  const int strokes = 1 + rng.Below(3);
  for (int s = 0; s < strokes; ++s) {
    auto x = static_cast<float>(rng.Uniform(8, kSize - 8));
    auto y = static_cast<float>(rng.Uniform(8, kSize - 8));
    const auto radius = static_cast<float>(rng.Uniform(3, 6));
    const int segments = 4 + rng.Below(5);
    for (int k = 0; k < segments; ++k) {
      const double angle = rng.Uniform(0, 2 * M_PI);
      const double length = rng.Uniform(4, 10);
      for (int dot = 0; dot < 4; ++dot) {
        x = std::clamp(x + static_cast<float>(length / 4 * std::cos(angle)),
                       0.0f, static_cast<float>(kSize));
        y = std::clamp(y + static_cast<float>(length / 4 * std::sin(angle)),
                       0.0f, static_cast<float>(kSize));
        FillDisc(mask, x, y, radius);
      }
    }
  }
  return mask;
}

InpaintCase MakeInpaintCase(int index) {
  shapes::ShapesRng rng(shapes::kHeldOutSeedBase ^
                        (0xC0FFEEull + static_cast<uint64_t>(index)));
  shapes::SingleObjectSpec spec;
  spec.position = static_cast<shapes::Position>(index % shapes::kNumPositions);
  spec.large = rng.Chance(0.5);
  const shapes::Scene scene = shapes::SampleSingleObjectScene(spec, rng);
  const shapes::SceneObject& object = scene.objects[0];
  InpaintCase result;
  result.image = shapes::RenderScene(scene);
  result.mask = ObjectBoxMask(object, 3);
  do {
    result.color = static_cast<shapes::Color>(rng.Below(shapes::kNumColors));
  } while (result.color == object.color || result.color == scene.background);
  do {
    result.shape = static_cast<shapes::Shape>(rng.Below(shapes::kNumShapes));
  } while (result.shape == object.shape);
  result.prompt = std::string("a ") + (*spec.large ? "large " : "small ") +
                  shapes::ColorName(result.color) + " " +
                  shapes::ShapeName(result.shape) + " " +
                  shapes::PositionPhrase(*spec.position) + " on a " +
                  shapes::ColorName(scene.background) + " background";
  return result;
}

at::Tensor DownsampleBicubic(const at::Tensor& images) {
  return at::_upsample_bicubic2d_aa(images, {kLowResSize, kLowResSize},
                                    /*align_corners=*/false)
      .clamp(-1, 1);
}

at::Tensor UpsampleBicubic(const at::Tensor& low_res) {
  return at::upsample_bicubic2d(low_res, {kSize, kSize},
                                /*align_corners=*/false)
      .clamp(-1, 1);
}

double Psnr(const at::Tensor& a, const at::Tensor& b) {
  const double mse =
      (a.to(at::kDouble) - b.to(at::kDouble)).pow(2).mean().item<double>();
  return 10.0 * std::log10(255.0 * 255.0 / std::max(mse, 1e-10));
}

}  // namespace ldmtrain
