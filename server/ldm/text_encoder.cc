#include "server/ldm/text_encoder.h"

#include <cctype>

#include "server/ldm/layers.h"
#include "server/ldm/transformer_layer.h"

namespace ldm {

WordTokenizer::WordTokenizer(std::vector<std::string> vocab, int64_t max_length)
    : max_length_(max_length) {
  for (size_t i = 0; i < vocab.size(); ++i) {
    ids_.emplace(vocab[i], static_cast<int64_t>(i));
  }
}

WordTokenizer::Encoding WordTokenizer::Encode(const std::string& text) const {
  Encoding encoding;
  std::string word;
  auto flush = [&] {
    if (word.empty()) return;
    if (static_cast<int64_t>(encoding.ids.size()) >= max_length_) {
      encoding.truncated = true;
    } else {
      auto it = ids_.find(word);
      if (it == ids_.end()) {
        ++encoding.unknown_words;
        encoding.ids.push_back(kUnknownId);
      } else {
        encoding.ids.push_back(it->second);
      }
    }
    word.clear();
  };
  for (unsigned char c : text) {
    if (std::isalnum(c)) {
      word.push_back(static_cast<char>(std::tolower(c)));
    } else {
      flush();
    }
  }
  flush();
  encoding.ids.resize(max_length_, kPadId);
  return encoding;
}

TextTransformer::TextTransformer(const TextEncoderConfig& config,
                                 const ParamScope& scope)
    : config_(config) {
  const ParamScope transformer = scope.Sub("transformer");
  token_emb_ = std::make_unique<Embedding>(transformer.Sub("token_emb"),
                                           config.NumTokens(), config.dim);
  pos_emb_ = std::make_unique<Embedding>(transformer.Sub("pos_emb").Sub("emb"),
                                         config.max_length, config.dim);
  const ParamScope layers = transformer.Sub("attn_layers").Sub("layers");
  TransformerLayerShape shape;
  shape.dim = config.dim;
  shape.heads = config.heads;
  shape.head_dim = config.HeadDim();
  shape.feed_forward_dim = config.dim * 4;
  shape.qkv_bias = false;
  shape.activation = FeedForwardActivation::kGelu;
  shape.query_scaling = QueryScaling::kScores;
  for (int i = 0; i < config.depth; ++i) {
    // x-transformers: layers.{2i} = (norm, attention), layers.{2i+1} =
    // (norm, feed-forward net: Sequential(GELU-wrapped Linear, Dropout,
    // Linear)).
    const ParamScope attention = layers.Sub(2 * i);
    const ParamScope feed_forward = layers.Sub(2 * i + 1);
    const ParamScope net = feed_forward.Sub(1).Sub("net");
    const TransformerLayerScopes scopes{
        /*attention_norm=*/attention.Sub(0),
        /*q=*/attention.Sub(1).Sub("to_q"),
        /*k=*/attention.Sub(1).Sub("to_k"),
        /*v=*/attention.Sub(1).Sub("to_v"),
        /*out=*/attention.Sub(1).Sub("to_out"),
        /*feed_forward_norm=*/feed_forward.Sub(0),
        /*feed_forward_in=*/net.Sub(0).Sub(0),
        /*feed_forward_out=*/net.Sub(2)};
    layers_.push_back(std::make_unique<TransformerLayer>(scopes, shape));
  }
  norm_ = std::make_unique<LayerNorm>(transformer.Sub("norm"), config.dim);
}

TextTransformer::~TextTransformer() = default;

at::Tensor TextTransformer::Forward(const at::Tensor& ids) const {
  const int64_t length = ids.size(1);
  at::Tensor positions = at::arange(length, ids.options()).unsqueeze(0);
  at::Tensor x = token_emb_->Forward(ids) + pos_emb_->Forward(positions);
  for (const auto& layer : layers_) x = layer->Forward(x);
  return norm_->Forward(x);
}

}  // namespace ldm
