// What a client asks of a model and what comes back, in plain types: the one
// header of the model library that the service includes (no LibTorch).
//
// The service turns a wire request into a GenerationRequest once: the task is
// the variant's alternative, pixels are 8-bit RGB and the mask is already a
// repaint/keep decision per pixel. CheckRequest then decides, before the job
// is queued, whether the model can run it and at what size; the model library
// turns pixels into tensors only inside its own exception boundary, and hands
// back 8-bit RGB images.
//
// Example:
//   ldm::GenerationRequest request;
//   request.prompt = "a red circle";
//   request.task = ldm::TextToImage{.width = 512, .height = 512};
//   LDM_ASSIGN_OR_RETURN(ldm::ImageGeometry geometry,
//                        ldm::CheckRequest(model.capabilities(), request));
#ifndef LDMSERVE_SERVER_LDM_GENERATION_H_
#define LDMSERVE_SERVER_LDM_GENERATION_H_

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/ldm/sampler_options.h"

namespace ldm {

enum class Task { kTextToImage, kImageToImage, kInpaint, kSuperResolution };

inline constexpr Task kAllTasks[] = {Task::kTextToImage, Task::kImageToImage,
                                     Task::kInpaint, Task::kSuperResolution};

// "text_to_image", "image_to_image", "inpaint", "super_resolution": the
// names of the registry file, metrics labels and the wire's oneof.
absl::string_view TaskName(Task task);
std::optional<Task> TaskFromName(absl::string_view name);
// "text_to_image, inpaint": for messages.
std::string TaskNames(const std::vector<Task>& tasks);

struct RgbImage {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> pixels;  // Row-major RGB, 3 bytes a pixel.

  bool operator==(const RgbImage& other) const {
    return width == other.width && height == other.height &&
           pixels == other.pixels;
  }
  bool operator!=(const RgbImage& other) const { return !(*this == other); }
};

// Which pixels a job repaints: one byte a pixel, 1 = repaint, 0 = keep.
struct Mask {
  int64_t width = 0;
  int64_t height = 0;
  std::vector<uint8_t> repaint;
};

// A mask image -> Mask: repaint where the red channel is 128 or more (white
// and red repaint, black keeps); green and blue are not read.
Mask MaskFromRgb(const RgbImage& image);

// The tasks. Pixel sides are multiples of the model's size multiple.
struct TextToImage {
  // Pixels; unset = the model's native side. A side set to 0 is refused.
  std::optional<int64_t> width;
  std::optional<int64_t> height;
};
struct ImageToImage {
  RgbImage init_image;  // The output has its size; strength: sampler.strength.
};
struct Inpaint {
  RgbImage image;  // The unmasked pixels come back as they are here.
  Mask mask;       // The image's size.
};
struct SuperResolution {
  RgbImage low_res_image;  // The output is `downsampling_factor` times larger.
};
using TaskInput =
    std::variant<TextToImage, ImageToImage, Inpaint, SuperResolution>;

Task TaskOf(const TaskInput& input);

struct GenerationRequest {
  TaskInput task;
  std::string prompt;
  std::string negative_prompt;
  SamplerOptions sampler;
  uint64_t seed = 1;  // Image i uses ImageSeed(seed, i).
  int num_images = 1;
  // Which CLIP layer encodes the prompts (1 = the last, 2 = the
  // penultimate); 0 = the model's own. CLIP models only.
  int clip_skip = 0;
};

// The seed of image `index` of a job seeded `seed`.
inline uint64_t ImageSeed(uint64_t seed, int index) {
  return seed + static_cast<uint64_t>(index);
}

// What a loaded model can do: all a request is checked against.
struct ModelCapabilities {
  std::vector<Task> tasks;
  int64_t native_width = 0;
  int64_t native_height = 0;
  // Output sides are multiples of this: the autoencoder's downsampling times
  // every UNet downsampling (64 for SD v1), so that latents halve exactly.
  int64_t size_multiple = 8;
  // Pixels a latent pixel covers along a side; a super-resolution model's
  // upscaling factor.
  int64_t downsampling_factor = 8;
  int64_t latent_channels = 4;
  int64_t latent_height = 0;  // Native.
  int64_t latent_width = 0;
  // The model's own defaults (0 = none): DDIM eta, guidance scale.
  double default_eta = 0.0;
  double default_guidance_scale = 0.0;
  // CLIP text encoders: clip_skip's range 1..max_clip_skip (its layers) and
  // the model's own; 0 and 0 for other text encoders.
  int max_clip_skip = 0;
  int default_clip_skip = 0;
};

// The size a job works at.
struct ImageGeometry {
  int64_t width = 0;  // Output pixels.
  int64_t height = 0;
  int64_t latent_width = 0;
  int64_t latent_height = 0;
};

// Whether `model` can run `request`, and at what size. FAILED_PRECONDITION
// when the model cannot run the task; INVALID_ARGUMENT naming the field (as
// the wire names it: "inpaint.mask") for sides that are not multiples, a mask
// of another size, or pixels that do not match their sides.
absl::StatusOr<ImageGeometry> CheckRequest(const ModelCapabilities& model,
                                           const GenerationRequest& request);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_GENERATION_H_
