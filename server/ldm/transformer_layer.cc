#include "server/ldm/transformer_layer.h"

#include <cmath>

namespace ldm {

TransformerLayer::TransformerLayer(const TransformerLayerScopes& scopes,
                                   const TransformerLayerShape& shape)
    : shape_(shape),
      attention_norm_(scopes.attention_norm, shape.dim, shape.layer_norm_eps),
      q_(scopes.q, shape.dim, shape.heads * HeadDim(), shape.qkv_bias),
      k_(scopes.k, shape.dim, shape.heads * HeadDim(), shape.qkv_bias),
      v_(scopes.v, shape.dim, shape.heads * HeadDim(), shape.qkv_bias),
      out_(scopes.out, shape.heads * HeadDim(), shape.dim),
      feed_forward_norm_(scopes.feed_forward_norm, shape.dim,
                         shape.layer_norm_eps),
      feed_forward_in_(scopes.feed_forward_in, shape.dim,
                       shape.feed_forward_dim),
      feed_forward_out_(scopes.feed_forward_out, shape.feed_forward_dim,
                        shape.dim) {}

at::Tensor TransformerLayer::Forward(at::Tensor x,
                                     const at::Tensor& attention_mask) const {
  const int64_t heads = shape_.heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(HeadDim()));
  const at::Tensor normed = attention_norm_.Forward(x);
  at::Tensor query = q_.Forward(normed);
  double score_scale = scale;
  if (shape_.query_scaling == QueryScaling::kProjectedQuery) {
    query = query * scale;
    score_scale = 1.0;
  }
  const at::Tensor attended = MergeHeads(
      Attention(SplitHeads(query, heads), SplitHeads(k_.Forward(normed), heads),
                SplitHeads(v_.Forward(normed), heads), score_scale,
                attention_mask),
      heads);
  x = x + out_.Forward(attended);
  at::Tensor hidden = feed_forward_in_.Forward(feed_forward_norm_.Forward(x));
  hidden = shape_.activation == FeedForwardActivation::kQuickGelu
               ? hidden * at::sigmoid(1.702 * hidden)
               : at::gelu(hidden);
  return x + feed_forward_out_.Forward(hidden);
}

}  // namespace ldm
