// The pre-LayerNorm transformer layer both text encoders are built from: the
// word-level encoder of our own models (x-transformers) and the CLIP text
// tower of SD v1 (Hugging Face CLIPEncoderLayer):
//   x = x + out(attention(norm1(x)));  x = x + ff_out(act(ff_in(norm2(x)))).
// What differs between the two is a parameter of the layer, not a second
// implementation: biases on q/k/v, the activation, where q is scaled (each
// reference rounds its own way; parity keeps both), and the attention mask.
#ifndef LDMSERVE_SERVER_LDM_TRANSFORMER_LAYER_H_
#define LDMSERVE_SERVER_LDM_TRANSFORMER_LAYER_H_

#include <ATen/ATen.h>

#include <cstdint>

#include "server/ldm/layers.h"
#include "server/ldm/parameters.h"

namespace ldm {

// The feed-forward activation: OpenAI CLIP's x * sigmoid(1.702 x), or the
// exact GELU (CLIP configs name it "hidden_act"; the word-level encoder always
// uses GELU).
enum class FeedForwardActivation { kQuickGelu, kGelu };

// Where 1/sqrt(head_dim) is applied. x-transformers scales the scores
// (q k^T * s); CLIP scales the projected query (bias included) before the
// product. Equal in exact arithmetic, not in float.
enum class QueryScaling { kScores, kProjectedQuery };

struct TransformerLayerShape {
  int64_t dim = 0;
  int64_t heads = 1;
  int64_t head_dim = 0;  // 0: dim / heads.
  int64_t feed_forward_dim = 0;
  double layer_norm_eps = 1e-5;
  bool qkv_bias = true;
  FeedForwardActivation activation = FeedForwardActivation::kGelu;
  QueryScaling query_scaling = QueryScaling::kScores;
};

// Where each parameter group lives in the checkpoint.
struct TransformerLayerScopes {
  ParamScope attention_norm;
  ParamScope q, k, v, out;
  ParamScope feed_forward_norm;
  ParamScope feed_forward_in, feed_forward_out;
};

class TransformerLayer {
 public:
  TransformerLayer(const TransformerLayerScopes& scopes,
                   const TransformerLayerShape& shape);

  // x: [B, T, dim]. `attention_mask`, if given, is [T, T] and added to the
  // scores (-inf hides a key), as Attention() takes it.
  at::Tensor Forward(at::Tensor x, const at::Tensor& attention_mask = {}) const;

 private:
  int64_t HeadDim() const {
    return shape_.head_dim > 0 ? shape_.head_dim : shape_.dim / shape_.heads;
  }

  TransformerLayerShape shape_;
  LayerNorm attention_norm_;
  Linear q_, k_, v_, out_;
  LayerNorm feed_forward_norm_;
  Linear feed_forward_in_, feed_forward_out_;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_TRANSFORMER_LAYER_H_
