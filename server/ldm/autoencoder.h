// The paper's KL-regularised autoencoder (CompVis `Autoencoder`): Encoder
// and Decoder from `diffusionmodules/model.py` plus `quant_conv` and
// `post_quant_conv`, with the reference parameter names
// (encoder.down.0.block.0.norm1.weight, decoder.up.1.upsample.conv.weight,
// ...). Encode() gives the diagonal Gaussian posterior's moments; the
// pipeline samples it with its own generator.
#ifndef LDMSERVE_SERVER_LDM_AUTOENCODER_H_
#define LDMSERVE_SERVER_LDM_AUTOENCODER_H_

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "server/ldm/model_config.h"
#include "server/ldm/parameters.h"

namespace ldm {

class Conv2d;

// The posterior q(z|x) = N(mean, exp(logvar)), logvar clamped to [-30, 20].
struct DiagonalGaussian {
  at::Tensor mean;
  at::Tensor logvar;
  at::Tensor Std() const { return at::exp(0.5 * logvar); }
  // mean + std * noise, noise drawn from `generator` (or given).
  at::Tensor Sample(at::Generator generator) const;
  at::Tensor SampleWith(const at::Tensor& noise) const {
    return mean + Std() * noise;
  }
};

class Autoencoder {
 public:
  Autoencoder(const AutoencoderConfig& config, const ParamScope& scope);
  ~Autoencoder();

  // x: [B, in_channels, H, W] in [-1, 1] -> quant_conv(encoder(x)): for
  // "kl" the posterior's moments [B, 2*embed_dim, H/f, W/f], for "vq" the
  // unquantised latent [B, embed_dim, H/f, W/f] (VQModelInterface.encode).
  at::Tensor EncodeMoments(const at::Tensor& x) const;
  static DiagonalGaussian Posterior(const at::Tensor& moments);
  // z: [B, embed_dim, h, w] (unscaled) -> decoder(post_quant_conv(z)); a
  // "vq" model quantises z first, as the reference's decode does.
  at::Tensor Decode(const at::Tensor& z) const;
  // The nearest codebook vector for each latent position ("vq" only).
  at::Tensor Quantize(const at::Tensor& z) const;
  bool is_vq() const { return config_.kind == AutoencoderKind::kVq; }

  const AutoencoderConfig& config() const { return config_; }

 private:
  class Encoder;
  class Decoder;
  AutoencoderConfig config_;
  std::unique_ptr<Encoder> encoder_;
  std::unique_ptr<Decoder> decoder_;
  std::unique_ptr<Conv2d> quant_conv_;
  std::unique_ptr<Conv2d> post_quant_conv_;
  at::Tensor codebook_;  // quantize.embedding.weight [n_embed, embed_dim]
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_AUTOENCODER_H_
