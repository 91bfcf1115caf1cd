#include "server/ldm/text_encoder.h"

#include <cctype>
#include <cmath>

#include "server/ldm/layers.h"

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

class TextTransformer::Layer {
 public:
  Layer(const ParamScope& attention_scope, const ParamScope& ff_scope,
        int64_t dim, int64_t heads, int64_t head_dim)
      : heads_(heads),
        head_dim_(head_dim),
        attention_norm_(attention_scope.Sub(0), dim),
        to_q_(attention_scope.Sub(1).Sub("to_q"), dim, heads * head_dim, false),
        to_k_(attention_scope.Sub(1).Sub("to_k"), dim, heads * head_dim, false),
        to_v_(attention_scope.Sub(1).Sub("to_v"), dim, heads * head_dim, false),
        to_out_(attention_scope.Sub(1).Sub("to_out"), heads * head_dim, dim),
        ff_norm_(ff_scope.Sub(0), dim),
        ff_in_(ff_scope.Sub(1).Sub("net").Sub(0).Sub(0), dim, dim * 4),
        ff_out_(ff_scope.Sub(1).Sub("net").Sub(2), dim * 4, dim) {}

  at::Tensor Forward(at::Tensor x) const {
    const at::Tensor normed = attention_norm_.Forward(x);
    const at::Tensor attended =
        MergeHeads(Attention(SplitHeads(to_q_.Forward(normed), heads_),
                             SplitHeads(to_k_.Forward(normed), heads_),
                             SplitHeads(to_v_.Forward(normed), heads_),
                             1.0 / std::sqrt(static_cast<double>(head_dim_))),
                   heads_);
    x = x + to_out_.Forward(attended);
    return x + ff_out_.Forward(at::gelu(ff_in_.Forward(ff_norm_.Forward(x))));
  }

 private:
  int64_t heads_;
  int64_t head_dim_;
  LayerNorm attention_norm_;
  Linear to_q_, to_k_, to_v_, to_out_;
  LayerNorm ff_norm_;
  Linear ff_in_, ff_out_;
};

TextTransformer::TextTransformer(const TextEncoderConfig& config,
                                 const ParamScope& scope)
    : config_(config) {
  const ParamScope transformer = scope.Sub("transformer");
  token_emb_ = std::make_unique<Embedding>(transformer.Sub("token_emb"),
                                           config.NumTokens(), config.dim);
  pos_emb_ = std::make_unique<Embedding>(transformer.Sub("pos_emb").Sub("emb"),
                                         config.max_length, config.dim);
  const ParamScope layers = transformer.Sub("attn_layers").Sub("layers");
  for (int i = 0; i < config.depth; ++i) {
    layers_.push_back(std::make_unique<Layer>(layers.Sub(2 * i),
                                              layers.Sub(2 * i + 1), config.dim,
                                              config.heads, config.HeadDim()));
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
