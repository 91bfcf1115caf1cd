#include "server/ldm/model_family.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/model_config.h"

namespace ldm {
namespace {

// The UNet and autoencoder must match exactly. The text encoder only breaks
// ties (families whose UNets agree, as they may at test width):
// checkpoints differ in which text-encoder buffers (position_ids) they carry.
bool Matters(const std::string& name) {
  return !absl::StartsWith(name, "cond_stage_model.");
}

}  // namespace

absl::StatusOr<FamilyMatch> DetectFamily(const Checkpoint& file,
                                         const std::string& path,
                                         const std::string& config_dir) {
  std::vector<std::filesystem::path> configs;
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator(config_dir, error)) {
    if (entry.path().extension() == ".json") configs.push_back(entry.path());
  }
  std::sort(configs.begin(), configs.end());
  // The closest miss, for the message.
  std::string closest_name, closest_problem;
  size_t closest_mismatches = std::numeric_limits<size_t>::max();
  std::optional<FamilyMatch> best;
  size_t best_text_mismatches = std::numeric_limits<size_t>::max();
  for (const std::filesystem::path& config_path : configs) {
    absl::StatusOr<ModelConfig> config = ReadModelConfig(config_path.string());
    if (!config.ok()) continue;
    auto expected = LatentDiffusion::ExpectedParameters(*config);
    if (!expected.ok()) continue;
    size_t mismatches = 0, text_mismatches = 0;
    std::string first_problem;
    for (const auto& [name, shape] : *expected) {
      auto it = file.tensors().find(name);
      if (!Matters(name)) {
        if (it == file.tensors().end() || it->second.shape != shape) {
          ++text_mismatches;
        }
        continue;
      }
      std::string problem;
      if (it == file.tensors().end()) {
        problem = absl::StrCat("missing tensor ", name);
      } else if (it->second.shape != shape) {
        problem = absl::StrCat(
            "shape of ", name, " is [", absl::StrJoin(it->second.shape, ", "),
            "], expected [", absl::StrJoin(shape, ", "), "]");
      }
      if (problem.empty()) continue;
      if (mismatches++ == 0) first_problem = std::move(problem);
    }
    if (mismatches == 0) {
      if (text_mismatches < best_text_mismatches) {
        best = FamilyMatch{config->name, config_path.string()};
        best_text_mismatches = text_mismatches;
      }
      continue;
    }
    if (mismatches < closest_mismatches) {
      closest_mismatches = mismatches;
      closest_name = config->name;
      closest_problem = std::move(first_problem);
    }
  }
  if (best) return *best;
  if (closest_name.empty()) {
    return absl::NotFoundError(absl::StrCat(
        path, ": not a model family we know (no readable config in ",
        config_dir, ")"));
  }
  return absl::NotFoundError(absl::StrCat(
      path, ": not a model family we know (no config in ", config_dir,
      " fits; closest ", closest_name, ": ", closest_problem, ", ",
      closest_mismatches, " tensors differ)"));
}

}  // namespace ldm
