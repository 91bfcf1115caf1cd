// Parity with the paper's reference code on every golden set (a folder with
// config.json under $LDM_GOLDEN_DIR, default ../shared/golden): the model is
// built from the set's config, its weights go through the real loader, and
// every output the golden README lists is recomputed through the production
// code and compared with the README's tolerances. Sets are handled by what
// their config says, never by folder name; without sets the tests report
// skipped.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "server/ldm/clip_text_model.h"
#include "server/ldm/latent_diffusion.h"
#include "server/ldm/safetensors.h"
#include "tests/ldm/test_util.h"
#include "tools/reference/golden_reproduction.h"

namespace ldm {
namespace {

namespace fs = std::filesystem;

// The golden sets of `kind_prefix` kinds ("clip" for CLIP text models,
// anything else for latent diffusion sets): folders up to two levels down
// with a config.json and a golden.safetensors, recognised by the config's
// `kind`, never by the folder's name.
std::vector<std::string> GoldenSets(bool clip) {
  std::vector<std::string> sets;
  const fs::path root = testing::GoldenDir();
  std::error_code error;
  if (!fs::is_directory(root, error)) return sets;
  for (auto it = fs::recursive_directory_iterator(root, error);
       it != fs::recursive_directory_iterator(); it.increment(error)) {
    if (it.depth() > 1) it.disable_recursion_pending();
    const fs::path dir = it->path();
    if (!fs::exists(dir / "config.json") ||
        !fs::exists(dir / "golden.safetensors")) {
      continue;
    }
    auto text = ReadTextFile((dir / "config.json").string());
    const bool is_clip =
        text.ok() && text->find("\"clip_text_model\"") != std::string::npos;
    if (is_clip == clip) sets.push_back(dir.string());
  }
  std::sort(sets.begin(), sets.end());
  return sets;
}

std::vector<std::string> GoldenSets() { return GoldenSets(/*clip=*/false); }

double RelMax(const at::Tensor& actual, const at::Tensor& expected) {
  const at::Tensor e = expected.to(at::kDouble);
  return (actual.to(at::kDouble) - e).abs().max().item<double>() /
         e.abs().max().item<double>();
}

TEST(GoldenParityTest, ScheduleFromTheConfigEqualsTheCheckpointBuffer) {
  const std::vector<std::string> sets = GoldenSets();
  if (sets.empty()) {
    GTEST_SKIP() << "no golden sets under " << testing::GoldenDir();
  }
  for (const std::string& dir : sets) {
    SCOPED_TRACE(dir);
    auto config = ReadModelConfig(dir + "/config.json");
    ASSERT_TRUE(config.ok()) << config.status();
    auto weights = SafetensorsFile::Open(dir + "/weights.safetensors");
    ASSERT_TRUE(weights.ok());
    auto schedule =
        DiffusionSchedule::Make(config->beta_schedule, config->linear_start,
                                config->linear_end, config->timesteps);
    ASSERT_TRUE(schedule.ok());
    for (const char* buffer : {"alphas_cumprod", "betas"}) {
      if (!(*weights)->Contains(buffer)) continue;
      at::Tensor expected = *(*weights)->Get(buffer);
      at::Tensor computed = at::tensor(schedule->alphas_cumprod_f64());
      if (std::string(buffer) == "betas") {
        computed = 1 - computed / at::cat({at::ones({1}, at::kDouble),
                                           computed.slice(0, 0, -1)});
      }
      EXPECT_LE(RelMax(computed, expected), 1e-6) << buffer;
    }
  }
}

TEST(GoldenParityTest, EveryOutputMatchesTheReference) {
  const std::vector<std::string> sets = GoldenSets();
  if (sets.empty()) {
    GTEST_SKIP() << "no golden sets under " << testing::GoldenDir();
  }
  for (const std::string& dir : sets) {
    SCOPED_TRACE(dir);
    auto outputs = reference::ReproduceGoldenSet(dir);
    ASSERT_TRUE(outputs.ok()) << outputs.status();
    auto golden = SafetensorsFile::Open(dir + "/golden.safetensors");
    ASSERT_TRUE(golden.ok());
    const std::vector<reference::KeyComparison> comparisons =
        reference::CompareWithGolden(**golden, *outputs);
    // Every set has the single passes and a DDIM chain at least.
    EXPECT_GE(comparisons.size(), 20u);
    for (const reference::KeyComparison& c : comparisons) {
      EXPECT_TRUE(c.passed) << c.key << ": error " << c.error << " > tolerance "
                            << c.tolerance << " " << c.detail;
    }
  }
}

TEST(GoldenParityTest, ClipTextModelMatchesTheReference) {
  const std::vector<std::string> sets = GoldenSets(/*clip=*/true);
  if (sets.empty()) {
    GTEST_SKIP() << "no CLIP text golden sets under " << testing::GoldenDir();
  }
  for (const std::string& dir : sets) {
    SCOPED_TRACE(dir);
    auto model =
        ClipTextModel::Load(dir + "/config.json", dir + "/weights.safetensors");
    ASSERT_TRUE(model.ok()) << model.status();
    auto golden = SafetensorsFile::Open(dir + "/golden.safetensors");
    ASSERT_TRUE(golden.ok());
    c10::InferenceMode inference;
    const at::Tensor ids = (*golden)->Get("inputs.input_ids")->clone();
    const ClipTextModel::Output output = (*model)->Forward(ids);
    // The README's tolerance for the text encoder.
    constexpr double kTolerance = 5e-5;
    EXPECT_LE(RelMax(output.last_hidden_state,
                     *(*golden)->Get("clip.last_hidden_state")),
              kTolerance);
    EXPECT_LE(RelMax((*model)->Encode(ids, /*clip_skip=*/2),
                     *(*golden)->Get("clip.clip_skip_2")),
              kTolerance);
    for (size_t i = 0; i < output.hidden_states.size(); ++i) {
      const std::string key = "clip.dbg.hidden_states." + std::to_string(i);
      if (!(*golden)->Contains(key)) continue;
      EXPECT_LE(RelMax(output.hidden_states[i], *(*golden)->Get(key)),
                kTolerance)
          << key;
    }
  }
}

}  // namespace
}  // namespace ldm
