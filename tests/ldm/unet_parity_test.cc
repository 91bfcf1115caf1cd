// Single-pass parity with the paper's reference code: for every golden set
// (a folder with config.json), build the model from its config, load its
// weights through the real loader and compare the UNet forward and the
// autoencoder passes with the stored reference outputs. Sets are handled by
// what their config says, never by folder name. The full sampler-chain
// parity (DDIM, PLMS, DDPM, img2img) belongs to the engine-parity suite.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "server/ldm/latent_diffusion.h"
#include "server/ldm/safetensors.h"
#include "tests/ldm/test_util.h"

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

TEST(UNetParityTest, SinglePassesMatchTheReference) {
  const std::vector<std::string> sets = GoldenSets();
  if (sets.empty()) {
    GTEST_SKIP() << "no golden sets under " << testing::GoldenDir();
  }
  for (const std::string& dir : sets) {
    SCOPED_TRACE(dir);
    auto model = LatentDiffusion::Load(dir + "/config.json",
                                       dir + "/weights.safetensors");
    ASSERT_TRUE(model.ok()) << model.status();
    auto golden = SafetensorsFile::Open(dir + "/golden.safetensors");
    ASSERT_TRUE(golden.ok()) << golden.status();
    auto get = [&](const std::string& name) {
      auto tensor = (*golden)->Get(name);
      EXPECT_TRUE(tensor.ok()) << tensor.status();
      return tensor.ok() ? tensor->clone() : at::Tensor();
    };
    auto optional = [&](const std::string& name) {
      return (*golden)->Contains(name) ? get(name) : at::Tensor();
    };
    // The schedule built from the config equals the reference's buffer.
    auto weights = SafetensorsFile::Open(dir + "/weights.safetensors");
    ASSERT_TRUE(weights.ok());
    const ModelConfig& config = (*model)->config();
    const DiffusionSchedule from_config = DiffusionSchedule::Linear(
        config.linear_start, config.linear_end, config.timesteps);
    EXPECT_LE(RelMax(at::tensor(from_config.alphas_cumprod_f64()),
                     *(*weights)->Get("alphas_cumprod")),
              1e-6);
    const at::Tensor timesteps = get("inputs.timesteps");
    const at::Tensor context = optional("inputs.context");
    const UNetModel& unet = (*model)->unet();
    const AutoencoderKL& ae = (*model)->autoencoder();
    c10::InferenceMode inference;

    EXPECT_LE(RelMax(TimestepEmbedding(timesteps,
                                       (*model)->config().unet.model_channels),
                     get("unet.t_emb")),
              1e-4);
    EXPECT_LE(RelMax(unet.Forward(get("unet.x"), timesteps, context),
                     get("unet.out")),
              1e-4);
    EXPECT_LE(RelMax(unet.Forward(get("unet.lowamp.x"), timesteps, context),
                     get("unet.lowamp.out")),
              1e-4);
    EXPECT_LE(
        RelMax(ae.EncodeMoments(get("ae.encode.x")), get("ae.encode.moments")),
        1e-4);
    EXPECT_LE(RelMax(ae.EncodeMoments(get("ae.lowamp.encode.x")),
                     get("ae.lowamp.encode.moments")),
              1e-4);
    EXPECT_LE(RelMax(ae.Decode(get("ae.decode.z")), get("ae.decode.out")),
              1e-4);
    EXPECT_LE(RelMax(ae.Decode(get("ae.lowamp.decode.z")),
                     get("ae.lowamp.decode.out")),
              1e-4);
    const DiagonalGaussian posterior =
        AutoencoderKL::Posterior(get("ae.encode.moments"));
    EXPECT_LE(RelMax(posterior.logvar, get("ae.encode.logvar")), 1e-6);
    EXPECT_LE(RelMax(posterior.SampleWith(get("ae.encode.noise")),
                     get("ae.encode.sample")),
              1e-6);
  }
}

}  // namespace
}  // namespace ldm
