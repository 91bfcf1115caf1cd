#include "server/ldm/autoencoder.h"

#include <algorithm>
#include <cmath>

#include "server/ldm/layers.h"
#include "server/ldm/sampler.h"

namespace ldm {
namespace {

constexpr double kNormEps = 1e-6;  // model.Normalize

// The reference's nonlinearity (x * sigmoid(x)) into `x`'s own memory: the
// same kernel as at::silu, one full-size tensor fewer.
at::Tensor SiluInPlace(at::Tensor x) {
  at::silu_(x);
  return x;
}

class ResnetBlock {
 public:
  ResnetBlock(const ParamScope& scope, int64_t in_channels,
              int64_t out_channels)
      : norm1_(scope.Sub("norm1"), 32, in_channels, kNormEps),
        conv1_(scope.Sub("conv1"), in_channels, out_channels, 3, 1, 1),
        norm2_(scope.Sub("norm2"), 32, out_channels, kNormEps),
        conv2_(scope.Sub("conv2"), out_channels, out_channels, 3, 1, 1) {
    if (in_channels != out_channels) {
      nin_shortcut_ = std::make_unique<Conv2d>(scope.Sub("nin_shortcut"),
                                               in_channels, out_channels, 1);
    }
  }

  // Takes `x` by value and lets it go once the shortcut and the first norm
  // have read it, SiLU and the residual add in place: the same arithmetic
  // with fewer full-size tensors alive (at 512x512 one of the last decoder
  // level's inputs is 256 MiB).
  at::Tensor Forward(at::Tensor x) const {
    const at::Tensor shortcut = nin_shortcut_ ? nin_shortcut_->Forward(x) : x;
    at::Tensor h = norm1_.Forward(x);
    x.reset();
    h = conv1_.Forward(SiluInPlace(std::move(h)));
    h = conv2_.Forward(SiluInPlace(norm2_.Forward(h)));
    return h.add_(shortcut);
  }

 private:
  GroupNorm norm1_;
  Conv2d conv1_;
  GroupNorm norm2_;
  Conv2d conv2_;
  std::unique_ptr<Conv2d> nin_shortcut_;
};

// Single-head spatial self-attention with scale C^-1/2.
class AttnBlock {
 public:
  AttnBlock(const ParamScope& scope, int64_t channels)
      : norm_(scope.Sub("norm"), 32, channels, kNormEps),
        q_(scope.Sub("q"), channels, channels, 1),
        k_(scope.Sub("k"), channels, channels, 1),
        v_(scope.Sub("v"), channels, channels, 1),
        proj_out_(scope.Sub("proj_out"), channels, channels, 1) {}

  at::Tensor Forward(const at::Tensor& x) const {
    const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    at::Tensor normed = norm_.Forward(x);
    at::Tensor q = q_.Forward(normed).reshape({b, c, h * w}).transpose(1, 2);
    at::Tensor k = k_.Forward(normed).reshape({b, c, h * w}).transpose(1, 2);
    at::Tensor v = v_.Forward(normed).reshape({b, c, h * w}).transpose(1, 2);
    at::Tensor attended =
        Attention(q, k, v, 1.0 / std::sqrt(static_cast<double>(c)));
    return proj_out_.Forward(attended.transpose(1, 2).reshape({b, c, h, w}))
        .add_(x);
  }

 private:
  GroupNorm norm_;
  Conv2d q_, k_, v_, proj_out_;
};

// One resolution level: blocks, optional attention after each block, and a
// resampling conv (`downsample`/`upsample`) except at the last level.
struct Level {
  // Appends `count` blocks from `*channels` to `out` channels, each followed
  // by an AttnBlock when `attend`; leaves `*channels` at `out`.
  void AddBlocks(const ParamScope& scope, int64_t count, int64_t* channels,
                 int64_t out, bool attend) {
    for (int i = 0; i < count; ++i) {
      blocks.push_back(std::make_unique<ResnetBlock>(scope.Sub("block").Sub(i),
                                                     *channels, out));
      *channels = out;
      if (attend) {
        attentions.push_back(
            std::make_unique<AttnBlock>(scope.Sub("attn").Sub(i), out));
      }
    }
  }

  at::Tensor RunBlocks(at::Tensor h) const {
    for (size_t i = 0; i < blocks.size(); ++i) {
      h = blocks[i]->Forward(std::move(h));
      if (!attentions.empty()) h = attentions[i]->Forward(h);
    }
    return h;
  }

  std::vector<std::unique_ptr<ResnetBlock>> blocks;
  std::vector<std::unique_ptr<AttnBlock>> attentions;
  std::unique_ptr<Conv2d> resample;
};

// attn_type "none" makes every attention an identity (no parameters).
struct Middle {
  Middle(const ParamScope& scope, int64_t channels, bool attend)
      : block_1(scope.Sub("block_1"), channels, channels),
        block_2(scope.Sub("block_2"), channels, channels) {
    if (attend) {
      attn_1 = std::make_unique<AttnBlock>(scope.Sub("attn_1"), channels);
    }
  }
  at::Tensor Forward(const at::Tensor& x) const {
    at::Tensor h = block_1.Forward(x);
    if (attn_1) h = attn_1->Forward(h);
    return block_2.Forward(h);
  }
  ResnetBlock block_1;
  std::unique_ptr<AttnBlock> attn_1;
  ResnetBlock block_2;
};

bool Contains(const std::vector<int64_t>& values, int64_t value) {
  return std::find(values.begin(), values.end(), value) != values.end();
}

}  // namespace

class Autoencoder::Encoder {
 public:
  Encoder(const AutoencoderConfig& c, const ParamScope& scope)
      : conv_in_(scope.Sub("conv_in"), c.in_channels, c.ch, 3, 1, 1) {
    int64_t resolution = c.resolution;
    int64_t block_in = c.ch;
    const int levels = static_cast<int>(c.ch_mult.size());
    for (int level = 0; level < levels; ++level) {
      const ParamScope level_scope = scope.Sub("down").Sub(level);
      Level& current = levels_.emplace_back();
      current.AddBlocks(level_scope, c.num_res_blocks, &block_in,
                        c.ch * c.ch_mult[level],
                        c.attn_type != AutoencoderAttention::kNone &&
                            Contains(c.attn_resolutions, resolution));
      if (level != levels - 1) {
        current.resample =
            std::make_unique<Conv2d>(level_scope.Sub("downsample").Sub("conv"),
                                     block_in, block_in, 3, 2, 0);
        resolution /= 2;
      }
    }
    mid_ = std::make_unique<Middle>(scope.Sub("mid"), block_in,
                                    c.attn_type != AutoencoderAttention::kNone);
    norm_out_ = std::make_unique<GroupNorm>(scope.Sub("norm_out"), 32, block_in,
                                            kNormEps);
    conv_out_ = std::make_unique<Conv2d>(
        scope.Sub("conv_out"), block_in,
        c.double_z ? 2 * c.z_channels : c.z_channels, 3, 1, 1);
  }

  at::Tensor Forward(const at::Tensor& x) const {
    at::Tensor h = conv_in_.Forward(x);
    for (const Level& level : levels_) {
      h = level.RunBlocks(std::move(h));
      if (level.resample) {
        // The reference pads right and bottom only, then convolves with
        // stride 2 and no padding.
        const at::Tensor padded = at::constant_pad_nd(h, {0, 1, 0, 1}, 0);
        h.reset();
        h = level.resample->Forward(padded);
      }
    }
    h = mid_->Forward(h);
    h = SiluInPlace(norm_out_->Forward(h));
    return conv_out_->Forward(h);
  }

 private:
  Conv2d conv_in_;
  std::vector<Level> levels_;
  std::unique_ptr<Middle> mid_;
  std::unique_ptr<GroupNorm> norm_out_;
  std::unique_ptr<Conv2d> conv_out_;
};

class Autoencoder::Decoder {
 public:
  Decoder(const AutoencoderConfig& c, const ParamScope& scope) {
    const int levels = static_cast<int>(c.ch_mult.size());
    int64_t block_in = c.ch * c.ch_mult[levels - 1];
    int64_t resolution = c.resolution >> (levels - 1);
    conv_in_ = std::make_unique<Conv2d>(scope.Sub("conv_in"), c.z_channels,
                                        block_in, 3, 1, 1);
    mid_ = std::make_unique<Middle>(scope.Sub("mid"), block_in,
                                    c.attn_type != AutoencoderAttention::kNone);
    levels_.resize(levels);
    // Declared from the lowest resolution up, as the reference builds them;
    // stored by level index (up.0 is the highest resolution).
    for (int level = levels - 1; level >= 0; --level) {
      const ParamScope level_scope = scope.Sub("up").Sub(level);
      Level& current = levels_[level];
      current.AddBlocks(level_scope, c.num_res_blocks + 1, &block_in,
                        c.ch * c.ch_mult[level],
                        c.attn_type != AutoencoderAttention::kNone &&
                            Contains(c.attn_resolutions, resolution));
      if (level != 0) {
        current.resample =
            std::make_unique<Conv2d>(level_scope.Sub("upsample").Sub("conv"),
                                     block_in, block_in, 3, 1, 1);
        resolution *= 2;
      }
    }
    norm_out_ = std::make_unique<GroupNorm>(scope.Sub("norm_out"), 32, block_in,
                                            kNormEps);
    conv_out_ = std::make_unique<Conv2d>(scope.Sub("conv_out"), block_in,
                                         c.out_ch, 3, 1, 1);
  }

  at::Tensor Forward(const at::Tensor& z) const {
    at::Tensor h = mid_->Forward(conv_in_->Forward(z));
    for (int level = static_cast<int>(levels_.size()) - 1; level >= 0;
         --level) {
      const Level& current = levels_[level];
      h = current.RunBlocks(std::move(h));
      if (current.resample) {
        h = current.resample->ForwardUpsampled2x(h);
      }
    }
    h = SiluInPlace(norm_out_->Forward(h));
    return conv_out_->Forward(h);
  }

 private:
  std::unique_ptr<Conv2d> conv_in_;
  std::unique_ptr<Middle> mid_;
  std::vector<Level> levels_;
  std::unique_ptr<GroupNorm> norm_out_;
  std::unique_ptr<Conv2d> conv_out_;
};

at::Tensor DiagonalGaussian::Sample(at::Generator generator) const {
  return SampleWith(StandardNormal(mean.sizes(), generator, mean.options()));
}

Autoencoder::Autoencoder(const AutoencoderConfig& config,
                         const ParamScope& scope)
    : config_(config),
      encoder_(std::make_unique<Encoder>(config, scope.Sub("encoder"))),
      decoder_(std::make_unique<Decoder>(config, scope.Sub("decoder"))) {
  const int64_t moments = config.kind == AutoencoderKind::kVq ? 1 : 2;
  quant_conv_ = std::make_unique<Conv2d>(scope.Sub("quant_conv"),
                                         moments * config.z_channels,
                                         moments * config.embed_dim, 1);
  post_quant_conv_ = std::make_unique<Conv2d>(
      scope.Sub("post_quant_conv"), config.embed_dim, config.z_channels, 1);
  if (config.kind == AutoencoderKind::kVq) {
    scope.Sub("quantize")
        .Sub("embedding")
        .Declare("weight", {config.n_embed, config.embed_dim}, &codebook_);
  }
}

Autoencoder::~Autoencoder() = default;

at::Tensor Autoencoder::EncodeMoments(const at::Tensor& x) const {
  return quant_conv_->Forward(encoder_->Forward(x));
}

DiagonalGaussian Autoencoder::Posterior(const at::Tensor& moments) {
  auto halves = moments.chunk(2, 1);
  return DiagonalGaussian{halves[0], at::clamp(halves[1], -30.0, 20.0)};
}

at::Tensor Autoencoder::Quantize(const at::Tensor& z) const {
  const int64_t b = z.size(0), c = z.size(1), h = z.size(2), w = z.size(3);
  const at::Tensor flat = z.permute({0, 2, 3, 1}).reshape({-1, c});
  // argmin |z - e|^2 = argmin (|e|^2 - 2 z.e), as VectorQuantizer2.
  const at::Tensor distances = codebook_.pow(2).sum(1).unsqueeze(0) -
                               2 * at::matmul(flat, codebook_.t());
  const at::Tensor nearest = at::embedding(codebook_, distances.argmin(1));
  return nearest.reshape({b, h, w, c}).permute({0, 3, 1, 2}).contiguous();
}

at::Tensor Autoencoder::Decode(const at::Tensor& z) const {
  const at::Tensor latent = is_vq() ? Quantize(z) : z;
  return decoder_->Forward(post_quant_conv_->Forward(latent));
}

}  // namespace ldm
