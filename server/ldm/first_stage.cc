#include "server/ldm/first_stage.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <functional>

#include "server/common/status_macros.h"
#include "server/ldm/layers.h"
#include "server/ldm/torch_boundary.h"

namespace ldm {
namespace {

// Start offsets of tiles of `tile` covering `size` with `overlap`.
std::vector<int64_t> TileStarts(int64_t size, int64_t tile, int64_t overlap) {
  std::vector<int64_t> starts;
  if (size <= tile) return {0};
  const int64_t stride = std::max<int64_t>(1, tile - overlap);
  for (int64_t start = 0;; start += stride) {
    if (start + tile >= size) {
      starts.push_back(size - tile);
      break;
    }
    starts.push_back(start);
  }
  return starts;
}

// Blend weights along one axis of a tile at [start, start + length) of
// `size`: ramps of `ramp` pixels up from a neighbour on each inner side.
at::Tensor AxisWeights(int64_t start, int64_t length, int64_t size,
                       int64_t ramp) {
  at::Tensor weights = at::ones({length}, at::kFloat);
  if (ramp <= 0) return weights;
  const at::Tensor up =
      (at::arange(ramp, at::kFloat) + 1) / static_cast<double>(ramp + 1);
  if (start > 0) weights.slice(0, 0, ramp).copy_(up);
  if (start + length < size) {
    weights.slice(0, length - ramp, length).copy_(up.flip(0));
  }
  return weights;
}

// Runs `fn` on overlapping tiles of `input`, whose grid is `h` x `w` cells
// (latent pixels) of `in_scale` tensor pixels a side, and blends the outputs
// (`out_scale` pixels a cell, `out_channels` channels) with linear ramps over
// the overlaps. Blending happens on the CPU in float32, so the device only
// ever holds one tile's activations.
at::Tensor BlendTiles(const at::Tensor& input, int64_t in_scale,
                      int64_t out_scale, int64_t out_channels,
                      const TileOptions& tiles,
                      const std::function<at::Tensor(const at::Tensor&)>& fn) {
  const int64_t h = input.size(2) / in_scale, w = input.size(3) / in_scale;
  const int64_t tile = std::max<int64_t>(1, tiles.tile);
  const int64_t overlap = std::clamp<int64_t>(tiles.overlap, 0, tile - 1);
  const int64_t th = std::min(tile, h), tw = std::min(tile, w);
  at::Tensor sum = at::zeros(
      {input.size(0), out_channels, h * out_scale, w * out_scale}, at::kFloat);
  at::Tensor weight_sum =
      at::zeros({1, 1, h * out_scale, w * out_scale}, at::kFloat);
  for (int64_t y : TileStarts(h, tile, overlap)) {
    for (int64_t x : TileStarts(w, tile, overlap)) {
      const at::Tensor out =
          fn(input.slice(2, y * in_scale, (y + th) * in_scale)
                 .slice(3, x * in_scale, (x + tw) * in_scale))
              .to(at::kCPU, at::kFloat);
      const at::Tensor weights =
          at::outer(AxisWeights(y * out_scale, th * out_scale, h * out_scale,
                                overlap * out_scale),
                    AxisWeights(x * out_scale, tw * out_scale, w * out_scale,
                                overlap * out_scale))
              .unsqueeze(0)
              .unsqueeze(0);
      auto region = [&](const at::Tensor& t) {
        return t.slice(2, y * out_scale, (y + th) * out_scale)
            .slice(3, x * out_scale, (x + tw) * out_scale);
      };
      region(sum).add_(out * weights);
      region(weight_sum).add_(weights);
    }
  }
  return sum / weight_sum;
}

}  // namespace

FirstStage::FirstStage(const AutoencoderConfig& config, const ParamScope& scope,
                       double scale_factor, at::Device device,
                       at::ScalarType dtype, const TileOptions& tiles)
    : autoencoder_(std::make_unique<Autoencoder>(config, scope)),
      scale_factor_(scale_factor),
      device_(device),
      dtype_(dtype),
      tiles_(tiles) {}

at::Tensor ToUint8Images(const at::Tensor& images) {
  // The reference truncates: (255 * clamp((x + 1) / 2, 0, 1)).astype(uint8).
  return (at::clamp((images.to(at::kFloat) + 1.0) / 2.0, 0.0, 1.0) * 255.0)
      .to(at::kByte)
      .permute({0, 2, 3, 1})
      .contiguous()
      .to(at::kCPU);
}

absl::StatusOr<at::Tensor> FirstStage::EncodeImages(
    const at::Tensor& images, const at::Tensor& noise) const {
  return CallTorch("encode images", [&] {
    c10::InferenceMode inference;
    // Latents are float32 (the sampler's state) whatever the first stage's
    // dtype.
    const at::Tensor encoded = EncodeMoments(images).to(at::kFloat);
    if (autoencoder_->is_vq()) return scale_factor_ * encoded;
    const DiagonalGaussian posterior = Autoencoder::Posterior(encoded);
    return scale_factor_ * posterior.SampleWith(noise.to(device_, at::kFloat));
  });
}

at::Tensor FirstStage::EncodeMoments(const at::Tensor& images) const {
  const at::Tensor x = images.to(device_, dtype_);
  const AutoencoderConfig& config = autoencoder_->config();
  const int64_t f = config.DownsamplingFactor();
  if (tiles_.max_untiled_latent_pixels <= 0 ||
      (x.size(2) / f) * (x.size(3) / f) <= tiles_.max_untiled_latent_pixels) {
    return ForEachRowIfInvariant(x.size(0), [&](int64_t begin, int64_t end) {
      return autoencoder_->EncodeMoments(x.slice(0, begin, end));
    });
  }
  const int64_t channels = (autoencoder_->is_vq() ? 1 : 2) * config.embed_dim;
  return BlendTiles(x, f, 1, channels, tiles_,
                    [&](const at::Tensor& tile) {
                      return autoencoder_->EncodeMoments(tile);
                    })
      .to(device_, dtype_);
}

absl::StatusOr<at::Tensor> FirstStage::DecodeLatents(
    const at::Tensor& latents) const {
  if (tiles_.max_untiled_latent_pixels > 0 &&
      latents.size(2) * latents.size(3) > tiles_.max_untiled_latent_pixels) {
    return DecodeLatentsTiled(latents, tiles_);
  }
  return CallTorch("decode", [&] {
    c10::InferenceMode inference;
    // Unscaled in float32, then cast: a lowered first stage rounds once.
    const at::Tensor z =
        ((1.0 / scale_factor_) * latents.to(device_)).to(dtype_);
    return ForEachRowIfInvariant(
               z.size(0),
               [&](int64_t begin, int64_t end) {
                 return autoencoder_->Decode(z.slice(0, begin, end));
               })
        .to(at::kFloat);
  });
}

absl::StatusOr<at::Tensor> FirstStage::DecodeLatentsTiled(
    const at::Tensor& latents, const TileOptions& tiles) const {
  return CallTorch("tiled decode", [&] {
    c10::InferenceMode inference;
    const AutoencoderConfig& config = autoencoder_->config();
    const at::Tensor z =
        ((1.0 / scale_factor_) * latents.to(device_)).to(dtype_);
    return BlendTiles(z, 1, config.DownsamplingFactor(), config.out_ch, tiles,
                      [&](const at::Tensor& tile) {
                        return autoencoder_->Decode(tile);
                      })
        .to(device_, at::kFloat);
  });
}

absl::StatusOr<at::Tensor> FirstStage::DecodeToImages(
    const std::vector<at::Tensor>& latents) const {
  LDM_ASSIGN_OR_RETURN(at::Tensor joined, CallTorch("decode", [&] {
                         return at::cat(latents, 0);
                       }));
  LDM_ASSIGN_OR_RETURN(at::Tensor images, DecodeLatents(joined));
  return CallTorch("decode", [&] {
    c10::InferenceMode inference;
    return ToUint8Images(images);
  });
}

}  // namespace ldm
