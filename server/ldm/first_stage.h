// The first stage of a latent diffusion model: the autoencoder between
// pixels and the latents the sampler works in, with the scale factor that
// takes one to the other (the reference's get_first_stage_encoding and
// decode_first_stage) and tiling, so that memory stays bounded for large
// images. Const and thread-safe after loading; every entry point catches
// LibTorch errors and returns them as statuses.
#ifndef LDMSERVE_SERVER_LDM_FIRST_STAGE_H_
#define LDMSERVE_SERVER_LDM_FIRST_STAGE_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "server/ldm/autoencoder.h"
#include "server/ldm/model_config.h"
#include "server/ldm/parameters.h"

namespace ldm {

// Large images are decoded (and encoded) tile by tile so that memory stays
// bounded; tiles overlap and are blended with linear ramps.
struct TileOptions {
  int64_t tile = 64;     // Tile side in latent pixels.
  int64_t overlap = 16;  // Overlap between neighbouring tiles, latent pixels.
  // Latents with more pixels (h * w) than this are tiled; 0 = never.
  int64_t max_untiled_latent_pixels = int64_t{96} * 96;
};

class FirstStage {
 public:
  // Declares the autoencoder's parameters under `scope`; it runs on
  // `device` in `dtype`, latents cross in float32.
  FirstStage(const AutoencoderConfig& config, const ParamScope& scope,
             double scale_factor, at::Device device, at::ScalarType dtype,
             const TileOptions& tiles);

  // A checkpoint's own scale_factor buffer.
  void set_scale_factor(double scale_factor) { scale_factor_ = scale_factor; }
  double scale_factor() const { return scale_factor_; }

  // Images [B, 3, H, W] in [-1, 1] -> latents in sampler space:
  // scale_factor * a sample of the posterior, with `noise` (N(0, 1) of the
  // latent shape) for its randomness (get_first_stage_encoding); a VQ first
  // stage's latent is deterministic and `noise` is unused.
  absl::StatusOr<at::Tensor> EncodeImages(const at::Tensor& images,
                                          const at::Tensor& noise) const;

  // Latents in sampler space -> the decoder's output [B, 3, H, W] in about
  // [-1, 1] (decode_first_stage); tiled past the tile options' threshold.
  absl::StatusOr<at::Tensor> DecodeLatents(const at::Tensor& latents) const;
  // The same, always in tiles of `tiles` (for tests and tools).
  absl::StatusOr<at::Tensor> DecodeLatentsTiled(const at::Tensor& latents,
                                                const TileOptions& tiles) const;
  // Latents, each [n_i, C, h, w] in sampler space, decoded in one batch ->
  // uint8 RGB [sum n_i, H, W, 3] on the CPU.
  absl::StatusOr<at::Tensor> DecodeToImages(
      const std::vector<at::Tensor>& latents) const;

  const Autoencoder& autoencoder() const { return *autoencoder_; }

 private:
  // quant_conv(encoder(images)), tiled past the threshold.
  at::Tensor EncodeMoments(const at::Tensor& images) const;

  std::unique_ptr<Autoencoder> autoencoder_;
  double scale_factor_;
  at::Device device_;
  at::ScalarType dtype_;
  TileOptions tiles_;
};

// The reference's uint8 conversion: (255 * clamp((x + 1) / 2, 0, 1)),
// truncated, as [B, H, W, 3] on the CPU.
at::Tensor ToUint8Images(const at::Tensor& images);

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_FIRST_STAGE_H_
