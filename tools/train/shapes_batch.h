// Shapes-world scenes as training and test tensors: images, inpainting
// masks and super-resolution inputs, made the same way for training, the
// quality tests and the sample grids.
#ifndef LDMSERVE_TOOLS_TRAIN_SHAPES_BATCH_H_
#define LDMSERVE_TOOLS_TRAIN_SHAPES_BATCH_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tools/shapes/shapes_world.h"

namespace ldmtrain {

// Side of the super-resolution model's input (64 / 4).
inline constexpr int64_t kLowResSize = 16;

// RGB byte images (64 x 64 x 3 each) -> [B, 3, 64, 64] float32 in [-1, 1].
at::Tensor ImagesToTensor(const std::vector<std::vector<uint8_t>>& images);
// [B, 1, 64, 64] float32 from 64 x 64 masks (1 = repaint).
at::Tensor MasksToTensor(const std::vector<std::vector<uint8_t>>& masks);

// A repaint mask for `scene`: half the time a box around one of its objects
// (the case the inpainting model must learn: put the captioned object
// there), otherwise a random box or free-form brush strokes.
std::vector<uint8_t> RandomInpaintMask(const shapes::Scene& scene,
                                       shapes::ShapesRng& rng);
// 64 x 64 mask (1 = inside) of the band around the outlines of `scene`'s
// objects where shapes of about the object's area differ: inside the object
// grown by a quarter of its size and outside it shrunk by a quarter (a
// circle's rim, a square's corners and the middles of its sides).
std::vector<uint8_t> OutlineBandMask(const shapes::Scene& scene);
// A box around `object`, `margin` pixels past its extent.
std::vector<uint8_t> ObjectBoxMask(const shapes::SceneObject& object,
                                   float margin);

// The super-resolution input: bicubic (anti-aliased) downsampling of
// [B, 3, 64, 64] images to 16 x 16.
at::Tensor DownsampleBicubic(const at::Tensor& images);
// The baseline the SR model must beat: bicubic upsampling back to 64 x 64.
at::Tensor UpsampleBicubic(const at::Tensor& low_res);

// An inpainting probe: a held-out-style single-object scene, a box mask over
// its object, and a prompt asking for a different object (colour and shape)
// in the same place on the same background.
struct InpaintCase {
  std::vector<uint8_t> image;  // 64 x 64 x 3
  std::vector<uint8_t> mask;   // 64 x 64, 1 = repaint
  std::string prompt;
  shapes::Color color;
  shapes::Shape shape;
};
InpaintCase MakeInpaintCase(int index);

// Peak signal-to-noise ratio in dB of two uint8 image tensors.
double Psnr(const at::Tensor& a, const at::Tensor& b);

}  // namespace ldmtrain

#endif  // LDMSERVE_TOOLS_TRAIN_SHAPES_BATCH_H_
