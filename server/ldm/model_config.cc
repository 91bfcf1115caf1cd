#include "server/ldm/model_config.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/common/enum_names.h"
#include "server/ldm/json_numbers.h"

namespace ldm {
namespace {

using nlohmann::json;

// Reads `key` into `out` when present; a wrong type or a number out of the
// field's range is an error naming the field.
template <typename T>
absl::Status Read(const json& object, const char* key, const char* where,
                  T* out) {
  if (!object.contains(key)) return absl::OkStatus();
  if (!NumbersFit<typename ElementOf<T>::type>(object.at(key))) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config ", where, ".", key, ": a number out of the field's range"));
  }
  try {
    *out = object.at(key).get<T>();
  } catch (const json::exception& error) {
    return absl::InvalidArgumentError(
        absl::StrCat("config ", where, ".", key, ": ", error.what()));
  }
  return absl::OkStatus();
}

#define LDM_READ(object, key, where, out)                      \
  do {                                                         \
    absl::Status read_status_ = Read(object, key, where, out); \
    if (!read_status_.ok()) return read_status_;               \
  } while (false)

// The names the config files use for each enum, parsed here and nowhere
// else.
constexpr std::array<EnumName<ModelKind>, 3> kModelKindNames = {{
    {ModelKind::kTextToImage, "txt2img"},
    {ModelKind::kInpaint, "inpaint"},
    {ModelKind::kSuperResolution, "sr"},
}};
constexpr std::array<EnumName<ConditioningKey>, 4> kConditioningKeyNames = {{
    {ConditioningKey::kCrossAttention, "crossattn"},
    {ConditioningKey::kConcat, "concat"},
    {ConditioningKey::kHybrid, "hybrid"},
    {ConditioningKey::kAdm, "adm"},
}};
constexpr std::array<EnumName<Parameterization>, 2> kParameterizationNames = {
    {{Parameterization::kEps, "eps"}, {Parameterization::kV, "v"}}};
constexpr std::array<EnumName<BetaSchedule>, 4> kBetaScheduleNames = {{
    {BetaSchedule::kLinear, "linear"},
    {BetaSchedule::kSqrtLinear, "sqrt_linear"},
    {BetaSchedule::kSqrt, "sqrt"},
    {BetaSchedule::kCosine, "cosine"},
}};
constexpr std::array<EnumName<AutoencoderKind>, 2> kAutoencoderKindNames = {
    {{AutoencoderKind::kKl, "kl"}, {AutoencoderKind::kVq, "vq"}}};
constexpr std::array<EnumName<AutoencoderAttention>, 2>
    kAutoencoderAttentionNames = {{{AutoencoderAttention::kVanilla, "vanilla"},
                                   {AutoencoderAttention::kNone, "none"}}};

// Reads the enum named by `key` into `out` when present; a name the table
// lacks is an error listing the ones it has.
template <typename Enum, size_t N>
absl::Status ReadEnum(const json& object, const char* key, const char* where,
                      const std::array<EnumName<Enum>, N>& names, Enum* out) {
  std::string name;
  absl::Status status = Read(object, key, where, &name);
  if (!status.ok() || !object.contains(key)) return status;
  std::optional<Enum> value = ValueOf(names, name);
  if (!value) {
    return absl::InvalidArgumentError(
        absl::StrCat("config ", where, where[0] == '\0' ? "" : ".", key, ": '",
                     name, "' is not one of ", JoinedNames(names)));
  }
  *out = *value;
  return absl::OkStatus();
}

#define LDM_READ_ENUM(object, key, where, names, out)                     \
  do {                                                                    \
    absl::Status read_status_ = ReadEnum(object, key, where, names, out); \
    if (!read_status_.ok()) return read_status_;                          \
  } while (false)

absl::Status ParseUNet(const json& object, UNetConfig* unet) {
  LDM_READ(object, "in_channels", "unet", &unet->in_channels);
  LDM_READ(object, "out_channels", "unet", &unet->out_channels);
  LDM_READ(object, "model_channels", "unet", &unet->model_channels);
  LDM_READ(object, "channel_mult", "unet", &unet->channel_mult);
  LDM_READ(object, "num_res_blocks", "unet", &unet->num_res_blocks);
  LDM_READ(object, "attention_resolutions", "unet",
           &unet->attention_resolutions);
  LDM_READ(object, "num_heads", "unet", &unet->num_heads);
  LDM_READ(object, "num_head_channels", "unet", &unet->num_head_channels);
  LDM_READ(object, "context_dim", "unet", &unet->context_dim);
  LDM_READ(object, "transformer_depth", "unet", &unet->transformer_depth);
  LDM_READ(object, "use_spatial_transformer", "unet",
           &unet->use_spatial_transformer);
  LDM_READ(object, "legacy", "unet", &unet->legacy);
  LDM_READ(object, "use_scale_shift_norm", "unet", &unet->use_scale_shift_norm);
  LDM_READ(object, "resblock_updown", "unet", &unet->resblock_updown);
  LDM_READ(object, "num_classes", "unet", &unet->num_classes);
  if (unet->channel_mult.empty() || unet->model_channels <= 0 ||
      unet->num_res_blocks <= 0) {
    return absl::InvalidArgumentError(
        "config unet: channel_mult, model_channels and num_res_blocks must be "
        "positive");
  }
  if (unet->num_heads <= 0 && unet->num_head_channels <= 0) {
    return absl::InvalidArgumentError(
        "config unet: set num_heads or num_head_channels");
  }
  if (unet->use_spatial_transformer && unet->context_dim <= 0) {
    return absl::InvalidArgumentError(
        "config unet: use_spatial_transformer needs context_dim");
  }
  return absl::OkStatus();
}

absl::Status ParseAutoencoder(const json& object, AutoencoderConfig* ae) {
  LDM_READ_ENUM(object, "kind", "ae", kAutoencoderKindNames, &ae->kind);
  LDM_READ(object, "n_embed", "ae", &ae->n_embed);
  LDM_READ(object, "embed_dim", "ae", &ae->embed_dim);
  if (!object.contains("ddconfig")) {
    return absl::InvalidArgumentError("config ae: missing ddconfig");
  }
  const json& dd = object.at("ddconfig");
  LDM_READ(dd, "ch", "ae.ddconfig", &ae->ch);
  LDM_READ(dd, "out_ch", "ae.ddconfig", &ae->out_ch);
  LDM_READ(dd, "in_channels", "ae.ddconfig", &ae->in_channels);
  LDM_READ(dd, "ch_mult", "ae.ddconfig", &ae->ch_mult);
  LDM_READ(dd, "num_res_blocks", "ae.ddconfig", &ae->num_res_blocks);
  LDM_READ(dd, "attn_resolutions", "ae.ddconfig", &ae->attn_resolutions);
  LDM_READ(dd, "resolution", "ae.ddconfig", &ae->resolution);
  LDM_READ(dd, "z_channels", "ae.ddconfig", &ae->z_channels);
  LDM_READ(dd, "double_z", "ae.ddconfig", &ae->double_z);
  LDM_READ_ENUM(dd, "attn_type", "ae.ddconfig", kAutoencoderAttentionNames,
                &ae->attn_type);
  if (ae->kind == AutoencoderKind::kVq && ae->n_embed <= 0) {
    return absl::InvalidArgumentError("config ae: vq needs n_embed > 0");
  }
  if (ae->ch_mult.empty() || ae->ch <= 0) {
    return absl::InvalidArgumentError("config ae.ddconfig: bad ch/ch_mult");
  }
  return absl::OkStatus();
}

}  // namespace

namespace {

// ParseModelConfig but for the exceptions of nlohmann's accessors, which it
// turns into statuses.
absl::StatusOr<ModelConfig> ParseModelConfigOrThrow(
    const std::string& json_text) {
  json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError("config: not a JSON object");
  }
  ModelConfig config;
  LDM_READ(root, "name", "", &config.name);
  LDM_READ_ENUM(root, "kind", "", kModelKindNames, &config.kind);
  LDM_READ_ENUM(root, "conditioning_key", "", kConditioningKeyNames,
                &config.conditioning_key);
  LDM_READ_ENUM(root, "parameterization", "", kParameterizationNames,
                &config.parameterization);
  LDM_READ_ENUM(root, "beta_schedule", "", kBetaScheduleNames,
                &config.beta_schedule);
  LDM_READ(root, "linear_start", "", &config.linear_start);
  LDM_READ(root, "linear_end", "", &config.linear_end);
  LDM_READ(root, "timesteps", "", &config.timesteps);
  LDM_READ(root, "scale_factor", "", &config.scale_factor);
  LDM_READ(root, "default_guidance_scale", "", &config.default_guidance_scale);
  LDM_READ(root, "default_eta", "", &config.default_eta);
  if (!(config.default_eta >= 0 && config.default_eta <= 1)) {
    return absl::InvalidArgumentError("config default_eta: must be in [0, 1]");
  }
  LDM_READ(root, "ctx_len", "", &config.ctx_len);
  if (root.contains("latent_hw")) {
    std::vector<int64_t> hw;
    LDM_READ(root, "latent_hw", "", &hw);
    if (hw.size() != 2 || hw[0] <= 0 || hw[1] <= 0) {
      return absl::InvalidArgumentError("config latent_hw: need [h, w] > 0");
    }
    config.latent_height = hw[0];
    config.latent_width = hw[1];
  }
  if (!root.contains("unet") || !root.contains("ae")) {
    return absl::InvalidArgumentError("config: needs `unet` and `ae`");
  }
  absl::Status status = ParseUNet(root.at("unet"), &config.unet);
  if (!status.ok()) return status;
  status = ParseAutoencoder(root.at("ae"), &config.ae);
  if (!status.ok()) return status;
  if (root.contains("text_encoder")) {
    TextEncoderConfig text;
    const json& object = root.at("text_encoder");
    LDM_READ(object, "vocab", "text_encoder", &text.vocab);
    LDM_READ(object, "vocab_file", "text_encoder", &text.vocab_file);
    LDM_READ(object, "vocab_size", "text_encoder", &text.vocab_size);
    LDM_READ(object, "dim", "text_encoder", &text.dim);
    LDM_READ(object, "depth", "text_encoder", &text.depth);
    LDM_READ(object, "heads", "text_encoder", &text.heads);
    LDM_READ(object, "dim_head", "text_encoder", &text.dim_head);
    LDM_READ(object, "max_length", "text_encoder", &text.max_length);
    if (text.uses_wordpiece() ? text.vocab_size < 5 : text.vocab.size() < 2) {
      return absl::InvalidArgumentError(
          "config text_encoder: needs a vocab, or a vocab_file and its "
          "vocab_size");
    }
    if (text.heads < 1 || (text.dim_head <= 0 && text.dim % text.heads != 0)) {
      return absl::InvalidArgumentError(
          "config text_encoder: dim must divide into heads (or set dim_head)");
    }
    config.text_encoder = std::move(text);
  }
  if (root.contains("cond_stage")) {
    const json& object = root.at("cond_stage");
    if (!object.is_object() || !object.contains("kind") ||
        object.at("kind") != "clip") {
      return absl::InvalidArgumentError(
          "config cond_stage: only {\"kind\": \"clip\", ...} is supported");
    }
    auto text = ParseClipTextConfig(object.dump());
    if (!text.ok()) return text.status();
    ClipCondition clip;
    clip.text = *text;
    clip.text.checkpoint_prefix = "cond_stage_model.transformer.text_model.";
    LDM_READ(object, "tokenizer", "cond_stage", &clip.tokenizer_dir);
    LDM_READ(object, "clip_skip", "cond_stage", &clip.clip_skip);
    if (clip.clip_skip < 1 || clip.clip_skip > clip.text.num_hidden_layers) {
      return absl::InvalidArgumentError(
          "config cond_stage.clip_skip: 1 .. num_hidden_layers");
    }
    config.clip = std::move(clip);
  }
  if (config.timesteps <= 0 || config.linear_start <= 0 ||
      config.linear_end <= config.linear_start) {
    return absl::InvalidArgumentError(
        "config: need 0 < linear_start < linear_end and timesteps > 0");
  }
  return config;
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text) {
  try {
    return ParseModelConfigOrThrow(json_text);
  } catch (const nlohmann::json::exception& error) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", error.what()));
  }
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<ModelConfig> ReadModelConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadTextFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<ModelConfig> config = ParseModelConfig(*text);
  const size_t slash = path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : path.substr(0, slash);
  auto resolve = [&dir](std::string& file) {
    if (!file.empty() && file[0] != '/') file = dir + "/" + file;
  };
  if (config.ok() && config->clip) resolve(config->clip->tokenizer_dir);
  if (config.ok() && config->text_encoder) {
    resolve(config->text_encoder->vocab_file);
  }
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  return config;
}

std::string ModelConfigToJson(const ModelConfig& config) {
  const UNetConfig& u = config.unet;
  const AutoencoderConfig& a = config.ae;
  json root = {
      {"name", config.name},
      {"kind", std::string(NameOf(kModelKindNames, config.kind))},
      {"conditioning_key",
       std::string(NameOf(kConditioningKeyNames, config.conditioning_key))},
      {"parameterization",
       std::string(NameOf(kParameterizationNames, config.parameterization))},
      {"beta_schedule",
       std::string(NameOf(kBetaScheduleNames, config.beta_schedule))},
      {"linear_start", config.linear_start},
      {"linear_end", config.linear_end},
      {"timesteps", config.timesteps},
      {"scale_factor", config.scale_factor},
      {"default_guidance_scale", config.default_guidance_scale},
      {"default_eta", config.default_eta},
      {"latent_hw", {config.latent_height, config.latent_width}},
      {"ctx_len", config.ctx_len},
      {"unet",
       {{"in_channels", u.in_channels},
        {"out_channels", u.out_channels},
        {"model_channels", u.model_channels},
        {"channel_mult", u.channel_mult},
        {"num_res_blocks", u.num_res_blocks},
        {"attention_resolutions", u.attention_resolutions},
        {"num_heads", u.num_heads},
        {"num_head_channels", u.num_head_channels},
        {"context_dim", u.context_dim},
        {"transformer_depth", u.transformer_depth},
        {"use_spatial_transformer", u.use_spatial_transformer},
        {"legacy", u.legacy},
        {"use_scale_shift_norm", u.use_scale_shift_norm},
        {"resblock_updown", u.resblock_updown},
        {"num_classes", u.num_classes}}},
      {"ae",
       {{"kind", std::string(NameOf(kAutoencoderKindNames, a.kind))},
        {"n_embed", a.n_embed},
        {"embed_dim", a.embed_dim},
        {"ddconfig",
         {{"ch", a.ch},
          {"out_ch", a.out_ch},
          {"in_channels", a.in_channels},
          {"ch_mult", a.ch_mult},
          {"num_res_blocks", a.num_res_blocks},
          {"attn_resolutions", a.attn_resolutions},
          {"resolution", a.resolution},
          {"z_channels", a.z_channels},
          {"double_z", a.double_z},
          {"attn_type",
           std::string(NameOf(kAutoencoderAttentionNames, a.attn_type))}}}}}};
  if (config.clip) {
    const ClipTextConfig& c = config.clip->text;
    root["cond_stage"] = {
        {"kind", "clip"},
        {"tokenizer", config.clip->tokenizer_dir},
        {"clip_skip", config.clip->clip_skip},
        {"vocab_size", c.vocab_size},
        {"hidden_size", c.hidden_size},
        {"intermediate_size", c.intermediate_size},
        {"num_attention_heads", c.num_attention_heads},
        {"num_hidden_layers", c.num_hidden_layers},
        {"max_position_embeddings", c.max_position_embeddings},
        {"layer_norm_eps", c.layer_norm_eps},
        {"hidden_act", std::string(ClipActivationName(c.hidden_act))}};
  }
  if (config.text_encoder) {
    const TextEncoderConfig& t = *config.text_encoder;
    root["text_encoder"] = {{"dim", t.dim},
                            {"depth", t.depth},
                            {"heads", t.heads},
                            {"max_length", t.max_length}};
    if (t.uses_wordpiece()) {
      root["text_encoder"]["vocab_file"] = t.vocab_file;
      root["text_encoder"]["vocab_size"] = t.vocab_size;
    } else {
      root["text_encoder"]["vocab"] = t.vocab;
    }
    if (t.dim_head > 0) root["text_encoder"]["dim_head"] = t.dim_head;
  }
  return root.dump(1);
}

}  // namespace ldm
