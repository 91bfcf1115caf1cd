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

#include "server/ldm/latent_diffusion.h"
#include "server/ldm/safetensors.h"
#include "tests/ldm/test_util.h"
#include "tools/reference/golden_reproduction.h"

namespace ldm {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> GoldenSets() {
  std::vector<std::string> sets;
  const fs::path root = testing::GoldenDir();
  std::error_code error;
  if (!fs::is_directory(root, error)) return sets;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (fs::exists(entry.path() / "config.json") &&
        fs::exists(entry.path() / "golden.safetensors")) {
      sets.push_back(entry.path().string());
    }
  }
  std::sort(sets.begin(), sets.end());
  return sets;
}

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

}  // namespace
}  // namespace ldm
