// The procedural "shapes" world our shipped models are trained on: seeded
// 64x64 RGB scenes of one or two anti-aliased objects on a plain or lightly
// textured background, each with a caption in a fixed grammar
// (docs/models.md):
//
//   one object:  a [small|large] COLOR SHAPE [POSITION] [on a COLOR background]
//   two objects: a COLOR SHAPE RELATION a COLOR SHAPE [on a COLOR background]
//
// Parts left out of a caption are still drawn (at random). The same seed gives
// the same scene on every machine: randomness comes from a SplitMix64 stream,
// not from <random>'s implementation-defined distributions.
//
// Thread-safe: everything here is a pure function of its arguments.
//
// Example:
//   ShapesRng rng(7);
//   Scene scene = SampleScene(rng);
//   std::vector<uint8_t> rgb = RenderScene(scene);  // 64 * 64 * 3, HWC
//   LOG(INFO) << scene.caption;
#ifndef LDMSERVE_TOOLS_SHAPES_SHAPES_WORLD_H_
#define LDMSERVE_TOOLS_SHAPES_SHAPES_WORLD_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace shapes {

inline constexpr int kImageSize = 64;

enum class Color {
  kRed,
  kGreen,
  kBlue,
  kYellow,
  kPurple,
  kOrange,
  kWhite,
  kBlack
};
inline constexpr int kNumColors = 8;
enum class Shape { kCircle, kSquare, kTriangle, kDiamond };
inline constexpr int kNumShapes = 4;
enum class Position { kLeft, kRight, kTop, kBottom, kCenter };
inline constexpr int kNumPositions = 5;
enum class Relation { kAbove, kBelow, kLeftOf, kRightOf };
inline constexpr int kNumRelations = 4;

const char* ColorName(Color color);
const char* ShapeName(Shape shape);
const char* PositionPhrase(Position position);  // "at the left", ...
const char* RelationPhrase(Relation relation);  // "above", "left of", ...
std::array<uint8_t, 3> ColorRgb(Color color);
// Where an object "at POSITION" is centred, in pixels (x, y).
std::array<float, 2> PositionAnchor(Position position);

// Every word the grammar uses, in a fixed order (the text encoder's vocabulary
// after its padding and unknown tokens).
std::vector<std::string> Vocabulary();

// How far an object reaches from its centre, per unit of `size` (the
// triangle's apex is the farthest point).
inline constexpr float kExtent = 1.5f;

struct SceneObject {
  Color color = Color::kRed;
  Shape shape = Shape::kCircle;
  float center_x = 32, center_y = 32;
  float size = 8;  // Circle radius; the other shapes are scaled to match.
};

struct Scene {
  Color background = Color::kWhite;
  // 0 = plain; otherwise the amplitude (in 8-bit levels) of a faint wave
  // pattern over the background.
  float texture_amplitude = 0;
  float texture_frequency_x = 0, texture_frequency_y = 0, texture_phase = 0;
  std::vector<SceneObject> objects;
  std::string caption;
};

// A small, explicit random stream (SplitMix64).
class ShapesRng {
 public:
  explicit ShapesRng(uint64_t seed) : state_(seed) {}
  uint64_t Next();
  double Uniform();                      // [0, 1)
  double Uniform(double lo, double hi);  // [lo, hi)
  int Below(int n);                      // {0, ..., n - 1}
  bool Chance(double p) { return Uniform() < p; }

 private:
  uint64_t state_;
};

// What a caption asks for; unset fields are drawn at random.
struct SingleObjectSpec {
  std::optional<Color> color;
  std::optional<Shape> shape;
  std::optional<bool> large;
  std::optional<Position> position;
  std::optional<Color> background;
};

// The share of two-object scenes in the dataset (and the held-out set).
inline constexpr double kTwoObjectFraction = 0.4;
// A random scene: two objects with probability `two_object_fraction`, else
// one; caption parts each left out at random.
Scene SampleScene(ShapesRng& rng,
                  double two_object_fraction = kTwoObjectFraction);
// One object as `spec` says; the caption names exactly the given fields.
Scene SampleSingleObjectScene(const SingleObjectSpec& spec, ShapesRng& rng);
// Two objects in `relation`; the caption names both and the background when
// `name_background`.
Scene SampleTwoObjectScene(ShapesRng& rng, bool name_background);

// The held-out set: scene `index` is a fixed function of the index, from a
// seed range that training streams never use.
Scene HeldOutScene(int index);
inline constexpr uint64_t kHeldOutSeedBase = 0x5EED000000000000ull;

// Renders to 64 x 64 x 3 bytes, row-major, RGB.
std::vector<uint8_t> RenderScene(const Scene& scene);

// Coverage in [0, 1] of `shape` with centre (cx, cy) and `size` at pixel
// centre (px, py): one pixel of anti-aliasing across the edge.
float ShapeCoverage(Shape shape, float cx, float cy, float size, float px,
                    float py);
// The `size` that gives `shape` an area of `area` pixels.
float SizeForArea(Shape shape, float area);

}  // namespace shapes

#endif  // LDMSERVE_TOOLS_SHAPES_SHAPES_WORLD_H_
