#include "tests/quality/scene_probe.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>

namespace shapes {
namespace {

constexpr int kPixels = kImageSize * kImageSize;
// Regions smaller than this are noise, not objects.
constexpr int kMinObjectArea = 15;

float Distance(const std::array<float, 3>& a, const std::array<float, 3>& b) {
  float sum = 0;
  for (int c = 0; c < 3; ++c) sum += (a[c] - b[c]) * (a[c] - b[c]);
  return std::sqrt(sum);
}

std::array<float, 3> PaletteRgb(Color color) {
  const auto rgb = ColorRgb(color);
  return {static_cast<float>(rgb[0]), static_cast<float>(rgb[1]),
          static_cast<float>(rgb[2])};
}

Color NearestColor(const std::array<float, 3>& rgb) {
  Color best = Color::kRed;
  float best_distance = std::numeric_limits<float>::max();
  for (int c = 0; c < kNumColors; ++c) {
    const float d = Distance(rgb, PaletteRgb(static_cast<Color>(c)));
    if (d < best_distance) best_distance = d, best = static_cast<Color>(c);
  }
  return best;
}

std::array<float, 3> PixelAt(const std::vector<uint8_t>& rgb, int index) {
  const size_t base = static_cast<size_t>(index) * 3;
  return {static_cast<float>(rgb[base]), static_cast<float>(rgb[base + 1]),
          static_cast<float>(rgb[base + 2])};
}

// Per-channel median of the pixels in `indices`.
std::array<float, 3> MedianRgb(const std::vector<uint8_t>& rgb,
                               const std::vector<int>& indices) {
  std::array<float, 3> median{};
  std::vector<uint8_t> channel(indices.size());
  for (int c = 0; c < 3; ++c) {
    for (size_t i = 0; i < indices.size(); ++i) {
      channel[i] = rgb[indices[i] * 3 + c];
    }
    auto middle =
        channel.begin() + static_cast<std::ptrdiff_t>(channel.size() / 2);
    std::nth_element(channel.begin(), middle, channel.end());
    median[c] = *middle;
  }
  return median;
}

Position NearestPosition(float x, float y) {
  Position best = Position::kCenter;
  float best_distance = std::numeric_limits<float>::max();
  for (int p = 0; p < kNumPositions; ++p) {
    const auto [ax, ay] = PositionAnchor(static_cast<Position>(p));
    const float d = (x - ax) * (x - ax) + (y - ay) * (y - ay);
    if (d < best_distance) best_distance = d, best = static_cast<Position>(p);
  }
  return best;
}

// IoU of `component` (pixel indices) with `shape` of the same area centred on
// the component's centroid.
float TemplateIou(const std::vector<int>& component,
                  const std::vector<uint8_t>& in_component, Shape shape,
                  float cx, float cy) {
  const float size = SizeForArea(shape, static_cast<float>(component.size()));
  int intersection = 0, template_area = 0;
  for (int y = 0; y < kImageSize; ++y) {
    for (int x = 0; x < kImageSize; ++x) {
      if (ShapeCoverage(shape, cx, cy, size, x + 0.5f, y + 0.5f) < 0.5f) {
        continue;
      }
      ++template_area;
      intersection += in_component[y * kImageSize + x];
    }
  }
  const int union_area =
      template_area + static_cast<int>(component.size()) - intersection;
  return union_area > 0 ? static_cast<float>(intersection) / union_area : 0;
}

}  // namespace

ProbeResult ProbeScene(const std::vector<uint8_t>& rgb,
                       const std::vector<uint8_t>* region) {
  ProbeResult result;
  std::vector<int> all(kPixels);
  for (int i = 0; i < kPixels; ++i) all[i] = i;
  const std::array<float, 3> background_rgb = MedianRgb(rgb, all);
  result.background = NearestColor(background_rgb);

  // Half the distance to the palette colour closest to the background: a
  // pixel past it is more likely an object than background texture.
  float nearest_other = std::numeric_limits<float>::max();
  for (int c = 0; c < kNumColors; ++c) {
    if (static_cast<Color>(c) == result.background) continue;
    nearest_other =
        std::min(nearest_other, Distance(PaletteRgb(result.background),
                                         PaletteRgb(static_cast<Color>(c))));
  }
  const float threshold = 0.45f * nearest_other;

  std::vector<uint8_t> foreground(kPixels, 0);
  for (int i = 0; i < kPixels; ++i) {
    if (region != nullptr && (*region)[i] == 0) continue;
    foreground[i] = Distance(PixelAt(rgb, i), background_rgb) > threshold;
  }

  std::vector<uint8_t> visited(kPixels, 0);
  for (int start = 0; start < kPixels; ++start) {
    if (!foreground[start] || visited[start]) continue;
    // Flood fill (4-connected).
    std::vector<int> component = {start};
    visited[start] = 1;
    for (size_t next = 0; next < component.size(); ++next) {
      const int x = component[next] % kImageSize;
      const int y = component[next] / kImageSize;
      const int neighbours[4][2] = {
          {x - 1, y}, {x + 1, y}, {x, y - 1}, {x, y + 1}};
      for (const auto& [nx, ny] : neighbours) {
        if (nx < 0 || ny < 0 || nx >= kImageSize || ny >= kImageSize) continue;
        const int n = ny * kImageSize + nx;
        if (foreground[n] && !visited[n]) {
          visited[n] = 1;
          component.push_back(n);
        }
      }
    }
    if (static_cast<int>(component.size()) < kMinObjectArea) continue;

    ProbedObject object;
    object.area = static_cast<int>(component.size());
    double sum_x = 0, sum_y = 0;
    std::vector<uint8_t> in_component(kPixels, 0);
    for (int i : component) {
      sum_x += i % kImageSize + 0.5;
      sum_y += static_cast<double>(i / kImageSize) + 0.5;  // The row.
      in_component[i] = 1;
    }
    object.center_x = static_cast<float>(sum_x / object.area);
    object.center_y = static_cast<float>(sum_y / object.area);
    object.color = NearestColor(MedianRgb(rgb, component));
    object.position = NearestPosition(object.center_x, object.center_y);
    for (int s = 0; s < kNumShapes; ++s) {
      const float iou =
          TemplateIou(component, in_component, static_cast<Shape>(s),
                      object.center_x, object.center_y);
      if (iou > object.shape_iou) {
        object.shape_iou = iou;
        object.shape = static_cast<Shape>(s);
      }
    }
    result.objects.push_back(object);
  }
  std::sort(result.objects.begin(), result.objects.end(),
            [](const ProbedObject& a, const ProbedObject& b) {
              return a.area > b.area;
            });
  return result;
}

}  // namespace shapes
