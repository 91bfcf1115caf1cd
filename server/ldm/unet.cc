#include "server/ldm/unet.h"

#include <algorithm>
#include <cmath>

#include "server/ldm/layers.h"

namespace ldm {
namespace {

constexpr double kUNetNormEps = 1e-5;         // GroupNorm32 default.
constexpr double kTransformerNormEps = 1e-6;  // attention.Normalize.

// How a ResBlock resamples (resblock_updown): both its paths are pooled
// (down) or nearest-upsampled (up) between the first norm and the conv.
enum class Resample { kNone, kDown, kUp };

at::Tensor ResampleWithoutConv(const at::Tensor& x, Resample resample) {
  switch (resample) {
    case Resample::kNone:
      return x;
    case Resample::kDown:
      return at::avg_pool2d(x, {2, 2}, {2, 2});
    case Resample::kUp:
      return at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2});
  }
  return x;
}

class ResBlock : public UNetLayer {
 public:
  ResBlock(const ParamScope& scope, int64_t channels, int64_t emb_channels,
           int64_t out_channels, bool use_scale_shift_norm,
           Resample resample = Resample::kNone)
      : use_scale_shift_norm_(use_scale_shift_norm),
        resample_(resample),
        in_norm_(scope.Sub("in_layers").Sub(0), 32, channels, kUNetNormEps),
        in_conv_(scope.Sub("in_layers").Sub(2), channels, out_channels, 3, 1,
                 1),
        emb_linear_(scope.Sub("emb_layers").Sub(1), emb_channels,
                    use_scale_shift_norm ? 2 * out_channels : out_channels),
        out_norm_(scope.Sub("out_layers").Sub(0), 32, out_channels,
                  kUNetNormEps),
        out_conv_(scope.Sub("out_layers").Sub(3), out_channels, out_channels, 3,
                  1, 1) {
    if (out_channels != channels) {
      skip_ = std::make_unique<Conv2d>(scope.Sub("skip_connection"), channels,
                                       out_channels, 1);
    }
  }

  at::Tensor Forward(const at::Tensor& input, const at::Tensor& emb,
                     const at::Tensor&) const override {
    at::Tensor h = in_conv_.Forward(
        ResampleWithoutConv(at::silu(in_norm_.Forward(input)), resample_));
    const at::Tensor x = ResampleWithoutConv(input, resample_);
    at::Tensor emb_out = emb_linear_.Forward(at::silu(emb))
                             .to(h.scalar_type())
                             .unsqueeze(-1)
                             .unsqueeze(-1);
    if (use_scale_shift_norm_) {
      auto scale_shift = emb_out.chunk(2, 1);
      h = out_norm_.Forward(h) * (1 + scale_shift[0]) + scale_shift[1];
      h = out_conv_.Forward(at::silu(h));
    } else {
      h = out_conv_.Forward(at::silu(out_norm_.Forward(h + emb_out)));
    }
    return (skip_ ? skip_->Forward(x) : x) + h;
  }

 private:
  bool use_scale_shift_norm_;
  Resample resample_;
  GroupNorm in_norm_;
  Conv2d in_conv_;
  Linear emb_linear_;
  GroupNorm out_norm_;
  Conv2d out_conv_;
  std::unique_ptr<Conv2d> skip_;
};

class Downsample : public UNetLayer {
 public:
  Downsample(const ParamScope& scope, int64_t channels)
      : op_(scope.Sub("op"), channels, channels, 3, 2, 1) {}
  at::Tensor Forward(const at::Tensor& x, const at::Tensor&,
                     const at::Tensor&) const override {
    return op_.Forward(x);
  }

 private:
  Conv2d op_;
};

class Upsample : public UNetLayer {
 public:
  Upsample(const ParamScope& scope, int64_t channels)
      : conv_(scope.Sub("conv"), channels, channels, 3, 1, 1) {}
  at::Tensor Forward(const at::Tensor& x, const at::Tensor&,
                     const at::Tensor&) const override {
    return conv_.Forward(
        at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2}));
  }

 private:
  Conv2d conv_;
};

class InputConv : public UNetLayer {
 public:
  InputConv(const ParamScope& scope, int64_t in_channels, int64_t channels)
      : conv_(scope, in_channels, channels, 3, 1, 1) {}
  at::Tensor Forward(const at::Tensor& x, const at::Tensor&,
                     const at::Tensor&) const override {
    return conv_.Forward(x);
  }

 private:
  Conv2d conv_;
};

class CrossAttention {
 public:
  CrossAttention(const ParamScope& scope, int64_t query_dim,
                 int64_t context_dim, int64_t heads, int64_t dim_head)
      : heads_(heads),
        scale_(1.0 / std::sqrt(static_cast<double>(dim_head))),
        to_q_(scope.Sub("to_q"), query_dim, heads * dim_head, false),
        to_k_(scope.Sub("to_k"), context_dim, heads * dim_head, false),
        to_v_(scope.Sub("to_v"), context_dim, heads * dim_head, false),
        to_out_(scope.Sub("to_out").Sub(0), heads * dim_head, query_dim) {}

  // context undefined = self-attention.
  at::Tensor Forward(const at::Tensor& x, const at::Tensor& context) const {
    const at::Tensor& source = context.defined() ? context : x;
    at::Tensor q = SplitHeads(to_q_.Forward(x), heads_);
    at::Tensor k = SplitHeads(to_k_.Forward(source), heads_);
    at::Tensor v = SplitHeads(to_v_.Forward(source), heads_);
    return to_out_.Forward(MergeHeads(Attention(q, k, v, scale_), heads_));
  }

 private:
  int64_t heads_;
  double scale_;
  Linear to_q_, to_k_, to_v_, to_out_;
};

class BasicTransformerBlock {
 public:
  BasicTransformerBlock(const ParamScope& scope, int64_t dim, int64_t heads,
                        int64_t dim_head, int64_t context_dim)
      : attn1_(scope.Sub("attn1"), dim, dim, heads, dim_head),
        attn2_(scope.Sub("attn2"), dim, context_dim, heads, dim_head),
        ff_proj_(scope.Sub("ff").Sub("net").Sub(0).Sub("proj"), dim,
                 dim * 4 * 2),
        ff_out_(scope.Sub("ff").Sub("net").Sub(2), dim * 4, dim),
        norm1_(scope.Sub("norm1"), dim),
        norm2_(scope.Sub("norm2"), dim),
        norm3_(scope.Sub("norm3"), dim) {}

  at::Tensor Forward(at::Tensor x, const at::Tensor& context) const {
    x = attn1_.Forward(norm1_.Forward(x), at::Tensor()) + x;
    x = attn2_.Forward(norm2_.Forward(x), context) + x;
    auto value_gate = ff_proj_.Forward(norm3_.Forward(x)).chunk(2, -1);
    return ff_out_.Forward(value_gate[0] * at::gelu(value_gate[1])) + x;
  }

 private:
  CrossAttention attn1_, attn2_;
  Linear ff_proj_, ff_out_;
  LayerNorm norm1_, norm2_, norm3_;
};

class SpatialTransformer : public UNetLayer {
 public:
  SpatialTransformer(const ParamScope& scope, int64_t channels, int64_t heads,
                     int64_t dim_head, int64_t depth, int64_t context_dim)
      : norm_(scope.Sub("norm"), 32, channels, kTransformerNormEps),
        proj_in_(scope.Sub("proj_in"), channels, heads * dim_head, 1),
        proj_out_(scope.Sub("proj_out"), heads * dim_head, channels, 1) {
    for (int64_t i = 0; i < depth; ++i) {
      blocks_.push_back(std::make_unique<BasicTransformerBlock>(
          scope.Sub("transformer_blocks").Sub(static_cast<int>(i)),
          heads * dim_head, heads, dim_head, context_dim));
    }
  }

  at::Tensor Forward(const at::Tensor& x, const at::Tensor&,
                     const at::Tensor& context) const override {
    const int64_t b = x.size(0), h = x.size(2), w = x.size(3);
    at::Tensor tokens = proj_in_.Forward(norm_.Forward(x));
    const int64_t inner = tokens.size(1);
    tokens = tokens.permute({0, 2, 3, 1}).reshape({b, h * w, inner});
    for (const auto& block : blocks_) tokens = block->Forward(tokens, context);
    tokens = tokens.reshape({b, h, w, inner}).permute({0, 3, 1, 2});
    return proj_out_.Forward(tokens.contiguous()) + x;
  }

 private:
  GroupNorm norm_;
  Conv2d proj_in_, proj_out_;
  std::vector<std::unique_ptr<BasicTransformerBlock>> blocks_;
};

// openaimodel.AttentionBlock with QKVAttentionLegacy: qkv is split per head
// after the reshape (interleaved), q and k are each scaled by ch^-1/4 and the
// softmax runs in float32.
class AttentionBlock : public UNetLayer {
 public:
  AttentionBlock(const ParamScope& scope, int64_t channels, int64_t heads)
      : heads_(heads),
        norm_(scope.Sub("norm"), 32, channels, kUNetNormEps),
        qkv_(scope.Sub("qkv"), channels, channels * 3),
        proj_out_(scope.Sub("proj_out"), channels, channels) {}

  at::Tensor Forward(const at::Tensor& x, const at::Tensor&,
                     const at::Tensor&) const override {
    const int64_t b = x.size(0), c = x.size(1);
    at::Tensor flat = x.reshape({b, c, -1});
    const int64_t length = flat.size(2);
    at::Tensor qkv = qkv_.Forward(norm_.Forward(flat));
    const int64_t ch = c / heads_;
    auto parts = qkv.reshape({b * heads_, ch * 3, length}).split(ch, 1);
    const double scale = 1.0 / std::sqrt(std::sqrt(static_cast<double>(ch)));
    CountFlops(2 * 2 * b * heads_ * length * length * ch);
    at::Tensor weight =
        at::bmm((parts[0] * scale).transpose(1, 2), parts[1] * scale);
    weight = at::softmax(weight.to(at::kFloat), -1).to(weight.scalar_type());
    at::Tensor attended = at::bmm(parts[2], weight.transpose(1, 2));
    return (flat + proj_out_.Forward(attended.reshape({b, -1, length})))
        .reshape(x.sizes());
  }

 private:
  int64_t heads_;
  GroupNorm norm_;
  Conv1x1d qkv_, proj_out_;
};

struct HeadLayout {
  int64_t heads;
  int64_t dim_head;
};

// The reference's head arithmetic, including its `legacy` quirk.
HeadLayout HeadsFor(const UNetConfig& config, int64_t channels) {
  int64_t heads = config.num_heads;
  int64_t dim_head;
  if (config.num_head_channels == -1 || config.num_head_channels <= 0) {
    dim_head = channels / heads;
  } else {
    heads = channels / config.num_head_channels;
    dim_head = config.num_head_channels;
  }
  if (config.legacy) {
    dim_head = config.use_spatial_transformer ? channels / heads
                                              : config.num_head_channels;
  }
  if (!config.use_spatial_transformer && dim_head > 0) {
    // AttentionBlock derives its head count from num_head_channels.
    heads = channels / dim_head;
  }
  return {heads, dim_head};
}

std::unique_ptr<UNetLayer> MakeAttention(const UNetConfig& config,
                                         const ParamScope& scope,
                                         int64_t channels) {
  const HeadLayout layout = HeadsFor(config, channels);
  if (config.use_spatial_transformer) {
    return std::make_unique<SpatialTransformer>(
        scope, channels, layout.heads, layout.dim_head,
        config.transformer_depth, config.context_dim);
  }
  return std::make_unique<AttentionBlock>(scope, channels, layout.heads);
}

bool HasAttention(const UNetConfig& config, int64_t ds) {
  return std::find(config.attention_resolutions.begin(),
                   config.attention_resolutions.end(),
                   ds) != config.attention_resolutions.end();
}

}  // namespace

at::Tensor TimestepEmbedding(const at::Tensor& timesteps, int64_t dim,
                             double max_period) {
  const int64_t half = dim / 2;
  at::Tensor freqs =
      at::exp(-std::log(max_period) *
              at::arange(0, half, timesteps.options().dtype(at::kFloat)) /
              static_cast<double>(half));
  at::Tensor args = timesteps.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  at::Tensor embedding = at::cat({at::cos(args), at::sin(args)}, -1);
  if (dim % 2 == 1) {
    embedding =
        at::cat({embedding, at::zeros_like(embedding.slice(1, 0, 1))}, -1);
  }
  return embedding;
}

UNetModel::UNetModel(const UNetConfig& config, const ParamScope& scope)
    : config_(config) {
  const int64_t mc = config.model_channels;
  const int64_t emb_dim = mc * 4;
  time_embed_[0] =
      std::make_unique<Linear>(scope.Sub("time_embed").Sub(0), mc, emb_dim);
  time_embed_[1] = std::make_unique<Linear>(scope.Sub("time_embed").Sub(2),
                                            emb_dim, emb_dim);
  if (config.num_classes > 0) {
    label_emb_ = std::make_unique<Embedding>(scope.Sub("label_emb"),
                                             config.num_classes, emb_dim);
  }
  const ParamScope inputs = scope.Sub("input_blocks");
  auto new_block = [](std::vector<Block>* blocks) -> Block& {
    blocks->emplace_back();
    return blocks->back();
  };
  new_block(&input_blocks_)
      .push_back(std::make_unique<InputConv>(inputs.Sub(0).Sub(0),
                                             config.in_channels, mc));
  std::vector<int64_t> skip_channels = {mc};
  int64_t ch = mc;
  int64_t ds = 1;
  const int levels = static_cast<int>(config.channel_mult.size());
  for (int level = 0; level < levels; ++level) {
    for (int64_t i = 0; i < config.num_res_blocks; ++i) {
      const ParamScope block_scope =
          inputs.Sub(static_cast<int>(input_blocks_.size()));
      Block& block = new_block(&input_blocks_);
      const int64_t out = config.channel_mult[level] * mc;
      block.push_back(std::make_unique<ResBlock>(
          block_scope.Sub(0), ch, emb_dim, out, config.use_scale_shift_norm));
      ch = out;
      if (HasAttention(config, ds)) {
        block.push_back(MakeAttention(config, block_scope.Sub(1), ch));
      }
      skip_channels.push_back(ch);
    }
    if (level != levels - 1) {
      const ParamScope block_scope =
          inputs.Sub(static_cast<int>(input_blocks_.size()));
      if (config.resblock_updown) {
        new_block(&input_blocks_)
            .push_back(std::make_unique<ResBlock>(
                block_scope.Sub(0), ch, emb_dim, ch,
                config.use_scale_shift_norm, Resample::kDown));
      } else {
        new_block(&input_blocks_)
            .push_back(std::make_unique<Downsample>(block_scope.Sub(0), ch));
      }
      skip_channels.push_back(ch);
      ds *= 2;
    }
  }
  const ParamScope middle = scope.Sub("middle_block");
  middle_block_.push_back(std::make_unique<ResBlock>(
      middle.Sub(0), ch, emb_dim, ch, config.use_scale_shift_norm));
  middle_block_.push_back(MakeAttention(config, middle.Sub(1), ch));
  middle_block_.push_back(std::make_unique<ResBlock>(
      middle.Sub(2), ch, emb_dim, ch, config.use_scale_shift_norm));

  const ParamScope outputs = scope.Sub("output_blocks");
  for (int level = levels - 1; level >= 0; --level) {
    for (int64_t i = 0; i <= config.num_res_blocks; ++i) {
      const ParamScope block_scope =
          outputs.Sub(static_cast<int>(output_blocks_.size()));
      Block& block = new_block(&output_blocks_);
      const int64_t skip = skip_channels.back();
      skip_channels.pop_back();
      const int64_t out = config.channel_mult[level] * mc;
      block.push_back(std::make_unique<ResBlock>(block_scope.Sub(0), ch + skip,
                                                 emb_dim, out,
                                                 config.use_scale_shift_norm));
      ch = out;
      if (HasAttention(config, ds)) {
        block.push_back(MakeAttention(config, block_scope.Sub(1), ch));
      }
      if (level > 0 && i == config.num_res_blocks) {
        const ParamScope upsample_scope =
            block_scope.Sub(static_cast<int>(block.size()));
        if (config.resblock_updown) {
          block.push_back(std::make_unique<ResBlock>(
              upsample_scope, ch, emb_dim, ch, config.use_scale_shift_norm,
              Resample::kUp));
        } else {
          block.push_back(std::make_unique<Upsample>(upsample_scope, ch));
        }
        ds /= 2;
      }
    }
  }
  out_norm_ = std::make_unique<GroupNorm>(scope.Sub("out").Sub(0), 32, ch,
                                          kUNetNormEps);
  out_conv_ = std::make_unique<Conv2d>(scope.Sub("out").Sub(2), mc,
                                       config.out_channels, 3, 1, 1);
}

UNetModel::~UNetModel() = default;

at::Tensor UNetModel::RunBlock(const Block& block, at::Tensor h,
                               const at::Tensor& emb,
                               const at::Tensor& context) {
  for (const auto& layer : block) h = layer->Forward(h, emb, context);
  return h;
}

at::Tensor UNetModel::Forward(const at::Tensor& x, const at::Tensor& timesteps,
                              const at::Tensor& context,
                              const at::Tensor& class_labels) const {
  at::Tensor emb = time_embed_[1]->Forward(at::silu(time_embed_[0]->Forward(
      TimestepEmbedding(timesteps, config_.model_channels)
          .to(x.scalar_type()))));
  if (label_emb_ && class_labels.defined()) {
    emb = emb + label_emb_->Forward(class_labels);
  }
  std::vector<at::Tensor> skips;
  skips.reserve(input_blocks_.size());
  at::Tensor h = x;
  for (const Block& block : input_blocks_) {
    h = RunBlock(block, h, emb, context);
    skips.push_back(h);
  }
  h = RunBlock(middle_block_, h, emb, context);
  for (const Block& block : output_blocks_) {
    h = RunBlock(block, at::cat({h, skips.back()}, 1), emb, context);
    skips.pop_back();
  }
  return out_conv_->Forward(at::silu(out_norm_->Forward(h)));
}

}  // namespace ldm
