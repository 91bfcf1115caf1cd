// The probe must read the dataset itself almost perfectly before its verdict
// on generated images means anything.
#include "tests/quality/scene_probe.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "tools/shapes/shapes_world.h"

namespace shapes {
namespace {

constexpr int kHeldOutImages = 1000;

const ProbedObject* Nearest(const ProbeResult& probe,
                            const SceneObject& truth) {
  const ProbedObject* best = nullptr;
  float best_distance = 1e9f;
  for (const ProbedObject& object : probe.objects) {
    const float d = std::hypot(object.center_x - truth.center_x,
                               object.center_y - truth.center_y);
    if (d < best_distance) best_distance = d, best = &object;
  }
  return best_distance < 6 ? best : nullptr;
}

TEST(SceneProbeTest, ReadsHeldOutScenes) {
  int objects = 0, colour_right = 0, shape_right = 0, found = 0;
  int single = 0, position_right = 0, count_right = 0, background_right = 0;
  for (int i = 0; i < kHeldOutImages; ++i) {
    const Scene scene = HeldOutScene(i);
    const ProbeResult probe = ProbeScene(RenderScene(scene));
    background_right += probe.background == scene.background;
    count_right += probe.objects.size() == scene.objects.size();
    for (const SceneObject& truth : scene.objects) {
      ++objects;
      const ProbedObject* seen = Nearest(probe, truth);
      if (seen == nullptr) continue;
      ++found;
      colour_right += seen->color == truth.color;
      shape_right += seen->shape == truth.shape;
    }
    if (scene.objects.size() == 1 && !probe.objects.empty()) {
      ++single;
      const SceneObject& truth = scene.objects[0];
      // The anchor nearest the true centre: exactly the named position when
      // the caption names one (anchors are 14 px apart, jitter is 3 px).
      float best = 1e9f;
      Position expected = Position::kCenter;
      for (int p = 0; p < kNumPositions; ++p) {
        const auto [ax, ay] = PositionAnchor(static_cast<Position>(p));
        const float d = std::hypot(truth.center_x - ax, truth.center_y - ay);
        if (d < best) best = d, expected = static_cast<Position>(p);
      }
      position_right += probe.objects[0].position == expected;
    }
  }
  const auto percent = [](int a, int b) { return 100.0 * a / b; };
  std::cout << "probe on " << kHeldOutImages << " held-out images: objects "
            << percent(found, objects) << "% found, colour "
            << percent(colour_right, objects) << "%, shape "
            << percent(shape_right, objects) << "%, position "
            << percent(position_right, single) << "%, background "
            << percent(background_right, kHeldOutImages) << "%, count "
            << percent(count_right, kHeldOutImages) << "%\n";
  EXPECT_GE(percent(found, objects), 98);
  EXPECT_GE(percent(colour_right, objects), 98);
  EXPECT_GE(percent(shape_right, objects), 98);
  EXPECT_GE(percent(position_right, single), 98);
  EXPECT_GE(percent(background_right, kHeldOutImages), 98);
  EXPECT_GE(percent(count_right, kHeldOutImages), 98);
}

TEST(SceneProbeTest, ShapesAreTellableApartAtSmallSize) {
  ShapesRng rng(3);
  for (int s = 0; s < kNumShapes; ++s) {
    SingleObjectSpec spec;
    spec.shape = static_cast<Shape>(s);
    spec.color = Color::kBlue;
    spec.background = Color::kWhite;
    spec.large = false;
    spec.position = Position::kCenter;
    const Scene scene = SampleSingleObjectScene(spec, rng);
    const ProbeResult probe = ProbeScene(RenderScene(scene));
    ASSERT_EQ(probe.objects.size(), 1u) << scene.caption;
    EXPECT_EQ(probe.objects[0].shape, *spec.shape) << scene.caption;
    EXPECT_EQ(probe.objects[0].position, Position::kCenter);
  }
}

TEST(SceneProbeTest, RegionLimitsTheSearch) {
  ShapesRng rng(5);
  SingleObjectSpec spec;
  spec.position = Position::kLeft;
  const Scene scene = SampleSingleObjectScene(spec, rng);
  std::vector<uint8_t> right_half(kImageSize * kImageSize, 0);
  for (int y = 0; y < kImageSize; ++y) {
    for (int x = kImageSize / 2 + 4; x < kImageSize; ++x) {
      right_half[y * kImageSize + x] = 1;
    }
  }
  EXPECT_TRUE(ProbeScene(RenderScene(scene), &right_half).objects.empty());
  EXPECT_EQ(ProbeScene(RenderScene(scene)).objects.size(), 1u);
}

TEST(ShapesWorldTest, SameSeedSameSceneAndCaptionGrammar) {
  for (int i = 0; i < 50; ++i) {
    const Scene a = HeldOutScene(i);
    const Scene b = HeldOutScene(i);
    EXPECT_EQ(a.caption, b.caption);
    EXPECT_EQ(RenderScene(a), RenderScene(b));
    EXPECT_EQ(a.caption.rfind("a ", 0), 0u) << a.caption;
  }
  EXPECT_NE(HeldOutScene(0).caption +
                std::to_string(HeldOutScene(0).objects[0].center_x),
            HeldOutScene(1).caption +
                std::to_string(HeldOutScene(1).objects[0].center_x));
}

TEST(ShapesWorldTest, TwoObjectShareFollowsTheArgument) {
  auto two_object_count = [](double fraction) {
    ShapesRng rng(11);
    int two = 0;
    for (int i = 0; i < 1000; ++i) {
      const Scene scene = SampleScene(rng, fraction);
      bool names_a_relation = false;
      for (int r = 0; r < kNumRelations; ++r) {
        const std::string phrase =
            std::string(" ") + RelationPhrase(static_cast<Relation>(r)) + " a ";
        names_a_relation |= scene.caption.find(phrase) != std::string::npos;
      }
      EXPECT_EQ(names_a_relation, scene.objects.size() == 2) << scene.caption;
      two += scene.objects.size() == 2;
    }
    return two;
  };
  EXPECT_EQ(two_object_count(0), 0);
  EXPECT_EQ(two_object_count(1), 1000);
  const int dataset_share = two_object_count(kTwoObjectFraction);
  EXPECT_GT(dataset_share, 350);  // 400 expected; binomial sd about 15.
  EXPECT_LT(dataset_share, 450);
}

}  // namespace
}  // namespace shapes
