#include "tools/shapes/shapes_world.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace shapes {
namespace {

constexpr float kSqrt2 = 1.41421356f;
constexpr float kSqrt3 = 1.73205081f;
constexpr float kPi = 3.14159265f;

// Each shape's characteristic length per unit of `size`, chosen so that all
// four cover about the same area at the same size.
constexpr float kSquareHalfSide = 0.9f;    // area 3.24 s^2
constexpr float kDiamondRadius = 1.25f;    // area 3.13 s^2 (L1 radius)
constexpr float kTriangleHalfSide = 1.3f;  // area 2.93 s^2

constexpr float kSmallSize[2] = {6.5f, 8.0f};
constexpr float kLargeSize[2] = {11.5f, 13.5f};
constexpr float kPairSize[2] = {6.0f, 8.5f};
constexpr float kAnchorJitter = 3.0f;

float Clamp01(float v) { return std::min(1.0f, std::max(0.0f, v)); }

float CircleDistance(float x, float y, float radius) {
  return std::sqrt(x * x + y * y) - radius;
}

float BoxDistance(float x, float y, float half) {
  const float qx = std::fabs(x) - half;
  const float qy = std::fabs(y) - half;
  const float ox = std::max(qx, 0.0f);
  const float oy = std::max(qy, 0.0f);
  return std::sqrt(ox * ox + oy * oy) + std::min(std::max(qx, qy), 0.0f);
}

float DiamondDistance(float x, float y, float radius) {
  return (std::fabs(x) + std::fabs(y) - radius) / kSqrt2;
}

// An upward equilateral triangle centred on its centroid; `y` points up.
// (Inigo Quilez's exact distance.)
float TriangleDistance(float x, float y, float half_side) {
  x = std::fabs(x) - half_side;
  y = y + half_side / kSqrt3;
  if (x + kSqrt3 * y > 0) {
    const float nx = (x - kSqrt3 * y) / 2;
    const float ny = (-kSqrt3 * x - y) / 2;
    x = nx;
    y = ny;
  }
  x -= std::clamp(x, -2 * half_side, 0.0f);
  const float length = std::sqrt(x * x + y * y);
  return y > 0 ? -length : length;
}

Color RandomColor(ShapesRng& rng) {
  return static_cast<Color>(rng.Below(kNumColors));
}
Shape RandomShape(ShapesRng& rng) {
  return static_cast<Shape>(rng.Below(kNumShapes));
}

// A colour none of `taken` uses.
Color RandomColorExcept(ShapesRng& rng, const std::vector<Color>& taken) {
  while (true) {
    const Color color = RandomColor(rng);
    if (std::find(taken.begin(), taken.end(), color) == taken.end()) {
      return color;
    }
  }
}

void RandomTexture(ShapesRng& rng, Scene& scene) {
  if (rng.Chance(0.5)) return;
  scene.texture_amplitude = static_cast<float>(rng.Uniform(4, 10));
  const double angle = rng.Uniform(0, 2 * kPi);
  const double frequency = rng.Uniform(0.15, 0.5);
  scene.texture_frequency_x = static_cast<float>(frequency * std::cos(angle));
  scene.texture_frequency_y = static_cast<float>(frequency * std::sin(angle));
  scene.texture_phase = static_cast<float>(rng.Uniform(0, 2 * kPi));
}

// The range of centres that keeps an object of `size` inside the image.
std::pair<float, float> CentreRange(float size) {
  const float margin = kExtent * size + 2;
  return {margin, kImageSize - margin};
}

std::string BackgroundPhrase(Color color) {
  return std::string(" on a ") + ColorName(color) + " background";
}

}  // namespace

const char* ColorName(Color color) {
  static constexpr const char* kNames[] = {
      "red", "green", "blue", "yellow", "purple", "orange", "white", "black"};
  return kNames[static_cast<int>(color)];
}

const char* ShapeName(Shape shape) {
  static constexpr const char* kNames[] = {"circle", "square", "triangle",
                                           "diamond"};
  return kNames[static_cast<int>(shape)];
}

const char* PositionPhrase(Position position) {
  static constexpr const char* kPhrases[] = {"at the left", "at the right",
                                             "at the top", "at the bottom",
                                             "in the center"};
  return kPhrases[static_cast<int>(position)];
}

const char* RelationPhrase(Relation relation) {
  static constexpr const char* kPhrases[] = {"above", "below", "left of",
                                             "right of"};
  return kPhrases[static_cast<int>(relation)];
}

std::array<uint8_t, 3> ColorRgb(Color color) {
  static constexpr std::array<uint8_t, 3> kRgb[] = {
      {220, 40, 40},  {40, 170, 60},  {40, 70, 220},   {240, 220, 40},
      {140, 50, 170}, {245, 140, 30}, {245, 245, 245}, {20, 20, 20}};
  return kRgb[static_cast<int>(color)];
}

std::array<float, 2> PositionAnchor(Position position) {
  static constexpr std::array<float, 2> kAnchors[] = {
      {18, 32}, {46, 32}, {32, 18}, {32, 46}, {32, 32}};
  return kAnchors[static_cast<int>(position)];
}

std::vector<std::string> Vocabulary() {
  std::vector<std::string> words = {"a", "small", "large"};
  for (int c = 0; c < kNumColors; ++c) {
    words.push_back(ColorName(static_cast<Color>(c)));
  }
  for (int s = 0; s < kNumShapes; ++s) {
    words.push_back(ShapeName(static_cast<Shape>(s)));
  }
  for (const char* word :
       {"at", "the", "left", "right", "top", "bottom", "in", "center", "on",
        "background", "above", "below", "of"}) {
    words.push_back(word);
  }
  return words;
}

uint64_t ShapesRng::Next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double ShapesRng::Uniform() {
  return static_cast<double>(Next() >> 11) * 0x1.0p-53;
}

double ShapesRng::Uniform(double lo, double hi) {
  return lo + (hi - lo) * Uniform();
}

int ShapesRng::Below(int n) { return static_cast<int>(Uniform() * n); }

Scene SampleSingleObjectScene(const SingleObjectSpec& spec, ShapesRng& rng) {
  Scene scene;
  SceneObject object;
  object.color = spec.color.value_or(RandomColor(rng));
  object.shape = spec.shape.value_or(RandomShape(rng));
  const bool large = spec.large.value_or(rng.Chance(0.5));
  const float* size_range = large ? kLargeSize : kSmallSize;
  object.size = static_cast<float>(rng.Uniform(size_range[0], size_range[1]));
  if (spec.position.has_value()) {
    const auto [x, y] = PositionAnchor(*spec.position);
    object.center_x =
        x + static_cast<float>(rng.Uniform(-kAnchorJitter, kAnchorJitter));
    object.center_y =
        y + static_cast<float>(rng.Uniform(-kAnchorJitter, kAnchorJitter));
  } else {
    const auto [lo, hi] = CentreRange(object.size);
    object.center_x = static_cast<float>(rng.Uniform(lo, hi));
    object.center_y = static_cast<float>(rng.Uniform(lo, hi));
  }
  scene.background =
      spec.background.has_value() && *spec.background != object.color
          ? *spec.background
          : RandomColorExcept(rng, {object.color});
  RandomTexture(rng, scene);
  scene.objects.push_back(object);

  std::string caption = "a ";
  if (spec.large.has_value()) caption += *spec.large ? "large " : "small ";
  caption +=
      std::string(ColorName(object.color)) + " " + ShapeName(object.shape);
  if (spec.position.has_value()) {
    caption += std::string(" ") + PositionPhrase(*spec.position);
  }
  if (spec.background.has_value()) {
    caption += BackgroundPhrase(scene.background);
  }
  scene.caption = std::move(caption);
  return scene;
}

Scene SampleTwoObjectScene(ShapesRng& rng, bool name_background) {
  Scene scene;
  SceneObject first, second;
  first.color = RandomColor(rng);
  first.shape = RandomShape(rng);
  do {
    second.color = RandomColor(rng);
    second.shape = RandomShape(rng);
  } while (second.color == first.color && second.shape == first.shape);
  first.size = static_cast<float>(rng.Uniform(kPairSize[0], kPairSize[1]));
  second.size = static_cast<float>(rng.Uniform(kPairSize[0], kPairSize[1]));

  const auto relation = static_cast<Relation>(rng.Below(kNumRelations));
  const float gap = static_cast<float>(rng.Uniform(22, 28));
  const float skew = static_cast<float>(rng.Uniform(-3, 3));
  // Offsets of the first object from the second along (x, y).
  float dx = 0, dy = 0;
  switch (relation) {
    case Relation::kAbove:
      dx = skew, dy = -gap;
      break;
    case Relation::kBelow:
      dx = skew, dy = gap;
      break;
    case Relation::kLeftOf:
      dx = -gap, dy = skew;
      break;
    case Relation::kRightOf:
      dx = gap, dy = skew;
      break;
  }
  // Place the pair so that both objects fit.
  const float margin = kExtent * std::max(first.size, second.size) + 2;
  const float lo_x = margin + std::max(0.0f, -dx);
  const float hi_x = kImageSize - margin - std::max(0.0f, dx);
  const float lo_y = margin + std::max(0.0f, -dy);
  const float hi_y = kImageSize - margin - std::max(0.0f, dy);
  second.center_x = static_cast<float>(rng.Uniform(lo_x, hi_x));
  second.center_y = static_cast<float>(rng.Uniform(lo_y, hi_y));
  first.center_x = second.center_x + dx;
  first.center_y = second.center_y + dy;

  scene.background = RandomColorExcept(rng, {first.color, second.color});
  RandomTexture(rng, scene);
  scene.objects = {first, second};
  scene.caption = std::string("a ") + ColorName(first.color) + " " +
                  ShapeName(first.shape) + " " + RelationPhrase(relation) +
                  " a " + ColorName(second.color) + " " +
                  ShapeName(second.shape);
  if (name_background) scene.caption += BackgroundPhrase(scene.background);
  return scene;
}

Scene SampleScene(ShapesRng& rng, double two_object_fraction) {
  if (rng.Chance(two_object_fraction)) {
    return SampleTwoObjectScene(rng, rng.Chance(0.5));
  }
  SingleObjectSpec spec;
  spec.color = RandomColor(rng);
  spec.shape = RandomShape(rng);
  if (rng.Chance(0.5)) spec.large = rng.Chance(0.5);
  if (rng.Chance(0.6)) {
    spec.position = static_cast<Position>(rng.Below(kNumPositions));
  }
  if (rng.Chance(0.5)) spec.background = RandomColorExcept(rng, {*spec.color});
  return SampleSingleObjectScene(spec, rng);
}

Scene HeldOutScene(int index) {
  ShapesRng seeder(kHeldOutSeedBase + static_cast<uint64_t>(index));
  ShapesRng rng(seeder.Next());
  return SampleScene(rng);
}

float ShapeCoverage(Shape shape, float cx, float cy, float size, float px,
                    float py) {
  const float x = px - cx;
  const float y = py - cy;
  float distance = 0;
  switch (shape) {
    case Shape::kCircle:
      distance = CircleDistance(x, y, size);
      break;
    case Shape::kSquare:
      distance = BoxDistance(x, y, kSquareHalfSide * size);
      break;
    case Shape::kDiamond:
      distance = DiamondDistance(x, y, kDiamondRadius * size);
      break;
    case Shape::kTriangle:
      distance = TriangleDistance(x, -y, kTriangleHalfSide * size);
      break;
  }
  return Clamp01(0.5f - distance);
}

float SizeForArea(Shape shape, float area) {
  switch (shape) {
    case Shape::kCircle:
      return std::sqrt(area / kPi);
    case Shape::kSquare:
      return std::sqrt(area) / (2 * kSquareHalfSide);
    case Shape::kDiamond:
      return std::sqrt(area / 2) / kDiamondRadius;
    case Shape::kTriangle:
      return std::sqrt(area / kSqrt3) / kTriangleHalfSide;
  }
  return 0;
}

std::vector<uint8_t> RenderScene(const Scene& scene) {
  std::vector<uint8_t> rgb(size_t{kImageSize} * kImageSize * 3);
  const auto background = ColorRgb(scene.background);
  for (int y = 0; y < kImageSize; ++y) {
    for (int x = 0; x < kImageSize; ++x) {
      const float px = x + 0.5f;
      const float py = y + 0.5f;
      const float wave =
          scene.texture_amplitude *
          std::sin(scene.texture_frequency_x * px +
                   scene.texture_frequency_y * py + scene.texture_phase);
      float pixel[3];
      for (int c = 0; c < 3; ++c) pixel[c] = background[c] + wave;
      for (const SceneObject& object : scene.objects) {
        const float alpha = ShapeCoverage(object.shape, object.center_x,
                                          object.center_y, object.size, px, py);
        if (alpha <= 0) continue;
        const auto color = ColorRgb(object.color);
        for (int c = 0; c < 3; ++c) {
          pixel[c] = (1 - alpha) * pixel[c] + alpha * color[c];
        }
      }
      uint8_t* out = &rgb[static_cast<size_t>(y * kImageSize + x) * 3];
      for (int c = 0; c < 3; ++c) {
        out[c] = static_cast<uint8_t>(
            std::lround(std::clamp(pixel[c], 0.0f, 255.0f)));
      }
    }
  }
  return rgb;
}

}  // namespace shapes
