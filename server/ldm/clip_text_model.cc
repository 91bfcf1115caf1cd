#include "server/ldm/clip_text_model.h"

#include <c10/core/InferenceMode.h>

#include <array>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "server/common/enum_names.h"
#include "server/common/status_macros.h"
#include "server/ldm/checkpoint.h"
#include "server/ldm/json_numbers.h"
#include "server/ldm/layers.h"
#include "server/ldm/model_config.h"
#include "server/ldm/safetensors.h"
#include "server/ldm/torch_boundary.h"
#include "server/ldm/transformer_layer.h"

namespace ldm {

namespace {
constexpr std::array<EnumName<FeedForwardActivation>, 2> kClipActivationNames =
    {{{FeedForwardActivation::kQuickGelu, "quick_gelu"},
      {FeedForwardActivation::kGelu, "gelu"}}};
}  // namespace

absl::string_view ClipActivationName(FeedForwardActivation activation) {
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
  for (const char* key :
       {"vocab_size", "hidden_size", "intermediate_size", "num_attention_heads",
        "num_hidden_layers", "max_position_embeddings"}) {
    if (root.contains(key) && !NumbersFit<int64_t>(root.at(key))) {
      return absl::InvalidArgumentError(
          absl::StrCat("clip config: ", key, ": not an integer in range"));
    }
  }
  if (root.contains("layer_norm_eps") &&
      !NumbersFit<double>(root.at("layer_norm_eps"))) {
    return absl::InvalidArgumentError(
        "clip config: layer_norm_eps: not a finite number");
  }
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
  for (const auto& [name, size] :
       {std::pair{"vocab_size", config.vocab_size},
        std::pair{"hidden_size", config.hidden_size},
        std::pair{"intermediate_size", config.intermediate_size},
        std::pair{"num_attention_heads", config.num_attention_heads},
        std::pair{"num_hidden_layers", config.num_hidden_layers},
        std::pair{"max_position_embeddings", config.max_position_embeddings}}) {
    if (size < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("clip config: ", name, " must be at least 1"));
    }
  }
  if (config.hidden_size % config.num_attention_heads != 0) {
    return absl::InvalidArgumentError(
        "clip config: hidden_size must divide by num_attention_heads");
  }
  std::optional<FeedForwardActivation> activation =
      ValueOf(kClipActivationNames, hidden_act);
  if (!activation) {
    return absl::InvalidArgumentError(
        absl::StrCat("clip config: hidden_act '", hidden_act,
                     "' is not one of ", JoinedNames(kClipActivationNames)));
  }
  config.hidden_act = *activation;
  return config;
}

ClipTextModel::ClipTextModel(const ClipTextConfig& config,
                             const ParamScope& scope)
    : config_(config) {
  const ParamScope embeddings = scope.Sub("embeddings");
  token_embedding_ = std::make_unique<Embedding>(
      embeddings.Sub("token_embedding"), config.vocab_size, config.hidden_size);
  position_embedding_ = std::make_unique<Embedding>(
      embeddings.Sub("position_embedding"), config.max_position_embeddings,
      config.hidden_size);
  TransformerLayerShape shape;
  shape.dim = config.hidden_size;
  shape.heads = config.num_attention_heads;
  shape.feed_forward_dim = config.intermediate_size;
  shape.layer_norm_eps = config.layer_norm_eps;
  shape.qkv_bias = true;
  shape.activation = config.hidden_act;
  shape.query_scaling = QueryScaling::kProjectedQuery;
  const ParamScope layers = scope.Sub("encoder").Sub("layers");
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    const ParamScope layer = layers.Sub(i);
    const ParamScope attention = layer.Sub("self_attn");
    const TransformerLayerScopes scopes{
        /*attention_norm=*/layer.Sub("layer_norm1"),
        /*q=*/attention.Sub("q_proj"),
        /*k=*/attention.Sub("k_proj"),
        /*v=*/attention.Sub("v_proj"),
        /*out=*/attention.Sub("out_proj"),
        /*feed_forward_norm=*/layer.Sub("layer_norm2"),
        /*feed_forward_in=*/layer.Sub("mlp").Sub("fc1"),
        /*feed_forward_out=*/layer.Sub("mlp").Sub("fc2")};
    layers_.push_back(std::make_unique<TransformerLayer>(scopes, shape));
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
