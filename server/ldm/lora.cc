#include "server/ldm/lora.h"

#include <array>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/common/status_macros.h"
#include "server/ldm/checkpoint.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/safetensors.h"
#include "server/ldm/torch_boundary.h"

namespace ldm {
namespace {

enum class Half { kDown, kUp, kAlpha };

// The suffixes that end a LoRA key, by layout, and which half each names.
constexpr std::array<std::pair<const char*, Half>, 7> kSuffixes = {{
    {".lora_down.weight", Half::kDown},  // kohya
    {".lora_up.weight", Half::kUp},
    {".lora_A.weight", Half::kDown},  // PEFT
    {".lora_B.weight", Half::kUp},
    {".lora.down.weight", Half::kDown},  // diffusers, older
    {".lora.up.weight", Half::kUp},
    {".alpha", Half::kAlpha},
}};

// Module names that hold '_' themselves: kohya's keys replace every '.' of
// the path by '_', so these are put back together after splitting.
constexpr std::array<const char*, 37> kNamesWithUnderscores = {
    "down_blocks",
    "up_blocks",
    "mid_block",
    "transformer_blocks",
    "proj_in",
    "proj_out",
    "to_q",
    "to_k",
    "to_v",
    "to_out",
    "time_emb_proj",
    "conv_shortcut",
    "conv_in",
    "conv_out",
    "conv_norm_out",
    "time_embedding",
    "linear_1",
    "linear_2",
    "text_model",
    "self_attn",
    "q_proj",
    "k_proj",
    "v_proj",
    "out_proj",
    "layer_norm1",
    "layer_norm2",
    "final_layer_norm",
    "input_blocks",
    "middle_block",
    "output_blocks",
    "in_layers",
    "out_layers",
    "emb_layers",
    "skip_connection",
    "time_embed",
    "label_emb",
    "token_embedding"};

// "down_blocks_0_attentions_0_proj_in" -> "down_blocks.0.attentions.0.proj_in".
std::string KohyaPath(absl::string_view flat) {
  const std::vector<std::string> tokens = absl::StrSplit(flat, '_');
  std::vector<std::string> parts;
  for (size_t i = 0; i < tokens.size();) {
    size_t taken = 1;
    // The longest name with underscores that starts here.
    for (size_t length = 3; length >= 2; --length) {
      if (i + length > tokens.size()) continue;
      const std::string joined = absl::StrJoin(
          tokens.begin() + static_cast<std::ptrdiff_t>(i),
          tokens.begin() + static_cast<std::ptrdiff_t>(i + length), "_");
      bool known = false;
      for (const char* name : kNamesWithUnderscores) known |= joined == name;
      if (known) {
        taken = length;
        break;
      }
    }
    parts.push_back(absl::StrJoin(
        tokens.begin() + static_cast<std::ptrdiff_t>(i),
        tokens.begin() + static_cast<std::ptrdiff_t>(i + taken), "_"));
    i += taken;
  }
  return absl::StrJoin(parts, ".");
}

// The part and path of a module as a LoRA file names it.
absl::StatusOr<std::pair<LoraAdapter::Part, std::string>> ModulePath(
    const std::string& module) {
  using Part = LoraAdapter::Part;
  std::string name = module;
  // Attention processors: "X.processor.to_q_lora" is X.to_q.
  if (const size_t at = name.find(".processor."); at != std::string::npos) {
    std::string projection = name.substr(at + 11);
    if (absl::EndsWith(projection, "_lora")) {
      projection.resize(projection.size() - 5);
    }
    if (projection == "to_out") projection = "to_out.0";
    name = absl::StrCat(name.substr(0, at), ".", projection);
  }
  for (const auto& [prefix, part, kohya] :
       {std::tuple{"lora_unet_", Part::kUnet, true},
        std::tuple{"lora_te_", Part::kTextEncoder, true},
        std::tuple{"lora_te1_", Part::kTextEncoder, true},
        std::tuple{"unet.", Part::kUnet, false},
        std::tuple{"text_encoder.", Part::kTextEncoder, false}}) {
    if (absl::StartsWith(name, prefix)) {
      const std::string rest = name.substr(std::string(prefix).size());
      return std::pair{part, kohya ? KohyaPath(rest) : rest};
    }
  }
  for (const char* unet_block : {"down_blocks.", "mid_block.", "up_blocks."}) {
    if (absl::StartsWith(name, unet_block)) return std::pair{Part::kUnet, name};
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "LoRA key ", module,
      ": not of a known layout (kohya lora_unet_/lora_te_, diffusers "
      "unet./text_encoder.)"));
}

// `tensor` as a convolution's [o, i, 1, 1] where the layer is one, or as a
// matrix where it is a Linear: files store 1x1 projections either way.
at::Tensor ShapedFor(const at::Tensor& tensor, const at::Tensor& weight) {
  if (weight.dim() == 4 && tensor.dim() == 2) {
    return tensor.view({tensor.size(0), tensor.size(1), 1, 1});
  }
  if (weight.dim() == 2 && tensor.dim() == 4 && tensor.size(2) == 1 &&
      tensor.size(3) == 1) {
    return tensor.view({tensor.size(0), tensor.size(1)});
  }
  return tensor;
}

// The layer's halves shaped for `weight`, or INVALID_ARGUMENT naming it.
absl::StatusOr<std::pair<at::Tensor, at::Tensor>> CheckedHalves(
    const LoraAdapter::Layer& layer, const std::string& target,
    const at::Tensor& weight) {
  const at::Tensor down = ShapedFor(layer.down, weight);
  const at::Tensor up = ShapedFor(layer.up, weight);
  const bool conv = weight.dim() == 4;
  const int64_t rank = down.size(0);
  const bool fits = (weight.dim() == 2 || conv) && down.dim() == weight.dim() &&
                    up.dim() == weight.dim() &&
                    down.size(1) == weight.size(1) &&
                    up.size(0) == weight.size(0) && up.size(1) == rank &&
                    (!conv || (down.size(2) == weight.size(2) &&
                               down.size(3) == weight.size(3) &&
                               up.size(2) == 1 && up.size(3) == 1));
  if (!fits) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoRA key ", layer.key, ": shapes down ",
                     absl::StrJoin(layer.down.sizes(), "x"), ", up ",
                     absl::StrJoin(layer.up.sizes(), "x"), " do not fit ",
                     target, " (", absl::StrJoin(weight.sizes(), "x"), ")"));
  }
  return std::pair{down, up};
}

// The weight `layer` updates in `model` and the layer's halves shaped for
// it, or INVALID_ARGUMENT naming the key.
struct FittedLayer {
  const at::Tensor* weight;
  at::Tensor down, up;
};
absl::StatusOr<FittedLayer> FitLayer(const LoraAdapter::Layer& layer,
                                     const LatentDiffusion& model) {
  const std::string target = LoraTarget(layer, model);
  const at::Tensor* weight = model.Parameter(target);
  if (weight == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("LoRA key ", layer.key, ": the model has no layer ",
                     absl::StripSuffix(target, ".weight"),
                     " (an adapter for another architecture?)"));
  }
  LDM_ASSIGN_OR_RETURN(auto halves, CheckedHalves(layer, target, *weight));
  return FittedLayer{weight, std::move(halves.first), std::move(halves.second)};
}

}  // namespace

absl::StatusOr<std::shared_ptr<const LoraAdapter>> LoraAdapter::Read(
    const std::string& path) {
  LDM_ASSIGN_OR_RETURN(std::shared_ptr<const SafetensorsFile> file,
                       SafetensorsFile::Open(path));
  struct Halves {
    at::Tensor down, up;
    std::optional<double> alpha;
  };
  std::map<std::string, Halves> modules;
  for (const auto& [key, entry] : file->entries()) {
    std::optional<Half> half;
    std::string module;
    for (const auto& [suffix, which] : kSuffixes) {
      if (absl::EndsWith(key, suffix)) {
        half = which;
        module = key.substr(0, key.size() - std::string(suffix).size());
        break;
      }
    }
    if (!half) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": key ", key,
          " is not a LoRA half (lora_down/lora_up, lora_A/lora_B, alpha); "
          "LoHa, LoKr and full fine-tunes are not adapters this server "
          "reads"));
    }
    LDM_ASSIGN_OR_RETURN(at::Tensor tensor, file->Get(key));
    Halves& halves = modules[module];
    LDM_RETURN_IF_ERROR(CallTorchStatus("LoRA " + key, [&]() -> absl::Status {
      switch (*half) {
        case Half::kDown:
          halves.down = tensor.to(at::kFloat).clone();
          break;
        case Half::kUp:
          halves.up = tensor.to(at::kFloat).clone();
          break;
        case Half::kAlpha:
          halves.alpha = tensor.to(at::kDouble).item<double>();
          break;
      }
      return absl::OkStatus();
    }));
  }
  if (modules.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no LoRA layers"));
  }
  auto adapter = std::make_shared<LoraAdapter>();
  for (auto& [module, halves] : modules) {
    if (!halves.down.defined() || !halves.up.defined() ||
        halves.down.dim() < 2 || halves.up.dim() < 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": LoRA key ", module, " lacks its down or up matrix"));
    }
    LDM_ASSIGN_OR_RETURN(auto located, ModulePath(module));
    Layer layer;
    layer.part = located.first;
    layer.key = module;
    layer.path = located.second;
    layer.alpha =
        halves.alpha.value_or(static_cast<double>(halves.down.size(0)));
    adapter->bytes_ +=
        static_cast<int64_t>(halves.down.nbytes() + halves.up.nbytes());
    layer.down = std::move(halves.down);
    layer.up = std::move(halves.up);
    adapter->layers_.push_back(std::move(layer));
  }
  return std::shared_ptr<const LoraAdapter>(std::move(adapter));
}

std::string LoraTarget(const LoraAdapter::Layer& layer,
                       const LatentDiffusion& model) {
  if (layer.part == LoraAdapter::Part::kTextEncoder) {
    return absl::StrCat("cond_stage_model.transformer.", layer.path, ".weight");
  }
  for (const char* compvis : {"input_blocks.", "middle_block.",
                              "output_blocks.", "time_embed.", "out."}) {
    if (absl::StartsWith(layer.path, compvis)) {
      return absl::StrCat("model.diffusion_model.", layer.path, ".weight");
    }
  }
  return MapDiffusersUnetKey(layer.path + ".weight",
                             model.config().unet.num_res_blocks);
}

absl::Status CheckLoraFits(const LoraAdapter& adapter,
                           const LatentDiffusion& model) {
  for (const LoraAdapter::Layer& layer : adapter.layers()) {
    LDM_RETURN_IF_ERROR(FitLayer(layer, model).status());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const BoundLoras>> BindLoras(
    const LatentDiffusion& model,
    const std::vector<std::pair<std::shared_ptr<const LoraAdapter>, double>>&
        adapters) {
  auto bound = std::make_shared<BoundLoras>();
  for (const auto& [adapter, strength] : adapters) {
    for (const LoraAdapter::Layer& layer : adapter->layers()) {
      LDM_ASSIGN_OR_RETURN(FittedLayer fitted, FitLayer(layer, model));
      LowRankUpdate update;
      update.scale =
          strength * layer.alpha / static_cast<double>(fitted.down.size(0));
      LDM_RETURN_IF_ERROR(CallTorchStatus("bind LoRA " + layer.key, [&] {
        update.down = fitted.down.to(fitted.weight->options());
        update.up = fitted.up.to(fitted.weight->options());
        return absl::OkStatus();
      }));
      bound->updates[fitted.weight].push_back(std::move(update));
    }
  }
  return std::shared_ptr<const BoundLoras>(std::move(bound));
}

}  // namespace ldm
