// The text encoder of our own small models: a word-level tokenizer over a
// fixed vocabulary and a bidirectional pre-LayerNorm transformer, the way the
// paper builds its text-to-image model's encoder (a transformer trained
// jointly with the UNet). Parameter names follow the x-transformers
// `TransformerWrapper` the reference's `BERTEmbedder` wraps:
// transformer.token_emb, transformer.pos_emb.emb,
// transformer.attn_layers.layers.{2i}.{0: norm, 1: attention},
// transformer.attn_layers.layers.{2i+1}.{0: norm, 1: feed-forward},
// transformer.norm.
#ifndef LDMSERVE_SERVER_LDM_TEXT_ENCODER_H_
#define LDMSERVE_SERVER_LDM_TEXT_ENCODER_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "server/ldm/model_config.h"
#include "server/ldm/parameters.h"

namespace ldm {

class Embedding;
class LayerNorm;
class TransformerLayer;

// Lower-cases, splits on anything that is not a letter or digit, maps words to
// ids (0 = padding, 1 = unknown word), pads or truncates to `max_length`.
class WordTokenizer {
 public:
  static constexpr int64_t kPadId = 0;
  static constexpr int64_t kUnknownId = 1;

  WordTokenizer(std::vector<std::string> vocab, int64_t max_length);

  struct Encoding {
    std::vector<int64_t> ids;  // Exactly max_length entries.
    bool truncated = false;
    int unknown_words = 0;
  };
  Encoding Encode(const std::string& text) const;

 private:
  std::unordered_map<std::string, int64_t> ids_;
  int64_t max_length_;
};

class TextTransformer {
 public:
  TextTransformer(const TextEncoderConfig& config, const ParamScope& scope);
  ~TextTransformer();

  // ids: [B, L] int64 -> [B, L, dim].
  at::Tensor Forward(const at::Tensor& ids) const;

 private:
  TextEncoderConfig config_;
  std::unique_ptr<Embedding> token_emb_;
  std::unique_ptr<Embedding> pos_emb_;
  std::vector<std::unique_ptr<TransformerLayer>> layers_;
  std::unique_ptr<LayerNorm> norm_;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_TEXT_ENCODER_H_
