// The CLIP text transformer Stable Diffusion v1 conditions on (OpenAI
// `clip/model.py` text tower, in Hugging Face `CLIPTextModel` names as SD v1
// checkpoints store it under `cond_stage_model.transformer.text_model.`):
// token + position embeddings, pre-LayerNorm layers with causal
// self-attention and a quick-GELU MLP, and a final LayerNorm.
//
// Encode() returns the UNet context: the final LayerNorm of the last layer's
// output, or of an earlier layer's ("clip skip": 2 = the penultimate).
// Forward() is const and thread-compatible.
#ifndef LDMSERVE_SERVER_LDM_CLIP_TEXT_MODEL_H_
#define LDMSERVE_SERVER_LDM_CLIP_TEXT_MODEL_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/ldm/parameters.h"
#include "server/ldm/transformer_layer.h"

namespace ldm {

class Embedding;
class LayerNorm;

// "quick_gelu" or "gelu", as CLIP configs name the activation.
absl::string_view ClipActivationName(FeedForwardActivation activation);

struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_attention_heads = 12;
  int64_t num_hidden_layers = 12;
  int64_t max_position_embeddings = 77;
  double layer_norm_eps = 1e-5;
  FeedForwardActivation hidden_act = FeedForwardActivation::kQuickGelu;
  std::string checkpoint_prefix = "cond_stage_model.transformer.text_model.";
};

// A Hugging Face CLIPTextConfig-style JSON (the fields above).
absl::StatusOr<ClipTextConfig> ParseClipTextConfig(const std::string& json);

class ClipTextModel {
 public:
  // Declares the parameters under `scope` (embeddings.*, encoder.layers.*,
  // final_layer_norm.* within it).
  ClipTextModel(const ClipTextConfig& config, const ParamScope& scope);
  ~ClipTextModel();

  // Builds from a config file and loads `weights_path` through the real
  // loader (strict; `embeddings.position_ids` is optional and ignored: the
  // positions are always 0..L-1).
  static absl::StatusOr<std::unique_ptr<ClipTextModel>> Load(
      const std::string& config_path, const std::string& weights_path);

  struct Output {
    at::Tensor last_hidden_state;           // final_layer_norm(last layer)
    std::vector<at::Tensor> hidden_states;  // embeddings, then each layer
  };
  // ids: [B, L] int64, L <= max_position_embeddings.
  Output Forward(const at::Tensor& ids) const;
  // final_layer_norm(hidden_states[-clip_skip]); clip_skip 1 = last layer.
  at::Tensor Encode(const at::Tensor& ids, int clip_skip = 1) const;
  at::Tensor FinalLayerNorm(const at::Tensor& x) const;

  const ClipTextConfig& config() const { return config_; }

 private:
  ClipTextConfig config_;
  // Owns the parameters when built by Load().
  std::unique_ptr<ParameterRegistry> own_registry_;
  std::unique_ptr<Embedding> token_embedding_;
  std::unique_ptr<Embedding> position_embedding_;
  std::vector<std::unique_ptr<TransformerLayer>> layers_;
  std::unique_ptr<LayerNorm> final_layer_norm_;
};

}  // namespace ldm

#endif  // LDMSERVE_SERVER_LDM_CLIP_TEXT_MODEL_H_
