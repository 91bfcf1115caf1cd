// Training of the shipped shapes models, the paper's two stages at toy
// scale: (1) a KL-regularised autoencoder (f = 4, 64x64 -> 16x16x4), then
// (2) latent diffusion models on its frozen latents: text-to-image (word
// tokenizer + small transformer trained jointly, cross-attention, 10% caption
// dropout), inpainting (hybrid: masked-image latent + mask concatenated,
// caption by cross-attention) and 4x super-resolution (the 16x16 low-res
// image concatenated).
//
// Training is seeded and resumable: each step's data and noise are functions
// of (seed, step), and the state (weights, EMA, Adam moments, step) is saved
// to OUT/train_state.safetensors every `save_every` steps and at the end.
// Exported weights are the EMA weights.
#ifndef LDMSERVE_TOOLS_TRAIN_TRAINER_H_
#define LDMSERVE_TOOLS_TRAIN_TRAINER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "server/ldm/model_config.h"
#include "tools/shapes/shapes_world.h"

namespace ldmtrain {

enum class Task { kAutoencoder, kTextToImage, kInpaint, kSuperResolution };

struct TrainOptions {
  std::string out_dir;
  // Autoencoder folder (ae.safetensors) for the diffusion stages.
  std::string autoencoder_dir;
  // Diffusion stages: start from these weights (an exported
  // weights.safetensors) instead of random ones, with a fresh optimizer;
  // ignored when resuming.
  std::string init_weights;
  int64_t steps = 10000;  // Total; the learning rate decays over them.
  int64_t batch_size = 32;
  double learning_rate = 2e-4;
  int64_t warmup_steps = 200;
  double ema_decay = 0.999;
  uint64_t seed = 1;
  // Stop (and save) after this much wall time even if `steps` are not done;
  // 0 = no limit. A later run with the same options resumes.
  double max_seconds = 0;
  int64_t log_every = 100;
  int64_t save_every = 2000;
  // Text-to-image and inpainting: share of captions replaced by "" so the
  // model also learns the unconditional prediction guidance needs.
  double caption_dropout = 0.1;
  // What the UNet predicts: "eps" (the paper's) or "v" (Salimans & Ho; SD
  // 2.x). The eps loss weighs an error in the clean latent by the
  // signal-to-noise ratio, ~1e-4 at the high noise levels where an image's
  // layout is decided; the v loss by SNR + 1.
  std::string prediction = "eps";
  // Diffusion stages: adds `pixel_loss_weight` times the reconstruction
  // loss of the decoded x0 prediction (decoder frozen, gradient through
  // it) for the images noised to t < `pixel_loss_max_timestep`. The latent
  // loss weighs every latent value alike, but the decoder turns small
  // latent errors at an object's corners into rounded corners; this weighs
  // them as the picture shows them. 0 = off (the paper's loss alone); the
  // shipped models do not use it (docs/models.md has what it measured).
  double pixel_loss_weight = 0;
  int64_t pixel_loss_max_timestep = 400;
  // Diffusion stages: the loss at latent pixels over the band around the
  // objects' outlines (OutlineBandMask, averaged to the latent grid) counts
  // 1 + `outline_weight` times. That band is where a square and a circle of
  // the same size differ, a tenth of the image; with the loss spread evenly
  // the UNet gains little from telling shapes apart and learns it slowly.
  // 0 = off (the paper's loss).
  double outline_weight = 0;
  // Diffusion stages: the share of training scenes with two objects (the
  // dataset's own share by default). Their objects are smaller and their
  // captions longer, so they are learnt later than single objects.
  double two_object_fraction = shapes::kTwoObjectFraction;
  at::Device device = at::kCPU;
  std::string model_name;  // Defaults to shapes-<task>.
};

// The architecture of each task's model (the autoencoder part is the same
// for all and is what Task::kAutoencoder trains).
ldm::ModelConfig PresetConfig(Task task, const std::string& name);

// Trains `task`; prints loss and throughput every `log_every` steps. The
// diffusion stages write OUT/weights.safetensors (F16, EMA) and
// OUT/config.json (with the measured scale_factor); the autoencoder stage
// writes OUT/ae.safetensors (F32, EMA) and reports held-out PSNR.
absl::Status Train(Task task, const TrainOptions& options);

}  // namespace ldmtrain

#endif  // LDMSERVE_TOOLS_TRAIN_TRAINER_H_
