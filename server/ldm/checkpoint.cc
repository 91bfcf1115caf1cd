#include "server/ldm/checkpoint.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <functional>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"

namespace ldm {
namespace {

// The block numbering of a diffusers UNet or VAE, read off its keys.
struct BlockLayout {
  int64_t resnets_per_down_block = 0;          // UNet: CompVis num_res_blocks.
  std::set<int64_t> up_blocks_with_attention;  // UNet.
  int64_t vae_levels = 0;                      // VAE: decoder up blocks.
};

// Renames at the start of what follows a block's prefix (inside a resnet or
// an attention block); the first that matches applies.
using InnerRenames = std::vector<std::pair<const char*, const char*>>;

const InnerRenames& UnetResnetRenames() {
  static const auto* renames = new InnerRenames{
      {"norm1.", "in_layers.0."},
      {"conv1.", "in_layers.2."},
      {"time_emb_proj.", "emb_layers.1."},
      {"norm2.", "out_layers.0."},
      {"conv2.", "out_layers.3."},
      {"conv_shortcut.", "skip_connection."},
  };
  return *renames;
}

const InnerRenames& VaeResnetRenames() {
  static const auto* renames =
      new InnerRenames{{"conv_shortcut.", "nin_shortcut."}};
  return *renames;
}

// Older diffusers files name the VAE attention's projections query, key,
// value, proj_attn; newer ones to_q, to_k, to_v, to_out.0.
const InnerRenames& VaeAttentionRenames() {
  static const auto* renames = new InnerRenames{
      {"group_norm.", "norm."},
      {"to_q.", "q."},
      {"query.", "q."},
      {"to_k.", "k."},
      {"key.", "k."},
      {"to_v.", "v."},
      {"value.", "v."},
      {"to_out.0.", "proj_out."},
      {"proj_attn.", "proj_out."},
  };
  return *renames;
}

const InnerRenames& NoRenames() {
  static const auto* renames = new InnerRenames{};
  return *renames;
}

// The CompVis prefix for a rule's block numbers.
using Target =
    std::function<std::string(int64_t i, int64_t j, const BlockLayout&)>;

// One rule: a diffusers key prefix with up to two block numbers ({i}, then
// {j}) and the CompVis prefix they become.
struct Rule {
  const char* pattern;
  Target target;
  const InnerRenames& (*inner)();
};

// Matches `pattern` at the start of `key`; fills the numbers and returns the
// length of `key` consumed, or 0 when it does not match.
size_t MatchPattern(const std::string& pattern, const std::string& key,
                    int64_t numbers[2]) {
  size_t p = 0, k = 0;
  int captured = 0;
  while (p < pattern.size()) {
    if (pattern.compare(p, 3, "{i}") == 0 ||
        pattern.compare(p, 3, "{j}") == 0) {
      size_t end = k;
      while (end < key.size() &&
             std::isdigit(static_cast<unsigned char>(key[end]))) {
        ++end;
      }
      if (end == k || captured == 2 ||
          !absl::SimpleAtoi(key.substr(k, end - k), &numbers[captured])) {
        return 0;
      }
      ++captured;
      k = end;
      p += 3;
    } else {
      if (k >= key.size() || key[k] != pattern[p]) return 0;
      ++k;
      ++p;
    }
  }
  return k;
}

// A target without block numbers.
Target FixedTarget(const char* prefix) {
  return [prefix](int64_t, int64_t, const BlockLayout&) {
    return std::string(prefix);
  };
}

// What the diffusers conversion scripts encode, once, as data.
const std::vector<Rule>& UnetRules() {
  // CompVis numbers input blocks (and output blocks) consecutively: per
  // level, its resnets (each followed by its attention, if any) then the
  // down (up) sampler.
  static const auto* rules = new std::vector<Rule>{
      {"time_embedding.linear_1.", FixedTarget("time_embed.0."), NoRenames},
      {"time_embedding.linear_2.", FixedTarget("time_embed.2."), NoRenames},
      {"conv_in.", FixedTarget("input_blocks.0.0."), NoRenames},
      {"conv_norm_out.", FixedTarget("out.0."), NoRenames},
      {"conv_out.", FixedTarget("out.2."), NoRenames},
      {"down_blocks.{i}.resnets.{j}.",
       [](int64_t i, int64_t j, const BlockLayout& l) {
         return absl::StrCat("input_blocks.",
                             i * (l.resnets_per_down_block + 1) + j + 1, ".0.");
       },
       UnetResnetRenames},
      {"down_blocks.{i}.attentions.{j}.",
       [](int64_t i, int64_t j, const BlockLayout& l) {
         return absl::StrCat("input_blocks.",
                             i * (l.resnets_per_down_block + 1) + j + 1, ".1.");
       },
       NoRenames},
      {"down_blocks.{i}.downsamplers.0.conv.",
       [](int64_t i, int64_t, const BlockLayout& l) {
         return absl::StrCat("input_blocks.",
                             (i + 1) * (l.resnets_per_down_block + 1),
                             ".0.op.");
       },
       NoRenames},
      {"mid_block.resnets.{j}.",
       [](int64_t j, int64_t, const BlockLayout&) {
         return absl::StrCat("middle_block.", 2 * j, ".");
       },
       UnetResnetRenames},
      {"mid_block.attentions.0.", FixedTarget("middle_block.1."), NoRenames},
      // Up blocks have one resnet more than down blocks.
      {"up_blocks.{i}.resnets.{j}.",
       [](int64_t i, int64_t j, const BlockLayout& l) {
         return absl::StrCat("output_blocks.",
                             i * (l.resnets_per_down_block + 1) + j, ".0.");
       },
       UnetResnetRenames},
      {"up_blocks.{i}.attentions.{j}.",
       [](int64_t i, int64_t j, const BlockLayout& l) {
         return absl::StrCat("output_blocks.",
                             i * (l.resnets_per_down_block + 1) + j, ".1.");
       },
       NoRenames},
      // The upsampler shares the level's last output block, after its
      // attention where the level has one.
      {"up_blocks.{i}.upsamplers.0.conv.",
       [](int64_t i, int64_t, const BlockLayout& l) {
         return absl::StrCat(
             "output_blocks.",
             i * (l.resnets_per_down_block + 1) + l.resnets_per_down_block,
             l.up_blocks_with_attention.count(i) ? ".2" : ".1", ".conv.");
       },
       NoRenames},
  };
  return *rules;
}

const std::vector<Rule>& VaeRules() {
  static const auto* rules = new std::vector<Rule>{
      {"encoder.down_blocks.{i}.resnets.{j}.",
       [](int64_t i, int64_t j, const BlockLayout&) {
         return absl::StrCat("encoder.down.", i, ".block.", j, ".");
       },
       VaeResnetRenames},
      {"encoder.down_blocks.{i}.downsamplers.0.conv.",
       [](int64_t i, int64_t, const BlockLayout&) {
         return absl::StrCat("encoder.down.", i, ".downsample.conv.");
       },
       NoRenames},
      // Diffusers numbers the decoder's levels from the lowest resolution,
      // CompVis from the highest.
      {"decoder.up_blocks.{i}.resnets.{j}.",
       [](int64_t i, int64_t j, const BlockLayout& l) {
         return absl::StrCat("decoder.up.", l.vae_levels - 1 - i, ".block.", j,
                             ".");
       },
       VaeResnetRenames},
      {"decoder.up_blocks.{i}.upsamplers.0.conv.",
       [](int64_t i, int64_t, const BlockLayout& l) {
         return absl::StrCat("decoder.up.", l.vae_levels - 1 - i,
                             ".upsample.conv.");
       },
       NoRenames},
      {"encoder.mid_block.resnets.{j}.",
       [](int64_t j, int64_t, const BlockLayout&) {
         return absl::StrCat("encoder.mid.block_", j + 1, ".");
       },
       VaeResnetRenames},
      {"decoder.mid_block.resnets.{j}.",
       [](int64_t j, int64_t, const BlockLayout&) {
         return absl::StrCat("decoder.mid.block_", j + 1, ".");
       },
       VaeResnetRenames},
      {"encoder.mid_block.attentions.0.", FixedTarget("encoder.mid.attn_1."),
       VaeAttentionRenames},
      {"decoder.mid_block.attentions.0.", FixedTarget("decoder.mid.attn_1."),
       VaeAttentionRenames},
      {"encoder.conv_norm_out.", FixedTarget("encoder.norm_out."), NoRenames},
      {"decoder.conv_norm_out.", FixedTarget("decoder.norm_out."), NoRenames},
  };
  return *rules;
}

// Keys both layouts spell alike.
const std::vector<const char*>& VaeSameNames() {
  static const auto* names = new std::vector<const char*>{
      "encoder.conv_in.",  "encoder.conv_out.", "decoder.conv_in.",
      "decoder.conv_out.", "quant_conv.",       "post_quant_conv."};
  return *names;
}

// The largest value the `which`-th number of `pattern` takes among `keys`,
// or -1 when no key matches.
int64_t LargestIndex(const std::vector<std::string>& keys,
                     const std::string& pattern, int which) {
  int64_t largest = -1;
  for (const std::string& key : keys) {
    int64_t numbers[2] = {0, 0};
    if (MatchPattern(pattern, key, numbers) > 0) {
      largest = std::max(largest, numbers[which]);
    }
  }
  return largest;
}

BlockLayout ReadLayout(DiffusersPart part,
                       const std::vector<std::string>& keys) {
  BlockLayout layout;
  if (part == DiffusersPart::kUnet) {
    layout.resnets_per_down_block =
        LargestIndex(keys, "down_blocks.{i}.resnets.{j}.", 1) + 1;
    for (const std::string& key : keys) {
      int64_t numbers[2] = {0, 0};
      if (MatchPattern("up_blocks.{i}.attentions.", key, numbers) > 0) {
        layout.up_blocks_with_attention.insert(numbers[0]);
      }
    }
  } else if (part == DiffusersPart::kVae) {
    layout.vae_levels = LargestIndex(keys, "decoder.up_blocks.{i}.", 0) + 1;
  }
  return layout;
}

std::string ApplyInner(const InnerRenames& renames, const std::string& rest) {
  for (const auto& [from, to] : renames) {
    if (absl::StartsWith(rest, from)) {
      return absl::StrCat(to, rest.substr(std::string(from).size()));
    }
  }
  return rest;
}

const char* PartName(DiffusersPart part) {
  switch (part) {
    case DiffusersPart::kUnet:
      return "unet";
    case DiffusersPart::kVae:
      return "vae";
    case DiffusersPart::kTextEncoder:
      return "text_encoder";
  }
  return "";
}

const char* CompVisPrefix(DiffusersPart part) {
  switch (part) {
    case DiffusersPart::kUnet:
      return "model.diffusion_model.";
    case DiffusersPart::kVae:
      return "first_stage_model.";
    case DiffusersPart::kTextEncoder:
      return "cond_stage_model.transformer.";
  }
  return "";
}

std::string MapKey(DiffusersPart part, const std::string& key,
                   const BlockLayout& layout) {
  const std::string prefix = CompVisPrefix(part);
  if (part == DiffusersPart::kTextEncoder) {
    // HF's CLIPTextModel under the same names as in CompVis's
    // FrozenCLIPEmbedder, which wraps that very module.
    if (absl::StartsWith(key, "text_model.")) return prefix + key;
  } else {
    const std::vector<Rule>& rules =
        part == DiffusersPart::kUnet ? UnetRules() : VaeRules();
    for (const Rule& rule : rules) {
      int64_t numbers[2] = {0, 0};
      const size_t consumed = MatchPattern(rule.pattern, key, numbers);
      if (consumed == 0) continue;
      return absl::StrCat(prefix, rule.target(numbers[0], numbers[1], layout),
                          ApplyInner(rule.inner(), key.substr(consumed)));
    }
    if (part == DiffusersPart::kVae) {
      for (const char* same : VaeSameNames()) {
        if (absl::StartsWith(key, same)) return prefix + key;
      }
    }
  }
  return absl::StrCat("diffusers.", PartName(part), ".", key);
}

// The part's weights file in `dir`: the plain file first, then the F16
// variant diffusers also publishes.
absl::StatusOr<std::string> PartWeightsFile(const std::filesystem::path& dir) {
  for (const char* name :
       {"diffusion_pytorch_model.safetensors", "model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors"}) {
    if (std::filesystem::exists(dir / name)) return (dir / name).string();
  }
  return absl::NotFoundError(absl::StrCat(
      dir.string(),
      ": no diffusion_pytorch_model.safetensors or model.safetensors (only "
      "safetensors weights are read, not .bin pickles)"));
}

}  // namespace

std::string MapDiffusersUnetKey(const std::string& key,
                                int64_t resnets_per_down_block) {
  BlockLayout layout;
  layout.resnets_per_down_block = resnets_per_down_block;
  for (int64_t level = 0; level < 8; ++level) {
    layout.up_blocks_with_attention.insert(level);
  }
  return MapKey(DiffusersPart::kUnet, key, layout);
}

std::map<std::string, std::string> MapDiffusersKeys(
    DiffusersPart part, const std::vector<std::string>& keys) {
  const BlockLayout layout = ReadLayout(part, keys);
  std::map<std::string, std::string> mapped;
  for (const std::string& key : keys) mapped[key] = MapKey(part, key, layout);
  return mapped;
}

absl::StatusOr<std::shared_ptr<const Checkpoint>> Checkpoint::Open(
    const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_directory(path, error)) {
    LDM_ASSIGN_OR_RETURN(std::shared_ptr<const SafetensorsFile> file,
                         SafetensorsFile::Open(path));
    return FromFile(std::move(file));
  }
  const std::filesystem::path folder(path);
  if (!std::filesystem::is_directory(folder / "unet", error)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": a folder, but not a diffusers layout (no unet/ in it)"));
  }
  std::shared_ptr<Checkpoint> checkpoint(new Checkpoint());
  checkpoint->path_ = path;
  checkpoint->diffusers_folder_ = true;
  for (DiffusersPart part : {DiffusersPart::kUnet, DiffusersPart::kVae,
                             DiffusersPart::kTextEncoder}) {
    LDM_RETURN_IF_ERROR(checkpoint->AddDiffusersPart(folder, part));
  }
  return std::shared_ptr<const Checkpoint>(std::move(checkpoint));
}

std::shared_ptr<const Checkpoint> Checkpoint::FromFile(
    std::shared_ptr<const SafetensorsFile> file) {
  std::shared_ptr<Checkpoint> checkpoint(new Checkpoint());
  checkpoint->path_ = file->path();
  for (const auto& [key, entry] : file->entries()) {
    checkpoint->sources_[key] = Source{file.get(), key, false};
    checkpoint->tensors_[key] = TensorInfo{entry.dtype, entry.shape};
  }
  checkpoint->files_.push_back(std::move(file));
  return checkpoint;
}

absl::Status Checkpoint::AddDiffusersPart(const std::filesystem::path& folder,
                                          DiffusersPart part) {
  LDM_ASSIGN_OR_RETURN(const std::string weights,
                       PartWeightsFile(folder / PartName(part)));
  LDM_ASSIGN_OR_RETURN(std::shared_ptr<const SafetensorsFile> file,
                       SafetensorsFile::Open(weights));
  std::vector<std::string> keys;
  for (const auto& [key, entry] : file->entries()) keys.push_back(key);
  for (const auto& [key, compvis] : MapDiffusersKeys(part, keys)) {
    const SafetensorsEntry& entry = file->entries().at(key);
    std::vector<int64_t> shape = entry.shape;
    // The VAE's attention projections: linear layers in diffusers, 1x1
    // convolutions in CompVis, the same numbers.
    const bool as_conv = part == DiffusersPart::kVae && shape.size() == 2 &&
                         absl::StrContains(compvis, ".attn_1.");
    if (as_conv) shape.insert(shape.end(), {1, 1});
    if (!sources_.emplace(compvis, Source{file.get(), key, as_conv}).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          weights, ": ", key, " maps to ", compvis, ", which another key has"));
    }
    tensors_[compvis] = TensorInfo{entry.dtype, std::move(shape)};
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> Checkpoint::Get(const std::string& key) const {
  auto it = sources_.find(key);
  if (it == sources_.end()) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor ", key));
  }
  LDM_ASSIGN_OR_RETURN(at::Tensor tensor, it->second.file->Get(it->second.key));
  if (it->second.as_conv) tensor = tensor.view(tensors_.at(key).shape);
  return tensor;
}

void Checkpoint::ReleasePages(const std::string& key) const {
  auto it = sources_.find(key);
  if (it != sources_.end()) it->second.file->ReleasePages(it->second.key);
}

}  // namespace ldm
