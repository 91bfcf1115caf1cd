// The denoising UNet of the paper (CompVis `openaimodel.UNetModel`), with
// parameter names exactly as in the reference state_dict:
// time_embed.{0,2}, label_emb, input_blocks.N.M..., middle_block.M...,
// output_blocks.N.M..., out.{0,2}. Blocks are ResBlocks, SpatialTransformers
// (self- and cross-attention, GEGLU feed-forward), AttentionBlocks (legacy
// QKV attention, used by the paper's super-resolution model), and
// Downsample/Upsample.
//
// Forward() is const: one model serves many threads' batches at once.
#ifndef LDMSERVE_SERVER_LDM_UNET_H_
#define LDMSERVE_SERVER_LDM_UNET_H_

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "server/ldm/model_config.h"
#include "server/ldm/parameters.h"

namespace ldm {

class Conv2d;
class Embedding;
class GroupNorm;
class Linear;

// The sinusoidal embedding [cos(t f), sin(t f)], f_i = 10000^(-i/half): the
// reference's `timestep_embedding(t, dim)` (cos first).
at::Tensor TimestepEmbedding(const at::Tensor& timesteps, int64_t dim,
                             double max_period = 10000.0);

// One child of a TimestepEmbedSequential block.
class UNetLayer {
 public:
  virtual ~UNetLayer() = default;
  virtual at::Tensor Forward(const at::Tensor& x, const at::Tensor& emb,
                             const at::Tensor& context) const = 0;
};

class UNetModel {
 public:
  UNetModel(const UNetConfig& config, const ParamScope& scope);
  ~UNetModel();

  // x: [B, in_channels, h, w]; timesteps: [B] (any numeric dtype);
  // context: [B, L, context_dim] or undefined; class_labels: [B] int64 or
  // undefined. Returns [B, out_channels, h, w].
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& timesteps,
                     const at::Tensor& context,
                     const at::Tensor& class_labels = at::Tensor()) const;

  const UNetConfig& config() const { return config_; }

 private:
  using Block = std::vector<std::unique_ptr<UNetLayer>>;
  static at::Tensor RunBlock(const Block& block, at::Tensor h,
                             const at::Tensor& emb, const at::Tensor& context);

  UNetConfig config_;
  std::unique_ptr<Linear> time_embed_[2];
  std::unique_ptr<Embedding> label_emb_;
  std::vector<Block> input_blocks_;
  Block middle_block_;
  std::vector<Block> output_blocks_;
  std::unique_ptr<GroupNorm> out_norm_;
  std::unique_ptr<Conv2d> out_conv_;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_UNET_H_
