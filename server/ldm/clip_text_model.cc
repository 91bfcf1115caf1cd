#include "server/ldm/clip_text_model.h"

#include <c10/core/InferenceMode.h>

#include <array>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "server/common/enum_names.h"
#include "server/common/status_macros.h"
#include "server/ldm/checkpoint.h"
#include "server/ldm/layers.h"
#include "server/ldm/model_config.h"
#include "server/ldm/safetensors.h"
#include "server/ldm/torch_boundary.h"

namespace ldm {

namespace {
constexpr std::array<EnumName<ClipActivation>, 2> kClipActivationNames = {
    {{ClipActivation::kQuickGelu, "quick_gelu"},
     {ClipActivation::kGelu, "gelu"}}};
}  // namespace

absl::string_view ClipActivationName(ClipActivation activation) {
  return NameOf(kClipActivationNames, activation);
}

absl::StatusOr<ClipTextConfig> ParseClipTextConfig(const std::string& json) {
  const nlohmann::json root =
      nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("clip config: not a JSON object");
  }
  ClipTextConfig config;
  std::string hidden_act(ClipActivationName(config.hidden_act));
  try {
    config.vocab_size = root.value("vocab_size", config.vocab_size);
    config.hidden_size = root.value("hidden_size", config.hidden_size);
    config.intermediate_size =
        root.value("intermediate_size", config.intermediate_size);
    config.num_attention_heads =
        root.value("num_attention_heads", config.num_attention_heads);
    config.num_hidden_layers =
        root.value("num_hidden_layers", config.num_hidden_layers);
    config.max_position_embeddings =
        root.value("max_position_embeddings", config.max_position_embeddings);
    config.layer_norm_eps = root.value("layer_norm_eps", config.layer_norm_eps);
    hidden_act = root.value("hidden_act", hidden_act);
    config.checkpoint_prefix =
        root.value("checkpoint_prefix", config.checkpoint_prefix);
  } catch (const nlohmann::json::exception& error) {
    return absl::InvalidArgumentError(
        absl::StrCat("clip config: ", error.what()));
  }
  if (config.hidden_size % config.num_attention_heads != 0) {
    return absl::InvalidArgumentError(
        "clip config: hidden_size must divide by num_attention_heads");
  }
  std::optional<ClipActivation> activation =
      ValueOf(kClipActivationNames, hidden_act);
  if (!activation) {
    return absl::InvalidArgumentError(
        absl::StrCat("clip config: hidden_act '", hidden_act,
                     "' is not one of ", JoinedNames(kClipActivationNames)));
  }
  config.hidden_act = *activation;
  return config;
}

class ClipTextModel::Layer {
 public:
  Layer(const ParamScope& scope, const ClipTextConfig& config)
      : heads_(config.num_attention_heads),
        quick_gelu_(config.hidden_act == ClipActivation::kQuickGelu),
        layer_norm1_(scope.Sub("layer_norm1"), config.hidden_size,
                     config.layer_norm_eps),
        q_proj_(scope.Sub("self_attn").Sub("q_proj"), config.hidden_size,
                config.hidden_size),
        k_proj_(scope.Sub("self_attn").Sub("k_proj"), config.hidden_size,
                config.hidden_size),
        v_proj_(scope.Sub("self_attn").Sub("v_proj"), config.hidden_size,
                config.hidden_size),
        out_proj_(scope.Sub("self_attn").Sub("out_proj"), config.hidden_size,
                  config.hidden_size),
        layer_norm2_(scope.Sub("layer_norm2"), config.hidden_size,
                     config.layer_norm_eps),
        fc1_(scope.Sub("mlp").Sub("fc1"), config.hidden_size,
             config.intermediate_size),
        fc2_(scope.Sub("mlp").Sub("fc2"), config.intermediate_size,
             config.hidden_size) {}

  at::Tensor Forward(at::Tensor x, const at::Tensor& causal_mask) const {
    const int64_t head_dim = x.size(2) / heads_;
    const at::Tensor h = layer_norm1_.Forward(x);
    // The reference scales q after its projection (bias included).
    const at::Tensor attended = MergeHeads(
        Attention(
            SplitHeads(q_proj_.Forward(h) * (1.0 / std::sqrt(double(head_dim))),
                       heads_),
            SplitHeads(k_proj_.Forward(h), heads_),
            SplitHeads(v_proj_.Forward(h), heads_), 1.0, causal_mask),
        heads_);
    x = x + out_proj_.Forward(attended);
    at::Tensor hidden = fc1_.Forward(layer_norm2_.Forward(x));
    hidden =
        quick_gelu_ ? hidden * at::sigmoid(1.702 * hidden) : at::gelu(hidden);
    return x + fc2_.Forward(hidden);
  }

 private:
  int64_t heads_;
  bool quick_gelu_;
  LayerNorm layer_norm1_;
  Linear q_proj_, k_proj_, v_proj_, out_proj_;
  LayerNorm layer_norm2_;
  Linear fc1_, fc2_;
};

ClipTextModel::ClipTextModel(const ClipTextConfig& config,
                             const ParamScope& scope)
    : config_(config) {
  const ParamScope embeddings = scope.Sub("embeddings");
  token_embedding_ = std::make_unique<Embedding>(
      embeddings.Sub("token_embedding"), config.vocab_size, config.hidden_size);
  position_embedding_ = std::make_unique<Embedding>(
      embeddings.Sub("position_embedding"), config.max_position_embeddings,
      config.hidden_size);
  const ParamScope layers = scope.Sub("encoder").Sub("layers");
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    layers_.push_back(std::make_unique<Layer>(layers.Sub(i), config));
  }
  final_layer_norm_ = std::make_unique<LayerNorm>(
      scope.Sub("final_layer_norm"), config.hidden_size, config.layer_norm_eps);
}

ClipTextModel::~ClipTextModel() = default;

absl::StatusOr<std::unique_ptr<ClipTextModel>> ClipTextModel::Load(
    const std::string& config_path, const std::string& weights_path) {
  LDM_ASSIGN_OR_RETURN(std::string text, ReadTextFile(config_path));
  LDM_ASSIGN_OR_RETURN(ClipTextConfig config, ParseClipTextConfig(text));
  LDM_ASSIGN_OR_RETURN(std::shared_ptr<const SafetensorsFile> file,
                       SafetensorsFile::Open(weights_path));
  // Parameters are declared under their names within the text model and
  // looked up under the checkpoint's prefix, whose other keys (a full SD
  // checkpoint's UNet, say) are not this loader's business.
  const std::string prefix = config.checkpoint_prefix;
  auto registry = std::make_unique<ParameterRegistry>(at::kMeta);
  std::unique_ptr<ClipTextModel> model;
  LDM_RETURN_IF_ERROR(CallTorchStatus("load " + weights_path, [&] {
    c10::InferenceMode inference;
    model =
        std::make_unique<ClipTextModel>(config, ParamScope(registry.get(), ""));
    const std::string position_ids = prefix + "embeddings.position_ids";
    return registry->LoadFrom(
        *Checkpoint::FromFile(file), prefix, /*strict=*/true,
        [&](const std::string& key) { return key == position_ids; }, at::kCPU,
        [](const std::string&) { return at::kFloat; });
  }));
  model->own_registry_ = std::move(registry);
  return model;
}

ClipTextModel::Output ClipTextModel::Forward(const at::Tensor& ids) const {
  const int64_t length = ids.size(1);
  Output output;
  at::Tensor x = token_embedding_->Forward(ids) +
                 position_embedding_->Forward(
                     at::arange(length, ids.options()).unsqueeze(0));
  // Query i sees keys 0..i.
  const at::Tensor causal_mask =
      at::full({length, length}, -std::numeric_limits<float>::infinity(),
               x.options())
          .triu(1);
  output.hidden_states.push_back(x);
  for (const auto& layer : layers_) {
    x = layer->Forward(x, causal_mask);
    output.hidden_states.push_back(x);
  }
  output.last_hidden_state = final_layer_norm_->Forward(x);
  return output;
}

at::Tensor ClipTextModel::Encode(const at::Tensor& ids, int clip_skip) const {
  Output output = Forward(ids);
  const int64_t count = static_cast<int64_t>(output.hidden_states.size());
  const int64_t index = std::clamp<int64_t>(count - clip_skip, 1, count - 1);
  return final_layer_norm_->Forward(output.hidden_states[index]);
}

at::Tensor ClipTextModel::FinalLayerNorm(const at::Tensor& x) const {
  return final_layer_norm_->Forward(x);
}

}  // namespace ldm
