// A deterministic reader of shapes-world images (tools/shapes): finds the
// background colour, the objects (connected regions that differ from it),
// and for each object its colour (nearest palette colour), shape (the
// template of equal area and centroid with the best IoU) and position (the
// nearest caption anchor). The quality tests score generated images with it;
// its own accuracy is checked on held-out dataset images first.
//
// Thread-safe: a pure function of the image.
#ifndef LDMSERVE_TESTS_QUALITY_SCENE_PROBE_H_
#define LDMSERVE_TESTS_QUALITY_SCENE_PROBE_H_

#include <cstdint>
#include <vector>

#include "tools/shapes/shapes_world.h"

namespace shapes {

struct ProbedObject {
  Color color = Color::kRed;
  Shape shape = Shape::kCircle;
  Position position = Position::kCenter;  // Nearest anchor to the centroid.
  float center_x = 0, center_y = 0;
  int area = 0;         // Pixels.
  float shape_iou = 0;  // IoU of the best template.
};

struct ProbeResult {
  Color background = Color::kWhite;
  std::vector<ProbedObject> objects;  // Largest first.
};

// `rgb`: 64 x 64 x 3 bytes (RenderScene's layout). With `region` (64 x 64,
// nonzero = inside), only objects inside it are looked for; the background
// is still read from the whole image.
ProbeResult ProbeScene(const std::vector<uint8_t>& rgb,
                       const std::vector<uint8_t>* region = nullptr);

}  // namespace shapes

#endif  // LDMSERVE_TESTS_QUALITY_SCENE_PROBE_H_
